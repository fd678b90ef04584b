//! Response headers telling clients their quota, in the syntax of the IETF httpapi draft
//! "RateLimit header fields for HTTP" (draft-ietf-httpapi-ratelimit-headers-10): both are
//! Structured Field lists with one item per limit the request was checked against.
//!
//! - `RateLimit-Policy: "per-user";q=100;w=60` — the limit (`q`, quota units) and its window
//!   (`w`, seconds), precomputed per limit when the config is compiled.
//! - `RateLimit: "per-user";r=42;t=17` — remaining units (`r`) and seconds (`t`) until the quota
//!   is whole again (every hit now counted has left the window); on a refused limit, `t` is the
//!   seconds until it admits the request, the same as `Retry-After`.
//! - `Retry-After: 17` on 429 only: seconds until every refusing limit admits the request.
//!
//! Seconds are rounded up: a client that waits `t` seconds never arrives early.

use crate::limits::CompiledLimit;
use crate::window::CounterState;

pub const RATELIMIT_POLICY: &str = "ratelimit-policy";
pub const RATELIMIT: &str = "ratelimit";
pub const RETRY_AFTER: &str = "retry-after";

/// Milliseconds to whole seconds, rounded up.
pub fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1_000)
}

/// The seconds a client should wait for this counter: until it admits the request if it
/// refused it, else until the quota is whole.
pub fn wait_secs(state: &CounterState) -> u64 {
    if state.fits {
        ceil_secs(state.reset_after_ms)
    } else {
        ceil_secs(state.retry_after_ms).max(1)
    }
}

/// `RateLimit-Policy` and `RateLimit` for the limits a request was checked against.
pub fn quota_headers<'a>(
    checked: impl Iterator<Item = (&'a CompiledLimit, &'a CounterState)>,
) -> (String, String) {
    let mut policy = String::new();
    let mut current = String::new();
    for (i, (limit, state)) in checked.enumerate() {
        if i > 0 {
            policy.push_str(", ");
            current.push_str(", ");
        }
        policy.push_str(&limit.policy_item);
        current.push_str(&format!(
            "\"{}\";r={};t={}",
            limit.name,
            state.remaining(),
            wait_secs(state)
        ));
    }
    (policy, current)
}

/// `Retry-After` for a refused request: the longest wait among the limits that refused it
/// (at least 1 s, since 0 would invite an immediate retry that is refused again).
pub fn retry_after<'a>(states: impl Iterator<Item = &'a CounterState>) -> u64 {
    states
        .filter(|s| !s.fits)
        .map(wait_secs)
        .max()
        .unwrap_or(1)
        .max(1)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::limits::{CompiledLimits, Limit, LimitKey, Limits};
    use crate::metrics::Metrics;

    fn state(counted: u64, limit: u64, fits: bool, reset: u64, retry: u64) -> CounterState {
        CounterState {
            counted,
            limit,
            fits,
            reset_after_ms: reset,
            retry_after_ms: retry,
        }
    }

    #[test]
    fn lists_every_checked_limit_in_draft_syntax() {
        let limits = Limits::new([(
            "r".to_owned(),
            vec![
                Limit::new("per-user", 100, Duration::from_secs(60), LimitKey::Ip),
                Limit::new("burst", 5, Duration::from_secs(1), LimitKey::Route),
            ],
        )])
        .unwrap();
        let c = CompiledLimits::compile(&limits, &Metrics::default());
        let a = state(58, 100, true, 59_001, 0);
        let b = state(5, 5, false, 900, 200);
        let (policy, current) = quota_headers(
            [
                (c.get("r", "per-user").unwrap().as_ref(), &a),
                (c.get("r", "burst").unwrap().as_ref(), &b),
            ]
            .into_iter(),
        );
        assert_eq!(policy, "\"per-user\";q=100;w=60, \"burst\";q=5;w=1");
        assert_eq!(current, "\"per-user\";r=42;t=60, \"burst\";r=0;t=1");
    }

    #[test]
    fn retry_after_is_the_longest_refusal_rounded_up() {
        let s = [
            state(1, 10, true, 50_000, 0),
            state(3, 3, false, 9_000, 1_200),
            state(2, 2, false, 9_000, 4_001),
        ];
        assert_eq!(retry_after(s.iter()), 5);
        assert_eq!(retry_after([state(3, 3, false, 0, 0)].iter()), 1);
    }
}
