//! The config resource response-cache gets from xds-server (`vrata.config.v1.CacheConfig`),
//! turned into the service's own types. Anything the service cannot use is an error, which
//! NACKs the version (the service keeps its last good config and xds-server shows the message).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use vrata_proto::vrata::config::v1 as pb;

use crate::purge::PurgeRule;

/// `max_body` when the config says 0 (proto3 cannot tell 0 from unset; a cache that stores no
/// body is not what anyone configures). The gateway file's documented default.
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;
/// How long a request waits for another request's fill when the route has no timeout: Envoy's
/// default route timeout, after which the leader's request has failed anyway.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(15);

/// Which tier holds a route's entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    Local,
    Redis,
}

impl Tier {
    pub fn label(self) -> &'static str {
        match self {
            Tier::Local => "local",
            Tier::Redis => "redis",
        }
    }
}

/// A `key_extra` part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyExtra {
    /// A dotted path into ext-authz's `vrata.authz` claims, split.
    Claim(Vec<String>),
    /// A request header, lower-case.
    Header(String),
}

/// One route's cache policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePolicy {
    pub route: String,
    pub tier: Tier,
    /// Freshness when the upstream gives none; 0: none.
    pub ttl_ms: u64,
    /// Request headers (lower-case) in the key.
    pub vary: Vec<String>,
    pub key_extra: Vec<KeyExtra>,
    pub max_body: u64,
    pub stale_if_error_ms: u64,
    /// The longest a request waits for another request's fill of its key.
    pub wait: Duration,
}

/// What one config version tells the service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    pub routes: HashMap<String, Arc<RoutePolicy>>,
    /// Ordered by id.
    pub purges: Arc<Vec<PurgeRule>>,
    /// The standalone Redis URL, when a route uses the Redis tier (or `--redis` was given).
    pub redis: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("expected exactly one CacheConfig resource, got {0}")]
    ResourceCount(usize),
    #[error("a route cache has no route name")]
    NoRouteName,
    #[error("route {0:?} is listed twice")]
    DuplicateRoute(String),
    #[error("route {0:?}: no store (expected local or redis)")]
    NoStore(String),
    #[error("route {route:?}: key_extra {part:?}: expected claim:PATH or header:NAME")]
    BadKeyExtra { route: String, part: String },
    #[error("route {route:?}: vary {name:?} is not a header name")]
    BadVary { route: String, name: String },
    #[error("route {0:?} uses the redis store but no redis URL is configured")]
    NoRedis(String),
    #[error(
        "response-cache supports one standalone Redis; got {0} URLs (Redis Cluster is not supported yet)"
    )]
    Cluster(usize),
    #[error("redis URL {url:?}: {reason}")]
    BadRedisUrl { url: String, reason: String },
    #[error("purge ids must increase: {0} after {1}")]
    PurgeOrder(u64, u64),
}

/// A Redis URL the client could never use (checked at start for `--redis` and per version).
pub fn check_redis_url(url: &str) -> Result<(), ConfigError> {
    let bad = |reason: String| ConfigError::BadRedisUrl {
        url: url.to_owned(),
        reason,
    };
    // TLS needs one of the redis crate's TLS features, not built in.
    if url.starts_with("rediss:") {
        return Err(bad("TLS (rediss://) is not supported yet".into()));
    }
    redis::IntoConnectionInfo::into_connection_info(url)
        .map(|_| ())
        .map_err(|e| bad(e.to_string()))
}

