//! `envoy.service.ext_proc.v3.ExternalProcessor/Process`: one gRPC stream per HTTP request on a
//! cached route, driven through a small state machine.
//!
//! ```text
//! request headers ──► unknown route ──────────────► CONTINUE (response phase skipped)
//!        │         ─► bypass ─────────────────────► CONTINUE … response headers + X-Cache: BYPASS
//!        │         ─► fresh entry ────────────────► ImmediateResponse (HIT, or 304)
//!        │         ─► another stream filling ─────► override_message_timeout, wait, then HIT
//!        │                                          or continue as a miss without leading
//!        └──────────► miss (maybe a stale entry) ─► CONTINUE
//! response headers ─► 5xx and a stale entry ──────► ImmediateResponse (STALE)
//!                  ─► not storable ───────────────► + X-Cache: MISS
//!                  ─► storable ───────────────────► + X-Cache: MISS, body mode STREAMED
//! response body chunks ─► CONTINUE each at once, accumulate up to max_body; at the end, store
//! ```
//!
//! Envoy's side of the contract (rendered by xds-server): request and response headers SEND,
//! bodies NONE (this service switches the response body to STREAMED with `mode_override` when
//! it wants to store, which needs `allow_mode_override`), trailers SKIP, `failure_mode_allow`
//! (a slow or absent cache never fails a request), `message_timeout` 1 s and
//! `max_message_timeout` 60 s (the bound of a coalesced wait), the route name in the gRPC
//! initial metadata `x-vrata-route`, ext-authz's metadata namespace forwarded for claims.
//! Envoy ignores a `ProcessingResponse` carrying `override_message_timeout` except for
//! restarting its timer, so a waiting stream sends one first and answers the headers later.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::BytesMut;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption, Metadata};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::ProcessingMode;
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::{
    BodySendMode, HeaderSendMode,
};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessor;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as Req;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Resp;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpBody, HttpHeaders,
    ImmediateResponse, ProcessingRequest, ProcessingResponse, TrailersResponse,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use envoy_types::pb::google::protobuf::value::Kind;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::clock::Clock;
use crate::config::{KeyExtra, RoutePolicy, Settings, Tier};
use crate::entry::{Entry, Marker, Record, SharedEntry, StoredHeader, VaryValue, record};
use crate::flight::{self, FlightGuard, Flights, Join, Outcome as FlightOutcome};
use crate::freshness::{self, NotStored, Storable};
use crate::headers::{CacheControl, Headers, if_none_match_matches, list_items, parse_http_date};
use crate::key::{KeyInput, base_key, split_path, variant_key};
use crate::metrics::{Metrics, Outcome};
use crate::purge::{PurgeRule, invalidated};
use crate::store::memory::MemoryStore;
use crate::store::redis::{DEFAULT_CALL_TIMEOUT, DEFAULT_PROBE_INTERVAL, RedisStore};
use crate::store::{Store, StoreError};

/// gRPC initial metadata naming the route (set per route by xds-server).
pub const ROUTE_METADATA: &str = "x-vrata-route";
/// Where ext-authz's dynamic metadata arrives (`metadata_options.forwarding_namespaces`).
pub const AUTHZ_NAMESPACE: &str = "envoy.filters.http.ext_authz";
/// The field of that namespace holding the token's claims (ext-authz's `METADATA_CLAIMS`).
pub const CLAIMS_FIELD: &str = "vrata.authz";
pub const X_CACHE: &str = "x-cache";
/// Envoy's `max_message_timeout` in the contract: the longest override it accepts.
pub const MAX_MESSAGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Added to a coalesced wait in the override, so Envoy's timer never fires before the wait
/// ends and the answer (a HIT, or a store lookup and CONTINUE) is sent.
const WAIT_MARGIN: Duration = Duration::from_secs(1);
/// At most one log line per this interval about streams without a usable route.
const UNROUTED_LOG_EVERY_MS: u64 = 60_000;

/// Response headers never stored: hop-by-hop ones (RFC 9110 §7.6.1), those Envoy or this
/// service set when serving (`content-length`, `age`, `x-cache`), and `set-cookie` (a response
/// carrying one is never stored at all).
const UNSTORED_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "proxy-authenticate",
    "proxy-authorization",
    "content-length",
    "age",
    X_CACHE,
    "set-cookie",
];
/// Headers a 304 carries from the entry (RFC 9110 §15.4.5).
const NOT_MODIFIED_HEADERS: &[&str] = &[
    "cache-control",
    "content-location",
    "date",
    "etag",
    "expires",
    "last-modified",
    "vary",
];

