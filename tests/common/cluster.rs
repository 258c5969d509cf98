//! Real backing services for the S3 and PostgreSQL suites: Garage (an
//! S3-compatible object store, one node or a three-node cluster) and a
//! PostgreSQL server, each started per test on ephemeral loopback ports in
//! its own temporary directory, and stopped (SIGKILL / fast shutdown, then
//! reaped) when dropped. Nothing is shared between tests.
//!
//! The binaries come from the machine: `scripts/test.sh` installs both and
//! sets `SPILLWAY_REQUIRE_CLUSTER=1`, so there a missing binary fails the
//! suite; elsewhere the tests that need them skip with a line on stderr.

use std::fs;
use std::io::{Read, Seek, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server gets to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one command-line call (`garage ...`, `initdb`, `psql`) may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopped PostgreSQL gets for its fast shutdown before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at starting a server whose freshly picked port was taken meanwhile.
const PORT_ATTEMPTS: usize = 4;

// ---------------------------------------------------------------------------
// Finding the binaries; skipping when they are absent.
// ---------------------------------------------------------------------------

/// Path of the garage binary: `$GARAGE_BIN`, else `garage` on `PATH`, else
/// `~/.cargo/bin/garage`. `None` if absent.
pub fn garage_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("GARAGE_BIN").filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        return is_executable(&bin).then_some(bin);
    }
    if let Some(bin) = on_path("garage") {
        return Some(bin);
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty())?;
    let bin = Path::new(&home).join(".cargo/bin/garage");
    is_executable(&bin).then_some(bin)
}

/// Directory of the PostgreSQL server binaries (`initdb`, `postgres`,
/// `pg_ctl`): `$PG_BIN_DIR`, else `/usr/lib/postgresql/<highest>/bin`.
/// `None` if absent.
pub fn pg_bin_dir() -> Option<PathBuf> {
    let has_server = |dir: &Path| is_executable(&dir.join("initdb")) && is_executable(&dir.join("postgres"));
    if let Some(dir) = std::env::var_os("PG_BIN_DIR").filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        return has_server(&dir).then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_server(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir)
}

/// Whether the S3/PostgreSQL suites must run (`SPILLWAY_REQUIRE_CLUSTER=1`,
/// set by `scripts/test.sh`) instead of skipping when a binary is missing.
pub fn cluster_required() -> bool {
    std::env::var("SPILLWAY_REQUIRE_CLUSTER").is_ok_and(|v| v == "1")
}

/// `true` (after a "SKIPPED" line on stderr) when garage is not installed
/// and not required: the calling test returns early. Panics when it is
/// required but missing.
pub fn skip_without_garage() -> bool {
    skip_unless_available("garage", garage_bin().is_some())
}

/// `true` (after a "SKIPPED" line on stderr) when the PostgreSQL server
/// binaries are not installed and not required: the calling test returns
/// early. Panics when they are required but missing.
pub fn skip_without_postgres() -> bool {
    skip_unless_available("postgres", pg_bin_dir().is_some())
}

fn skip_unless_available(what: &str, present: bool) -> bool {
    if present {
        return false;
    }
    let message = format!("{what} not installed; scripts/test.sh installs it");
    if cluster_required() {
        panic!("{message} (and SPILLWAY_REQUIRE_CLUSTER=1 requires it)");
    }
    eprintln!("SKIPPED: {message}");
    true
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| is_executable(p))
}

// ---------------------------------------------------------------------------
// Small tools: ports, secrets, bounded commands, plain HTTP.
// ---------------------------------------------------------------------------

/// A loopback port that was free a moment ago (bound to 0, then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// `n` random lowercase hex digits (n <= 64).
fn random_hex(n: usize) -> String {
    let hex = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    assert!(n <= hex.len());
    hex[..n].to_string()
}

/// The last `lines` lines of a log file, for panic messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    format!("--- last {lines} lines of {} ---\n{tail}", path.display())
}

/// What a bounded command printed and how it exited.
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    fn success(&self) -> bool {
        self.status.success()
    }
}

