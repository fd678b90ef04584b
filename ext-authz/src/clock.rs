//! Time, injected (ARCHITECTURE convention 7): token expiry, JWKS refresh and the unknown-`kid`
//! refetch bound all read a [`Clock`], so tests move time instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time as a duration since the Unix epoch: JWT `exp`/`nbf`/`iat` are Unix seconds,
/// and one time base for everything keeps comparisons trivial.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Duration;

    /// Whole Unix seconds, the unit of JWT NumericDate comparisons.
    fn now_secs(&self) -> u64 {
        self.now().as_secs()
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        // A clock before 1970 is a broken host; treating it as the epoch makes every token
        // look not-yet-valid rather than panicking on the hot path.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
    }
}

/// A clock that only moves when told to: for tests of expiry and refresh logic.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// Starts at `start` (since the Unix epoch), millisecond resolution.
    pub fn new(start: Duration) -> Self {
        Self(Arc::new(AtomicU64::new(millis(start))))
    }

    /// Starts at the current system time, so tokens minted with real timestamps line up.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(millis(by), Ordering::SeqCst);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let c = ManualClock::new(Duration::from_secs(100));
        assert_eq!(c.now_secs(), 100);
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.now(), Duration::from_millis(101_500));
        assert_eq!(c.now_secs(), 101);
    }
}
