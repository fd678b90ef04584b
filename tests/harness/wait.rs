//! Bounded waiting for an event: poll a condition until it holds or the deadline passes.
//! Tests never sleep a fixed time to "let things settle".

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is polled. Short: the thing awaited (an ACK, a listener) usually
/// arrives within milliseconds.
const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it returns `Ok(value)` or `timeout` passes; then fails with the last
/// error `check` gave, which should say what was expected and what was seen.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                anyhow::bail!("timed out after {timeout:?} waiting for {what}: {e:#}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}