/// The cache: config in force, stores, fills in progress. Shared by every stream.
pub struct Cache {
    settings: ArcSwap<Settings>,
    memory: MemoryStore,
    redis: ArcSwapOption<RedisStore>,
    redis_call_timeout: Duration,
    redis_probe_interval: Duration,
    flights: Flights,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    /// The highest purge id already deleted by this instance.
    purged_up_to: AtomicU64,
    unrouted_logged_ms: AtomicU64,
}

/// The store of one route, resolved when the request starts.
#[derive(Clone)]
enum TierStore {
    Memory(MemoryStore),
    Redis(Arc<RedisStore>),
}

impl TierStore {
    async fn get(&self, key: &str) -> Result<Option<Arc<Record>>, StoreError> {
        match self {
            TierStore::Memory(m) => m.get(key).await,
            TierStore::Redis(r) => r.get(key).await,
        }
    }

    async fn put(
        &self,
        route: &str,
        path: &str,
        records: Vec<(String, Arc<Record>)>,
    ) -> Result<(), StoreError> {
        match self {
            TierStore::Memory(m) => m.put(route, path, records).await,
            TierStore::Redis(r) => r.put(route, path, records).await,
        }
    }
}

/// Envoy went away (the response channel is closed).
struct Gone;

/// What the request phase learned, kept for the response phase.
struct RequestInfo {
    policy: Arc<RoutePolicy>,
    head: bool,
    headers: Headers,
    cc: CacheControl,
    path: String,
    base_key: String,
    /// The purge epoch when the request started (see [`crate::purge`]).
    epoch: u64,
}

struct Miss {
    req: RequestInfo,
    store: TierStore,
    /// An entry past its freshness but within `stale_if_error`, served if the upstream fails.
    stale: Option<SharedEntry>,
    /// Held when this stream fills the key for others.
    flight: Option<FlightGuard>,
}

struct Fill {
    miss: Miss,
    status: u16,
    headers: Vec<StoredHeader>,
    storable: Storable,
    received_ms: u64,
    body: BytesMut,
    /// Past `max_body`: the rest is passed through and nothing is stored.
    abandoned: bool,
}

enum State {
    Start,
    /// Unknown route: Envoy was told to skip the response phase.
    Passthrough,
    Bypass(Arc<RoutePolicy>),
    Miss(Box<Miss>),
    Fill(Box<Fill>),
    /// Nothing left to do but answer whatever Envoy still sends.
    Done,
    /// An immediate response was sent: Envoy sends nothing more; end the stream.
    Closed,
}

/// What a lookup found under the request's key.
enum Found {
    Nothing,
    Entry(SharedEntry),
}

struct Lookup {
    found: Found,
    /// The key a miss fills (the variant key when a `Vary` marker was found).
    key: String,
}

