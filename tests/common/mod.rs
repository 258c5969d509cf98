//! Test harness: starts the real `spillway` binary on an ephemeral loopback
//! port with its own temporary data and spool directories, and talks to it
//! over real sockets. Every test owns its node; nothing is shared.

#![allow(dead_code)]

pub mod client;
pub mod cluster;
pub mod pair;
pub mod reply;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct TestNode {
    child: Option<Child>,
    pub port: u16,
    pub base: String,
    pub root: TempDir,
    pub data_dir: PathBuf,
    pub spool_dir: PathBuf,
    env: Vec<(String, String)>,
    pub client: reqwest::Client,
}

impl TestNode {
    /// A node with test-friendly defaults (no disk reserve, short stall).
    pub fn start() -> TestNode {
        TestNode::start_with(&[])
    }

    /// A node with extra `SPILLWAY_*` settings (they override the defaults).
    pub fn start_with(settings: &[(&str, &str)]) -> TestNode {
        let root = tempfile::tempdir().expect("temp dir");
        let data_dir = root.path().join("data");
        let spool_dir = root.path().join("spool");
        let mut env: Vec<(String, String)> = vec![
            ("SPILLWAY_DATA_DIR".into(), data_dir.display().to_string()),
            ("SPILLWAY_SPOOL_DIR".into(), spool_dir.display().to_string()),
            ("SPILLWAY_DISK_RESERVE".into(), "0".into()),
            ("SPILLWAY_STALL_TIMEOUT".into(), "5".into()),
        ];
        for (k, v) in settings {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        }
        let mut node = TestNode {
            child: None,
            port: 0,
            base: String::new(),
            data_dir,
            spool_dir,
            root,
            env,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        };
        node.launch();
        node
    }

    fn log_path(&self) -> PathBuf {
        self.root.path().join("node.log")
    }

