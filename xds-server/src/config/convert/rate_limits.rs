//! `rate_limits` (ratelimit-service's store) and `routes[].rate_limit`.
//!
//! The rules match what ratelimit-service itself accepts (`vrata_ratelimit::Limits::new`), so a
//! config that passes here is never refused by the service; they are checked here too so every
//! problem is reported with its position before anything is served.

use std::time::Duration;

use super::Cx;
use crate::config::diagnostic::{Pos, already_defined, one_of};
use crate::config::dto::{OnErrorDto, RateLimitDto, RateLimitsDto, RedisUrlsDto};
use crate::config::spanned::{Spanned, or};
use crate::config::syntax;
use crate::model::{LimitKey, OnError, RateLimit, RateLimits};

/// The largest `limit`: ratelimit-service's Redis script counts in Lua numbers (doubles),
/// exact up to 2^53.
pub(crate) const MAX_LIMIT: u64 = 1 << 53;
/// Limit names travel in `RateLimit-Policy` headers: short, and nothing that needs quoting.
const MAX_NAME_LEN: usize = 64;

pub(crate) fn store(cx: &Cx<'_>, dto: Option<&RateLimitsDto>) -> RateLimits {
    let Some(store) = dto.and_then(|d| d.store.as_ref()).and_then(Spanned::get) else {
        return RateLimits::default();
    };
    let redis = match &store.redis {
        None => Vec::new(),
        Some(field) => match field.get() {
            None => Vec::new(),
            Some(RedisUrlsDto::One(url)) => cx
                .check(field, |_| redis_url(url).map(|()| vec![url.clone()]))
                .unwrap_or_default(),
            Some(RedisUrlsDto::Cluster(urls)) => {
                if urls.is_empty() {
                    cx.error(
                        field.pos(),
                        "`redis` is an empty list: leave it out for in-memory counters",
                    );
                }
                urls.iter()
                    .filter_map(|u| cx.check(u, |text| redis_url(text).map(|()| text.clone())))
                    .collect()
            }
        },
    };
    RateLimits {
        redis,
        on_error: match or(&store.on_error, OnErrorDto::Local) {
            OnErrorDto::Local => OnError::Local,
            OnErrorDto::Allow => OnError::Allow,
            OnErrorDto::Deny => OnError::Deny,
        },
    }
}

/// A Redis URL ratelimit-service can use. The service checks it again with its Redis client;
/// this catches typos with a position.
pub(crate) fn redis_url(text: &str) -> Result<(), String> {
    if text.starts_with("rediss://") {
        return Err(format!(
            "`{text}`: TLS to Redis (rediss://) is not supported by this version of vrata yet"
        ));
    }
    let (scheme, rest) = ["redis://", "redis+unix://", "unix://"]
        .iter()
        .find_map(|scheme| text.strip_prefix(scheme).map(|rest| (*scheme, rest)))
        .ok_or_else(|| {
            format!("`{text}` is not a Redis URL: use redis://HOST:PORT[/DB] or unix:///PATH")
        })?;
    let names_target = if scheme == "redis://" {
        !rest.is_empty() && !rest.starts_with('/')
    } else {
        rest.starts_with('/') && rest.len() > 1
    };
    if names_target {
        Ok(())
    } else {
        Err(format!("`{text}` names no Redis host or socket"))
    }
}

/// A route's `rate_limit` list; `None` when an entry was invalid (reported).
pub(crate) fn route_limits(cx: &Cx<'_>, items: &[Spanned<RateLimitDto>]) -> Option<Vec<RateLimit>> {
    let mut ok = true;
    let mut names: Vec<(&str, Pos)> = Vec::with_capacity(items.len());
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Some(dto) = item.get() else {
            ok = false;
            continue;
        };
        // Duplicates are reported even when the first entry has other problems.
        if let Some(name) = dto.name.get() {
            if let Some((_, first)) = names.iter().find(|(n, _)| n == name) {
                cx.error(
                    dto.name.pos(),
                    already_defined(cx.sink, "rate limit", name, *first),
                );
                ok = false;
            } else {
                names.push((name, dto.name.pos()));
            }
        }
        match limit(cx, dto) {
            Some(l) => out.push(l),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn limit(cx: &Cx<'_>, dto: &RateLimitDto) -> Option<RateLimit> {
    let name = cx.check(&dto.name, |n| limit_name(n));
    let limit = cx.check(&dto.limit, |&n| {
        if (1..=MAX_LIMIT).contains(&n) {
            Ok(n)
        } else {
            Err(format!("`limit` must be between 1 and 2^53 (got {n})"))
        }
    });
    let per = cx.check(&dto.per, |d| {
        let d = d.0;
        if d >= Duration::from_secs(1) && d.subsec_nanos() == 0 {
            Ok(d)
        } else {
            Err(
                "`per` must be a whole number of seconds, at least 1s (limits count in 1 s steps)"
                    .to_owned(),
            )
        }
    });
    let key = cx.check(&dto.key, |k| key(k));
    Some(RateLimit {
        name: name?,
        limit: limit?,
        per: per?,
        key: key?,
    })
}

fn limit_name(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= MAX_NAME_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "invalid rate limit name `{text}`: use 1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 . _ - \
             (it is shown to clients in the RateLimit-Policy header)"
        ))
    }
}

fn key(text: &str) -> Result<LimitKey, String> {
    match text {
        "route" => return Ok(LimitKey::Route),
        "ip" => return Ok(LimitKey::Ip),
        _ => {}
    }
    if let Some(name) = text.strip_prefix("header:") {
        return syntax::header_name(name).map(LimitKey::Header);
    }
    if let Some(path) = text.strip_prefix("claim:") {
        let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
        if path.is_empty() || segments.iter().any(String::is_empty) {
            return Err(format!(
                "invalid claim path `{path}`: use claim names separated by dots, e.g. `sub` or `org.id`"
            ));
        }
        return Ok(LimitKey::Claim(segments));
    }
    Err(format!(
        "unknown rate limit key `{text}`: use {}",
        one_of(&["route", "ip", "header:NAME", "claim:PATH"])
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(key("route"), Ok(LimitKey::Route));
        assert_eq!(key("ip"), Ok(LimitKey::Ip));
        assert!(
            matches!(key("header:X-Api-Key"), Ok(LimitKey::Header(h)) if h.as_str() == "x-api-key")
        );
        assert_eq!(
            key("claim:org.id"),
            Ok(LimitKey::Claim(vec!["org".into(), "id".into()]))
        );
        assert!(key("claim:").is_err());
        assert!(key("claim:a..b").is_err());
        assert!(key("header:").is_err());
        assert!(key("user").is_err());
    }

    #[test]
    fn redis_urls() {
        assert!(redis_url("redis://127.0.0.1:6379/0").is_ok());
        assert!(redis_url("unix:///run/redis.sock").is_ok());
        assert!(redis_url("rediss://r:6379").is_err());
        assert!(redis_url("http://r:6379").is_err());
        assert!(redis_url("redis://").is_err());
    }
}
