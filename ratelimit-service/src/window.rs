//! The counting algorithm: a sliding log compressed into sub-window buckets, rounded so that it
//! can only err on the safe side.
//!
//! **Guarantee.** For every limit, at most `limit` hits are admitted in any interval
//! `(t - per, t]`, for every `t`, with no exception: not at window edges, not across instances
//! sharing the store (the Redis store runs the same steps in one Lua script).
//!
//! **How.** Time is cut into buckets of `bucket_ms = ceil(per_ms / SUB_WINDOWS)`. A hit admitted
//! at time `s` is recorded in bucket `k = ceil(s / bucket_ms)`, i.e. as if it happened at the
//! bucket's *end* `k * bucket_ms >= s`. At time `now` a bucket still counts while
//! `k * bucket_ms + per_ms > now`. A request of `hits` is admitted iff
//! `counted + hits <= limit`.
//!
//! *Why it never over-admits:* take any interval `(t - per, t]` and the last hit admitted in it,
//! at time `s <= t`. Every earlier hit of the interval happened after `t - per >= s - per`, and
//! was recorded no earlier than it happened, so it was still counted when `s` was decided;
//! `s` was admitted only if all of them plus itself fit in `limit`.
//!
//! *What it costs (the error bound):* a hit keeps counting for at most `bucket_ms` longer than an
//! exact sliding log would keep it, so capacity comes back between `per` and
//! `per + per / SUB_WINDOWS` after it was used (at most 1.7 % late; for `per = 1m`, at most 1 s
//! late). Nothing is ever admitted that an exact log would refuse. Memory: at most
//! `SUB_WINDOWS` (bucket, count) pairs per counter, whatever the limit — an exact log would keep
//! one timestamp per admitted hit.

use std::collections::VecDeque;
use std::time::Duration;

/// Buckets per window. 60 makes a minute's buckets one second wide and an hour's one minute;
/// more buckets would shorten the late release but cost the Redis script more fields to scan.
pub const SUB_WINDOWS: u64 = 60;

/// The numbers of one limit that the algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowSpec {
    pub limit: u64,
    pub per_ms: u64,
    pub bucket_ms: u64,
}

impl WindowSpec {
    /// `per` is at least 1 ms here; the limits model only lets whole seconds through.
    pub fn new(limit: u64, per: Duration) -> Self {
        let per_ms = u64::try_from(per.as_millis()).unwrap_or(u64::MAX).max(1);
        Self {
            limit,
            per_ms,
            bucket_ms: per_ms.div_ceil(SUB_WINDOWS).max(1),
        }
    }

    /// The bucket a hit at `now_ms` is recorded in.
    pub fn bucket_of(&self, now_ms: u64) -> u64 {
        now_ms.div_ceil(self.bucket_ms)
    }

    /// When bucket `k` stops counting.
    fn expiry_of(&self, k: u64) -> u64 {
        k.saturating_mul(self.bucket_ms).saturating_add(self.per_ms)
    }
}

/// What a counter says about one request, before or after consuming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterState {
    /// Hits counted in the window: including this request's if it was admitted.
    pub counted: u64,
    pub limit: u64,
    /// Whether this counter alone would admit the request.
    pub fits: bool,
    /// Until every hit now counted has left the window (the quota is whole again).
    pub reset_after_ms: u64,
    /// Until this counter would admit the request; 0 when it fits now.
    pub retry_after_ms: u64,
}

impl CounterState {
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.counted)
    }
}

/// One counter's buckets, oldest first, empty buckets never stored.
#[derive(Debug, Clone, Default)]
pub struct SlidingWindow {
    buckets: VecDeque<(u64, u64)>,
}

