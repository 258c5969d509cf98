//! Places where a test can make the node wait (the `failpoints` feature,
//! with the `fail` crate's `FAILPOINTS` variable): a batch held open for a
//! kill -9, a blob's second name made but not yet renamed into place, one
//! key's install slowed while others commit, one key's read held, one
//! key's rename into its folder held, a final tus upload held before it
//! reads its partials, a staged object's removal slowed, a staged file's
//! fsync failed. Without the feature these compile to nothing.

/// Runs the action configured for `name` (say `sleep(50)`), if any.
pub fn hold(name: &str) {
    let _ = io(name);
}

/// Like [`hold`], and fails with an I/O error where `name` is configured
/// as `return`: a disk that fails an fsync, say.
pub fn io(name: &str) -> std::io::Result<()> {
    #[cfg(feature = "failpoints")]
    if fail::list().iter().any(|(configured, _)| configured == name) {
        // A test waits for this line before it acts (a kill -9, say).
        log::info!("failpoint {name}: reached");
        if fail::eval(name, |_| ()).is_some() {
            return Err(std::io::Error::other(format!("failpoint {name}")));
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
    Ok(())
}

/// Sleeps when `name` is configured as `return(KEY@MILLISECONDS)` and
/// `key` is KEY.
pub fn delay_key(name: &str, key: &str) {
    if let Some(wait) = delay_of(name, key) {
        std::thread::sleep(wait);
    }
}

/// Like [`delay_key`], without blocking the thread: a request's future
/// stays pending meanwhile, as it would waiting for I/O.
pub async fn delay_key_async(name: &str, key: &str) {
    if let Some(wait) = delay_of(name, key) {
        tokio::time::sleep(wait).await;
    }
}

fn delay_of(name: &str, key: &str) -> Option<std::time::Duration> {
    #[cfg(feature = "failpoints")]
    if let Some(Some(arg)) = fail::eval(name, |arg| arg) {
        if let Some((slow, ms)) = arg.rsplit_once('@') {
            if slow == key {
                log::info!("failpoint {name}: `{key}` waits {ms} ms");
                return Some(std::time::Duration::from_millis(ms.parse().unwrap_or(0)));
            }
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = (name, key);
    None
}
