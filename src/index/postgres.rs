//! The PostgreSQL backend: a pool shared by every node configured with the
//! same database, its migrations, advisory locks, and the binder for the
//! shared SQL.

use r2d2::{Pool, PooledConnection};
use r2d2_postgres::PostgresConnectionManager;

use super::db::{Db, DbRow, Val};
use super::migrations;
use crate::error::{Error, Result};

type Manager = PostgresConnectionManager<postgres::NoTls>;
pub(super) type PgConn = PooledConnection<Manager>;

/// Advisory lock ids: migrations, and the commit section that several
/// nodes must take in turn.
const MIGRATION_LOCK: i64 = 0x5350_494c_0001;
pub(super) const COMMIT_LOCK: i64 = 0x5350_494c_0002;
/// Taken by each creation of a resumable upload, for its count and insert.
pub(super) const UPLOADS_LOCK: i64 = 0x5350_494c_0003;

/// The pool. The synchronous client runs a runtime of its own, and closing
/// a connection inside tokio's would panic; the last owner may be dropped
/// there (at shutdown), so the pool is closed on a plain thread.
pub(super) struct PgPool(Option<Pool<Manager>>);

impl Drop for PgPool {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take() {
            let _ = std::thread::spawn(move || drop(pool)).join();
        }
    }
}

impl PgPool {
    pub(super) fn open(url: &str) -> Result<PgPool> {
        let config: postgres::Config =
            url.parse().map_err(|e| Error::internal(format!("postgres_url does not parse: {e}")))?;
        let manager = PostgresConnectionManager::new(config, postgres::NoTls);
        let pool = Pool::builder()
            .max_size(16)
            .connection_timeout(std::time::Duration::from_secs(3))
            .build(manager)
            .map_err(|e| Error::Unavailable("the index", format!("connecting to PostgreSQL: {e}")))?;
        let pool = PgPool(Some(pool));
        pool.migrate()?;
        Ok(pool)
    }

    pub(super) fn conn(&self) -> Result<PgConn> {
        let pool = self.0.as_ref().expect("the pool lives until dropped");
        pool.get().map_err(|e| Error::Unavailable("the index", format!("PostgreSQL pool: {e}")))
    }

    /// Runs `f` on a connection, each statement committing on its own.
    pub(super) fn with<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        f(&mut *self.conn()?)
    }

    /// Runs `f` in one transaction, after taking the transaction-scoped
    /// advisory lock `lock` if one is given; committed if `f` returns `Ok`.
    pub(super) fn tx<T>(&self, lock: Option<i64>, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        if let Some(lock) = lock {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock])?;
        }
        let out = f(&mut tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Takes the session-level commit lock on a connection of its own,
    /// released by `unlock` (or when the session ends).
    pub(super) fn lock_commits(&self) -> Result<PgConn> {
        let mut conn = self.conn()?;
        conn.execute("SELECT pg_advisory_lock($1)", &[&COMMIT_LOCK])?;
        Ok(conn)
    }

    pub(super) fn unlock_commits(conn: &mut PgConn) -> Result<()> {
        conn.execute("SELECT pg_advisory_unlock($1)", &[&COMMIT_LOCK])?;
        Ok(())
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // Nodes starting together migrate one at a time.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS spillway_schema (version INTEGER NOT NULL)")?;
        let version: i64 = match tx.query_opt("SELECT version FROM spillway_schema", &[])? {
            Some(row) => row.get::<_, i32>(0).into(),
            None => {
                tx.execute("INSERT INTO spillway_schema (version) VALUES (0)", &[])?;
                0
            }
        };
        for (i, sql) in migrations::postgres::MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.batch_execute(sql)?;
            tx.execute("UPDATE spillway_schema SET version = $1", &[&(i as i32 + 1)])?;
        }
        tx.commit()?;
        Ok(())
    }
}

impl postgres::types::ToSql for Val {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::{IsNull, Type};
        match self {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(n) if *ty == Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
            Val::Int(n) => n.to_sql(ty, out),
            Val::Text(s) => s.to_sql(ty, out),
            Val::Bool(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn params(params: &[Val]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn postgres::types::ToSql + Sync)).collect()
}

fn row(row: &postgres::Row) -> Result<DbRow> {
    use postgres::types::Type;
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

macro_rules! pg_db {
    ($t:ty) => {
        impl Db for $t {
            fn execute(&mut self, sql: &str, values: &[Val]) -> Result<u64> {
                Ok(postgres::GenericClient::execute(self, sql, &params(values))?)
            }

            fn query(&mut self, sql: &str, values: &[Val]) -> Result<Vec<DbRow>> {
                postgres::GenericClient::query(self, sql, &params(values))?.iter().map(row).collect()
            }
        }
    };
}
pg_db!(postgres::Client);
pg_db!(postgres::Transaction<'_>);
