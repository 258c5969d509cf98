//! The PostgreSQL backend: tokio-postgres connections in a deadpool pool,
//! shared by every node configured with the same database; its
//! migrations, advisory locks, and the binder for the shared SQL.
//!
//! The `Index` API is synchronous and called from blocking threads, so
//! each call drives the async client with `Handle::block_on` on the
//! runtime the pool was opened in (the node's). The offline commands
//! (`fsck`, `reindex`) have no runtime; the pool then owns a small one.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    Hook, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, TimeoutType, Timeouts, Transaction,
};
use tokio::runtime::{Handle, Runtime};
use tokio_postgres::types::{IsNull, ToSql, Type};

use super::db::{Db, DbRow, Val};
use super::migrations;
use super::reach::Reach;
use crate::config::PostgresTls;
use crate::error::{Error, Result};

/// Advisory lock ids: migrations (the commit locks are hashes of what
/// they lock, see `service::locks`).
const MIGRATION_LOCK: i64 = 0x5350_494c_0001;
/// Taken by each creation of a resumable upload, for its count and insert.
pub(super) const UPLOADS_LOCK: i64 = 0x5350_494c_0003;

/// As long as a request waits for a pooled connection while all are in use
/// before the index counts as unavailable (503): a busy pool, not an
/// outage (with the server known gone nobody waits, see `reach`).
const POOL_WAIT: Duration = Duration::from_secs(3);
/// As long as a commit waits for a slot among the connections that may
/// hold commit locks.
const LOCK_SLOT_WAIT: Duration = Duration::from_secs(30);
/// A server gone without closing its sessions (host down, network cut)
/// leaves them silent: keepalives notice an idle one, the user timeout one
/// whose statement goes unacknowledged, within seconds rather than the
/// kernel's two hours (idle) or quarter of an hour (retransmissions). A
/// live server acknowledges a slow statement and answers keepalives.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections to PostgreSQL per node.
const POOL_SIZE: usize = 16;

pub(super) struct PgPool {
    pool: Pool,
    handle: Handle,
    /// Connections that may hold commit locks at once.
    lock_slots: Arc<tokio::sync::Semaphore>,
    reach: Arc<Reach>,
    /// The runtime of an offline command, shut down with the pool.
    owned: Option<Runtime>,
}

impl Drop for PgPool {
    fn drop(&mut self) {
        // Without waiting: the last owner may be dropped inside a runtime.
        if let Some(runtime) = self.owned.take() {
            runtime.shutdown_background();
        }
    }
}

