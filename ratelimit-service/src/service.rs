//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`: descriptors in, one store
//! decision, statuses and quota headers out.
//!
//! The request's descriptors are matched to compiled limits (see [`crate::limits`] for the
//! contract), hits on the same counter are merged, and the store decides all of them at once:
//! the request is admitted only if every limit admits it, and a refused request consumes
//! nothing. gRPC status codes are decided here and nowhere else ([`RequestError`]).

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit, rate_limit::Unit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{Duration as PbDuration, Struct, Value};
use tonic::{Request, Response, Status};
use vrata_common::trace::Tracer;

use crate::headers;
use crate::limits::{CompiledLimit, DOMAIN, LIMIT_ENTRY, LimitKey, LimitTable, ROUTE_ENTRY};
use crate::metrics::{Metrics, Unmatched};
use crate::store::{Decision, Hit, Store, StoreError};
use crate::window::CounterState;

/// Why a request got no decision.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("descriptor {index}: {reason}")]
    Malformed { index: usize, reason: &'static str },
    #[error("counter store failed: {0}")]
    Store(#[from] StoreError),
}

impl From<RequestError> for Status {
    fn from(e: RequestError) -> Self {
        match e {
            // Envoy sent something outside the descriptor contract: a config bug, not a
            // reason to retry.
            RequestError::Malformed { .. } => Status::invalid_argument(e.to_string()),
            // Only a store without a fallback fails; Envoy applies its failure mode.
            RequestError::Store(_) => Status::unavailable(e.to_string()),
        }
    }
}

/// The handler: the limits in force and a store.
pub struct RateLimiter<S> {
    limits: Arc<LimitTable>,
    store: S,
    metrics: Metrics,
    tracer: Arc<Tracer>,
}

/// How one descriptor was matched.
enum Slot {
    /// Answered OK: no limit applies.
    Unmatched,
    /// Index into the decision's counters.
    Counter(usize),
}

impl<S: Store> RateLimiter<S> {
    pub fn new(limits: Arc<LimitTable>, store: S, metrics: Metrics) -> Self {
        Self {
            limits,
            store,
            metrics,
            tracer: Arc::new(Tracer::disabled()),
        }
    }

    /// Spans for sampled calls (default: none).
    pub fn with_tracer(mut self, tracer: Arc<Tracer>) -> Self {
        self.tracer = tracer;
        self
    }

    pub fn limits(&self) -> &Arc<LimitTable> {
        &self.limits
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// The decision for one request.
    pub async fn decide(&self, req: &RateLimitRequest) -> Result<RateLimitResponse, RequestError> {
        if req.domain != DOMAIN {
            self.metrics.unmatched(Unmatched::Domain);
            return Ok(all_ok(req.descriptors.len()));
        }
        let table = self.limits.load();
        // proto3 cannot tell 0 from unset; Envoy's API says unset means 1.
        let request_hits = u64::from(req.hits_addend.max(1));

        let mut slots = Vec::with_capacity(req.descriptors.len());
        let mut hits: Vec<Hit> = Vec::with_capacity(req.descriptors.len());
        let mut limits: Vec<&Arc<CompiledLimit>> = Vec::with_capacity(req.descriptors.len());
        for (index, d) in req.descriptors.iter().enumerate() {
            let malformed = |reason| RequestError::Malformed { index, reason };
            let (route, limit, key_entry) = parse(d).map_err(malformed)?;
            if d.is_negative_hits {
                return Err(malformed("negative hits (refunds) are not supported"));
            }
            let n = d.hits_addend.map_or(request_hits, |h| h.value);
            let Some(compiled) = table.get(route, limit) else {
                self.metrics.unmatched(Unmatched::Limit);
                tracing::debug!(route, limit, "descriptor for an unknown limit: answered OK");
                slots.push(Slot::Unmatched);
                continue;
            };
            let Some(value) = key_value(&compiled.key, key_entry) else {
                self.metrics.unmatched(Unmatched::Key);
                tracing::debug!(
                    route,
                    limit,
                    "descriptor does not fit the limit's key: answered OK"
                );
                slots.push(Slot::Unmatched);
                continue;
            };
            let key = compiled.counter_key(value);
            // Two descriptors on one counter must be decided as one, or each would see the
            // counter before the other's hits.
            match hits.iter().position(|h| h.key == key) {
                Some(i) => {
                    hits[i].hits = hits[i].hits.saturating_add(n);
                    slots.push(Slot::Counter(i));
                }
                None => {
                    hits.push(Hit {
                        key,
                        window: compiled.window,
                        hits: n,
                    });
                    limits.push(compiled);
                    slots.push(Slot::Counter(hits.len() - 1));
                }
            }
        }
        if hits.is_empty() {
            return Ok(all_ok(req.descriptors.len()));
        }

        let decision = self.store.decide(&hits).await?;
        for (limit, state) in limits.iter().zip(&decision.counters) {
            if state.fits {
                limit.admitted.inc();
            } else {
                limit.refused.inc();
            }
        }
        if !decision.admitted {
            tracing::debug!(
                route = limits.first().map(|l| l.route.as_str()),
                "request over limit"
            );
        }
        Ok(respond(&slots, &limits, &decision))
    }
}

/// The route, limit and optional key entry of a descriptor in the contract's shape.
fn parse(d: &RateLimitDescriptor) -> Result<(&str, &str, Option<&Entry>), &'static str> {
    match d.entries.as_slice() {
        [r, l, rest @ ..] if r.key == ROUTE_ENTRY && l.key == LIMIT_ENTRY => match rest {
            [] => Ok((&r.value, &l.value, None)),
            [e] => Ok((&r.value, &l.value, Some(e))),
            _ => Err("more than three entries"),
        },
        [] => Err("no entries"),
        _ => Err("entries must start with (\"route\", <route>), (\"limit\", <limit>)"),
    }
}

/// The counter's key value, or `None` if the entry does not fit the limit's key. A missing
/// header or claim (Envoy's `skip_if_absent`) counts under `""`, shared by all such requests.
fn key_value<'a>(key: &LimitKey, entry: Option<&'a Entry>) -> Option<&'a str> {
    match (key.descriptor_key(), entry) {
        (None, None) => Some(""),
        (None, Some(_)) => None,
        (Some(_), None) => Some(""),
        (Some(expected), Some(e)) if e.key == expected => Some(&e.value),
        (Some(_), Some(_)) => None,
    }
}