impl SlidingWindow {
    /// Drops buckets that no longer count at `now_ms`.
    fn prune(&mut self, spec: &WindowSpec, now_ms: u64) {
        while let Some(&(k, _)) = self.buckets.front() {
            if spec.expiry_of(k) <= now_ms {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }

    fn counted(&self) -> u64 {
        self.buckets.iter().map(|&(_, c)| c).sum()
    }

    /// Whether `hits` more would fit at `now_ms`, without consuming.
    pub fn check(&mut self, spec: &WindowSpec, now_ms: u64, hits: u64) -> CounterState {
        self.prune(spec, now_ms);
        let counted = self.counted();
        let fits = counted.saturating_add(hits) <= spec.limit;
        let reset_after_ms = self
            .buckets
            .back()
            .map_or(0, |&(k, _)| spec.expiry_of(k).saturating_sub(now_ms));
        let retry_after_ms = if fits {
            0
        } else {
            self.retry_after(spec, now_ms, counted, hits)
        };
        CounterState {
            counted,
            limit: spec.limit,
            fits,
            reset_after_ms,
            retry_after_ms,
        }
    }

    /// The first moment enough old buckets have left for `hits` to fit. A request larger than
    /// the limit never fits; it is told to come back after a whole window.
    fn retry_after(&self, spec: &WindowSpec, now_ms: u64, counted: u64, hits: u64) -> u64 {
        if hits > spec.limit {
            return spec.per_ms;
        }
        let mut left = counted;
        for &(k, c) in &self.buckets {
            left -= c;
            if left.saturating_add(hits) <= spec.limit {
                return spec.expiry_of(k).saturating_sub(now_ms);
            }
        }
        spec.per_ms
    }

    /// Records `hits` at `now_ms`; call after [`check`](Self::check) said it fits.
    pub fn consume(&mut self, spec: &WindowSpec, now_ms: u64, hits: u64) {
        let k = spec.bucket_of(now_ms);
        match self.buckets.back_mut() {
            Some((last, c)) if *last == k => *c = c.saturating_add(hits),
            // A clock that stepped back (the memory store's wall clock) may hand out a bucket
            // older than the newest: merging into the newest keeps the order and only counts the
            // hits a little longer, the safe direction.
            Some((last, c)) if *last > k => *c = c.saturating_add(hits),
            _ => self.buckets.push_back((k, hits)),
        }
    }

    /// When the newest bucket stops counting: after that the counter is empty and can go.
    pub fn expires_at_ms(&self, spec: &WindowSpec) -> u64 {
        self.buckets.back().map_or(0, |&(k, _)| spec.expiry_of(k))
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(limit: u64, per_s: u64) -> WindowSpec {
        WindowSpec::new(limit, Duration::from_secs(per_s))
    }

    /// Runs one request through check + consume, as a store does.
    fn hit(w: &mut SlidingWindow, s: &WindowSpec, now: u64) -> bool {
        let st = w.check(s, now, 1);
        if st.fits {
            w.consume(s, now, 1);
        }
        st.fits
    }

    #[test]
    fn bucket_width_is_a_sixtieth_of_the_window_rounded_up() {
        assert_eq!(spec(1, 60).bucket_ms, 1_000);
        assert_eq!(spec(1, 1).bucket_ms, 17);
        assert_eq!(spec(1, 3600).bucket_ms, 60_000);
    }

    #[test]
    fn ten_per_two_seconds_admits_exactly_ten_of_thirty_then_again_after_the_window() {
        let s = spec(10, 2);
        let mut w = SlidingWindow::default();
        let t0 = 1_700_000_000_000;
        let passed = (0..30).filter(|i| hit(&mut w, &s, t0 + i)).count();
        assert_eq!(passed, 10);
        // Still refused until the first hit's bucket has left the window (2 s plus at most one
        // bucket of rounding)...
        let first_free = s.expiry_of(s.bucket_of(t0));
        assert!(first_free >= t0 + 2_000 && first_free <= t0 + 2_000 + s.bucket_ms);
        assert!(!hit(&mut w, &s, first_free - 1));
        let back = s.expiry_of(s.bucket_of(t0 + 9));
        // ...and the full quota is back once it has.
        let again = (0..30).filter(|i| hit(&mut w, &s, back + i)).count();
        assert_eq!(again, 10);
    }

    #[test]
    fn never_more_than_limit_in_any_window_under_a_steady_stream() {
        // One request every 7 ms for 20 s against 50 per 1 s: check every interval (t-1s, t].
        let s = spec(50, 1);
        let mut w = SlidingWindow::default();
        let admitted: Vec<u64> = (0..3_000u64)
            .map(|i| 1_000_000 + i * 7)
            .filter(|&t| hit(&mut w, &s, t))
            .collect();
        for (i, &t) in admitted.iter().enumerate() {
            let in_window = admitted[..=i].iter().filter(|&&a| a + s.per_ms > t).count();
            assert!(
                in_window <= 50,
                "{in_window} admitted in the window ending at {t}"
            );
        }
        // And the late release is bounded: the stream gets close to the limit's rate
        // (50/s for 21 s of stream = 1050 at most; the rounding costs at most 1/60 of it).
        assert!(admitted.len() >= 1_000, "only {} admitted", admitted.len());
    }

    #[test]
    fn retry_after_is_when_the_oldest_needed_bucket_leaves() {
        let s = spec(2, 10); // buckets of 167 ms
        let mut w = SlidingWindow::default();
        assert!(hit(&mut w, &s, 1_000));
        assert!(hit(&mut w, &s, 5_000));
        let st = w.check(&s, 6_000, 1);
        assert!(!st.fits);
        assert_eq!(st.counted, 2);
        assert_eq!(st.remaining(), 0);
        // The hit at 1000 ms sits in bucket ceil(1000/167)=6, ending at 1002 ms: free at 11002.
        assert_eq!(st.retry_after_ms, 11_002 - 6_000);
        // The whole quota is back when the hit at 5000 (bucket 30, end 5010) leaves.
        assert_eq!(st.reset_after_ms, 15_010 - 6_000);
        assert!(w.check(&s, 11_001, 1).retry_after_ms == 1);
        assert!(hit(&mut w, &s, 11_002));
    }

    #[test]
    fn a_request_larger_than_the_limit_never_fits() {
        let s = spec(3, 1);
        let mut w = SlidingWindow::default();
        let st = w.check(&s, 0, 4);
        assert!(!st.fits);
        assert_eq!(st.retry_after_ms, 1_000);
    }

    #[test]
    fn expired_counter_reports_empty() {
        let s = spec(1, 1);
        let mut w = SlidingWindow::default();
        assert!(hit(&mut w, &s, 100));
        let end = w.expires_at_ms(&s);
        assert!(end > 100 && end <= 100 + 1_000 + s.bucket_ms);
        w.check(&s, end, 1);
        assert!(w.is_empty());
    }

    #[test]
    fn a_clock_stepping_back_still_counts_the_hit() {
        let s = spec(2, 1);
        let mut w = SlidingWindow::default();
        assert!(hit(&mut w, &s, 10_000));
        assert!(hit(&mut w, &s, 9_000));
        assert!(!hit(&mut w, &s, 10_001));
    }
}