impl Cache {
    pub fn new(memory_max: u64, clock: Arc<dyn Clock>, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            settings: ArcSwap::from_pointee(Settings::default()),
            memory: MemoryStore::new(memory_max, clock.clone(), metrics.clone()),
            redis: ArcSwapOption::empty(),
            redis_call_timeout: DEFAULT_CALL_TIMEOUT,
            redis_probe_interval: DEFAULT_PROBE_INTERVAL,
            flights: Flights::default(),
            clock,
            metrics,
            purged_up_to: AtomicU64::new(0),
            unrouted_logged_ms: AtomicU64::new(0),
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn memory(&self) -> &MemoryStore {
        &self.memory
    }

    pub fn flights(&self) -> &Flights {
        &self.flights
    }

    pub fn redis(&self) -> Option<Arc<RedisStore>> {
        self.redis.load_full()
    }

    /// Swaps a new config version in: the Redis client is rebuilt when its URL changed, and
    /// purges not seen before are run.
    pub async fn apply(self: &Arc<Self>, settings: Settings) {
        let current = self.redis.load_full();
        match (&settings.redis, current.as_deref()) {
            (Some(url), Some(running)) if running.url() == url => {}
            (Some(url), _) => {
                let store = RedisStore::start(
                    url,
                    self.redis_call_timeout,
                    self.redis_probe_interval,
                    self.clock.clone(),
                    self.metrics.clone(),
                )
                .await;
                self.redis.store(Some(Arc::new(store)));
            }
            (None, Some(_)) => {
                self.redis.store(None);
                self.metrics.redis_down.set(0);
            }
            (None, None) => {}
        }
        let settings = Arc::new(settings);
        self.settings.store(settings.clone());
        self.run_purges(&settings);
    }

    /// Deletes what new purges match: memory at once, Redis in the background (one instance of
    /// the fleet does it; see [`RedisStore::purge`]). Serving never depends on this having
    /// happened: entries are checked against the purge epochs when read.
    fn run_purges(&self, settings: &Settings) {
        let done = self.purged_up_to.load(Ordering::Acquire);
        let new: Vec<PurgeRule> = settings
            .purges
            .iter()
            .filter(|p| p.id > done)
            .cloned()
            .collect();
        let Some(last) = new.last() else { return };
        self.purged_up_to.store(last.id, Ordering::Release);
        for rule in &new {
            let n = self.memory.purge(rule);
            self.metrics.purged.inc_by(n);
            tracing::info!(id = rule.id, route = %rule.route, path_prefix = %rule.path_prefix, memory_entries = n, "purge applied");
        }
        let Some(redis) = self.redis.load_full() else {
            return;
        };
        let jobs: Vec<(PurgeRule, Vec<String>)> = new
            .into_iter()
            .map(|rule| {
                let mut routes: Vec<String> = settings
                    .routes
                    .values()
                    .filter(|p| p.tier == Tier::Redis)
                    .filter(|p| rule.route.is_empty() || rule.route == p.route)
                    .map(|p| p.route.clone())
                    .collect();
                routes.sort();
                (rule, routes)
            })
            .filter(|(_, routes)| !routes.is_empty())
            .collect();
        if jobs.is_empty() {
            return;
        }
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            for (rule, routes) in jobs {
                match redis.purge(&rule, &routes).await {
                    Ok(Some(n)) => {
                        metrics.purged.inc_by(n);
                        tracing::info!(id = rule.id, redis_keys = n, "purge ran over redis");
                    }
                    Ok(None) => {
                        tracing::debug!(
                            id = rule.id,
                            "purge already run over redis by another instance"
                        )
                    }
                    Err(e) => {
                        metrics.purge_errors.inc();
                        tracing::warn!(id = rule.id, error = %e, "purge over redis failed; its entries stay invalidated by their epoch until they expire");
                    }
                }
            }
        });
    }

    fn store_for(&self, tier: Tier) -> Result<TierStore, StoreError> {
        match tier {
            Tier::Local => Ok(TierStore::Memory(self.memory.clone())),
            Tier::Redis => self
                .redis
                .load_full()
                .map(TierStore::Redis)
                .ok_or(StoreError::NoRedis),
        }
    }

    fn note_unrouted(&self, reason: &'static str, route: Option<&str>) {
        self.metrics.unrouted(reason);
        let now = self.clock.now_ms();
        let last = self.unrouted_logged_ms.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= UNROUTED_LOG_EVERY_MS)
            && self
                .unrouted_logged_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                reason,
                route = route.unwrap_or(""),
                "ext_proc stream without a cached route: passed through uncached (a config mismatch between Envoy and response-cache; logged once a minute, counted in vrata_cache_unrouted_total)"
            );
        }
    }

    fn store_failed(&self, policy: &RoutePolicy, e: &StoreError) {
        self.metrics.store_error(&policy.route, policy.tier);
        tracing::debug!(route = %policy.route, error = %e, "cache store failed: request bypasses the cache");
    }

    /// Runs one ext_proc stream to its end. `route` is the `x-vrata-route` metadata.
    pub async fn exchange<S>(
        self: Arc<Self>,
        route: Option<String>,
        mut inbound: S,
        out: mpsc::Sender<Result<ProcessingResponse, Status>>,
    ) where
        S: Stream<Item = Result<ProcessingRequest, Status>> + Unpin + Send,
    {
        let mut state = State::Start;
        while let Some(next) = inbound.next().await {
            let msg = match next {
                Ok(m) => m,
                Err(status) => {
                    tracing::debug!(%status, "ext_proc stream ended by Envoy");
                    break;
                }
            };
            match self.step(state, route.as_deref(), msg, &out).await {
                Ok(State::Closed) | Err(Gone) => break,
                Ok(next) => state = next,
            }
        }
        // Dropping the state releases a fill this stream led (followers are woken).
    }

    async fn step(
        &self,
        state: State,
        route: Option<&str>,
        msg: ProcessingRequest,
        out: &Out,
    ) -> Result<State, Gone> {
        let ProcessingRequest {
            request,
            metadata_context,
            ..
        } = msg;
        match (request, state) {
            (Some(Req::RequestHeaders(h)), State::Start) => {
                self.on_request_headers(route, metadata_context.as_ref(), &h, out)
                    .await
            }
            (Some(Req::ResponseHeaders(_)), State::Bypass(policy)) => {
                self.metrics.request(&policy.route, Outcome::Bypass);
                send(out, response_headers(Some(Outcome::Bypass), false)).await?;
                Ok(State::Done)
            }
            (Some(Req::ResponseHeaders(h)), State::Miss(miss)) => {
                self.on_response_headers(*miss, &h, out).await
            }
            (Some(Req::ResponseBody(body)), State::Fill(fill)) => {
                self.on_body(*fill, body, out).await
            }
            (Some(Req::ResponseTrailers(_)), State::Fill(fill)) => {
                // Trailers can't be replayed from the cache: such a response is not stored.
                self.metrics
                    .not_stored(&fill.miss.req.policy.route, "trailers");
                send(
                    out,
                    response_of(Resp::ResponseTrailers(TrailersResponse::default())),
                )
                .await?;
                Ok(State::Done)
            }
            (request, state) => {
                // Messages outside the plan (a request body or trailers after a config change,
                // headers after the route was passed through): answer so Envoy never waits.
                let reply = match request {
                    Some(Req::RequestHeaders(_)) => {
                        Some(Resp::RequestHeaders(HeadersResponse::default()))
                    }
                    Some(Req::ResponseHeaders(_)) => {
                        Some(Resp::ResponseHeaders(HeadersResponse::default()))
                    }
                    Some(Req::RequestBody(_)) => Some(Resp::RequestBody(BodyResponse::default())),
                    Some(Req::ResponseBody(_)) => Some(Resp::ResponseBody(BodyResponse::default())),
                    Some(Req::RequestTrailers(_)) => {
                        Some(Resp::RequestTrailers(TrailersResponse::default()))
                    }
                    Some(Req::ResponseTrailers(_)) => {
                        Some(Resp::ResponseTrailers(TrailersResponse::default()))
                    }
                    None => None,
                };
                if let Some(reply) = reply {
                    tracing::debug!("ext_proc message outside the cache's plan: answered CONTINUE");
                    send(out, response_of(reply)).await?;
                }
                Ok(match state {
                    State::Start => State::Done,
                    other => other,
                })
            }
        }
    }

    async fn on_request_headers(
        &self,
        route: Option<&str>,
        metadata: Option<&Metadata>,
        h: &HttpHeaders,
        out: &Out,
    ) -> Result<State, Gone> {
        let Some(route) = route else {
            self.note_unrouted("missing", None);
            send(out, pass_through()).await?;
            return Ok(State::Passthrough);
        };
        let settings = self.settings.load_full();
        let Some(policy) = settings.routes.get(route).cloned() else {
            self.note_unrouted("unknown", Some(route));
            send(out, pass_through()).await?;
            return Ok(State::Passthrough);
        };
        let headers = Headers::from_proto(h.headers.as_ref());
        let method = headers.get_str(":method").unwrap_or("");
        let head = method == "HEAD";
        let cc = CacheControl::parse(&headers);
        let credentials = headers.contains("authorization") || headers.contains("cookie");
        let bypass = (method != "GET" && !head)
            || cc.no_store
            || (policy.key_extra.is_empty() && credentials);
        let extras = if bypass {
            None
        } else {
            key_extras(&policy, &headers, metadata)
        };
        let (Some(extras), Some(path_and_query)) = (extras, headers.get_str(":path")) else {
            return self.bypass(policy, out).await;
        };
        let (path, query) = split_path(path_and_query);
        let vary: Vec<(String, Option<String>)> = policy
            .vary
            .iter()
            .map(|n| (n.clone(), headers.joined(n)))
            .collect();
        let key = base_key(&KeyInput {
            route: &policy.route,
            authority: headers.get_str(":authority").unwrap_or(""),
            path,
            query: query.as_deref(),
            vary: &vary,
            extra: &extras,
        });
        let req = RequestInfo {
            path: path.to_owned(),
            policy,
            head,
            headers,
            cc,
            base_key: key,
            epoch: settings.epoch(),
        };
        let store = match self.store_for(req.policy.tier) {
            Ok(s) => s,
            Err(e) => {
                self.store_failed(&req.policy, &e);
                return self.bypass(req.policy, out).await;
            }
        };
        let lookup = match self.lookup(&store, &req, &settings.purges).await {
            Ok(l) => l,
            Err(e) => {
                self.store_failed(&req.policy, &e);
                return self.bypass(req.policy, out).await;
            }
        };
        let now = self.clock.now_ms();
        let mut stale = None;
        if let Found::Entry(entry) = lookup.found {
            let acceptable = !req.cc.no_cache
                && req
                    .cc
                    .max_age
                    .is_none_or(|max| entry.age_s(now) <= max && max > 0);
            if entry.is_fresh(now) && acceptable {
                self.metrics.request(&req.policy.route, Outcome::Hit);
                send(out, serve(&entry, now, &req, Outcome::Hit, true)).await?;
                return Ok(State::Closed);
            }
            // Kept for the upstream failing: within the route's stale_if_error (as configured
            // now, which may be shorter than when it was stored), or still fresh but refused by
            // the request's own Cache-Control.
            let within_window = entry.is_usable_stale(now)
                && now
                    < entry
                        .fresh_until_ms
                        .saturating_add(req.policy.stale_if_error_ms);
            if within_window || entry.is_fresh(now) {
                stale = Some(entry);
            }
        }
        self.miss(req, store, stale, lookup.key, out).await
    }

    async fn bypass(&self, policy: Arc<RoutePolicy>, out: &Out) -> Result<State, Gone> {
        send(out, continue_request()).await?;
        Ok(State::Bypass(policy))
    }

    /// The entry for `req`: the base key, then the variant key when the base holds a `Vary`
    /// marker. Purged entries are nothing; an undecodable value is nothing (counted: the
    /// fill overwrites it).
    async fn lookup(
        &self,
        store: &TierStore,
        req: &RequestInfo,
        purges: &[PurgeRule],
    ) -> Result<Lookup, StoreError> {
        let mut key = req.base_key.clone();
        let mut record = self.get(store, req, &key).await?;
        if let Some(record::Kind::Marker(marker)) = record.as_deref().and_then(|r| r.kind.as_ref())
        {
            let values: Vec<(String, Option<String>)> = marker
                .vary
                .iter()
                .map(|n| (n.clone(), req.headers.joined(n)))
                .collect();
            key = variant_key(&req.base_key, &values);
            record = self.get(store, req, &key).await?;
        }
        let found = match record.and_then(SharedEntry::from_record) {
            Some(e) if !invalidated(purges, &req.policy.route, &e.path, e.purge_epoch) => {
                Found::Entry(e)
            }
            _ => Found::Nothing,
        };
        Ok(Lookup { found, key })
    }

    async fn get(
        &self,
        store: &TierStore,
        req: &RequestInfo,
        key: &str,
    ) -> Result<Option<Arc<Record>>, StoreError> {
        match store.get(key).await {
            Err(e @ StoreError::Decode(_)) => {
                self.metrics.store_error(&req.policy.route, req.policy.tier);
                tracing::warn!(route = %req.policy.route, error = %e, "cache record unreadable: treated as a miss");
                Ok(None)
            }
            other => other,
        }
    }

    /// The miss path: lead the key's fill, or wait for the stream already filling it.
    async fn miss(
        &self,
        req: RequestInfo,
        store: TierStore,
        stale: Option<SharedEntry>,
        key: String,
        out: &Out,
    ) -> Result<State, Gone> {
        // A HEAD response has no body: it never fills, but may use a GET's fill.
        let join = if req.head {
            self.flights.follow(&key).map(Join::Follow)
        } else {
            Some(self.flights.join(&key))
        };
        let flight = match join {
            Some(Join::Lead(guard)) => Some(guard),
            Some(Join::Follow(rx)) => {
                let wait = req.policy.wait.min(MAX_MESSAGE_TIMEOUT - WAIT_MARGIN);
                send(out, override_timeout(wait + WAIT_MARGIN)).await?;
                self.metrics.coalesced(&req.policy.route);
                if let Some(entry) = flight::wait(rx, wait).await
                    && vary_matches(&entry, &req.headers)
                {
                    let now = self.clock.now_ms();
                    self.metrics.request(&req.policy.route, Outcome::Hit);
                    send(out, serve(&entry, now, &req, Outcome::Hit, true)).await?;
                    return Ok(State::Closed);
                }
                // Not filled, or filled for another variant: go to the upstream without leading.
                None
            }
            None => None,
        };
        send(out, continue_request()).await?;
        Ok(State::Miss(Box::new(Miss {
            req,
            store,
            stale,
            flight,
        })))
    }

    async fn on_response_headers(
        &self,
        mut miss: Miss,
        h: &HttpHeaders,
        out: &Out,
    ) -> Result<State, Gone> {
        let headers = Headers::from_proto(h.headers.as_ref());
        let status = headers
            .get_str(":status")
            .and_then(|s| s.trim().parse::<u16>().ok())
            .unwrap_or(0);
        let now = self.clock.now_ms();
        let route = miss.req.policy.route.clone();
        if status >= 500
            && let Some(stale) = miss.stale.take()
        {
            self.metrics.request(&route, Outcome::Stale);
            send(out, serve(&stale, now, &miss.req, Outcome::Stale, false)).await?;
            return Ok(State::Closed);
        }
        self.metrics.request(&route, Outcome::Miss);
        let decision = if miss.req.head {
            Err(NotStored::Head)
        } else {
            freshness::decide(
                status,
                &headers,
                now,
                miss.req.policy.ttl_ms,
                miss.req.policy.max_body,
            )
        };
        let storable = match decision {
            Ok(s) => s,
            Err(reason) => {
                self.metrics.not_stored(&route, reason.label());
                send(out, response_headers(Some(Outcome::Miss), false)).await?;
                // Dropping the miss releases its fill: followers go to the upstream.
                return Ok(State::Done);
            }
        };
        let fill = Fill {
            status,
            headers: stored_headers(&headers),
            storable,
            received_ms: now,
            body: BytesMut::new(),
            abandoned: false,
            miss,
        };
        if h.end_of_stream {
            send(out, response_headers(Some(Outcome::Miss), false)).await?;
            self.store(fill).await;
            return Ok(State::Done);
        }
        send(out, response_headers(Some(Outcome::Miss), true)).await?;
        Ok(State::Fill(Box::new(fill)))
    }

    async fn on_body(&self, mut fill: Fill, chunk: HttpBody, out: &Out) -> Result<State, Gone> {
        if !fill.abandoned {
            let max = usize::try_from(fill.miss.req.policy.max_body).unwrap_or(usize::MAX);
            if fill.body.len().saturating_add(chunk.body.len()) > max {
                fill.abandoned = true;
                fill.body = BytesMut::new();
                self.metrics
                    .not_stored(&fill.miss.req.policy.route, NotStored::TooLarge.label());
                if let Some(guard) = fill.miss.flight.take() {
                    guard.finish(FlightOutcome::NotFilled);
                }
            } else {
                fill.body.extend_from_slice(&chunk.body);
            }
        }
        // Answer before storing: the client's bytes must not wait on the store.
        send(
            out,
            response_of(Resp::ResponseBody(BodyResponse::default())),
        )
        .await?;
        if !chunk.end_of_stream {
            return Ok(State::Fill(Box::new(fill)));
        }
        if !fill.abandoned {
            self.store(fill).await;
        }
        Ok(State::Done)
    }

    /// Writes a complete response and tells the followers.
    async fn store(&self, fill: Fill) {
        let Fill {
            mut miss,
            status,
            headers,
            storable,
            received_ms,
            body,
            ..
        } = fill;
        let policy = miss.req.policy.clone();
        let fresh_until_ms = received_ms.saturating_add(storable.fresh_for_ms);
        let stale_until_ms = fresh_until_ms.saturating_add(policy.stale_if_error_ms);
        let vary: Vec<(String, Option<String>)> = storable
            .vary
            .iter()
            .map(|n| (n.clone(), miss.req.headers.joined(n)))
            .collect();
        let entry = SharedEntry::new(Entry {
            status: u32::from(status),
            headers,
            body: body.freeze(),
            stored_at_ms: received_ms,
            fresh_until_ms,
            stale_until_ms,
            age_at_store_s: storable.age_s,
            purge_epoch: miss.req.epoch,
            path: miss.req.path.clone(),
            vary: vary
                .iter()
                .map(|(name, value)| VaryValue {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
        });
        let record = entry.record();
        let records = if vary.is_empty() {
            vec![(miss.req.base_key.clone(), record)]
        } else {
            let marker = Arc::new(Record::marker(Marker {
                vary: storable.vary.clone(),
                stale_until_ms,
            }));
            vec![
                (miss.req.base_key.clone(), marker),
                (variant_key(&miss.req.base_key, &vary), record),
            ]
        };
        match miss.store.put(&policy.route, &miss.req.path, records).await {
            Ok(()) => {
                self.metrics.stored(&policy.route);
                if let Some(guard) = miss.flight.take() {
                    guard.finish(FlightOutcome::Filled(entry));
                }
            }
            Err(e) => {
                self.metrics.store_error(&policy.route, policy.tier);
                tracing::debug!(route = %policy.route, error = %e, "cache write failed; the response was served uncached");
            }
        }
    }
}

type Out = mpsc::Sender<Result<ProcessingResponse, Status>>;

async fn send(out: &Out, response: ProcessingResponse) -> Result<(), Gone> {
    out.send(Ok(response)).await.map_err(|_| Gone)
}

/// The `key_extra` values, `None` when one is missing (the request then bypasses: a per-user
/// entry without its user would be shared).
fn key_extras(
    policy: &RoutePolicy,
    headers: &Headers,
    metadata: Option<&Metadata>,
) -> Option<Vec<String>> {
    policy
        .key_extra
        .iter()
        .map(|extra| match extra {
            KeyExtra::Header(name) => headers.joined(name),
            KeyExtra::Claim(path) => claim(metadata, path),
        })
        .collect()
}

/// A claim from ext-authz's metadata (`vrata.authz` in the `envoy.filters.http.ext_authz`
/// namespace), by dotted path, as text: strings as they are, numbers and booleans in their
/// JSON spelling, lists as their items joined by `,`; objects and nulls are missing.
pub fn claim(metadata: Option<&Metadata>, path: &[String]) -> Option<String> {
    let claims = metadata?
        .filter_metadata
        .get(AUTHZ_NAMESPACE)?
        .fields
        .get(CLAIMS_FIELD)?;
    let mut current = claims;
    for segment in path {
        let Some(Kind::StructValue(s)) = &current.kind else {
            return None;
        };
        current = s.fields.get(segment)?;
    }
    scalar_text(current.kind.as_ref()?)
}

fn scalar_text(kind: &Kind) -> Option<String> {
    match kind {
        Kind::StringValue(s) => Some(s.clone()),
        Kind::BoolValue(b) => Some(b.to_string()),
        Kind::NumberValue(n) => Some(if n.fract() == 0.0 && n.abs() < 9.0e15 {
            format!("{}", *n as i64)
        } else {
            n.to_string()
        }),
        Kind::ListValue(list) => list
            .values
            .iter()
            .map(|v| v.kind.as_ref().and_then(scalar_text))
            .collect::<Option<Vec<_>>>()
            .map(|items| items.join(",")),
        Kind::NullValue(_) | Kind::StructValue(_) => None,
    }
}

/// Whether `entry` (filled by another stream) is the variant `headers` ask for.
fn vary_matches(entry: &Entry, headers: &Headers) -> bool {
    entry
        .vary
        .iter()
        .all(|v| headers.joined(&v.name) == v.value)
}

/// The upstream's end-to-end headers, as stored.
fn stored_headers(headers: &Headers) -> Vec<StoredHeader> {
    // Headers named by Connection are hop-by-hop too (RFC 9110 §7.6.1).
    let connection: Vec<String> = list_items(headers.all("connection"))
        .into_iter()
        .map(|n| n.to_ascii_lowercase())
        .collect();
    headers
        .iter()
        .filter(|(name, _)| {
            !name.starts_with(':')
                && !name.starts_with("x-envoy-")
                && !UNSTORED_HEADERS.contains(name)
                && !connection.iter().any(|c| c == name)
        })
        .map(|(name, value)| StoredHeader {
            name: name.to_owned(),
            value: value.to_vec(),
        })
        .collect()
}

fn response_of(response: Resp) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(response),
        ..Default::default()
    }
}