impl PgPool {
    /// `connect_timeout` bounds each new connection, handshakes included.
    pub(super) fn open(url: &str, tls: PostgresTls, connect_timeout: Duration) -> Result<PgPool> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| Error::internal(format!("postgres_url does not parse: {e}")))?;
        // The node's settings decide over the URL's, as for TLS below.
        config.connect_timeout(connect_timeout);
        config.keepalives_idle(KEEPALIVE_IDLE);
        config.keepalives_interval(KEEPALIVE_INTERVAL);
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
        let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        // `postgres_tls` decides, whatever the URL's `sslmode` says.
        let manager = match tls {
            PostgresTls::Disable => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                Manager::from_config(config, tokio_postgres::NoTls, manager_config)
            }
            PostgresTls::Require => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                Manager::from_config(config, tls_connector()?, manager_config)
            }
        };
        let (handle, owned) = match Handle::try_current() {
            Ok(handle) => (handle, None),
            Err(_) => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("spillway-pg")
                    .enable_all()
                    .build()
                    .map_err(Error::internal)?;
                (runtime.handle().clone(), Some(runtime))
            }
        };
        let reach = Arc::new(Reach::new());
        let connected = reach.clone();
        // Built inside the runtime: deadpool's timeouts are tokio timers.
        let pool = {
            let _entered = handle.enter();
            Pool::builder(manager)
                .max_size(POOL_SIZE)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(POOL_WAIT))
                .create_timeout(Some(connect_timeout))
                // `Fast` recycling does no I/O; were it to check with the
                // server, a silent one would cost this much, not forever.
                .recycle_timeout(Some(connect_timeout))
                .post_create(Hook::sync_fn(move |_, _| {
                    connected.up();
                    Ok(())
                }))
                .build()
                .map_err(|e| Error::internal(format!("PostgreSQL pool: {e}")))?
        };
        let lock_slots = Arc::new(tokio::sync::Semaphore::new(POOL_SIZE / 2));
        let pool = PgPool { pool, handle, owned, lock_slots, reach };
        pool.migrate()?;
        Ok(pool)
    }

    fn conn(&self) -> Result<Object> {
        if self.reach.is_down() {
            // No queue while the server is gone: a free slot tries a new
            // connection (which is how its return is noticed), a full pool
            // answers at once.
            let at_once = Timeouts { wait: Some(Duration::ZERO), ..self.pool.timeouts() };
            return self.handle.block_on(self.pool.timeout_get(&at_once)).map_err(|e| match e {
                PoolError::Timeout(TimeoutType::Wait) => gone_error(),
                e => self.pool_error(e),
            });
        }
        let gone = self.reach.watch();
        self.handle.block_on(async {
            tokio::select! {
                got = self.pool.get() => got.map_err(|e| self.pool_error(e)),
                () = gone.goes_down() => Err(gone_error()),
            }
        })
    }

    /// A new connection that failed or timed out means the server is gone;
    /// a full pool only that it is busy.
    fn pool_error(&self, e: PoolError) -> Error {
        let (error, connecting) = match e {
            PoolError::Backend(e) => (e.into(), true),
            PoolError::Timeout(TimeoutType::Create) => {
                let within = self.pool.timeouts().create.unwrap_or_default();
                (Error::Unavailable("the index", format!("no connection to PostgreSQL within {within:?}")), true)
            }
            e => (Error::Unavailable("the index", format!("PostgreSQL pool: {e}")), false),
        };
        if connecting && matches!(error, Error::Unavailable(..)) {
            self.went_down(&error);
        }
        error
    }

    fn went_down(&self, cause: &Error) {
        if self.reach.down(cause) {
            // Idle sessions are as dead as the one that failed, or silent
            // (a host gone): each would hold a request until TCP gives up.
            self.pool.retain(|_, _| false);
        }
    }

    /// Notes what an operation on `conn` said of the server: a session it
    /// closed (or lost) means it is likely gone.
    fn observe<T>(&self, conn: &Object, out: Result<T>) -> Result<T> {
        match &out {
            Ok(_) => self.reach.up(),
            Err(e) if conn.is_closed() => self.went_down(e),
            Err(_) => {}
        }
        out
    }

    /// Runs `f` on a connection, each statement committing on its own.
    pub(super) fn with<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        let conn = self.conn()?;
        let out = f(&mut PgConn { handle: &self.handle, client: &conn });
        self.observe(&conn, out)
    }

    /// Runs `f` in one transaction, after taking the transaction-scoped
    /// advisory lock `lock` if one is given; committed if `f` returns `Ok`.
    pub(super) fn tx<T>(&self, lock: Option<i64>, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        let mut conn = self.conn()?;
        let out = self.run_tx(&mut conn, lock, f);
        self.observe(&conn, out)
    }

    fn run_tx<T>(&self, conn: &mut Object, lock: Option<i64>, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        let tx = self.handle.block_on(conn.transaction())?;
        let mut db = PgTx { handle: &self.handle, tx: &tx };
        if let Some(lock) = lock {
            db.execute("SELECT pg_advisory_xact_lock($1)", &[Val::Int(lock)])?;
        }
        let out = f(&mut db)?;
        self.handle.block_on(tx.commit())?;
        Ok(out)
    }

    /// Takes `locks` at session level on a connection of its own, held
    /// until the returned value is dropped (or the session ends). At most
    /// half the pool holds locks, so the transactions of those holding
    /// them always find a connection.
    pub(super) fn lock(&self, locks: &super::LockSet) -> Result<HeldLock> {
        let slot = self.lock_slot()?;
        let held = self.held(self.conn()?, slot);
        let taken = locks.iter().try_for_each(|(id, mode)| self.take(&held.conn, *id, *mode));
        if let Err(e) = self.observe(&held.conn, taken) {
            held.release();
            return Err(e);
        }
        Ok(held)
    }

    fn lock_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        let slots = self.lock_slots.clone();
        if self.reach.is_down() {
            return slots.try_acquire_owned().map_err(|_| gone_error());
        }
        let gone = self.reach.watch();
        self.handle.block_on(async {
            tokio::select! {
                slot = tokio::time::timeout(LOCK_SLOT_WAIT, slots.acquire_owned()) => Ok(slot.map_err(|_| {
                    Error::Unavailable("the index", "every connection to PostgreSQL for commit locks is taken".into())
                })?.expect("the semaphore is never closed")),
                () = gone.goes_down() => Err(gone_error()),
            }
        })
    }

    /// A shared lock waits in PostgreSQL's queue; an exclusive one is
    /// tried again and again instead, as on one node (`service::locks`):
    /// queued, it would make every later shared request queue behind it.
    /// Either wait is for another session, however long; an outage found
    /// meanwhile (by any request) ends it.
    fn take(&self, conn: &Object, id: i64, mode: super::LockMode) -> Result<()> {
        let gone = self.reach.watch();
        if mode == super::LockMode::Shared {
            // Left waiting, the statement makes the session unusable:
            // `HeldLock::release` closes it, the server being gone.
            let params: [&(dyn ToSql + Sync); 1] = [&id];
            return self.handle.block_on(async {
                tokio::select! {
                    taken = conn.execute("SELECT pg_advisory_lock_shared($1)", &params) => Ok(taken.map(drop)?),
                    () = gone.goes_down() => Err(gone_error()),
                }
            });
        }
        let mut pause = Duration::from_millis(2);
        loop {
            let row = self.handle.block_on(conn.query_one("SELECT pg_try_advisory_lock($1)", &[&id]))?;
            if row.get::<_, bool>(0) {
                return Ok(());
            }
            if gone.went_down() {
                return Err(gone_error());
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    fn held(&self, conn: Object, slot: tokio::sync::OwnedSemaphorePermit) -> HeldLock {
        HeldLock { conn, handle: self.handle.clone(), reach: self.reach.clone(), _slot: slot }
    }

    /// Takes `locks` like [`PgPool::lock`] if no other session holds any
    /// of them now.
    pub(super) fn try_lock(&self, locks: &super::LockSet) -> Result<Option<HeldLock>> {
        let Ok(slot) = self.lock_slots.clone().try_acquire_owned() else {
            return Ok(None);
        };
        let held = self.held(self.conn()?, slot);
        for (id, mode) in locks {
            let sql = match mode {
                super::LockMode::Shared => "SELECT pg_try_advisory_lock_shared($1)",
                super::LockMode::Exclusive => "SELECT pg_try_advisory_lock($1)",
            };
            let taken = self.handle.block_on(held.conn.query_one(sql, &[id])).map(|row| row.get::<_, bool>(0));
            match self.observe(&held.conn, taken.map_err(Error::from)) {
                Ok(true) => {}
                Ok(false) => {
                    held.release();
                    return Ok(None);
                }
                Err(e) => {
                    held.release();
                    return Err(e);
                }
            }
        }
        Ok(Some(held))
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.conn()?;
        let handle = &self.handle;
        let tx = handle.block_on(conn.transaction())?;
        // Nodes starting together migrate one at a time.
        handle.block_on(tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]))?;
        handle.block_on(tx.batch_execute("CREATE TABLE IF NOT EXISTS spillway_schema (version INTEGER NOT NULL)"))?;
        let version: i64 = match handle.block_on(tx.query_opt("SELECT version FROM spillway_schema", &[]))? {
            Some(row) => row.try_get::<_, i32>(0)?.into(),
            None => {
                handle.block_on(tx.execute("INSERT INTO spillway_schema (version) VALUES (0)", &[]))?;
                0
            }
        };
        for (i, sql) in migrations::postgres::MIGRATIONS.iter().enumerate().skip(version as usize) {
            handle.block_on(tx.batch_execute(sql))?;
            handle.block_on(tx.execute("UPDATE spillway_schema SET version = $1", &[&(i as i32 + 1)]))?;
        }
        handle.block_on(tx.commit())?;
        Ok(())
    }
}