    /// Starts (or restarts) the binary and waits for its port.
    pub fn launch(&mut self) {
        let log_path = self.log_path();
        let log = fs::OpenOptions::new().create(true).append(true).open(&log_path).unwrap();
        let start_len = log.metadata().unwrap().len();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_spillway"));
        cmd.current_dir(self.root.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ROCKET_CONFIG", self.root.path().join("none.toml"))
            .env("ROCKET_CLI_COLORS", "false")
            .env("ROCKET_LOG_LEVEL", "normal")
            .env("SPILLWAY_ADDRESS", "127.0.0.1")
            .env("SPILLWAY_PORT", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn spillway");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = fs::read_to_string(&log_path).unwrap_or_default();
            let fresh = &text[(start_len as usize).min(text.len())..];
            if let Some(line) = fresh.lines().find(|l| l.starts_with("spillway listening on ")) {
                let port: u16 = line.rsplit(':').next().unwrap().trim().parse().unwrap();
                self.port = port;
                self.base = format!("http://127.0.0.1:{port}");
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("spillway exited with {status} before listening:\n{fresh}");
            }
            assert!(Instant::now() < deadline, "spillway did not start in time:\n{fresh}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The running node's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the node is running").id()
    }

    /// The node's open descriptors, each as its number and what it points
    /// at (`/proc/PID/fd`; a file removed since reads `… (deleted)`).
    pub fn open_files(&self) -> Vec<(String, PathBuf)> {
        let fds = fs::read_dir(format!("/proc/{}/fd", self.pid())).expect("the node's descriptors");
        fds.flatten()
            .filter_map(|fd| Some((fd.file_name().to_string_lossy().into_owned(), fs::read_link(fd.path()).ok()?)))
            .collect()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
    }

    /// SIGTERM, as a service manager stops it; waits (bounded) for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let child = self.child.take().expect("the node is running");
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        wait_bounded(child, Duration::from_secs(30), "spillway after SIGTERM")
    }

    /// The node's output so far. A running node writes its info lines in
    /// batches (within 100 ms), in order: so a request is made first, and
    /// once its access line is in the file, every line logged before it is
    /// too. A node that does not answer within 10 s is read as it is.
    pub fn log(&self) -> String {
        if self.child.is_some() {
            self.wait_log_written(Duration::from_secs(10));
        }
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `lines` lines of [`TestNode::log`], for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        if self.child.is_some() {
            self.wait_log_written(Duration::from_secs(10));
        }
        cluster::log_tail(&self.log_path(), lines)
    }

    /// The node's output as it is in the file now (see [`TestNode::log`]).
    pub fn log_as_written(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn wait_log_written(&self, within: Duration) {
        static MARKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mark =
            format!("log-mark-{}-{}", std::process::id(), MARKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return };
        let _ = s.set_read_timeout(Some(within));
        let request =
            format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: {mark}\r\nConnection: close\r\n\r\n");
        if s.write_all(request.as_bytes()).is_err() || s.read_to_end(&mut Vec::new()).is_err() {
            return;
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if fs::read_to_string(self.log_path()).is_ok_and(|log| log.contains(&mark)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn datasets_dir(&self) -> PathBuf {
        self.data_dir.join("datasets")
    }

    /// Files in the spool and staging directories (uploads in flight or left over).
    pub fn spool_files(&self) -> Vec<PathBuf> {
        let mut files = files_below(&self.spool_dir);
        files.extend(files_below(&self.data_dir.join("staging")));
        files
    }

    /// Every file below `datasets/`.
    pub fn dataset_files(&self) -> Vec<PathBuf> {
        files_below(&self.datasets_dir())
    }

    /// Waits (bounded) until no upload is in flight on disk.
    pub fn wait_spool_empty(&self, within: Duration) -> Vec<PathBuf> {
        let deadline = Instant::now() + within;
        loop {
            let files = self.spool_files();
            if files.is_empty() || Instant::now() > deadline {
                return files;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A raw TCP connection to the node, for requests reqwest cannot make.
    pub fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    }

    pub async fn put(&self, key: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client.put(self.url(&format!("/data/{key}"))).body(body).send().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path).await;
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        // A failed assertion rarely says why the node answered as it did;
        // its log does, and the temporary directory goes with the test.
        if std::thread::panicking() && self.child.is_some() {
            eprintln!("the node's log when the test failed:\n{}", self.log_tail(60));
        }
        self.kill9();
    }
}

pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_below(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Sends a raw HTTP request and returns the whole response text (the
/// connection is closed by `Connection: close`).
pub fn raw_request(node: &TestNode, request: &[u8]) -> String {
    let mut s = node.raw();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw HTTP response.
pub fn status_of(response: &str) -> u16 {
    response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Deterministic pseudo-random bytes (xorshift), so big bodies are generated,
/// not committed, and differ per seed.
pub fn generated(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    out
}

/// A streaming body of `len` generated bytes in `chunk`-sized pieces, for
/// chunked uploads far bigger than we want to hold.
pub fn generated_stream(
    len: u64,
    seed: u64,
    chunk: usize,
) -> (reqwest::Body, std::sync::Arc<std::sync::Mutex<(blake3::Hasher, sha2::Sha256)>>) {
    use sha2::Digest;
    let hashes = std::sync::Arc::new(std::sync::Mutex::new((blake3::Hasher::new(), sha2::Sha256::new())));
    let h = hashes.clone();
    let block = std::sync::Arc::new(generated(chunk, seed));
    let pieces = len.div_ceil(chunk as u64);
    let stream = futures_util::stream::iter(0..pieces).map(move |i| {
        let n = ((len - i * chunk as u64).min(chunk as u64)) as usize;
        // Vary each piece so that a misplaced piece changes the hash.
        let mut piece = block[..n].to_vec();
        piece[..8.min(n)].copy_from_slice(&i.to_le_bytes()[..8.min(n)]);
        let mut g = h.lock().unwrap();
        g.0.update(&piece);
        g.1.update(&piece);
        Ok::<_, std::io::Error>(bytes::Bytes::from(piece))
    });
    (reqwest::Body::wrap_stream(stream), hashes)
}

use futures_util::StreamExt;

// ---------------------------------------------------------------------------
// Helpers for the fault-injection tests (faults.rs, crash.rs, fsck.rs).
// ---------------------------------------------------------------------------

impl TestNode {
    /// Whether the node process is alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Runs an offline subcommand (`fsck`, `fsck --repair`, `reindex`) of the
    /// real binary with this node's settings and directories. Bounded: a run
    /// longer than `CLI_TIMEOUT` is killed and the test fails.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        const CLI_TIMEOUT: Duration = Duration::from_secs(120);
        let n = CLI_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out_path = self.root.path().join(format!("cli-{n}.out"));
        let err_path = self.root.path().join(format!("cli-{n}.err"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_spillway"));
        cmd.args(args)
            .current_dir(self.root.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ROCKET_CONFIG", self.root.path().join("none.toml"))
            .env("ROCKET_CLI_COLORS", "false")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(&err_path).unwrap());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn spillway cli");
        let status = wait_bounded(child, CLI_TIMEOUT, &format!("`spillway {}`", args.join(" ")));
        CliOutput {
            code: status.code(),
            stdout: fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: fs::read_to_string(&err_path).unwrap_or_default(),
        }
    }

    /// Every record of the catalog (one page of up to 10,000).
    pub async fn list_all(&self) -> Vec<serde_json::Value> {
        let listed = self.json("/datasets?limit=10000").await;
        listed.as_array().expect("a JSON array").clone()
    }
}

static CLI_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// What an offline subcommand printed and how it exited.
#[derive(Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// The blake3 of some bytes as lowercase hex.
pub fn b3(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// One HTTP/1.1 response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    pub fn is_problem(&self) -> bool {
        self.header("content-type").is_some_and(|ct| ct.starts_with("application/problem+json"))
    }

    /// The problem detail's `code`, if the body is problem+json with one.
    pub fn code(&self) -> Option<String> {
        if !self.is_problem() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v["code"].as_str().map(str::to_owned)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A parsed response head: where it ends, status, headers, body length.
type Head = (usize, u16, Vec<(String, String)>, Option<usize>);

/// Reads one response (status line, headers, and a body framed by
/// `Content-Length` or by the end of the connection) within `within`.
/// Interim 1xx responses are skipped. `Err` says what arrived instead.
pub fn read_response(s: &mut TcpStream, within: Duration) -> Result<RawResponse, String> {
    let deadline = Instant::now() + within;
    let mut buf: Vec<u8> = Vec::new();
    let mut tmp = vec![0u8; 64 * 1024];
    let mut head: Option<Head> = None;
    let mut eof = false;
    loop {
        if head.is_none() {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&buf[..pos]).into_owned();
                let mut lines = text.split("\r\n");
                let status: u16 = lines
                    .next()
                    .and_then(|l| l.split(' ').nth(1))
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("not an HTTP response: {text:?}"))?;
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                if (100..200).contains(&status) {
                    buf.drain(..pos + 4);
                    continue;
                }
                let length = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok());
                head = Some((pos + 4, status, headers, length));
            }
        }
        if let Some((start, _, _, Some(len))) = &head {
            if buf.len() >= start + len {
                break;
            }
        }
        if eof {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            if head.is_some() {
                break;
            }
            return Err(format!(
                "no response within {within:?} ({} bytes arrived: {:?})",
                buf.len(),
                String::from_utf8_lossy(&buf[..buf.len().min(200)])
            ));
        }
        let wait = (deadline - now).clamp(Duration::from_millis(1), Duration::from_millis(200));
        s.set_read_timeout(Some(wait)).unwrap();
        match s.read(&mut tmp) {
            Ok(0) => eof = true,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => {
                if head.is_none() && buf.windows(4).all(|w| w != b"\r\n\r\n") {
                    return Err(format!("connection failed before a response ({e}; {} bytes arrived)", buf.len()));
                }
                eof = true;
            }
        }
    }
    let (start, status, headers, length) = head.ok_or_else(|| {
        format!(
            "connection closed before a response ({} bytes arrived: {:?})",
            buf.len(),
            String::from_utf8_lossy(&buf[..buf.len().min(200)])
        )
    })?;
    let end = length.map_or(buf.len(), |l| (start + l).min(buf.len()));
    Ok(RawResponse { status, headers, body: buf[start..end].to_vec() })
}

/// Whether the peer has closed the connection (EOF or reset) within `within`;
/// any bytes that still arrive are discarded.
pub fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut tmp = vec![0u8; 64 * 1024];
    while Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        match s.read(&mut tmp) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

// ---------------------------------------------------------------------------
// Helpers for the access tests (access.rs).
// ---------------------------------------------------------------------------

impl TestNode {
    /// Sets (`Some`) or removes (`None`) a `SPILLWAY_*` setting for the next
    /// `launch()`; the running process is not touched.
    pub fn set_setting(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            self.env.push((key.to_string(), value.to_string()));
        }
    }
}

/// `GET /data/{key}` answers 200 with exactly `expected` (the message names
/// sizes and blake3s, not megabytes of bytes).
pub async fn assert_serves(node: &TestNode, key: &str, expected: &[u8]) {
    let resp = node.get(&format!("/data/{key}")).await;
    assert_eq!(resp.status(), 200, "GET /data/{key}");
    let got = resp.bytes().await.unwrap();
    assert_same_bytes(&got, expected, &format!("GET /data/{key}"));
}

/// `got` is exactly `expected`; the message names `what`, the sizes and the
/// blake3s, not megabytes of bytes.
pub fn assert_same_bytes(got: &[u8], expected: &[u8], what: &str) {
    assert!(
        got == expected,
        "{what}: {} bytes, blake3 {}; expected {} bytes, blake3 {}",
        got.len(),
        b3(got),
        expected.len(),
        b3(expected)
    );
}

/// Waits for a child process at most `within`; past that it is killed and
/// the test fails, naming `what`.
pub fn wait_bounded(mut child: std::process::Child, within: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} ran longer than {within:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// xorshift64*, enough for a reproducible schedule (crash loops).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------------------
// Helpers for the version and scrub tests (versions.rs, scrub.rs), added
// with them.
// ---------------------------------------------------------------------------

impl TestNode {
    /// A metric of `/metrics`, summed over its label sets; `None` when the
    /// node does not export it.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let r = reply::send(self.client.get(self.url("/metrics")), "GET /metrics").await;
        assert_eq!(r.status, 200, "GET /metrics: {}", r.describe());
        let samples: Vec<f64> = r
            .text()
            .lines()
            .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .collect();
        (!samples.is_empty()).then(|| samples.iter().sum())
    }
}

/// Polls `check` every 100 ms until it holds (`true`) or `within` has
/// passed (`false`): the one way these tests wait for background work.
pub async fn eventually(within: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `reply` is an RFC 9457 problem with this status and `code`.
pub fn assert_problem(reply: &reply::Reply, status: u16, code: &str, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.describe());
    assert_eq!(reply.code().as_deref(), Some(code), "{what}: {}", reply.describe());
}