/// Runs a command to completion within `within` (killed and a panic past
/// that), capturing its output.
fn run_bounded(cmd: &mut Command, within: Duration, what: &str) -> Ran {
    run_within(cmd, within).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Runs a command to completion within `within` (killed and reaped past
/// that), capturing its output through anonymous temp files (no pipe to
/// fill up). Never panics, so `Drop` may use it.
fn run_within(cmd: &mut Command, within: Duration) -> Result<Ran, String> {
    let mut out = tempfile::tempfile().map_err(|e| format!("temp file: {e}"))?;
    let mut err = tempfile::tempfile().map_err(|e| format!("temp file: {e}"))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().map_err(|e| e.to_string())?)
        .stderr(err.try_clone().map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    let deadline = Instant::now() + within;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() > deadline => {
                kill9(&mut child);
                return Err(format!("ran longer than {within:?}; killed"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                kill9(&mut child);
                return Err(format!("wait: {e}"));
            }
        }
    };
    let read = |f: &mut fs::File| {
        let mut bytes = Vec::new();
        let _ = f.rewind().and_then(|_| f.read_to_end(&mut bytes));
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Ok(Ran { status, stdout: read(&mut out), stderr: read(&mut err) })
}

/// A plain HTTP/1.1 GET on loopback with optional extra headers: the status
/// and body, or why there is none. Bounded by `within`.
pub fn http_get(url: &str, headers: &[(&str, &str)], within: Duration) -> Result<(u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("not an http:// URL: {url}"))?;
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let addr: std::net::SocketAddr = host.parse().map_err(|e| format!("{host}: {e}"))?;
    let mut s = TcpStream::connect_timeout(&addr, within).map_err(|e| format!("connect {host}: {e}"))?;
    s.set_read_timeout(Some(within)).unwrap();
    s.set_write_timeout(Some(within)).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    s.write_all(request.as_bytes()).map_err(|e| format!("send to {host}: {e}"))?;
    let response = super::read_response(&mut s, within)?;
    let body = if response.header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
        dechunk(&response.body)
    } else {
        response.body
    };
    Ok((response.status, String::from_utf8_lossy(&body).into_owned()))
}

/// Decodes a `Transfer-Encoding: chunked` body (best effort, for messages).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = raw.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&raw[..pos]);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        raw = &raw[pos + 2..];
        if size == 0 || raw.len() < size {
            out.extend_from_slice(&raw[..size.min(raw.len())]);
            break;
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or_default();
    }
    out
}

