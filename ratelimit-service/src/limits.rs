//! The limits the service enforces: a typed model (what arrives from the control plane), its
//! compiled form (what the hot path reads), and the table that swaps one for the next.
//!
//! # Descriptor contract (what Envoy must send)
//!
//! Envoy's ratelimit filter runs with `domain: "vrata"` ([`DOMAIN`]). Every entry of a route's
//! `rate_limit` list becomes one Envoy `RateLimit` on that route, whose actions produce exactly
//! this descriptor, in this order:
//!
//! | # | entry (key, value) | Envoy action |
//! |---|---|---|
//! | 1 | `("route", <route name>)` | `generic_key {descriptor_key: "route", descriptor_value: <route name>}` |
//! | 2 | `("limit", <limit name>)` | `generic_key {descriptor_key: "limit", descriptor_value: <limit name>}` |
//! | 3 | by the limit's `key`: | |
//! |   | `key: route` — no third entry | |
//! |   | `key: ip` — `("remote_address", <trusted client address>)` | `remote_address {}` |
//! |   | `key: header:NAME` — `("header", <value>)` | `request_headers {header_name: NAME, descriptor_key: "header", skip_if_absent: true}` |
//! |   | `key: claim:PATH` — `("claim", <value>)` | `metadata {descriptor_key: "claim", metadata_key: {key: "vrata.authz", path: PATH split on "."}, source: DYNAMIC, skip_if_absent: true}` |
//!
//! `skip_if_absent: true` makes Envoy send the descriptor without its third entry when the
//! header or claim is missing; the service then counts all such requests of that limit in one
//! shared counter (value `""`), so leaving the header out is not a way around the limit.
//! Envoy's `metadata` action only reads string values: a claim used as a key must be a string
//! (`sub`, `azp`, `email`); an array or number counts as missing.
//! Descriptor-level `hits_addend` overrides the request's; a `limit` override in a descriptor is
//! ignored (limits come from the gateway files only).
//!
//! A descriptor naming a route or limit this service does not know (a reload reached Envoy and
//! the service at different moments), or whose third entry does not match the limit's key, is
//! answered OK and counted as unmatched: the service never refuses traffic it has no limit for.
//!
//! # Counter identity
//!
//! A counter is named by route, limit name, `limit`, `per`, key kind and key value (see
//! [`CompiledLimit::counter_key`]). A reload that leaves a limit unchanged therefore keeps its
//! counters; one that changes any of those starts the limit afresh, and the old counters expire
//! by themselves after one window.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;

use crate::metrics::Metrics;
use crate::window::WindowSpec;

/// The domain Envoy's ratelimit filter must use. Requests for other domains are answered OK.
pub const DOMAIN: &str = "vrata";
/// Descriptor entry keys, in the order they appear (see the module documentation).
pub const ROUTE_ENTRY: &str = "route";
pub const LIMIT_ENTRY: &str = "limit";
pub const IP_ENTRY: &str = "remote_address";
pub const HEADER_ENTRY: &str = "header";
pub const CLAIM_ENTRY: &str = "claim";

/// The largest `limit`: the Redis script counts in Lua numbers (doubles), exact up to 2^53.
pub const MAX_LIMIT: u64 = 1 << 53;

/// A limit or route name was unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitsError {
    #[error("route name is empty")]
    EmptyRouteName,
    #[error(
        "route {route:?}: limit name {name:?} must be 1-64 characters of A-Z a-z 0-9 . _ - (it is shown to clients in RateLimit headers)"
    )]
    BadLimitName { route: String, name: String },
    #[error("route {route:?}, limit {name:?}: limit must be between 1 and 2^53")]
    LimitOutOfRange { route: String, name: String },
    #[error(
        "route {route:?}, limit {name:?}: per must be a whole number of seconds, at least 1s (got {per:?})"
    )]
    BadPer {
        route: String,
        name: String,
        per: Duration,
    },
    #[error("route {route:?}, limit {name:?}: {what} name is empty")]
    EmptyKeyName {
        route: String,
        name: String,
        what: &'static str,
    },
    #[error("route {route:?}: limit {name:?} is defined twice")]
    DuplicateLimit { route: String, name: String },
}

/// What a limit counts by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// All requests of the route together.
    Route,
    /// The trusted client address (Envoy's `remote_address`).
    Ip,
    /// A request header's value (name as configured, matched case-insensitively by Envoy).
    Header(String),
    /// A claim from ext-authz's `vrata.authz` metadata, as a dotted path.
    Claim(String),
}