/// TLS with rustls (the crypto provider and the operating system's
/// certificates that the S3 client uses too): the server's certificate
/// and host name are checked.
fn tls_connector() -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls_platform_verifier::ConfigVerifierExt;
    let config = rustls::ClientConfig::with_platform_verifier()
        .map_err(|e| Error::internal(format!("TLS to PostgreSQL: {e}")))?;
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

fn gone_error() -> Error {
    Error::Unavailable("the index", "PostgreSQL was found unreachable".into())
}

/// Commit locks, held on a pooled connection of its own.
pub(super) struct HeldLock {
    conn: Object,
    handle: Handle,
    reach: Arc<Reach>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl HeldLock {
    pub(super) fn release(self) {
        if self.reach.is_down() {
            // An unlock could only wait for TCP to give up on the session;
            // closing it releases the locks as surely.
            drop(Object::take(self.conn));
            return;
        }
        let unlocked = self.handle.block_on(self.conn.execute("SELECT pg_advisory_unlock_all()", &[]));
        if let Err(e) = unlocked {
            log::error!("releasing the commit lock: {e}");
            // Not back to the pool with the lock maybe still held: closing
            // the session releases it.
            drop(Object::take(self.conn));
        }
    }
}

impl ToSql for Val {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(n) if *ty == Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
            Val::Int(n) => n.to_sql(ty, out),
            Val::Text(s) => s.to_sql(ty, out),
            Val::Bool(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

fn params(params: &[Val]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

fn row(row: &tokio_postgres::Row) -> Result<DbRow> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let value = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(i)?.map(Val::Int)
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)?.map(|n| Val::Int(n.into()))
        } else if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(i)?.map(Val::Bool)
        } else {
            row.try_get::<_, Option<String>>(i)?.map(Val::Text)
        };
        values.push(value.unwrap_or(Val::Null));
    }
    Ok(DbRow(values))
}

/// A pooled connection, each statement committing on its own.
struct PgConn<'a> {
    handle: &'a Handle,
    client: &'a deadpool_postgres::Client,
}

/// A transaction.
struct PgTx<'a> {
    handle: &'a Handle,
    tx: &'a Transaction<'a>,
}

// Statements are prepared once per connection (deadpool's cache): the
// catalog runs a few dozen distinct ones, over and over.
macro_rules! pg_db {
    ($t:ident, $client:ident) => {
        impl Db for $t<'_> {
            fn execute(&mut self, sql: &str, values: &[Val]) -> Result<u64> {
                self.handle.block_on(async {
                    let stmt = self.$client.prepare_cached(sql).await?;
                    Ok(self.$client.execute(&stmt, &params(values)).await?)
                })
            }

            fn query(&mut self, sql: &str, values: &[Val]) -> Result<Vec<DbRow>> {
                let rows = self.handle.block_on(async {
                    let stmt = self.$client.prepare_cached(sql).await?;
                    self.$client.query(&stmt, &params(values)).await
                })?;
                rows.iter().map(row).collect()
            }
        }
    };
}
pg_db!(PgConn, client);
pg_db!(PgTx, tx);
