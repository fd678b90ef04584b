//! The fleet view: what every Envoy reports over its metrics-service sink (see `sink`), folded
//! into a short, bounded history per listener, upstream and route, for the dashboard at the
//! admin `/` and its JSON (`GET /admin/fleet`).
//!
//! Envoy sends its cumulative counters and, for histograms, the quantiles of the last flush
//! interval. Per node we keep the last cumulative value of the counters we use (to turn them
//! into per-interval deltas); the fleet keeps [`SLOTS`] time slots of [`STEP`] per entity with
//! the deltas of every node added up. Latency quantiles of several nodes are merged
//! approximately: p50 as the request-weighted mean of the nodes' p50s, p99 as the highest p99.
//!
//! Stat names are parsed against the names of the running config (listener, upstream and route
//! names may contain dots, so a name is only recognised when the config has it): nothing a
//! client sends can create an entity, and memory is bounded by the config and [`MAX_NODES`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envoy_types::pb::io::prometheus::client::MetricFamily;
use serde::Serialize;

/// Width of one history slot.
pub const STEP: Duration = Duration::from_secs(5);
/// Slots kept: 5 minutes of history.
pub const SLOTS: u64 = 60;
/// Nodes remembered at most (the oldest reports are forgotten first).
pub const MAX_NODES: usize = 256;
/// A node that has not reported for this long is no longer shown.
pub const NODE_TTL: Duration = Duration::from_secs(300);

/// The names of the running config, against which stat names are parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Names {
    pub listeners: BTreeSet<String>,
    pub upstreams: BTreeSet<String>,
    pub routes: BTreeSet<String>,
}

impl Names {
    pub fn of(gw: &crate::model::Gateway) -> Self {
        Self {
            listeners: gw
                .listeners
                .iter()
                .map(|l| l.name.as_str().to_owned())
                .collect(),
            upstreams: gw.upstreams.keys().map(|n| n.as_str().to_owned()).collect(),
            routes: gw
                .routes
                .iter()
                .map(|r| r.name.as_str().to_owned())
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Listener,
    Upstream,
    Route,
}

/// What a stat measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Field {
    Requests,
    Status4xx,
    Status5xx,
    AuthzDenied,
    RateLimited,
    /// A latency histogram (milliseconds).
    Latency,
}

/// `(suffix, field)` per kind. Envoy's per-route stats (route stat prefixes) count requests to
/// the upstream, nothing else: status classes, latency, authz denials and rate-limit
/// rejections are counted per listener and per upstream (the route's target).
const LISTENER_STATS: &[(&str, Field)] = &[
    ("downstream_rq_total", Field::Requests),
    ("downstream_rq_4xx", Field::Status4xx),
    ("downstream_rq_5xx", Field::Status5xx),
    ("ext_authz.denied", Field::AuthzDenied),
    ("downstream_rq_time", Field::Latency),
];
const UPSTREAM_STATS: &[(&str, Field)] = &[
    ("upstream_rq_total", Field::Requests),
    ("upstream_rq_4xx", Field::Status4xx),
    ("upstream_rq_5xx", Field::Status5xx),
    ("ext_authz.denied", Field::AuthzDenied),
    ("ratelimit.over_limit", Field::RateLimited),
    ("upstream_rq_time", Field::Latency),
];
const ROUTE_STATS: &[(&str, Field)] = &[("upstream_rq_total", Field::Requests)];

/// Recognises `http.<listener>.<suffix>`, `cluster.<upstream>.<suffix>` and
/// `vhost.<vhost>.route.<route>.<suffix>` for the names of `names`.
fn parse<'a>(stat: &str, names: &'a Names) -> Option<(Kind, &'a str, Field)> {
    fn split<'s>(stat: &'s str, table: &[(&str, Field)]) -> Option<(&'s str, Field)> {
        table.iter().find_map(|(suffix, field)| {
            stat.strip_suffix(suffix)
                .and_then(|s| s.strip_suffix('.'))
                .map(|rest| (rest, *field))
        })
    }
    let found = |set: &'a BTreeSet<String>, name: &str| set.get(name).map(String::as_str);
    if let Some(rest) = stat.strip_prefix("http.") {
        let (name, field) = split(rest, LISTENER_STATS)?;
        return Some((Kind::Listener, found(&names.listeners, name)?, field));
    }
    if let Some(rest) = stat.strip_prefix("cluster.") {
        let (name, field) = split(rest, UPSTREAM_STATS)?;
        return Some((Kind::Upstream, found(&names.upstreams, name)?, field));
    }
    if let Some(rest) = stat.strip_prefix("vhost.") {
        let (rest, field) = split(rest, ROUTE_STATS)?;
        // `<vhost>.route.<route>`: both may contain dots; the route must be a known name.
        return rest.match_indices(".route.").find_map(|(i, m)| {
            found(&names.routes, &rest[i + m.len()..]).map(|r| (Kind::Route, r, field))
        });
    }
    None
}