fn ok_status() -> DescriptorStatus {
    DescriptorStatus {
        code: Code::Ok as i32,
        ..Default::default()
    }
}

/// Dynamic-metadata field (namespace `envoy.filters.http.ratelimit`, where Envoy puts what a
/// rate-limit service returns) holding the decision, `ok` or `over_limit`, for access logs.
pub const METADATA_RESULT: &str = "vrata.ratelimit.result";

fn result_metadata(admitted: bool) -> Struct {
    let result = if admitted { "ok" } else { "over_limit" };
    Struct {
        fields: std::iter::once((
            METADATA_RESULT.to_owned(),
            Value {
                kind: Some(Kind::StringValue(result.to_owned())),
            },
        ))
        .collect(),
    }
}

fn all_ok(descriptors: usize) -> RateLimitResponse {
    RateLimitResponse {
        overall_code: Code::Ok as i32,
        statuses: vec![ok_status(); descriptors],
        dynamic_metadata: Some(result_metadata(true)),
        ..Default::default()
    }
}

fn pb_duration(ms: u64) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(ms / 1_000).unwrap_or(i64::MAX),
        // < 1e9, fits
        nanos: i32::try_from((ms % 1_000) * 1_000_000).unwrap_or(0),
    }
}

/// Envoy's unit for a window when it is exactly one; else UNKNOWN (the `name` and the
/// `RateLimit-Policy` header carry the real window).
fn unit_of(limit: &CompiledLimit) -> Unit {
    match limit.per.as_secs() {
        1 => Unit::Second,
        60 => Unit::Minute,
        3_600 => Unit::Hour,
        86_400 => Unit::Day,
        _ => Unit::Unknown,
    }
}

fn status(limit: &CompiledLimit, state: &CounterState, uncounted: bool) -> DescriptorStatus {
    let sat = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    DescriptorStatus {
        code: if state.fits {
            Code::Ok
        } else {
            Code::OverLimit
        } as i32,
        current_limit: Some(RateLimit {
            name: limit.name.clone(),
            requests_per_unit: sat(limit.limit()),
            unit: unit_of(limit) as i32,
        }),
        limit_remaining: if uncounted { 0 } else { sat(state.remaining()) },
        duration_until_reset: Some(pb_duration(if state.fits {
            state.reset_after_ms
        } else {
            state.retry_after_ms
        })),
        ..Default::default()
    }
}

fn header(key: &str, value: String) -> HeaderValue {
    HeaderValue {
        key: key.to_owned(),
        value,
        ..Default::default()
    }
}

