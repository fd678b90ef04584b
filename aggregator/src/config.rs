//! The config resource the aggregator gets from xds-server (`vrata.config.v1.AggregatorConfig`)
//! compiled into [`Plans`]: templates parsed, dependencies resolved to indexes and ordered, header
//! names checked. Anything the aggregator cannot use is an error, which NACKs the version (the
//! aggregator keeps its last good plans and xds-server shows the message).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use vrata_proto::vrata::config::v1 as pb;

use crate::shape::{Shape, keys};
use crate::template::{PathTemplate, RouteTemplate, TemplateError};

/// Every route the aggregator serves, for one config version.
#[derive(Debug, Clone)]
pub struct Plans {
    /// Envoy's loopback listener; `None` when no route uses the aggregator.
    pub loopback: Option<SocketAddr>,
    /// The header naming the upstream on the loopback listener.
    pub upstream_header: Option<HeaderName>,
    pub routes: HashMap<String, Arc<Plan>>,
}

/// One route's compiled aggregate.
#[derive(Debug, Clone)]
pub struct Plan {
    pub route: String,
    /// `None`: the route has no path template (its backends use no route variables).
    pub template: Option<RouteTemplate>,
    pub timeout: Duration,
    /// In declaration order (the merge order).
    pub backends: Vec<BackendPlan>,
    /// Indexes into `backends`, every backend after the ones it waits for.
    pub order: Vec<usize>,
    pub shape: Option<Shape>,
    pub forward_authorization: bool,
    pub forward_headers: Vec<HeaderName>,
    pub passthrough: bool,
}

#[derive(Debug, Clone)]
pub struct BackendPlan {
    pub name: String,
    pub upstream: String,
    /// `None` for a passthrough backend (the client's own path and query).
    pub path: Option<PathTemplate>,
    /// Indexes of the backends whose answers the path uses.
    pub depends_on: Vec<usize>,
    pub group: Option<String>,
    pub optional: bool,
    pub timeout: Option<Duration>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("expected exactly one AggregatorConfig resource, got {0}")]
    ResourceCount(usize),
    #[error("loopback address {0:?} is not IP:PORT")]
    Loopback(String),
    #[error("header name {0:?} is invalid")]
    Header(String),
    #[error("route {0:?} is listed twice")]
    DuplicateRoute(String),
    #[error("route {route:?}: {source}")]
    Template {
        route: String,
        source: TemplateError,
    },
    #[error("route {route:?}: backends wait for each other (a cycle through {backend:?})")]
    Cycle { route: String, backend: String },
    #[error("route {0:?}: a passthrough has exactly one backend")]
    Passthrough(String),
    #[error("route {0:?}: no backends")]
    NoBackends(String),
    #[error("route {route:?}: backend {backend:?} is listed twice")]
    DuplicateBackend { route: String, backend: String },
}

impl Plans {
    /// A complete version: xds-server serves exactly one resource of this type.
    pub fn from_resources(resources: Vec<pb::AggregatorConfig>) -> Result<Self, ConfigError> {
        let count = resources.len();
        let mut it = resources.into_iter();
        match (it.next(), it.next()) {
            (Some(one), None) => Self::from_proto(one),
            _ => Err(ConfigError::ResourceCount(count)),
        }
    }

    pub fn from_proto(config: pb::AggregatorConfig) -> Result<Self, ConfigError> {
        let loopback = match config.loopback.as_str() {
            "" => None,
            text => Some(
                text.parse::<SocketAddr>()
                    .map_err(|_| ConfigError::Loopback(text.to_owned()))?,
            ),
        };
        let upstream_header = match config.upstream_header.as_str() {
            "" => None,
            h => Some(header(h)?),
        };
        let mut routes = HashMap::new();
        for a in config.aggregates {
            let plan = plan(a)?;
            if routes.contains_key(&plan.route) {
                return Err(ConfigError::DuplicateRoute(plan.route));
            }
            routes.insert(plan.route.clone(), Arc::new(plan));
        }
        Ok(Self {
            loopback,
            upstream_header,
            routes,
        })
    }
}

fn header(name: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| ConfigError::Header(name.to_owned()))
}

fn ms(v: u64) -> Option<Duration> {
    (v > 0).then(|| Duration::from_millis(v))
}

