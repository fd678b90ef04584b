//! Running one aggregate: every backend is started at once and waits only for the backends
//! its path names; each call is bounded by its own `timeout` (from its start) and by the
//! aggregate's budget (from the request's arrival), so the whole run ends by the budget.
//!
//! I/O goes through [`Fetch`], so the scheduling and time rules are tested with a scripted
//! fetcher and tokio's paused clock.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared, join_all};
use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;
use tokio::time::{Instant, timeout_at};

use crate::config::Plan;
use crate::failure::Failure;
use crate::template::Vars;

/// One call through Envoy's loopback listener.
#[derive(Debug, Clone)]
pub struct Call {
    pub upstream: String,
    pub method: Method,
    /// Path and query.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A backend's answer, its body already bounded by the fetcher.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Makes calls (the HTTP client in production, a script in tests).
pub trait Fetch: Send + Sync + 'static {
    fn fetch(&self, call: Call) -> BoxFuture<'static, Result<Reply, Failure>>;
}

/// One backend's result and how long its call took (zero when it was never called).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub result: Result<Value, Failure>,
    pub elapsed: Duration,
    /// Whether the backend was called at all (not when a dependency failed first).
    pub called: bool,
}

type Pending = Shared<BoxFuture<'static, Arc<Outcome>>>;

/// Runs `plan`'s backends for one request; outcomes in declaration order. `headers` go to
/// every backend; `started` is when the request arrived (the budget counts from there).
pub async fn run(
    plan: Arc<Plan>,
    vars: Arc<Vars>,
    headers: Arc<HeaderMap>,
    fetch: Arc<dyn Fetch>,
    started: Instant,
) -> Vec<Outcome> {
    let deadline = started + plan.timeout;
    let names: Arc<Vec<String>> = Arc::new(plan.backends.iter().map(|b| b.name.clone()).collect());
    let mut pending: Vec<Option<Pending>> = vec![None; plan.backends.len()];
    for &i in &plan.order {
        let deps: Vec<(usize, Option<Pending>)> = plan.backends[i]
            .depends_on
            .iter()
            .map(|&d| (d, pending[d].clone()))
            .collect();
        let task = backend_call(
            plan.clone(),
            i,
            deps,
            vars.clone(),
            headers.clone(),
            fetch.clone(),
            names.clone(),
            deadline,
        );
        pending[i] = Some(task.boxed().shared());
    }
    let all = pending.into_iter().map(|p| async move {
        match p {
            Some(p) => (*p.await).clone(),
            // Unreachable with a plan from `Plans` (the order covers every backend).
            None => Outcome {
                result: Err(Failure::Unreachable),
                elapsed: Duration::ZERO,
                called: false,
            },
        }
    });
    join_all(all).await
}

#[allow(clippy::too_many_arguments)]
async fn backend_call(
    plan: Arc<Plan>,
    i: usize,
    deps: Vec<(usize, Option<Pending>)>,
    vars: Arc<Vars>,
    headers: Arc<HeaderMap>,
    fetch: Arc<dyn Fetch>,
    names: Arc<Vec<String>>,
    deadline: Instant,
) -> Arc<Outcome> {
    let not_called = |failure| {
        Arc::new(Outcome {
            result: Err(failure),
            elapsed: Duration::ZERO,
            called: false,
        })
    };
    // Waiting for dependencies is bounded by the budget too (they are, so this only guards).
    let mut answers: Vec<(usize, Arc<Outcome>)> = Vec::with_capacity(deps.len());
    for (d, dep) in deps {
        let Some(dep) = dep else {
            return not_called(Failure::Unreachable);
        };
        let Ok(out) = timeout_at(deadline, dep).await else {
            return not_called(Failure::Timeout);
        };
        if let Err(f) = &out.result {
            return not_called(Failure::Dependency {
                backend: names[d].clone(),
                timeout: f.is_timeout(),
            });
        }
        answers.push((d, out));
    }
    let backend = &plan.backends[i];
    let path = match &backend.path {
        Some(template) => template.render(
            &vars,
            |k| {
                answers
                    .iter()
                    .find(|(d, _)| *d == k)
                    .and_then(|(_, o)| o.result.as_ref().ok())
            },
            &names,
        ),
        None => Ok("/".to_owned()),
    };
    let path = match path {
        Ok(p) => p,
        Err(e) => return not_called(Failure::Path(e)),
    };
    let call = Call {
        upstream: backend.upstream.clone(),
        method: Method::GET,
        path,
        headers: (*headers).clone(),
        body: Bytes::new(),
    };
    let start = Instant::now();
    let own = backend
        .timeout
        .map_or(deadline, |t| (start + t).min(deadline));
    let result = match timeout_at(own, fetch.fetch(call)).await {
        Err(_) => Err(Failure::Timeout),
        Ok(Err(f)) => Err(f),
        Ok(Ok(reply)) => json_answer(&reply),
    };
    Arc::new(Outcome {
        result,
        elapsed: start.elapsed(),
        called: true,
    })
}