fn continue_request() -> ProcessingResponse {
    response_of(Resp::RequestHeaders(HeadersResponse {
        response: Some(CommonResponse::default()),
    }))
}

/// CONTINUE, and no response phase: nothing to add for an unknown route.
fn pass_through() -> ProcessingResponse {
    let mut r = continue_request();
    r.mode_override = Some(ProcessingMode {
        request_header_mode: HeaderSendMode::Send as i32,
        response_header_mode: HeaderSendMode::Skip as i32,
        request_body_mode: BodySendMode::None as i32,
        response_body_mode: BodySendMode::None as i32,
        request_trailer_mode: HeaderSendMode::Skip as i32,
        response_trailer_mode: HeaderSendMode::Skip as i32,
    });
    r
}

fn header(name: &str, value: impl Into<Vec<u8>>, append: bool) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            value: String::new(),
            raw_value: value.into(),
        }),
        append_action: if append {
            HeaderAppendAction::AppendIfExistsOrAdd
        } else {
            HeaderAppendAction::OverwriteIfExistsOrAdd
        } as i32,
        ..Default::default()
    }
}

/// The response-headers answer: `X-Cache`, and with `stream_body` the switch that makes Envoy
/// send the body chunks here.
fn response_headers(x_cache: Option<Outcome>, stream_body: bool) -> ProcessingResponse {
    let mutation = x_cache.map(|o| HeaderMutation {
        set_headers: vec![header(X_CACHE, o.header(), false)],
        remove_headers: Vec::new(),
    });
    let mut r = response_of(Resp::ResponseHeaders(HeadersResponse {
        response: Some(CommonResponse {
            header_mutation: mutation,
            ..Default::default()
        }),
    }));
    if stream_body {
        r.mode_override = Some(ProcessingMode {
            request_header_mode: HeaderSendMode::Send as i32,
            response_header_mode: HeaderSendMode::Send as i32,
            request_body_mode: BodySendMode::None as i32,
            response_body_mode: BodySendMode::Streamed as i32,
            request_trailer_mode: HeaderSendMode::Skip as i32,
            response_trailer_mode: HeaderSendMode::Skip as i32,
        });
    }
    r
}