/// One slot of one entity (or of one node): sums over the slot and the fleet.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Point {
    /// Slot start, Unix seconds.
    pub t: u64,
    pub requests: f64,
    pub status_4xx: f64,
    pub status_5xx: f64,
    pub authz_denied: f64,
    pub rate_limited: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    #[serde(skip)]
    latency_weight: f64,
}

impl Point {
    fn add(&mut self, field: Field, delta: f64) {
        match field {
            Field::Requests => self.requests += delta,
            Field::Status4xx => self.status_4xx += delta,
            Field::Status5xx => self.status_5xx += delta,
            Field::AuthzDenied => self.authz_denied += delta,
            Field::RateLimited => self.rate_limited += delta,
            Field::Latency => {}
        }
    }

    fn add_latency(&mut self, p50: f64, p99: f64, weight: f64) {
        let w = weight.max(1.0);
        let total = self.latency_weight + w;
        self.p50_ms = Some((self.p50_ms.unwrap_or(0.0) * self.latency_weight + p50 * w) / total);
        self.p99_ms = Some(self.p99_ms.map_or(p99, |m| m.max(p99)));
        self.latency_weight = total;
    }
}

/// Totals since each node started (Envoy's cumulative counters, added over the nodes).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Totals {
    pub requests: f64,
    pub status_4xx: f64,
    pub status_5xx: f64,
    pub authz_denied: f64,
    pub rate_limited: f64,
}

impl Totals {
    fn add(&mut self, field: Field, value: f64) {
        match field {
            Field::Requests => self.requests += value,
            Field::Status4xx => self.status_4xx += value,
            Field::Status5xx => self.status_5xx += value,
            Field::AuthzDenied => self.authz_denied += value,
            Field::RateLimited => self.rate_limited += value,
            Field::Latency => {}
        }
    }
}

#[derive(Debug, Default)]
struct Series(VecDeque<Point>);

impl Series {
    /// The point of slot `t`, created when needed; slots older than [`SLOTS`] are dropped.
    fn at(&mut self, t: u64) -> &mut Point {
        let oldest = t.saturating_sub((SLOTS - 1) * STEP.as_secs());
        while self.0.front().is_some_and(|p| p.t < oldest) {
            self.0.pop_front();
        }
        // Reports arrive in time order, so a new slot is always the last one.
        if self.0.back().is_none_or(|p| p.t < t) {
            self.0.push_back(Point {
                t,
                ..Point::default()
            });
        }
        let i = self.0.iter().rposition(|p| p.t == t).unwrap_or(0);
        &mut self.0[i]
    }
}

#[derive(Debug)]
struct NodeStats {
    agent: String,
    first_seen: SystemTime,
    last_seen: SystemTime,
    streaming: bool,
    /// Reports received since the node was first seen.
    reports: u64,
    /// Last cumulative value of each counter we use.
    counters: HashMap<String, f64>,
    /// Requests through the node's listeners, per slot.
    series: Series,
}

#[derive(Debug, Default)]
struct Inner {
    names: Arc<Names>,
    nodes: BTreeMap<String, NodeStats>,
    entities: BTreeMap<(Kind, String), Series>,
}

/// Shared between the sink (writes) and the admin API (reads).
#[derive(Debug, Default)]
pub struct Fleet {
    inner: Mutex<Inner>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn slot_of(t: SystemTime) -> u64 {
    let s = unix(t);
    s - s % STEP.as_secs()
}

impl Fleet {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        // Plain data updated in place; a panic elsewhere cannot leave it inconsistent.
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// The names of a newly applied config. Entities the config no longer has are forgotten.
    pub fn set_names(&self, names: Names) {
        self.with(|i| {
            i.entities.retain(|(kind, name), _| match kind {
                Kind::Listener => names.listeners.contains(name),
                Kind::Upstream => names.upstreams.contains(name),
                Kind::Route => names.routes.contains(name),
            });
            i.names = Arc::new(names);
        });
    }