fn respond(slots: &[Slot], limits: &[&Arc<CompiledLimit>], d: &Decision) -> RateLimitResponse {
    let statuses = slots
        .iter()
        .map(|s| match s {
            Slot::Unmatched => ok_status(),
            Slot::Counter(i) => status(limits[*i], &d.counters[*i], d.uncounted),
        })
        .collect();
    let mut response_headers = Vec::with_capacity(3);
    // `on_error: allow|deny` measured nothing: advertising a quota would be made up.
    if !d.uncounted {
        let (policy, current) =
            headers::quota_headers(limits.iter().map(|l| l.as_ref()).zip(d.counters.iter()));
        response_headers.push(header(headers::RATELIMIT_POLICY, policy));
        response_headers.push(header(headers::RATELIMIT, current));
    }
    if !d.admitted {
        let wait = headers::retry_after(d.counters.iter());
        response_headers.push(header(headers::RETRY_AFTER, wait.to_string()));
    }
    RateLimitResponse {
        overall_code: if d.admitted {
            Code::Ok
        } else {
            Code::OverLimit
        } as i32,
        statuses,
        response_headers_to_add: response_headers,
        dynamic_metadata: Some(result_metadata(d.admitted)),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl<S: Store> RateLimitService for RateLimiter<S> {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        // Continues Envoy's trace when it sampled this request (see `vrata_common::trace`).
        let mut span = self
            .tracer
            .start("ratelimit ShouldRateLimit", request.metadata());
        let decided = self.decide(request.get_ref()).await;
        if let Some(span) = span.as_mut() {
            span.set(
                "vrata.ratelimit.result",
                match &decided {
                    Ok(r) if r.overall_code == Code::OverLimit as i32 => "over_limit",
                    Ok(_) => "ok",
                    Err(_) => "error",
                },
            );
        }
        match decided {
            Ok(r) => Ok(Response::new(r)),
            Err(e) => {
                match &e {
                    RequestError::Malformed { .. } => {
                        tracing::warn!(error = %e, domain = %request.get_ref().domain, "malformed rate limit request")
                    }
                    RequestError::Store(_) => tracing::error!(error = %e, "no rate limit decision"),
                }
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::limits::{Limit, Limits};
    use crate::store::memory::MemoryStore;

    fn entry(k: &str, v: &str) -> Entry {
        Entry {
            key: k.into(),
            value: v.into(),
        }
    }

    fn desc(entries: &[(&str, &str)]) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: entries.iter().map(|(k, v)| entry(k, v)).collect(),
            ..Default::default()
        }
    }

    fn request(descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
        RateLimitRequest {
            domain: DOMAIN.into(),
            descriptors,
            hits_addend: 0,
        }
    }

    fn limiter(limits: Vec<Limit>) -> (RateLimiter<MemoryStore>, ManualClock) {
        let metrics = Metrics::default();
        // A multiple of every bucket width the tests use (17, 167 ms), so waits come out round.
        let clock = ManualClock::new(1_670_000_000_000 * 17);
        let table = Arc::new(LimitTable::new(metrics.clone()));
        table.apply(&Limits::new([("orders".to_owned(), limits)]).unwrap());
        let store = MemoryStore::new(10_000, Arc::new(clock.clone()), metrics.clone());
        (RateLimiter::new(table, store, metrics), clock)
    }

    fn header_value<'a>(r: &'a RateLimitResponse, name: &str) -> Option<&'a str> {
        r.response_headers_to_add
            .iter()
            .find(|h| h.key == name)
            .map(|h| h.value.as_str())
    }

    #[tokio::test]
    async fn parse_rejects_descriptors_outside_the_contract() {
        let (l, _) = limiter(vec![]);
        for bad in [
            desc(&[]),
            desc(&[("limit", "a"), ("route", "orders")]),
            desc(&[("route", "orders")]),
            desc(&[("route", "o"), ("limit", "a"), ("x", "1"), ("y", "2")]),
        ] {
            let e = l.decide(&request(vec![bad])).await.unwrap_err();
            let status = Status::from(e);
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        }
    }

    #[tokio::test]
    async fn key_entries_must_fit_the_limit() {
        let ip = LimitKey::Ip;
        assert_eq!(
            key_value(&ip, Some(&entry("remote_address", "1.2.3.4"))),
            Some("1.2.3.4")
        );
        assert_eq!(key_value(&ip, Some(&entry("header", "x"))), None);
        assert_eq!(key_value(&ip, None), Some(""));
        assert_eq!(key_value(&LimitKey::Route, None), Some(""));
        assert_eq!(
            key_value(&LimitKey::Route, Some(&entry("header", "x"))),
            None
        );
        assert_eq!(
            key_value(
                &LimitKey::Claim("sub".into()),
                Some(&entry("claim", "alice"))
            ),
            Some("alice")
        );
    }

    #[tokio::test]
    async fn merges_descriptors_on_one_counter() {
        let (l, _) = limiter(vec![Limit::new(
            "all",
            3,
            Duration::from_secs(10),
            LimitKey::Route,
        )]);
        let d = || desc(&[("route", "orders"), ("limit", "all")]);
        // Two descriptors for the same counter are 2 hits: a second such request would need 4.
        let r = l.decide(&request(vec![d(), d()])).await.unwrap();
        assert_eq!(r.overall_code, Code::Ok as i32);
        assert_eq!(r.statuses.len(), 2);
        let r = l.decide(&request(vec![d(), d()])).await.unwrap();
        assert_eq!(r.overall_code, Code::OverLimit as i32);
        assert_eq!(header_value(&r, "ratelimit"), Some("\"all\";r=1;t=10"));
    }

    #[test]
    fn durations_convert_exactly() {
        let d = pb_duration(12_345);
        assert_eq!((d.seconds, d.nanos), (12, 345_000_000));
    }
}