fn plan(a: pb::Aggregate) -> Result<Plan, ConfigError> {
    let route = a.route.clone();
    let template_error = |source| ConfigError::Template {
        route: route.clone(),
        source,
    };
    if a.backends.is_empty() {
        return Err(ConfigError::NoBackends(route));
    }
    if a.passthrough && a.backends.len() != 1 {
        return Err(ConfigError::Passthrough(route));
    }
    let template = match a.path_template.as_str() {
        "" => None,
        t => Some(RouteTemplate::parse(t).map_err(template_error)?),
    };
    let names: Vec<String> = a.backends.iter().map(|b| b.name.clone()).collect();
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(ConfigError::DuplicateBackend {
                route,
                backend: n.clone(),
            });
        }
    }
    let index = |n: &str| names.iter().position(|x| x == n);
    let mut backends = Vec::with_capacity(a.backends.len());
    for b in a.backends {
        let path = if a.passthrough {
            None
        } else {
            Some(PathTemplate::parse(&b.path, index).map_err(template_error)?)
        };
        let depends_on = path
            .as_ref()
            .map(PathTemplate::dependencies)
            .unwrap_or_default();
        backends.push(BackendPlan {
            name: b.name,
            upstream: b.upstream,
            path,
            depends_on,
            group: (!b.group.is_empty()).then_some(b.group),
            optional: b.optional,
            timeout: ms(b.timeout_ms),
        });
    }
    let order = order(&backends).map_err(|backend| ConfigError::Cycle {
        route: route.clone(),
        backend,
    })?;
    let shape = a.shape.map(|s| Shape {
        target: (!s.target.is_empty()).then(|| keys(&s.target)),
        allow: s.allow.iter().map(|p| keys(p)).collect(),
        deny: s.deny.iter().map(|p| keys(p)).collect(),
        rename: s
            .rename
            .into_iter()
            .map(|r| (keys(&r.from), r.to))
            .collect(),
    });
    let forward_headers = a
        .forward_headers
        .iter()
        .map(|h| header(h))
        .collect::<Result<_, _>>()?;
    Ok(Plan {
        route: a.route,
        template,
        timeout: ms(a.timeout_ms).unwrap_or(Duration::from_secs(3)),
        backends,
        order,
        shape: shape.filter(|s| !s.is_empty()),
        forward_authorization: a.forward_authorization,
        forward_headers,
        passthrough: a.passthrough,
    })
}

/// A topological order (Kahn's algorithm, ties by declaration order); `Err(name)` of a backend
/// on a cycle.
fn order(backends: &[BackendPlan]) -> Result<Vec<usize>, String> {
    let mut done = vec![false; backends.len()];
    let mut out = Vec::with_capacity(backends.len());
    while out.len() < backends.len() {
        let next = (0..backends.len())
            .find(|&i| !done[i] && backends[i].depends_on.iter().all(|&d| done[d]));
        match next {
            Some(i) => {
                done[i] = true;
                out.push(i);
            }
            None => {
                let stuck = (0..backends.len()).find(|&i| !done[i]).unwrap_or(0);
                return Err(backends[stuck].name.clone());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(name: &str, path: &str) -> pb::Backend {
        pb::Backend {
            name: name.into(),
            upstream: "u".into(),
            path: path.into(),
            ..Default::default()
        }
    }

    fn config(backends: Vec<pb::Backend>) -> pb::AggregatorConfig {
        pb::AggregatorConfig {
            loopback: "127.0.0.1:18004".into(),
            upstream_header: "x-vrata-upstream".into(),
            aggregates: vec![pb::Aggregate {
                route: "dash".into(),
                path_template: "/users/{id}".into(),
                timeout_ms: 1000,
                backends,
                ..Default::default()
            }],
        }
    }

    #[test]
    fn dependencies_are_ordered_first() {
        let plans = Plans::from_proto(config(vec![
            backend("reco", "/reco/{user.segment}"),
            backend("user", "/users/{id}"),
        ]))
        .expect("valid");
        let plan = &plans.routes["dash"];
        assert_eq!(plan.order, vec![1, 0]);
        assert_eq!(plan.backends[0].depends_on, vec![1]);
        assert_eq!(
            plans.loopback,
            Some("127.0.0.1:18004".parse().expect("addr"))
        );
    }

    #[test]
    fn cycles_and_unknown_backends_are_refused() {
        let cycle = Plans::from_proto(config(vec![
            backend("a", "/a/{b.x}"),
            backend("b", "/b/{a.y}"),
        ]));
        assert!(matches!(cycle, Err(ConfigError::Cycle { .. })));
        let unknown = Plans::from_proto(config(vec![backend("a", "/a/{zz.x}")]));
        assert!(matches!(unknown, Err(ConfigError::Template { .. })));
        assert_eq!(
            Plans::from_resources(Vec::new()).err(),
            Some(ConfigError::ResourceCount(0))
        );
    }
}