    /// A node's metrics stream opened (or sent its identifier again).
    pub fn connected(&self, node: &str, agent: &str, now: SystemTime) {
        self.with(|i| {
            if !i.nodes.contains_key(node) && i.nodes.len() >= MAX_NODES {
                let oldest = i
                    .nodes
                    .iter()
                    .min_by_key(|(_, n)| n.last_seen)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    i.nodes.remove(&k);
                }
            }
            let n = i.nodes.entry(node.to_owned()).or_insert_with(|| NodeStats {
                agent: String::new(),
                first_seen: now,
                last_seen: now,
                streaming: true,
                reports: 0,
                counters: HashMap::new(),
                series: Series::default(),
            });
            if !agent.is_empty() {
                n.agent = agent.to_owned();
            }
            n.streaming = true;
            n.last_seen = now;
        });
    }

    pub fn disconnected(&self, node: &str) {
        self.with(|i| {
            if let Some(n) = i.nodes.get_mut(node) {
                n.streaming = false;
            }
        });
    }

    /// One flush of one node.
    pub fn report(&self, node: &str, families: &[MetricFamily], now: SystemTime) {
        let slot = slot_of(now);
        self.with(|i| {
            let names = i.names.clone();
            let Some(n) = i.nodes.get_mut(node) else {
                return;
            };
            // A counter seen for the first time after the node's first report was zero
            // before (Envoy only sends counters that were ever used): all of it happened
            // since. On the first report it is only a baseline (Envoy may have run long
            // before xds-server started).
            let baseline = n.reports == 0;
            n.reports += 1;
            n.last_seen = now;
            let mut deltas: Vec<(Kind, &str, Field, f64)> = Vec::new();
            let mut latencies: Vec<(Kind, &str, f64, f64)> = Vec::new();
            for family in families {
                let Some(stat) = family.name.as_deref() else {
                    continue;
                };
                let Some((kind, name, field)) = parse(stat, &names) else {
                    continue;
                };
                for metric in &family.metric {
                    if let Some(value) = metric.counter.as_ref().and_then(|c| c.value) {
                        let prev = n.counters.insert(stat.to_owned(), value);
                        let delta = match prev {
                            Some(p) if value >= p => value - p,
                            // Envoy restarted: its counters started again from zero.
                            Some(_) => value,
                            None if baseline => 0.0,
                            None => value,
                        };
                        deltas.push((kind, name, field, delta));
                    } else if let Some(s) = &metric.summary {
                        let q = |want: f64| {
                            s.quantile
                                .iter()
                                .find(|q| q.quantile.is_some_and(|v| (v - want).abs() < 1e-9))
                                .and_then(|q| q.value)
                        };
                        if let (Some(p50), Some(p99)) = (q(0.5), q(0.99))
                            && s.sample_count.unwrap_or(0) > 0
                            && p50.is_finite()
                            && p99.is_finite()
                        {
                            latencies.push((kind, name, p50, p99));
                        }
                    }
                }
            }
            let node_point = n.series.at(slot);
            for (kind, _, field, delta) in &deltas {
                if *kind == Kind::Listener {
                    node_point.add(*field, *delta);
                }
            }
            let mut weights: HashMap<(Kind, &str), f64> = HashMap::new();
            for (kind, name, field, delta) in &deltas {
                let point = i
                    .entities
                    .entry((*kind, (*name).to_owned()))
                    .or_default()
                    .at(slot);
                point.add(*field, *delta);
                if *field == Field::Requests {
                    *weights.entry((*kind, name)).or_default() += delta;
                }
            }
            for (kind, name, p50, p99) in latencies {
                let w = weights.get(&(kind, name)).copied().unwrap_or(0.0);
                i.entities
                    .entry((kind, name.to_owned()))
                    .or_default()
                    .at(slot)
                    .add_latency(p50, p99, w);
            }
        });
    }