impl LimitKey {
    /// The third descriptor entry's key, or `None` for `Route` (no third entry).
    pub fn descriptor_key(&self) -> Option<&'static str> {
        match self {
            LimitKey::Route => None,
            LimitKey::Ip => Some(IP_ENTRY),
            LimitKey::Header(_) => Some(HEADER_ENTRY),
            LimitKey::Claim(_) => Some(CLAIM_ENTRY),
        }
    }
}

impl fmt::Display for LimitKey {
    /// The file syntax: `route`, `ip`, `header:NAME`, `claim:PATH`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitKey::Route => f.write_str("route"),
            LimitKey::Ip => f.write_str("ip"),
            LimitKey::Header(h) => write!(f, "header:{h}"),
            LimitKey::Claim(c) => write!(f, "claim:{c}"),
        }
    }
}

/// One entry of a route's `rate_limit` list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Limit {
    pub name: String,
    pub limit: u64,
    pub per: Duration,
    pub key: LimitKey,
}

impl Limit {
    pub fn new(name: impl Into<String>, limit: u64, per: Duration, key: LimitKey) -> Self {
        Self {
            name: name.into(),
            limit,
            per,
            key,
        }
    }
}

/// Every route's limits, validated. Routes without limits are simply absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    routes: BTreeMap<String, Vec<Limit>>,
}

impl Limits {
    /// Validates every route's limits and reports the first problem. (xds-server validates the
    /// files with positions first; this is the service's own guard on what it receives.)
    pub fn new(
        routes: impl IntoIterator<Item = (String, Vec<Limit>)>,
    ) -> Result<Self, LimitsError> {
        let mut out = BTreeMap::new();
        for (route, limits) in routes {
            if route.is_empty() {
                return Err(LimitsError::EmptyRouteName);
            }
            for (i, l) in limits.iter().enumerate() {
                validate(&route, l)?;
                if limits[..i].iter().any(|o| o.name == l.name) {
                    return Err(LimitsError::DuplicateLimit {
                        route,
                        name: l.name.clone(),
                    });
                }
            }
            if !limits.is_empty() {
                out.insert(route, limits);
            }
        }
        Ok(Self { routes: out })
    }

    pub fn routes(&self) -> impl Iterator<Item = (&str, &[Limit])> {
        self.routes.iter().map(|(r, l)| (r.as_str(), l.as_slice()))
    }
}

fn validate(route: &str, l: &Limit) -> Result<(), LimitsError> {
    let name_ok = !l.name.is_empty()
        && l.name.len() <= 64
        && l.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    let err_ctx = || (route.to_owned(), l.name.clone());
    if !name_ok {
        let (route, name) = err_ctx();
        return Err(LimitsError::BadLimitName { route, name });
    }
    if l.limit == 0 || l.limit > MAX_LIMIT {
        let (route, name) = err_ctx();
        return Err(LimitsError::LimitOutOfRange { route, name });
    }
    if l.per < Duration::from_secs(1) || l.per.subsec_nanos() != 0 {
        let (route, name) = err_ctx();
        return Err(LimitsError::BadPer {
            route,
            name,
            per: l.per,
        });
    }
    let empty_key = match &l.key {
        LimitKey::Header(h) if h.is_empty() => Some("header"),
        LimitKey::Claim(c) if c.is_empty() => Some("claim"),
        _ => None,
    };
    if let Some(what) = empty_key {
        let (route, name) = err_ctx();
        return Err(LimitsError::EmptyKeyName { route, name, what });
    }
    Ok(())
}

/// A limit as the hot path needs it: numbers, the counter key's fixed prefix, its header item
/// and its metric handles, all computed once per config version.
#[derive(Debug)]
pub struct CompiledLimit {
    pub route: String,
    pub name: String,
    pub key: LimitKey,
    pub window: WindowSpec,
    pub per: Duration,
    /// Everything of the counter key but the key value; see [`CompiledLimit::counter_key`].
    counter_prefix: String,
    /// This limit's `RateLimit-Policy` item: `"name";q=100;w=60`.
    pub policy_item: String,
    pub(crate) admitted: Counter,
    pub(crate) refused: Counter,
}