fn parse_extra(route: &str, part: &str) -> Result<KeyExtra, ConfigError> {
    let bad = || ConfigError::BadKeyExtra {
        route: route.to_owned(),
        part: part.to_owned(),
    };
    if let Some(path) = part.strip_prefix("claim:") {
        let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            return Err(bad());
        }
        return Ok(KeyExtra::Claim(segments));
    }
    if let Some(name) = part.strip_prefix("header:")
        && is_header_name(name)
    {
        return Ok(KeyExtra::Header(name.to_ascii_lowercase()));
    }
    Err(bad())
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Settings {
    /// A complete version: xds-server serves exactly one resource of this type.
    /// `redis_override` (`--redis`) replaces the config's Redis URLs.
    pub fn from_resources(
        resources: Vec<pb::CacheConfig>,
        redis_override: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let count = resources.len();
        let mut it = resources.into_iter();
        match (it.next(), it.next()) {
            (Some(one), None) => Self::from_proto(one, redis_override),
            _ => Err(ConfigError::ResourceCount(count)),
        }
    }

    pub fn from_proto(
        config: pb::CacheConfig,
        redis_override: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let mut routes = HashMap::with_capacity(config.routes.len());
        let mut uses_redis = None;
        for r in config.routes {
            if r.route.is_empty() {
                return Err(ConfigError::NoRouteName);
            }
            let tier = match pb::CacheStore::try_from(r.store) {
                Ok(pb::CacheStore::Local) => Tier::Local,
                Ok(pb::CacheStore::Redis) => {
                    uses_redis.get_or_insert_with(|| r.route.clone());
                    Tier::Redis
                }
                Ok(pb::CacheStore::Unspecified) | Err(_) => {
                    return Err(ConfigError::NoStore(r.route));
                }
            };
            let key_extra = r
                .key_extra
                .iter()
                .map(|p| parse_extra(&r.route, p))
                .collect::<Result<Vec<_>, _>>()?;
            let mut vary = Vec::with_capacity(r.vary.len());
            for name in &r.vary {
                if !is_header_name(name) {
                    return Err(ConfigError::BadVary {
                        route: r.route.clone(),
                        name: name.clone(),
                    });
                }
                vary.push(name.to_ascii_lowercase());
            }
            let policy = RoutePolicy {
                route: r.route.clone(),
                tier,
                ttl_ms: r.ttl_ms,
                vary,
                key_extra,
                max_body: if r.max_body == 0 {
                    DEFAULT_MAX_BODY
                } else {
                    r.max_body
                },
                stale_if_error_ms: r.stale_if_error_ms,
                wait: if r.timeout_ms == 0 {
                    DEFAULT_WAIT
                } else {
                    Duration::from_millis(r.timeout_ms)
                },
            };
            if routes.insert(r.route.clone(), Arc::new(policy)).is_some() {
                return Err(ConfigError::DuplicateRoute(r.route));
            }
        }
        let urls: Vec<String> = match redis_override {
            Some(url) => vec![url.to_owned()],
            None => config.redis,
        };
        let redis = match urls.as_slice() {
            [] => {
                if let Some(route) = uses_redis {
                    return Err(ConfigError::NoRedis(route));
                }
                None
            }
            [one] => {
                check_redis_url(one)?;
                Some(one.clone())
            }
            many => return Err(ConfigError::Cluster(many.len())),
        };
        let mut purges = Vec::with_capacity(config.purges.len());
        let mut last = 0;
        for p in config.purges {
            if p.id <= last {
                return Err(ConfigError::PurgeOrder(p.id, last));
            }
            last = p.id;
            purges.push(PurgeRule {
                id: p.id,
                route: p.route,
                path_prefix: p.path_prefix,
            });
        }
        Ok(Self {
            routes,
            purges: Arc::new(purges),
            redis,
        })
    }

    /// The highest purge id known (0: none): the epoch of entries started now.
    pub fn epoch(&self) -> u64 {
        self.purges.last().map_or(0, |p| p.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, store: pb::CacheStore) -> pb::RouteCache {
        pb::RouteCache {
            route: name.into(),
            store: store as i32,
            ttl_ms: 30_000,
            vary: vec!["Accept-Language".into()],
            key_extra: vec!["claim:org.id".into(), "header:X-Tenant".into()],
            max_body: 0,
            stale_if_error_ms: 300_000,
            timeout_ms: 0,
        }
    }

    #[test]
    fn converts_routes_purges_and_redis() {
        let config = pb::CacheConfig {
            redis: vec!["redis://127.0.0.1:6379/0".into()],
            routes: vec![
                route("a", pb::CacheStore::Redis),
                route("b", pb::CacheStore::Local),
            ],
            purges: vec![
                pb::Purge {
                    id: 5,
                    route: "a".into(),
                    path_prefix: String::new(),
                },
                pb::Purge {
                    id: 9,
                    route: String::new(),
                    path_prefix: "/x".into(),
                },
            ],
        };
        let s = Settings::from_resources(vec![config], None).expect("valid");
        let a = &s.routes["a"];
        assert_eq!(a.tier, Tier::Redis);
        assert_eq!(a.vary, ["accept-language"]);
        assert_eq!(
            a.key_extra,
            [
                KeyExtra::Claim(vec!["org".into(), "id".into()]),
                KeyExtra::Header("x-tenant".into())
            ]
        );
        assert_eq!(a.max_body, DEFAULT_MAX_BODY);
        assert_eq!(a.wait, DEFAULT_WAIT);
        assert_eq!(s.routes["b"].tier, Tier::Local);
        assert_eq!(s.redis.as_deref(), Some("redis://127.0.0.1:6379/0"));
        assert_eq!(s.epoch(), 9);
    }

    #[test]
    fn unusable_configs_are_errors() {
        let one = |routes, redis: Vec<String>| {
            Settings::from_proto(
                pb::CacheConfig {
                    redis,
                    routes,
                    purges: vec![],
                },
                None,
            )
        };
        assert_eq!(
            Settings::from_resources(vec![], None),
            Err(ConfigError::ResourceCount(0))
        );
        assert_eq!(
            one(vec![route("a", pb::CacheStore::Redis)], vec![]),
            Err(ConfigError::NoRedis("a".into()))
        );
        assert_eq!(
            one(vec![route("a", pb::CacheStore::Unspecified)], vec![]),
            Err(ConfigError::NoStore("a".into()))
        );
        assert_eq!(
            one(
                vec![
                    route("a", pb::CacheStore::Local),
                    route("a", pb::CacheStore::Local)
                ],
                vec![]
            ),
            Err(ConfigError::DuplicateRoute("a".into()))
        );
        assert_eq!(
            one(vec![], vec!["redis://a".into(), "redis://b".into()]),
            Err(ConfigError::Cluster(2))
        );
        assert!(matches!(
            one(vec![], vec!["http://a".into()]),
            Err(ConfigError::BadRedisUrl { .. })
        ));
        let mut bad = route("a", pb::CacheStore::Local);
        bad.key_extra = vec!["cookie:x".into()];
        assert!(matches!(
            one(vec![bad], vec![]),
            Err(ConfigError::BadKeyExtra { .. })
        ));
        // --redis satisfies a redis route and replaces the config's URLs.
        let s = Settings::from_resources(
            vec![pb::CacheConfig {
                redis: vec!["redis://a".into(), "redis://b".into()],
                routes: vec![route("a", pb::CacheStore::Redis)],
                purges: vec![],
            }],
            Some("redis://c:6379"),
        )
        .expect("valid");
        assert_eq!(s.redis.as_deref(), Some("redis://c:6379"));
    }
}