    /// What the dashboard shows.
    pub fn summary(&self, now: SystemTime) -> Summary {
        self.with(|i| {
            let names = i.names.clone();
            let cutoff = now.checked_sub(NODE_TTL).unwrap_or(UNIX_EPOCH);
            let current_slot = slot_of(now);
            let mut totals: BTreeMap<(Kind, &str), Totals> = BTreeMap::new();
            let mut nodes = Vec::new();
            for (id, n) in &i.nodes {
                if n.last_seen < cutoff {
                    continue;
                }
                let mut requests = 0.0;
                for (stat, value) in &n.counters {
                    if let Some((kind, name, field)) = parse(stat, &names) {
                        totals.entry((kind, name)).or_default().add(field, *value);
                        if kind == Kind::Listener && field == Field::Requests {
                            requests += value;
                        }
                    }
                }
                nodes.push(NodeSummary {
                    node_id: id.clone(),
                    agent: n.agent.clone(),
                    streaming: n.streaming,
                    first_report: unix(n.first_seen),
                    last_report: unix(n.last_seen),
                    requests_total: requests,
                    requests_per_second: rate(&n.series, current_slot),
                    series: n.series.0.iter().copied().collect(),
                });
            }
            let entities = i
                .entities
                .iter()
                .map(|((kind, name), series)| {
                    let last = series.0.iter().rev().find(|p| p.p99_ms.is_some());
                    EntitySummary {
                        kind: *kind,
                        name: name.clone(),
                        totals: totals
                            .get(&(*kind, name.as_str()))
                            .copied()
                            .unwrap_or_default(),
                        requests_per_second: rate(series, current_slot),
                        p50_ms: last.and_then(|p| p.p50_ms),
                        p99_ms: last.and_then(|p| p.p99_ms),
                        series: series.0.iter().copied().collect(),
                    }
                })
                .collect();
            Summary {
                step_seconds: STEP.as_secs(),
                slots: SLOTS,
                now: unix(now),
                nodes,
                entities,
            }
        })
    }
}