impl CompiledLimit {
    fn compile(route: &str, l: &Limit, metrics: &Metrics) -> Self {
        let per_s = l.per.as_secs();
        // Redis Cluster hashes only the part between the first `{` and the next `}`: the route
        // (prefixed so the tag is never empty), so every counter a decision touches for one route
        // is in one slot and one script can update them atomically. Lengths in front of the
        // free-form parts keep names containing `:` or `}` from ever colliding.
        // Header names are case-insensitive: `X-Api-Key` and `x-api-key` are one counter.
        let key_kind = match &l.key {
            LimitKey::Header(h) => format!("header:{}", h.to_ascii_lowercase()),
            other => other.to_string(),
        };
        let counter_prefix = format!(
            "vrata:rl:{{r:{route}}}:{}:{}:{}/{}s:{}:{}:",
            l.name.len(),
            l.name,
            l.limit,
            per_s,
            key_kind.len(),
            key_kind,
        );
        Self {
            route: route.to_owned(),
            name: l.name.clone(),
            key: l.key.clone(),
            window: WindowSpec::new(l.limit, l.per),
            per: l.per,
            counter_prefix,
            policy_item: format!("\"{}\";q={};w={}", l.name, l.limit, per_s),
            admitted: metrics.decision(route, &l.name, true),
            refused: metrics.decision(route, &l.name, false),
        }
    }

    /// The store key of this limit's counter for `value` (the key entry's value; `""` for
    /// `key: route` and for a missing header or claim):
    /// `vrata:rl:{r:<route>}:<len>:<limit name>:<limit>/<per>s:<len>:<key kind>:<value>`.
    pub fn counter_key(&self, value: &str) -> String {
        let mut k = String::with_capacity(self.counter_prefix.len() + value.len());
        k.push_str(&self.counter_prefix);
        k.push_str(value);
        k
    }

    pub fn limit(&self) -> u64 {
        self.window.limit
    }
}

/// One config version, compiled: route name -> limit name -> limit.
#[derive(Debug, Default)]
pub struct CompiledLimits {
    routes: HashMap<String, HashMap<String, Arc<CompiledLimit>>>,
}

impl CompiledLimits {
    pub fn compile(limits: &Limits, metrics: &Metrics) -> Self {
        let routes = limits
            .routes()
            .map(|(route, ls)| {
                let by_name = ls
                    .iter()
                    .map(|l| {
                        (
                            l.name.clone(),
                            Arc::new(CompiledLimit::compile(route, l, metrics)),
                        )
                    })
                    .collect();
                (route.to_owned(), by_name)
            })
            .collect();
        Self { routes }
    }

    pub fn get(&self, route: &str, limit: &str) -> Option<&Arc<CompiledLimit>> {
        self.routes.get(route)?.get(limit)
    }

    pub fn route_count(&self) -> usize {
        self.routes.len()
    }
}

/// The limits in force, swapped whole when a new config arrives; readers never block.
pub struct LimitTable {
    current: ArcSwap<CompiledLimits>,
    metrics: Metrics,
}