fn override_timeout(timeout: Duration) -> ProcessingResponse {
    ProcessingResponse {
        override_message_timeout: Some(PbDuration {
            seconds: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(timeout.subsec_nanos()).unwrap_or(0),
        }),
        ..Default::default()
    }
}

/// Whether the request's validators match `entry` (RFC 9110 §13.2.2: `If-None-Match` wins
/// over `If-Modified-Since`).
fn not_modified(entry: &Entry, headers: &Headers) -> bool {
    let inm = list_items(headers.all("if-none-match"));
    if !inm.is_empty() {
        let etag = entry
            .header("etag")
            .and_then(|v| std::str::from_utf8(v).ok());
        return if_none_match_matches(&inm, etag);
    }
    match (
        headers.get("if-modified-since").and_then(parse_http_date),
        entry.header("last-modified").and_then(parse_http_date),
    ) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// The immediate response serving `entry`: whole, or 304 when `conditional` and the
/// request's validators match a 200/203 entry.
fn serve(
    entry: &Entry,
    now_ms: u64,
    req: &RequestInfo,
    outcome: Outcome,
    conditional: bool,
) -> ProcessingResponse {
    let age = entry.age_s(now_ms).to_string();
    let revalidated =
        conditional && matches!(entry.status, 200 | 203) && not_modified(entry, &req.headers);
    let mut set: Vec<HeaderValueOption> = Vec::with_capacity(entry.headers.len() + 2);
    let mut seen: Vec<&str> = Vec::with_capacity(entry.headers.len());
    for h in &entry.headers {
        if revalidated && !NOT_MODIFIED_HEADERS.contains(&h.name.as_str()) {
            continue;
        }
        let again = seen.contains(&h.name.as_str());
        set.push(header(&h.name, h.value.clone(), again));
        seen.push(&h.name);
    }
    set.push(header("age", age, false));
    set.push(header(X_CACHE, outcome.header(), false));
    // Envoy's local reply starts with `content-type: text/plain` when there is a body: an entry
    // without a content type must not gain one.
    let remove = if revalidated || entry.header("content-type").is_none() {
        vec!["content-type".to_owned()]
    } else {
        Vec::new()
    };
    let (status, body, details) = if revalidated {
        (304, Vec::new(), "vrata_cache_not_modified")
    } else if req.head {
        (entry.status, Vec::new(), cache_details(outcome))
    } else {
        (entry.status, entry.body.to_vec(), cache_details(outcome))
    };
    response_of(Resp::ImmediateResponse(ImmediateResponse {
        status: Some(HttpStatus {
            code: i32::try_from(status).unwrap_or(200),
        }),
        headers: Some(HeaderMutation {
            set_headers: set,
            remove_headers: remove,
        }),
        body,
        grpc_status: None,
        details: details.to_owned(),
    }))
}

/// `%RESPONSE_CODE_DETAILS%` in Envoy's access log for responses the cache served.
fn cache_details(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Stale => "vrata_cache_stale",
        _ => "vrata_cache_hit",
    }
}

/// The tonic service Envoy calls.
pub struct CacheService {
    cache: Arc<Cache>,
}

impl CacheService {
    pub fn new(cache: Arc<Cache>) -> Self {
        Self { cache }
    }
}

/// Responses queued per stream: Envoy waits for each answer before sending more, so a few
/// slots are plenty.
const STREAM_BUFFER: usize = 4;

#[tonic::async_trait]
impl ExternalProcessor for CacheService {
    type ProcessStream = tokio_stream::wrappers::ReceiverStream<Result<ProcessingResponse, Status>>;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let route = request
            .metadata()
            .get(ROUTE_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(self.cache.clone().exchange(route, request.into_inner(), tx));
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }
}
