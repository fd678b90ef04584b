//! `routes[].cache` and `cache_store`.
//!
//! The rules match what response-cache accepts, so a config that passes here is never refused
//! by the service; checked here so that every problem is reported with its position.

use std::time::Duration;

use super::Cx;
use super::upstream::duration;
use crate::config::diagnostic::{Pos, one_of};
use crate::config::dto::{CacheStoreDto, CacheStoreKindDto, GatewayDto, RouteCacheDto};
use crate::config::spanned::{Spanned, or};
use crate::config::syntax;
use crate::model::{CacheKeyPart, CacheStore, ClaimPath, RouteCache, defaults};

/// A stored answer is held in one piece in memory (and in one Redis value): 64 MiB bounds
/// what one route can make an instance hold per entry.
const MAX_BODY_LIMIT: u64 = 64 * 1024 * 1024;

/// `routes[].cache`. `has_auth`: the route has `auth` (claims exist only then).
pub(crate) fn route_cache(cx: &Cx<'_>, c: &RouteCacheDto, has_auth: bool) -> Option<RouteCache> {
    let mut ok = true;
    let vary = match &c.vary {
        None => Vec::new(),
        Some(list) => {
            let mut out = Vec::new();
            for item in list.get().into_iter().flatten() {
                let Some(name) = cx.check(item, |t| syntax::header_name(t)) else {
                    ok = false;
                    continue;
                };
                if out.contains(&name) {
                    cx.error(item.pos(), format!("`{}` is listed twice", name.as_str()));
                    ok = false;
                } else {
                    out.push(name);
                }
            }
            out
        }
    };
    let key_extra = match &c.key_extra {
        None => Vec::new(),
        Some(list) => {
            let mut out = Vec::new();
            for item in list.get().into_iter().flatten() {
                let Some(part) = cx.check(item, |t| key_part(t, has_auth)) else {
                    ok = false;
                    continue;
                };
                if out.contains(&part) {
                    cx.error(item.pos(), "this key part is listed twice");
                    ok = false;
                } else {
                    out.push(part);
                }
            }
            out
        }
    };
    let max_body = match &c.max_body {
        None => Some(defaults::CACHE_MAX_BODY),
        Some(f) => cx.check(f, |t| size(t)),
    };
    // Durations are whole milliseconds by construction (`DurationDto`).
    let ttl = duration(&c.ttl, defaults::CACHE_TTL);
    let stale_if_error = duration(&c.stale_if_error, Duration::ZERO);
    let store = match or(&c.store, CacheStoreKindDto::Local) {
        CacheStoreKindDto::Local => CacheStore::Local,
        CacheStoreKindDto::Redis => CacheStore::Redis,
    };
    if !ok {
        return None;
    }
    Some(RouteCache {
        store,
        ttl,
        vary,
        key_extra,
        max_body: max_body?,
        stale_if_error,
    })
}

fn key_part(text: &str, has_auth: bool) -> Result<CacheKeyPart, String> {
    if let Some(name) = text.strip_prefix("header:") {
        return syntax::header_name(name).map(CacheKeyPart::Header);
    }
    if let Some(path) = text.strip_prefix("claim:") {
        let claim = ClaimPath::new(path).map_err(|e| e.to_string())?;
        if !has_auth {
            return Err(format!(
                "`{text}` needs `auth` on the route: claims come from the caller's token, \
                 checked by ext-authz"
            ));
        }
        return Ok(CacheKeyPart::Claim(claim));
    }
    Err(format!(
        "unknown key part `{text}`: use {}",
        one_of(&["claim:PATH", "header:NAME"])
    ))
}

/// `512`, `512B`, `64KiB`, `1MiB`: bytes, 1 up to [`MAX_BODY_LIMIT`].
pub(crate) fn size(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let factor: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        _ => return Err(format!("`{text}`: expected a size such as 512KiB or 1MiB")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}`: expected a size such as 512KiB or 1MiB"))?;
    match n.checked_mul(factor) {
        Some(v) if (1..=MAX_BODY_LIMIT).contains(&v) => Ok(v),
        _ => Err(format!("`{text}`: use 1B to 64MiB")),
    }
}

/// The Redis of the shared tier: `cache_store.redis`, else `rate_limits.store.redis` when it
/// is one URL. Reported at the first route with `store: redis` when there is none.
pub(crate) fn redis(
    cx: &Cx<'_>,
    store: Option<&CacheStoreDto>,
    rate_limit_redis: &[String],
    first_redis_route: Option<Pos>,
) -> Vec<String> {
    if let Some(field) = store.and_then(|s| s.redis.as_ref()) {
        return cx
            .check(field, |url| {
                super::rate_limits::redis_url(url).map(|()| vec![url.clone()])
            })
            .unwrap_or_default();
    }
    let Some(pos) = first_redis_route else {
        return Vec::new();
    };
    match rate_limit_redis {
        [one] => vec![one.clone()],
        [] => {
            cx.error(
                pos,
                "`store: redis` needs a Redis: set `cache_store.redis` (or \
                 `rate_limits.store.redis`)",
            );
            Vec::new()
        }
        _ => {
            cx.error(
                pos,
                "`rate_limits.store.redis` is a Redis Cluster, which response-cache does not \
                 use: set `cache_store.redis` to one Redis",
            );
            Vec::new()
        }
    }
}

/// Where the first route with `cache.store: redis` says so.
pub(crate) fn first_redis_route(gateways: &[&GatewayDto]) -> Option<Pos> {
    gateways
        .iter()
        .flat_map(|g| super::items(&g.routes))
        .filter_map(Spanned::get)
        .filter_map(|r| r.cache.as_ref()?.get()?.store.as_ref())
        .find(|s| matches!(s.get(), Some(CacheStoreKindDto::Redis)))
        .map(Spanned::pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("512"), Ok(512));
        assert_eq!(size("512B"), Ok(512));
        assert_eq!(size("64KiB"), Ok(65536));
        assert_eq!(size("1MiB"), Ok(1 << 20));
        assert_eq!(size("64MiB"), Ok(64 << 20));
        assert!(size("65MiB").is_err());
        assert!(size("0").is_err());
        assert!(size("1GB").is_err());
        assert!(size("MiB").is_err());
        assert!(size("99999999999999999999").is_err());
    }

    #[test]
    fn key_parts() {
        assert!(
            matches!(key_part("claim:sub", true), Ok(CacheKeyPart::Claim(c)) if c.as_str() == "sub")
        );
        assert!(key_part("claim:sub", false).is_err());
        assert!(
            matches!(key_part("header:X-Tenant", false), Ok(CacheKeyPart::Header(h)) if h.as_str() == "x-tenant")
        );
        assert!(key_part("claim:", true).is_err());
        assert!(key_part("user", true).is_err());
    }
}