impl LimitTable {
    /// Starts empty: every request is answered OK until the first config arrives.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            current: ArcSwap::from_pointee(CompiledLimits::default()),
            metrics,
        }
    }

    /// Compiles `limits` and makes them the ones in force. Decisions already under way finish
    /// with the version they started with.
    pub fn apply(&self, limits: &Limits) {
        let compiled = CompiledLimits::compile(limits, &self.metrics);
        let routes = compiled.route_count();
        self.current.store(Arc::new(compiled));
        self.metrics
            .limits_routes
            .set(i64::try_from(routes).unwrap_or(i64::MAX));
        tracing::info!(routes, "rate limits applied");
    }

    pub fn load(&self) -> Arc<CompiledLimits> {
        self.current.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(name: &str, limit: u64, per_s: u64, key: LimitKey) -> Limit {
        Limit::new(name, limit, Duration::from_secs(per_s), key)
    }

    #[test]
    fn rejects_bad_limits_with_the_route_and_limit_named() {
        let one = |l: Limit| Limits::new([("r".to_owned(), vec![l])]);
        assert_eq!(
            one(lim("a", 0, 1, LimitKey::Route)),
            Err(LimitsError::LimitOutOfRange {
                route: "r".into(),
                name: "a".into()
            })
        );
        assert!(one(lim("a", MAX_LIMIT, 1, LimitKey::Route)).is_ok());
        assert!(matches!(
            one(lim("a", MAX_LIMIT + 1, 1, LimitKey::Route)),
            Err(LimitsError::LimitOutOfRange { .. })
        ));
        assert!(matches!(
            one(Limit::new(
                "a",
                1,
                Duration::from_millis(1500),
                LimitKey::Route
            )),
            Err(LimitsError::BadPer { .. })
        ));
        assert!(matches!(
            one(lim("a", 1, 0, LimitKey::Route)),
            Err(LimitsError::BadPer { .. })
        ));
        assert!(matches!(
            one(lim("a\"b", 1, 1, LimitKey::Route)),
            Err(LimitsError::BadLimitName { .. })
        ));
        assert!(matches!(
            one(lim("a", 1, 1, LimitKey::Header(String::new()))),
            Err(LimitsError::EmptyKeyName { what: "header", .. })
        ));
        assert_eq!(
            Limits::new([(
                "r".to_owned(),
                vec![lim("a", 1, 1, LimitKey::Ip), lim("a", 2, 1, LimitKey::Ip)]
            )]),
            Err(LimitsError::DuplicateLimit {
                route: "r".into(),
                name: "a".into()
            })
        );
        assert_eq!(
            Limits::new([(String::new(), vec![])]),
            Err(LimitsError::EmptyRouteName)
        );
    }

    #[test]
    fn counter_keys_change_exactly_when_the_limit_does() {
        let m = Metrics::default();
        let compile = |l: Limit| {
            let limits = Limits::new([("orders".to_owned(), vec![l])]).unwrap();
            CompiledLimits::compile(&limits, &m)
                .get("orders", "u")
                .unwrap()
                .counter_key("alice")
        };
        let base = compile(lim("u", 10, 60, LimitKey::Claim("sub".into())));
        assert_eq!(base, "vrata:rl:{r:orders}:1:u:10/60s:9:claim:sub:alice");
        assert_eq!(
            base,
            compile(lim("u", 10, 60, LimitKey::Claim("sub".into())))
        );
        assert_ne!(
            base,
            compile(lim("u", 11, 60, LimitKey::Claim("sub".into())))
        );
        assert_ne!(
            base,
            compile(lim("u", 10, 61, LimitKey::Claim("sub".into())))
        );
        assert_ne!(
            base,
            compile(lim("u", 10, 60, LimitKey::Claim("email".into())))
        );
        assert_ne!(
            base,
            compile(lim("u", 10, 60, LimitKey::Header("sub".into())))
        );
        assert_eq!(
            compile(lim("u", 10, 60, LimitKey::Header("X-Api-Key".into()))),
            compile(lim("u", 10, 60, LimitKey::Header("x-api-key".into())))
        );
    }

    #[test]
    fn names_with_separators_do_not_collide() {
        let m = Metrics::default();
        let a = Limits::new([("a:1".to_owned(), vec![lim("x", 1, 1, LimitKey::Route)])]).unwrap();
        let b = Limits::new([("a".to_owned(), vec![lim("x", 1, 1, LimitKey::Route)])]).unwrap();
        let ka = CompiledLimits::compile(&a, &m)
            .get("a:1", "x")
            .unwrap()
            .counter_key("");
        let kb = CompiledLimits::compile(&b, &m)
            .get("a", "x")
            .unwrap()
            .counter_key("1:");
        assert_ne!(ka, kb);
    }

    #[test]
    fn every_counter_of_a_route_shares_one_cluster_hash_tag() {
        let m = Metrics::default();
        let limits = Limits::new([(
            "r}x".to_owned(),
            vec![
                lim("a", 1, 1, LimitKey::Ip),
                lim("b", 5, 60, LimitKey::Route),
            ],
        )])
        .unwrap();
        let c = CompiledLimits::compile(&limits, &m);
        let tag = |k: &str| {
            let open = k.find('{').unwrap();
            let close = open + k[open..].find('}').unwrap();
            k[open + 1..close].to_owned()
        };
        let a = c.get("r}x", "a").unwrap().counter_key("10.0.0.1");
        let b = c.get("r}x", "b").unwrap().counter_key("");
        assert_eq!(tag(&a), tag(&b));
        assert!(!tag(&a).is_empty());
    }

    #[test]
    fn table_swaps_whole_versions() {
        let t = LimitTable::new(Metrics::default());
        assert!(t.load().get("r", "a").is_none());
        let before = t.load();
        t.apply(&Limits::new([("r".to_owned(), vec![lim("a", 3, 1, LimitKey::Route)])]).unwrap());
        assert_eq!(t.load().get("r", "a").unwrap().limit(), 3);
        // A reader holding the old version keeps seeing it.
        assert!(before.get("r", "a").is_none());
        assert_eq!(t.load().get("r", "a").unwrap().policy_item, "\"a\";q=3;w=1");
    }
}