/// Requests per second over the last complete slot.
fn rate(series: &Series, current_slot: u64) -> f64 {
    let previous = current_slot.saturating_sub(STEP.as_secs());
    series
        .0
        .iter()
        .rev()
        .find(|p| p.t == previous)
        .map_or(0.0, |p| p.requests / STEP.as_secs_f64())
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub step_seconds: u64,
    pub slots: u64,
    pub now: u64,
    /// Nodes that reported in the last [`NODE_TTL`].
    pub nodes: Vec<NodeSummary>,
    pub entities: Vec<EntitySummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeSummary {
    pub node_id: String,
    pub agent: String,
    /// The metrics stream is open.
    pub streaming: bool,
    pub first_report: u64,
    pub last_report: u64,
    /// Requests through the node's listeners since it started.
    pub requests_total: f64,
    pub requests_per_second: f64,
    pub series: Vec<Point>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntitySummary {
    pub kind: Kind,
    pub name: String,
    pub totals: Totals,
    pub requests_per_second: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub series: Vec<Point>,
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::io::prometheus::client::{
        Counter, Metric, MetricType, Quantile, Summary as PbSummary,
    };

    use super::*;

    fn names() -> Names {
        Names {
            listeners: ["public".to_owned()].into(),
            upstreams: ["orders".to_owned(), "my.svc".to_owned()].into(),
            routes: ["orders-read".to_owned(), "a.route.b".to_owned()].into(),
        }
    }

    #[test]
    fn stat_names_are_parsed_against_the_config() {
        let n = names();
        assert_eq!(
            parse("http.public.downstream_rq_total", &n),
            Some((Kind::Listener, "public", Field::Requests))
        );
        assert_eq!(
            parse("cluster.my.svc.ratelimit.over_limit", &n),
            Some((Kind::Upstream, "my.svc", Field::RateLimited))
        );
        assert_eq!(
            parse(
                "vhost.api.route.example.com.route.a.route.b.upstream_rq_total",
                &n
            ),
            Some((Kind::Route, "a.route.b", Field::Requests))
        );
        // Envoy has no per-route status or latency stats.
        assert_eq!(
            parse("vhost.*.route.orders-read.upstream_rq_time", &n),
            None
        );
        // Envoy's `external.` / `internal.` variants and unknown names are not entities.
        assert_eq!(parse("cluster.orders.external.upstream_rq_4xx", &n), None);
        assert_eq!(parse("cluster.xds_cluster.upstream_rq_total", &n), None);
        assert_eq!(parse("http.public.downstream_cx_total", &n), None);
    }

    fn counter(name: &str, v: f64) -> MetricFamily {
        MetricFamily {
            name: Some(name.into()),
            r#type: Some(MetricType::Counter as i32),
            metric: vec![Metric {
                counter: Some(Counter {
                    value: Some(v),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn summary(name: &str, p50: f64, p99: f64) -> MetricFamily {
        MetricFamily {
            name: Some(name.into()),
            r#type: Some(MetricType::Summary as i32),
            metric: vec![Metric {
                summary: Some(PbSummary {
                    sample_count: Some(10),
                    quantile: [(0.5, p50), (0.99, p99)]
                        .into_iter()
                        .map(|(q, v)| Quantile {
                            quantile: Some(q),
                            value: Some(v),
                        })
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn deltas_per_slot_totals_per_node_and_merged_latency() {
        let fleet = Fleet::default();
        fleet.set_names(names());
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        // A first report without any counter we use (a fresh Envoy sends only used ones),
        // then the counter appears: all of it is new traffic.
        fleet.connected("fresh", "", t0);
        fleet.report("fresh", &[], t0);
        fleet.report(
            "fresh",
            &[counter("cluster.orders.upstream_rq_total", 3.0)],
            t0 + STEP,
        );
        fleet.disconnected("fresh");
        for node in ["a", "b"] {
            fleet.connected(node, "envoy 1.40.0", t0);
            // First report: a baseline.
            fleet.report(
                node,
                &[counter("http.public.downstream_rq_total", 100.0)],
                t0,
            );
        }
        let t1 = t0 + STEP;
        fleet.report(
            "a",
            &[
                counter("http.public.downstream_rq_total", 110.0),
                counter("cluster.orders.upstream_rq_total", 4.0),
                summary("cluster.orders.upstream_rq_time", 2.0, 10.0),
            ],
            t1,
        );
        fleet.report(
            "b",
            &[
                counter("http.public.downstream_rq_total", 105.0),
                summary("cluster.orders.upstream_rq_time", 4.0, 30.0),
            ],
            t1,
        );
        let s = fleet.summary(t1 + STEP);
        assert_eq!(s.nodes.len(), 3);
        assert!(!s.nodes[2].streaming);
        assert_eq!(s.nodes[0].agent, "envoy 1.40.0");
        assert_eq!(s.nodes[0].requests_total, 110.0);
        let public = s
            .entities
            .iter()
            .find(|e| e.kind == Kind::Listener)
            .expect("listener");
        assert_eq!(public.totals.requests, 215.0);
        assert_eq!(public.series.last().map(|p| p.requests), Some(15.0));
        assert_eq!(public.requests_per_second, 15.0 / STEP.as_secs_f64());
        let orders = s
            .entities
            .iter()
            .find(|e| e.kind == Kind::Upstream)
            .expect("upstream");
        // A counter first seen after the baseline counts whole: 4 from a, 3 from fresh.
        assert_eq!(orders.series.last().map(|p| p.requests), Some(7.0));
        assert_eq!(orders.totals.requests, 7.0);
        assert_eq!(orders.p99_ms, Some(30.0));
        // Weighted by requests: a had 4, b none (weight 1).
        assert_eq!(orders.p50_ms, Some((2.0 * 4.0 + 4.0) / 5.0));
    }

    #[test]
    fn history_and_nodes_are_bounded() {
        let fleet = Fleet::default();
        fleet.set_names(names());
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        fleet.connected("a", "", t0);
        for k in 0..(SLOTS * 3) {
            let t = t0 + STEP * u32::try_from(k).expect("small");
            fleet.report(
                "a",
                &[counter("http.public.downstream_rq_total", k as f64)],
                t,
            );
        }
        let s = fleet.summary(t0 + STEP * u32::try_from(SLOTS * 3).expect("small"));
        assert!(s.entities[0].series.len() as u64 <= SLOTS);
        for k in 0..(MAX_NODES + 10) {
            fleet.connected(&format!("n{k}"), "", t0);
        }
        assert!(fleet.with(|i| i.nodes.len()) <= MAX_NODES);
        // Renamed away: forgotten.
        fleet.set_names(Names::default());
        assert!(fleet.with(|i| i.entities.is_empty()));
    }
}