/// Waits (bounded) until `ready` holds; between tries, fails early when the
/// server process exited. On timeout or exit, panics with the log tail.
fn wait_until(what: &str, child: &mut Child, log: &Path, within: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    loop {
        if ready() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited with {status} before it was ready\n{}", log_tail(log, 40));
        }
        if Instant::now() > deadline {
            panic!("{what} was not ready within {within:?}\n{}", log_tail(log, 40));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port`
/// (`/proc/net/tcp` names the socket's inode, `/proc/{pid}/fd` the
/// process's sockets).
fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let local = format!("0100007F:{port:04X}");
    let sockets: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Columns: sl, local address, remote address, state (0A: LISTEN), .., inode (10th).
            (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A"))
                .then(|| format!("socket:[{}]", fields.get(9).unwrap_or(&"")))
        })
        .collect();
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| fs::read_link(fd.path()).is_ok_and(|target| sockets.iter().any(|s| target.as_os_str() == s.as_str())))
}

/// Whether a log says that a listening socket could not be bound.
fn lost_port_race(log: &Path) -> bool {
    let text = fs::read_to_string(log).unwrap_or_default();
    text.contains("Address already in use") || text.contains("AddrInUse") || text.contains("could not bind")
}

/// Removes every inherited variable whose name starts with `prefix` (a
/// developer's `GARAGE_RPC_SECRET` or `PGHOST` must not redirect a test).
fn scrub_env(cmd: &mut Command, prefix: &str) {
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| n.starts_with(prefix)) {
            cmd.env_remove(name);
        }
    }
}

/// SIGKILL and reap.
fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------
// Garage.
// ---------------------------------------------------------------------------

/// S3 region every Garage here answers for.
pub const GARAGE_REGION: &str = "garage";

struct GarageNode {
    child: Option<Child>,
    dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    s3_port: u16,
    admin_port: u16,
    rpc_port: u16,
    /// `<hex node id>@127.0.0.1:<rpc port>`.
    id: String,
}

impl Drop for GarageNode {
    fn drop(&mut self) {
        // What Garage said is often why a failed test's node got a 503.
        if std::thread::panicking() && self.child.is_some() {
            eprintln!("{}", log_tail(&self.log, 30));
        }
        if let Some(mut child) = self.child.take() {
            kill9(&mut child);
        }
    }
}

/// A running Garage: one node or a cluster, with one access key that may
/// read, write and own one bucket.
pub struct Garage {
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
    pub region: String,
    /// Bearer token of every node's admin API.
    pub admin_token: String,
    nodes: Vec<GarageNode>,
    bin: PathBuf,
    rpc_secret: String,
    replication_factor: usize,
    root: TempDir,
}

impl Garage {
    /// One node, `garage server --single-node --default-bucket`: the key and
    /// bucket come from `GARAGE_DEFAULT_*`. Ready when admin `/health` is 200.
    pub fn single() -> Garage {
        let mut garage = Garage::empty(1);
        let default_env = [
            ("GARAGE_DEFAULT_ACCESS_KEY", garage.access_key.clone()),
            ("GARAGE_DEFAULT_SECRET_KEY", garage.secret_key.clone()),
            ("GARAGE_DEFAULT_BUCKET", garage.bucket.clone()),
        ];
        let node = garage.spawn_node(0, &["--single-node", "--default-bucket"], &default_env);
        garage.nodes.push(node);
        garage.wait_healthy(&[0]);
        garage
    }

    /// Three nodes on loopback with `replication_factor = 3`, connected
    /// (`node connect`), laid out in zone `dc1` (`layout assign` x3,
    /// `layout apply --version 1`), with a key imported and a bucket created
    /// and allowed read/write/owner. Ready when every node's admin `/health`
    /// is 200 and the cluster reports all nodes connected.
    pub fn cluster3() -> Garage {
        let mut garage = Garage::empty(3);
        for i in 0..3 {
            let node = garage.spawn_node(i, &[], &[]);
            garage.nodes.push(node);
        }
        for i in 1..3 {
            let id = garage.nodes[i].id.clone();
            garage.cli(0, &["node", "connect", &id]);
        }
        for i in 0..3 {
            let id = garage.nodes[i].id.clone();
            let short = &id[..16];
            garage.cli(0, &["layout", "assign", "-z", "dc1", "-c", "1GB", short]);
        }
        garage.cli(0, &["layout", "apply", "--version", "1"]);
        let (key, secret, bucket) = (garage.access_key.clone(), garage.secret_key.clone(), garage.bucket.clone());
        garage.cli(0, &["key", "import", "--yes", "-n", "spillway-test", &key, &secret]);
        garage.cli(0, &["bucket", "create", &bucket]);
        garage.cli(0, &["bucket", "allow", "--read", "--write", "--owner", &bucket, "--key", &key]);
        garage.wait_healthy(&[0, 1, 2]);
        garage
    }

    fn empty(replication_factor: usize) -> Garage {
        let bin = garage_bin().expect("garage not installed (see cluster::skip_without_garage)");
        let root = tempfile::Builder::new().prefix("spillway-garage-").tempdir().expect("temp dir");
        Garage {
            access_key: format!("GK{}", random_hex(24)),
            secret_key: random_hex(64),
            bucket: format!("spillway-{}", random_hex(8)),
            region: GARAGE_REGION.to_string(),
            admin_token: random_hex(32),
            nodes: Vec::new(),
            bin,
            rpc_secret: random_hex(64),
            replication_factor,
            root,
        }
    }

    /// Writes node `i`'s configuration (fresh ports) and starts it until its
    /// admin and S3 APIs answer; a lost port race is retried with new ports.
    fn spawn_node(&self, i: usize, server_args: &[&str], env: &[(&str, String)]) -> GarageNode {
        let dir = self.root.path().join(format!("node{i}"));
        fs::create_dir_all(&dir).unwrap();
        let config = dir.join("garage.toml");
        let log = dir.join("garage.log");
        for attempt in 1..=PORT_ATTEMPTS {
            let (rpc_port, s3_port, admin_port) = (free_port(), free_port(), free_port());
            if rpc_port == s3_port || s3_port == admin_port || rpc_port == admin_port {
                continue;
            }
            fs::write(&config, self.config_text(&dir, rpc_port, s3_port, admin_port)).unwrap();
            let mut node = GarageNode {
                child: None,
                dir: dir.clone(),
                config: config.clone(),
                log: log.clone(),
                s3_port,
                admin_port,
                rpc_port,
                id: String::new(),
            };
            self.launch(&mut node, server_args, env);
            let child = node.child.as_mut().unwrap();
            let deadline = Instant::now() + START_TIMEOUT;
            let answers = |port: u16, path: &str| {
                http_get(&format!("http://127.0.0.1:{port}{path}"), &[], Duration::from_secs(2)).is_ok()
            };
            let (mut failed, mut raced) = (None, false);
            loop {
                // Garage keeps running when one of its servers cannot bind
                // (it logs "S3 API server exited with error" and serves the
                // rest), so the S3 port must answer too, not only admin.
                if answers(admin_port, "/health") && answers(s3_port, "/") {
                    // What answers may be another test's Garage that drew the
                    // same free port: then a node would talk to a bucket it
                    // has no key for, and get 503s. Only our own sockets count.
                    let pid = child.id();
                    if [rpc_port, s3_port, admin_port].iter().all(|&port| listens_on(pid, port)) {
                        break;
                    }
                    kill9(child);
                    (failed, raced) = (Some("lost a port to another process".to_string()), true);
                    break;
                }
                if let Some(status) = child.try_wait().unwrap() {
                    failed = Some(format!("exited with {status}"));
                    break;
                }
                if lost_port_race(&log) {
                    kill9(child);
                    failed = Some("lost a port".to_string());
                    break;
                }
                if Instant::now() > deadline {
                    kill9(child);
                    panic!("garage node {i} did not answer within {START_TIMEOUT:?}\n{}", log_tail(&log, 40));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Some(failed) = failed {
                if (raced || lost_port_race(&log)) && attempt < PORT_ATTEMPTS {
                    // So that the next attempt's race check reads only its own lines.
                    let _ = fs::write(&log, "");
                    continue;
                }
                panic!("garage node {i} {failed} at start\n{}", log_tail(&log, 40));
            }
            let ran = self.cli_ran(&node, &["node", "id", "-q"]);
            assert!(ran.success(), "garage node id: {}\n{}", ran.stderr, log_tail(&log, 40));
            node.id = ran.stdout.trim().lines().last().unwrap_or_default().to_string();
            assert!(node.id.contains('@'), "garage node id printed {:?}", ran.stdout);
            return node;
        }
        panic!("garage node {i}: no free ports after {PORT_ATTEMPTS} attempts\n{}", log_tail(&log, 40));
    }

    fn config_text(&self, dir: &Path, rpc_port: u16, s3_port: u16, admin_port: u16) -> String {
        format!(
            r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = {rf}
metadata_fsync = false
data_fsync = false
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{secret}"

[s3_api]
api_bind_addr = "127.0.0.1:{s3_port}"
s3_region = "{region}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin_port}"
admin_token = "{token}"
metrics_token = "{token}"
"#,
            meta = dir.join("meta").display(),
            data = dir.join("data").display(),
            rf = self.replication_factor,
            secret = self.rpc_secret,
            region = self.region,
            token = self.admin_token,
        )
    }

    /// A `garage` command with no inherited `GARAGE_*` settings.
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        scrub_env(&mut cmd, "GARAGE_");
        cmd
    }

    fn launch(&self, node: &mut GarageNode, server_args: &[&str], env: &[(&str, String)]) {
        let log = fs::OpenOptions::new().create(true).append(true).open(&node.log).unwrap();
        let mut cmd = self.command();
        cmd.arg("-c")
            .arg(&node.config)
            .arg("server")
            .args(server_args)
            .current_dir(&node.dir)
            .env("RUST_LOG", "garage=info,garage_api=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        node.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display())));
    }

    /// Waits (bounded) until the admin `/health` of every listed node is
    /// 200 and each reports a healthy cluster with every running node
    /// connected.
    fn wait_healthy(&mut self, nodes: &[usize]) {
        let expected = (0..self.nodes.len()).filter(|&i| self.is_running(i)).count() as u64;
        let deadline = Instant::now() + START_TIMEOUT;
        for &i in nodes {
            let health = format!("{}/health", self.admin_endpoint_of(i));
            loop {
                let healthy = matches!(http_get(&health, &[], Duration::from_secs(2)), Ok((200, _)))
                    && self.cluster_health(i).is_ok_and(|h| {
                        h["status"] == "healthy"
                            && h["connectedNodes"] == expected
                            && h["partitionsAllOk"] == h["partitions"]
                    });
                if healthy {
                    break;
                }
                if !self.is_running(i) {
                    panic!("garage node {i} exited before it was healthy\n{}", log_tail(&self.nodes[i].log, 40));
                }
                if Instant::now() > deadline {
                    let health = self.cluster_health(i);
                    panic!(
                        "garage node {i} not healthy within {START_TIMEOUT:?}: {health:?}\n{}",
                        log_tail(&self.nodes[i].log, 40)
                    );
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }
    }

    /// Node `i`'s view of the cluster: the JSON of admin
    /// `GET /v2/GetClusterHealth` (`status` "healthy", "degraded" or
    /// "unavailable", `connectedNodes`, `storageNodesUp`, `partitionsQuorum`...).
    pub fn cluster_health(&self, i: usize) -> Result<serde_json::Value, String> {
        let url = format!("{}/v2/GetClusterHealth", self.admin_endpoint_of(i));
        let token = format!("Bearer {}", self.admin_token);
        match http_get(&url, &[("Authorization", &token)], Duration::from_secs(2))? {
            (200, body) => serde_json::from_str(&body).map_err(|e| format!("{e}: {body}")),
            (status, body) => Err(format!("{status}: {body}")),
        }
    }

    /// Waits (bounded) until every running node sees exactly the running
    /// nodes connected: after `kill_node`, the others notice the loss only
    /// after a few seconds (~4 s), and until then still report "healthy".
    pub fn wait_converged(&mut self) {
        let running: Vec<usize> = (0..self.nodes.len()).filter(|&n| self.is_running(n)).collect();
        let deadline = Instant::now() + START_TIMEOUT;
        for &i in &running {
            loop {
                let health = self.cluster_health(i);
                if health.as_ref().is_ok_and(|h| h["connectedNodes"] == running.len() as u64) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "garage node {i} did not see {} nodes connected within {START_TIMEOUT:?}: {health:?}",
                    running.len()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Runs `garage -c <node i's config> <args>` (bounded); panics with its
    /// output and the node's log tail unless it succeeds. Returns stdout.
    pub fn cli(&self, i: usize, args: &[&str]) -> String {
        let node = &self.nodes[i];
        let ran = self.cli_ran(node, args);
        assert!(
            ran.success(),
            "`garage {}` on node {i} failed ({}):\n{}{}\n{}",
            args.join(" "),
            ran.status,
            ran.stdout,
            ran.stderr,
            log_tail(&node.log, 30)
        );
        ran.stdout
    }

    fn cli_ran(&self, node: &GarageNode, args: &[&str]) -> Ran {
        let mut cmd = self.command();
        cmd.arg("-c").arg(&node.config).args(args).current_dir(&node.dir).env("RUST_LOG", "warn");
        run_bounded(&mut cmd, CLI_TIMEOUT, &format!("garage {}", args.join(" ")))
    }

    /// Number of nodes started (killed ones included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// S3 endpoint (`http://127.0.0.1:PORT`) of node 0.
    pub fn endpoint(&self) -> String {
        self.endpoint_of(0)
    }

    /// S3 endpoint (`http://127.0.0.1:PORT`) of node `i`.
    pub fn endpoint_of(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].s3_port)
    }

    /// Admin API base (`http://127.0.0.1:PORT`) of node `i`; `/health` needs
    /// no token, `/v2/...` wants `Authorization: Bearer <admin_token>`.
    pub fn admin_endpoint_of(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].admin_port)
    }

    /// RPC address (`127.0.0.1:PORT`) of node `i`.
    pub fn rpc_addr_of(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].rpc_port)
    }

    /// The log file of node `i`.
    pub fn log_of(&self, i: usize) -> PathBuf {
        self.nodes[i].log.clone()
    }

    /// Whether node `i`'s process is running.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes[i].child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL node `i` (and reap it), as a crash would.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            kill9(&mut child);
        }
    }

    /// Starts a killed node `i` again on its old ports and data, and waits
    /// until every running node sees a healthy cluster again.
    pub fn restart_node(&mut self, i: usize) {
        self.kill_node(i);
        let mut node = GarageNode {
            child: None,
            dir: self.nodes[i].dir.clone(),
            config: self.nodes[i].config.clone(),
            log: self.nodes[i].log.clone(),
            s3_port: self.nodes[i].s3_port,
            admin_port: self.nodes[i].admin_port,
            rpc_port: self.nodes[i].rpc_port,
            id: self.nodes[i].id.clone(),
        };
        // A single node keeps its layout and key in its metadata: no flags.
        self.launch(&mut node, &[], &[]);
        self.nodes[i] = node;
        let running: Vec<usize> = (0..self.nodes.len()).filter(|&n| self.is_running(n)).collect();
        // Left alone, a restarted node and its peers redial each other only
        // after a backoff (10-30 s; /health says 503 meanwhile): once it
        // answers, connect it to each peer and each peer to it.
        let admin = format!("{}/health", self.admin_endpoint_of(i));
        let log = self.nodes[i].log.clone();
        let child = self.nodes[i].child.as_mut().unwrap();
        wait_until(&format!("garage node {i}"), child, &log, START_TIMEOUT, || {
            http_get(&admin, &[], Duration::from_secs(2)).is_ok()
        });
        for &n in running.iter().filter(|&&n| n != i) {
            for (from, to) in [(i, n), (n, i)] {
                let peer = self.nodes[to].id.clone();
                let deadline = Instant::now() + START_TIMEOUT;
                while !self.cli_ran(&self.nodes[from], &["node", "connect", &peer]).success() {
                    assert!(
                        Instant::now() < deadline,
                        "node {from} cannot connect to node {to}\n{}",
                        log_tail(&log, 40)
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        self.wait_healthy(&running);
    }

    /// `SPILLWAY_*` settings that point a spillway node at this Garage.
    pub fn settings(&self) -> Vec<(String, String)> {
        [
            ("SPILLWAY_STORAGE", "s3".to_string()),
            ("SPILLWAY_S3__ENDPOINT", self.endpoint()),
            ("SPILLWAY_S3__REGION", self.region.clone()),
            ("SPILLWAY_S3__BUCKET", self.bucket.clone()),
            ("SPILLWAY_S3__ACCESS_KEY_ID", self.access_key.clone()),
            ("SPILLWAY_S3__SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("SPILLWAY_S3__PATH_STYLE", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The temporary directory holding every node's config, data and log.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The bucket as node 0's admin API counts it: the JSON of
    /// `GET /v2/GetBucketInfo?globalAlias=<bucket>` (`objects`, `bytes`,
    /// `unfinishedUploads`, `unfinishedMultipartUploads`, ...). The S3 API
    /// offers no simple way to count unfinished multipart uploads here
    /// (object_store cannot list them); Garage's counters can.
    pub fn bucket_info(&self) -> Result<serde_json::Value, String> {
        let url = format!("{}/v2/GetBucketInfo?globalAlias={}", self.admin_endpoint_of(0), self.bucket);
        let token = format!("Bearer {}", self.admin_token);
        match http_get(&url, &[("Authorization", &token)], Duration::from_secs(5))? {
            (200, body) => serde_json::from_str(&body).map_err(|e| format!("{e}: {body}")),
            (status, body) => Err(format!("GetBucketInfo: {status}: {body}")),
        }
    }

    /// An S3 client of the bucket (node 0, the test's key), to look at or
    /// plant objects behind the nodes' backs.
    pub fn s3(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_region(&self.region)
            .with_bucket_name(&self.bucket)
            .with_access_key_id(&self.access_key)
            .with_secret_access_key(&self.secret_key)
            .with_virtual_hosted_style_request(false)
            .with_client_options(object_store::ClientOptions::new().with_allow_http(true))
            .build()
            .expect("an S3 client for the test's Garage")
    }

    /// The keys of every object below `prefix` (`""`: the whole bucket),
    /// sorted: one ListObjectsV2 walk, bounded by `CLI_TIMEOUT`.
    pub async fn list_objects(&self, prefix: &str) -> Vec<String> {
        use futures_util::TryStreamExt;
        use object_store::ObjectStore;
        let s3 = self.s3();
        let prefix = (!prefix.is_empty()).then(|| object_store::path::Path::from(prefix));
        let listed = tokio::time::timeout(CLI_TIMEOUT, s3.list(prefix.as_ref()).try_collect::<Vec<_>>())
            .await
            .unwrap_or_else(|_| panic!("listing the bucket took longer than {CLI_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("listing the bucket below `{}`: {e}", prefix.unwrap_or_default()));
        let mut keys: Vec<String> = listed.into_iter().map(|meta| meta.location.to_string()).collect();
        keys.sort();
        keys
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        // Every node is SIGKILLed and reaped (GarageNode's Drop) before
        // `root`, the temp dir, is removed.
        self.nodes.clear();
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL.
// ---------------------------------------------------------------------------

/// A running PostgreSQL server with trust authentication on 127.0.0.1 and
/// an empty database `spillway`.
pub struct Postgres {
    /// `postgres://USER@127.0.0.1:PORT/spillway`
    pub url: String,
    pub port: u16,
    /// The database superuser (the OS user the server runs as).
    pub user: String,
    child: Option<Child>,
    bin: PathBuf,
    /// `Some((uid, gid))` when running as root: the server runs as this user.
    run_as: Option<(u32, u32)>,
    log: PathBuf,
    root: TempDir,
}

impl Postgres {
    /// `initdb` in a temp dir, then the server on a free loopback port
    /// (fsync off), then `CREATE DATABASE spillway`. As root, the server and
    /// `initdb` (which refuse to run as root) run as the `postgres` user (or
    /// `nobody`) through `setpriv`, on a temp dir chowned to that user.
    pub fn start() -> Postgres {
        let bin = pg_bin_dir().expect("postgres not installed (see cluster::skip_without_postgres)");
        let root = tempfile::Builder::new().prefix("spillway-pg-").tempdir().expect("temp dir");
        let (user, run_as) = if effective_uid() == 0 {
            let user = if user_ids("postgres").is_some() { "postgres" } else { "nobody" };
            let ids = user_ids(user).unwrap_or_else(|| panic!("running as root, and no user {user} to run postgres"));
            std::os::unix::fs::chown(root.path(), Some(ids.0), Some(ids.1)).expect("chown the postgres temp dir");
            (user.to_string(), Some(ids))
        } else {
            (current_user_name(), None)
        };
        let mut pg = Postgres {
            url: String::new(),
            port: 0,
            user,
            child: None,
            bin,
            run_as,
            log: root.path().join("postgres.log"),
            root,
        };
        let data = pg.root.path().join("data");
        let mut initdb = pg.server_command("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            &pg.user,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]);
        let ran = run_bounded(&mut initdb, CLI_TIMEOUT, "initdb");
        assert!(ran.success(), "initdb failed ({}):\n{}{}", ran.status, ran.stdout, ran.stderr);
        pg.launch(None);
        pg.url = pg.database_url("spillway");
        pg.sql("postgres", "CREATE DATABASE spillway");
        pg
    }

    /// A command for a server binary, as the server's user when we are root.
    fn server_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = match self.run_as {
            Some((uid, gid)) => {
                let mut cmd = Command::new("setpriv");
                cmd.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(path);
                cmd
            }
            None => Command::new(path),
        };
        scrub_env(&mut cmd, "PG");
        cmd.current_dir(self.root.path()).env("LC_ALL", "C");
        cmd
    }

    /// A client program (`psql`, `pg_isready`) with no inherited `PG*`
    /// settings: from the server's bin dir, else from `PATH`.
    fn client_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = Command::new(if is_executable(&path) { path } else { PathBuf::from(program) });
        scrub_env(&mut cmd, "PG");
        cmd.env("PGCONNECT_TIMEOUT", "10");
        cmd
    }

    /// Starts the server on port `fixed`, else on a fresh port (retrying when the
    /// port was taken meanwhile), and waits until it accepts connections.
    fn launch(&mut self, fixed: Option<u16>) {
        let data = self.root.path().join("data");
        for attempt in 1..=PORT_ATTEMPTS {
            let port = fixed.unwrap_or_else(free_port);
            let log = fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
            let mut cmd = self.server_command("postgres");
            cmd.arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
                .arg(self.root.path())
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
                .args(["-c", "max_connections=100", "-c", "shared_buffers=32MB"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            // Held in `self` at once: a panic below still stops it (Drop).
            self.child = Some(cmd.spawn().expect("spawn postgres"));
            self.port = port;
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if self.is_ready(port) {
                    // Another test's server that drew the same free port may
                    // be what answers (see `Garage::spawn_node`).
                    if listens_on(self.child.as_ref().unwrap().id(), port) {
                        return;
                    }
                    if fixed.is_none() && attempt < PORT_ATTEMPTS {
                        kill9(&mut self.child.take().unwrap());
                        break;
                    }
                }
                if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                    self.child = None;
                    if fixed.is_none() && lost_port_race(&self.log) && attempt < PORT_ATTEMPTS {
                        break;
                    }
                    panic!("postgres exited with {status} at start\n{}", log_tail(&self.log, 40));
                }
                if Instant::now() > deadline {
                    panic!("postgres did not accept connections within {START_TIMEOUT:?}\n{}", log_tail(&self.log, 40));
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        panic!("postgres: no free port after {PORT_ATTEMPTS} attempts\n{}", log_tail(&self.log, 40));
    }

    fn is_ready(&self, port: u16) -> bool {
        let mut cmd = self.client_command("pg_isready");
        cmd.args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", &self.user, "-d", "postgres", "-t", "2"]);
        run_bounded(&mut cmd, Duration::from_secs(10), "pg_isready").success()
    }

    /// The URL of database `name` on this server.
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://{}@127.0.0.1:{}/{}", self.user, self.port, name)
    }

    /// A fresh, empty database `name` (lowercase letters, digits and `_`)
    /// on this server; returns its URL.
    pub fn new_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "database name {name:?}: use [a-z0-9_]"
        );
        self.sql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.database_url(name)
    }

    /// Runs SQL with `psql` in database `db` (name or URL); panics on error.
    /// Returns the rows, unaligned (`|`-separated), tuples only.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let url = if db.contains("://") { db.to_string() } else { self.database_url(db) };
        let mut cmd = self.client_command("psql");
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", &url, "-c", sql]);
        let ran = run_bounded(&mut cmd, CLI_TIMEOUT, "psql");
        assert!(ran.success(), "psql {url} -c {sql:?} failed ({}):\n{}{}", ran.status, ran.stdout, ran.stderr);
        ran.stdout
    }

    /// `SPILLWAY_*` settings that point a spillway node at this server.
    pub fn settings(&self) -> Vec<(String, String)> {
        vec![("SPILLWAY_INDEX".into(), "postgres".into()), ("SPILLWAY_POSTGRES_URL".into(), self.url.clone())]
    }

    /// The server log.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts the stopped server again, on its port: the URLs handed out
    /// stay good.
    pub fn restart(&mut self) {
        self.stop();
        self.launch(Some(self.port));
    }

    /// Stops the server: SIGINT (fast shutdown), bounded, then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            // Fast shutdown. No libc here: `pg_ctl kill` sends the signal, as
            // the server's user (a root-owned `kill(1)` may not be installed).
            let mut kill = self.server_command("pg_ctl");
            kill.args(["kill", "INT", &child.id().to_string()]);
            let sent = run_within(&mut kill, Duration::from_secs(10)).is_ok_and(|ran| ran.success());
            let deadline = Instant::now() + STOP_TIMEOUT;
            while sent && Instant::now() < deadline {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        kill9(&mut child);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        // `root` (a TempDir) is removed after this.
    }
}

/// The effective uid of this process (from /proc, no libc).
fn effective_uid() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|uid| uid.parse().ok())
        .unwrap_or_else(|| {
            use std::os::unix::fs::MetadataExt;
            fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX)
        })
}

/// (uid, gid) of a user, through `id` (so NSS is honoured).
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let ran = run_bounded(Command::new("id").args([flag, user]), Duration::from_secs(10), "id");
        ran.success().then(|| ran.stdout.trim().parse().ok()).flatten()
    };
    Some((id("-u")?, id("-g")?))
}

/// The name of the user we run as (the database superuser `initdb` makes).
fn current_user_name() -> String {
    let ran = run_bounded(Command::new("id").arg("-un"), Duration::from_secs(10), "id -un");
    Some(ran.stdout.trim().to_string())
        .filter(|name| ran.success() && !name.is_empty())
        .or_else(|| std::env::var("USER").ok())
        .expect("the current user's name")
}