/// A 2xx JSON body, or why not.
pub fn json_answer(reply: &Reply) -> Result<Value, Failure> {
    if !reply.status.is_success() {
        return Err(Failure::Status(reply.status.as_u16()));
    }
    serde_json::from_slice(&reply.body).map_err(|_| Failure::NotJson)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Plans;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use vrata_proto::vrata::config::v1 as pb;

    /// Answers each path after a scripted delay with a scripted body; records call times.
    struct Script {
        answers: HashMap<String, (u64, u16, &'static str)>,
        calls: Mutex<Vec<(String, Instant)>>,
    }

    impl Fetch for Arc<Script> {
        fn fetch(&self, call: Call) -> BoxFuture<'static, Result<Reply, Failure>> {
            self.calls
                .lock()
                .expect("lock")
                .push((call.path.clone(), Instant::now()));
            let answer = self.answers.get(&call.path).copied();
            async move {
                let Some((delay, status, body)) = answer else {
                    return Err(Failure::Unreachable);
                };
                tokio::time::sleep(Duration::from_millis(delay)).await;
                Ok(Reply {
                    status: StatusCode::from_u16(status).expect("status"),
                    headers: HeaderMap::new(),
                    body: Bytes::from_static(body.as_bytes()),
                })
            }
            .boxed()
        }
    }

    fn plan(backends: Vec<(&str, &str, bool, u64)>, timeout_ms: u64) -> Arc<Plan> {
        let config = pb::AggregatorConfig {
            loopback: "127.0.0.1:1".into(),
            upstream_header: "x-vrata-upstream".into(),
            aggregates: vec![pb::Aggregate {
                route: "r".into(),
                path_template: "/u/{id}".into(),
                timeout_ms,
                backends: backends
                    .into_iter()
                    .map(|(name, path, optional, t)| pb::Backend {
                        name: name.into(),
                        upstream: "up".into(),
                        path: path.into(),
                        optional,
                        timeout_ms: t,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
        };
        Plans::from_proto(config).expect("valid").routes["r"].clone()
    }

    fn script(answers: &[(&str, u64, u16, &'static str)]) -> Arc<Script> {
        Arc::new(Script {
            answers: answers
                .iter()
                .map(|(p, d, s, b)| ((*p).to_owned(), (*d, *s, *b)))
                .collect(),
            calls: Mutex::new(Vec::new()),
        })
    }

    async fn go(plan: Arc<Plan>, s: &Arc<Script>) -> Vec<Outcome> {
        let vars = Arc::new(vec![("id".to_owned(), "7".to_owned())]);
        run(
            plan,
            vars,
            Arc::new(HeaderMap::new()),
            Arc::new(s.clone()),
            Instant::now(),
        )
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn independent_backends_run_concurrently() {
        let s = script(&[
            ("/a/7", 100, 200, "{\"a\":1}"),
            ("/b/7", 100, 200, "{\"b\":2}"),
        ]);
        let t0 = Instant::now();
        let out = go(
            plan(
                vec![("a", "/a/{id}", false, 0), ("b", "/b/{id}", false, 0)],
                1000,
            ),
            &s,
        )
        .await;
        assert_eq!(t0.elapsed(), Duration::from_millis(100));
        assert!(out.iter().all(|o| o.result.is_ok()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_chained_backend_waits_for_exactly_its_dependency() {
        let s = script(&[
            ("/user/7", 50, 200, "{\"segment\":\"gold\"}"),
            ("/slow", 300, 200, "{}"),
            ("/reco/gold", 10, 200, "{\"items\":[1]}"),
        ]);
        let t0 = Instant::now();
        let out = go(
            plan(
                vec![
                    ("user", "/user/{id}", false, 0),
                    ("slow", "/slow", false, 0),
                    ("reco", "/reco/{user.segment}", false, 0),
                ],
                1000,
            ),
            &s,
        )
        .await;
        assert!(out.iter().all(|o| o.result.is_ok()), "{out:?}");
        let calls = s.calls.lock().expect("lock").clone();
        let reco = calls
            .iter()
            .find(|(p, _)| p == "/reco/gold")
            .expect("called");
        // Called right after `user` answered, not after `slow`.
        assert_eq!(reco.1 - t0, Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn own_timeout_and_aggregate_budget_bound_the_run() {
        let s = script(&[("/fast", 10, 200, "{}"), ("/sleepy", 5000, 200, "{}")]);
        let t0 = Instant::now();
        let out = go(
            plan(
                vec![
                    ("fast", "/fast", false, 0),
                    ("sleepy", "/sleepy", true, 200),
                ],
                1000,
            ),
            &s,
        )
        .await;
        assert_eq!(t0.elapsed(), Duration::from_millis(200));
        assert_eq!(out[1].result, Err(Failure::Timeout));
        let t1 = Instant::now();
        let out = go(plan(vec![("sleepy", "/sleepy", false, 0)], 300), &s).await;
        assert_eq!(t1.elapsed(), Duration::from_millis(300));
        assert_eq!(out[0].result, Err(Failure::Timeout));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_propagate_to_dependents_and_bad_answers_fail() {
        let s = script(&[("/user/7", 1, 503, "{}"), ("/text", 1, 200, "hello")]);
        let out = go(
            plan(
                vec![
                    ("user", "/user/{id}", false, 0),
                    ("reco", "/reco/{user.segment}", true, 0),
                    ("text", "/text", false, 0),
                ],
                1000,
            ),
            &s,
        )
        .await;
        assert_eq!(out[0].result, Err(Failure::Status(503)));
        assert_eq!(
            out[1].result,
            Err(Failure::Dependency {
                backend: "user".into(),
                timeout: false
            })
        );
        assert!(!out[1].called);
        assert_eq!(out[2].result, Err(Failure::NotJson));
    }
}
