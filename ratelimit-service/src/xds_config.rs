//! The config resource ratelimit-service gets from xds-server
//! (`vrata.config.v1.RateLimitConfig`) turned into the service's own types: [`Limits`] and the
//! store settings. Anything the service cannot use is an error, which NACKs the version (the
//! service keeps its last good limits and xds-server shows the message).

use std::time::Duration;

use vrata_proto::vrata::config::v1 as pb;

use crate::limits::{Limit, LimitKey, Limits, LimitsError};
use crate::store::failover::OnError;

/// What one config version tells the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    pub limits: Limits,
    pub store: StoreSettings,
}

/// `rate_limits.store` as the gateway files say it (a `--redis` flag overrides `redis`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreSettings {
    /// Empty: in-memory counters.
    pub redis: Vec<String>,
    pub on_error: OnError,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("expected exactly one RateLimitConfig resource, got {0}")]
    ResourceCount(usize),
    #[error("route {route:?}, limit {name:?}: no key")]
    MissingKey { route: String, name: String },
    #[error("unknown on_error value {0}")]
    UnknownOnError(i32),
    #[error("route {0:?} is listed twice")]
    DuplicateRoute(String),
    #[error(transparent)]
    Limits(#[from] LimitsError),
}

impl ServiceConfig {
    /// A complete version: xds-server serves exactly one resource of this type.
    pub fn from_resources(resources: Vec<pb::RateLimitConfig>) -> Result<Self, ConfigError> {
        let count = resources.len();
        let mut it = resources.into_iter();
        match (it.next(), it.next()) {
            (Some(one), None) => Self::from_proto(one),
            _ => Err(ConfigError::ResourceCount(count)),
        }
    }

    pub fn from_proto(config: pb::RateLimitConfig) -> Result<Self, ConfigError> {
        let store = config.store.unwrap_or_default();
        let on_error = match pb::OnError::try_from(store.on_error) {
            Ok(pb::OnError::Unspecified | pb::OnError::Local) => OnError::Local,
            Ok(pb::OnError::Allow) => OnError::Allow,
            Ok(pb::OnError::Deny) => OnError::Deny,
            Err(_) => return Err(ConfigError::UnknownOnError(store.on_error)),
        };
        let mut seen = std::collections::BTreeSet::new();
        let mut routes = Vec::with_capacity(config.routes.len());
        for r in config.routes {
            if !seen.insert(r.route.clone()) {
                return Err(ConfigError::DuplicateRoute(r.route));
            }
            let limits = r
                .limits
                .into_iter()
                .map(|l| {
                    let key = match l.key {
                        Some(pb::rate_limit::Key::Route(_)) => LimitKey::Route,
                        Some(pb::rate_limit::Key::Ip(_)) => LimitKey::Ip,
                        Some(pb::rate_limit::Key::Header(h)) => LimitKey::Header(h),
                        Some(pb::rate_limit::Key::Claim(c)) => LimitKey::Claim(c),
                        None => {
                            return Err(ConfigError::MissingKey {
                                route: r.route.clone(),
                                name: l.name,
                            });
                        }
                    };
                    Ok(Limit::new(
                        l.name,
                        l.limit,
                        Duration::from_secs(l.per_seconds),
                        key,
                    ))
                })
                .collect::<Result<Vec<_>, _>>()?;
            routes.push((r.route, limits));
        }
        Ok(Self {
            limits: Limits::new(routes)?,
            store: StoreSettings {
                redis: store.redis,
                on_error,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(name: &str, limit: u64, per: u64, key: Option<pb::rate_limit::Key>) -> pb::RateLimit {
        pb::RateLimit {
            name: name.into(),
            limit,
            per_seconds: per,
            key,
        }
    }

    #[test]
    fn converts_every_key_and_the_store() {
        use pb::rate_limit::Key;
        let config = pb::RateLimitConfig {
            store: Some(pb::RateLimitStore {
                redis: vec!["redis://r:6379".into()],
                on_error: pb::OnError::Deny as i32,
            }),
            routes: vec![pb::RouteRateLimits {
                route: "orders".into(),
                limits: vec![
                    limit("a", 1, 1, Some(Key::Route(pb::WholeRoute {}))),
                    limit("b", 2, 2, Some(Key::Ip(pb::ClientIp {}))),
                    limit("c", 3, 3, Some(Key::Header("x-api-key".into()))),
                    limit("d", 4, 4, Some(Key::Claim("org.id".into()))),
                ],
            }],
        };
        let c = ServiceConfig::from_resources(vec![config]).expect("valid");
        assert_eq!(c.store.redis, ["redis://r:6379"]);
        assert_eq!(c.store.on_error, OnError::Deny);
        let (route, limits) = c.limits.routes().next().expect("one route");
        assert_eq!(route, "orders");
        assert_eq!(
            limits.iter().map(|l| l.key.clone()).collect::<Vec<_>>(),
            [
                LimitKey::Route,
                LimitKey::Ip,
                LimitKey::Header("x-api-key".into()),
                LimitKey::Claim("org.id".into())
            ]
        );
        assert_eq!(limits[3].per, Duration::from_secs(4));
    }

    #[test]
    fn unusable_configs_are_errors() {
        assert_eq!(
            ServiceConfig::from_resources(vec![]),
            Err(ConfigError::ResourceCount(0))
        );
        let bad = |l: pb::RateLimit| {
            ServiceConfig::from_proto(pb::RateLimitConfig {
                store: None,
                routes: vec![pb::RouteRateLimits {
                    route: "r".into(),
                    limits: vec![l],
                }],
            })
        };
        assert!(matches!(
            bad(limit("a", 1, 1, None)),
            Err(ConfigError::MissingKey { .. })
        ));
        assert!(matches!(
            bad(limit(
                "a",
                0,
                1,
                Some(pb::rate_limit::Key::Ip(pb::ClientIp {}))
            )),
            Err(ConfigError::Limits(LimitsError::LimitOutOfRange { .. }))
        ));
        // No store at all: in memory, on_error local.
        let empty = ServiceConfig::from_proto(pb::RateLimitConfig::default()).expect("valid");
        assert_eq!(empty.store, StoreSettings::default());
    }
}
