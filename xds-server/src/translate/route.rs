//! Routes -> one RouteConfiguration per listener (named after it), one virtual host per domain.
//!
//! Virtual hosts: one per distinct domain named in any route's `hosts`, plus `*`. Envoy sends a
//! request to the most specific virtual host for its authority only, so a virtual host holds
//! every route with a host pattern *covering* its domain, in file order: a request for
//! `api.example.com` still sees the routes for `*.example.com` and `*`. (Envoy prefers suffix
//! wildcards to prefix wildcards: a host matching both `*.example.com` and `api.*` only sees
//! the routes covering `*.example.com`.)
//!
//! Within a virtual host, each model route becomes one or more Envoy routes, all named after
//! it:
//! - a CORS preflight route first, when the route has `cors` but a method list without OPTIONS
//!   (the preflight would not match the route itself, and Envoy's CORS filter answers
//!   preflights only on routes carrying a policy). Envoy's CORS filter ignores routes without
//!   an upstream (direct responses, redirects), so `cors` only takes effect on upstream routes;
//! - with `retries` and no method list, the retry policy goes on a copy restricted to the
//!   idempotent methods, followed by the same route without it: a POST is never repeated
//!   unless the route names POST in `methods`.
//!
//! After all routes, for every distinct path match whose routes all list methods, a route
//! answers 405 (problem+json, `Allow` header) instead of Envoy's 404. Before all routes, one
//! refuses requests with several Host values (400): Envoy's HTTP/1 codec joins duplicate Host
//! headers into `a,b` and would forward them.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, RedirectAction, RetryPolicy, Route, RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost, header_matcher, redirect_action, route,
    route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use envoy_types::pb::envoy::extensions::path::rewrite::uri_template::v3::UriTemplateRewriteConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher,
};

use super::aggregate;
use super::listener::CORS_FILTER;
use super::{authz, local_reply, pb};
use crate::model::{
    self, Action, Balance, Gateway, HashOn, Method, PathMatch, RedirectStatus, Retries, RetryOn,
    Rewrite, Scheme, Upstream,
};

pub const URI_TEMPLATE_MATCHER: &str = "envoy.path.match.uri_template.uri_template_matcher";
pub const URI_TEMPLATE_REWRITER: &str = "envoy.path.rewrite.uri_template.uri_template_rewriter";

/// The virtual host every request without a more specific one lands in.
pub const ANY_HOST: &str = "*";

/// Methods retried when a route with `retries` names no methods (RFC 9110 §9.2.2).
pub const IDEMPOTENT_METHODS: &[&str] = &["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"];

/// Envoy refuses direct-response bodies above this unless the RouteConfiguration raises it.
const ENVOY_DIRECT_RESPONSE_BODY_LIMIT: usize = 4096;

/// Request headers through which a client could claim another identity, host or scheme to the
/// upstream; Envoy leaves them alone. Removed on listeners with no trusted proxy in front
/// (`trusted_hops: 0`), where nobody but the client could have set them. (x-forwarded-for and
/// x-forwarded-proto are Envoy's: it appends to the first and overwrites the second.)
pub const UNTRUSTED_FORWARDING_HEADERS: &[&str] = &[
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
];

/// Carries the path as received to the access log (`%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%`) on
/// routes that rewrite it. Envoy sets it itself only without `suppress_envoy_headers`, and
/// strips a client's copy from external requests.
const ORIGINAL_PATH_HEADER: &str = "x-envoy-original-path";

/// The route configuration served to `listener` over RDS.
pub(super) fn route_configuration(gw: &Gateway, listener: &model::Listener) -> RouteConfiguration {
    let domains = domains(gw);
    let virtual_hosts = if listener.redirect_https {
        let port = gw
            .listeners
            .iter()
            .find(|l| l.tls.is_some())
            .map_or(HTTPS_PORT, |l| u32::from(l.address.port()));
        domains
            .iter()
            .map(|d| VirtualHost {
                typed_per_filter_config: authz_off(gw.uses_auth()),
                ..https_redirect_host(d, listener, port)
            })
            .collect()
    } else {
        domains.iter().map(|d| virtual_host(gw, d)).collect()
    };
    let longest_body = gw
        .routes
        .iter()
        .filter_map(|r| match &r.action {
            Action::Respond(respond) => respond.body.as_ref().map(String::len),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    RouteConfiguration {
        name: listener.name.as_str().to_owned(),
        virtual_hosts,
        request_headers_to_remove: if listener.trusted_hops == 0 {
            UNTRUSTED_FORWARDING_HEADERS
                .iter()
                .map(|h| (*h).to_owned())
                .collect()
        } else {
            Vec::new()
        },
        // Route-level header settings win over this level's removals (a route may set
        // x-forwarded-host itself).
        most_specific_header_mutations_wins: true,
        // `api.example.com:8080` matches the virtual host `api.example.com`.
        ignore_port_in_host_matching: true,
        max_direct_response_body_size_bytes: (longest_body > ENVOY_DIRECT_RESPONSE_BODY_LIMIT)
            .then(|| pb::u32_value(u32::try_from(longest_body).unwrap_or(u32::MAX))),
        ..Default::default()
    }
}

/// Every domain a route names (lower-cased: Envoy matches hosts case-insensitively), plus `*`.
fn domains(gw: &Gateway) -> BTreeSet<String> {
    let mut domains: BTreeSet<String> = gw
        .routes
        .iter()
        .flat_map(|r| r.matcher.hosts.iter())
        .map(|h| h.to_ascii_lowercase())
        .collect();
    domains.insert(ANY_HOST.to_owned());
    domains
}

/// Whether host pattern `pattern` matches every host `domain` matches (both as in Envoy's
/// `domains`: exact, `*.suffix`, `prefix.*` or `*`).
pub(crate) fn covers(pattern: &str, domain: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let domain = domain.to_ascii_lowercase();
    if pattern == ANY_HOST || pattern == domain {
        return true;
    }
    if domain == ANY_HOST {
        return false;
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return match domain.strip_prefix('*') {
            // `*.example.com` covers `*.api.example.com`.
            Some(domain_suffix) => domain_suffix.ends_with(suffix),
            None => domain.len() > suffix.len() && domain.ends_with(suffix),
        };
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return match domain.strip_suffix('*') {
            Some(domain_prefix) => domain_prefix.starts_with(prefix),
            None => domain.len() > prefix.len() && domain.starts_with(prefix),
        };
    }
    false
}

fn virtual_host(gw: &Gateway, domain: &str) -> VirtualHost {
    let routes: Vec<&model::Route> = gw
        .routes
        .iter()
        .filter(|r| r.matcher.hosts.iter().any(|p| covers(p, domain)))
        .collect();
    let with_auth = gw.uses_auth();
    // Sized up front: an Envoy route is large, and 10,000 of them moved at every doubling of
    // the list cost more than building them.
    let mut envoy_routes = Vec::with_capacity(routes.len() + 2);
    envoy_routes.push(ambiguous_host_route());
    for r in &routes {
        let mut made = routes_for(r, upstream_name(r).and_then(|n| gw.upstreams.get(n)));
        if with_auth {
            authz::apply(gw, r, &mut made);
        }
        super::cache::apply(r, &mut made);
        envoy_routes.extend(made);
    }
    envoy_routes.extend(method_not_allowed_routes(&routes));
    VirtualHost {
        name: domain.to_owned(),
        domains: vec![domain.to_owned()],
        routes: envoy_routes,
        typed_per_filter_config: authz_off(with_auth),
        ..Default::default()
    }
}

/// A virtual host's ext_authz default when the filter is present: off (routes with `auth`
/// turn it on).
fn authz_off(
    with_auth: bool,
) -> std::collections::HashMap<String, envoy_types::pb::google::protobuf::Any> {
    if with_auth {
        [(authz::EXT_AUTHZ_FILTER.to_owned(), authz::disabled())]
            .into_iter()
            .collect()
    } else {
        Default::default()
    }
}

fn upstream_name(route: &model::Route) -> Option<&model::Name> {
    match &route.action {
        Action::Upstream(name) => Some(name),
        _ => None,
    }
}

/// Where `redirect_https` sends clients when the gateway has no TLS listener of its own (TLS
/// terminated in front of it): the https default.
const HTTPS_PORT: u32 = 443;

/// The virtual host of a `redirect_https` listener: everything answers 308 to https on `port`
/// (the gateway's first TLS listener).
fn https_redirect_host(domain: &str, listener: &model::Listener, port: u32) -> VirtualHost {
    VirtualHost {
        name: domain.to_owned(),
        domains: vec![domain.to_owned()],
        routes: vec![
            ambiguous_host_route(),
            Route {
                name: format!("{}:redirect-https", listener.name),
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_owned())),
                    ..Default::default()
                }),
                action: Some(route::Action::Redirect(RedirectAction {
                    scheme_rewrite_specifier: Some(
                        redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true),
                    ),
                    response_code: redirect_action::RedirectResponseCode::PermanentRedirect as i32,
                    // The client's port is kept in the Host (not stripped): an http port means
                    // nothing for https, so send clients to the TLS listener's.
                    port_redirect: port,
                    ..Default::default()
                })),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

/// Which methods an Envoy route matches.
enum Methods<'a> {
    /// The model route's own list (empty: any).
    Listed(&'a [Method]),
    /// Exactly these.
    Only(&'a [&'a str]),
}

/// The Envoy routes for one model route, in match order.
pub(crate) fn routes_for(route: &model::Route, upstream: Option<&Upstream>) -> Vec<Route> {
    let methods = &route.matcher.methods;
    let mut out = Vec::new();
    let base = Route {
        name: route.name.as_str().to_owned(),
        // SPEC §2: the route name is its stat prefix (`vhost.<vhost>.route.<name>.upstream_rq_*`).
        // Every Envoy route made from one model route shares it, so its stats add up.
        stat_prefix: route.name.as_str().to_owned(),
        r#match: Some(route_match(&route.matcher, &Methods::Listed(methods))),
        response_headers_to_add: route
            .response_headers
            .set
            .iter()
            .map(|(k, v)| pb::set_header(k.as_str(), v))
            .collect(),
        response_headers_to_remove: names(&route.response_headers.remove),
        ..Default::default()
    };
    match &route.action {
        Action::Upstream(_) | Action::Aggregate(_) => {
            let via_aggregator = route.via_aggregator();
            let (cluster, upstream) = match &route.action {
                Action::Upstream(name) if !via_aggregator => (name.as_str(), upstream),
                _ => (aggregate::AGGREGATOR_CLUSTER, None),
            };
            let mut action = route_action(route, cluster, upstream);
            if via_aggregator {
                action.timeout = aggregate::envoy_timeout(route).map(pb::duration);
            }
            let cors: Option<CorsPolicy> = route.cors.as_ref().map(cors_policy);
            if let Some(policy) = &cors
                && !methods.is_empty()
                && !methods.iter().any(|m| m.0 == "OPTIONS")
            {
                out.push(preflight_route(route, policy, cluster));
            }
            let mut request_headers: Vec<_> = route.request_headers.set.iter().collect();
            // `host` cannot be set as a header; Envoy rewrites it with host_rewrite_literal.
            if let Some(pos) = request_headers
                .iter()
                .position(|(k, _)| k.as_str() == "host")
            {
                let (_, host) = request_headers.remove(pos);
                action.host_rewrite_specifier = Some(
                    route_action::HostRewriteSpecifier::HostRewriteLiteral(host.clone()),
                );
            }
            let mut request_headers_to_add = Vec::new();
            if route.rewrite.is_some() {
                // Evaluated before the rewrite: the path as received.
                request_headers_to_add
                    .push(pb::formatted_header(ORIGINAL_PATH_HEADER, "%REQ(:PATH)%"));
            }
            request_headers_to_add.extend(
                request_headers
                    .iter()
                    .map(|(k, v)| pb::set_header(k.as_str(), v)),
            );
            if via_aggregator {
                // Overwrites a client's copy: a client cannot pick another route's definition.
                request_headers_to_add.push(pb::set_header(
                    aggregate::AGGREGATE_HEADER,
                    route.name.as_str(),
                ));
            }
            let base = Route {
                request_headers_to_add,
                request_headers_to_remove: names(&route.request_headers.remove),
                typed_per_filter_config: cors
                    .into_iter()
                    .map(|policy| (CORS_FILTER.to_owned(), pb::any(policy)))
                    .collect(),
                ..base
            };
            match &route.retries {
                Some(retries) if methods.is_empty() => {
                    out.push(Route {
                        r#match: Some(route_match(
                            &route.matcher,
                            &Methods::Only(IDEMPOTENT_METHODS),
                        )),
                        action: Some(route::Action::Route(RouteAction {
                            retry_policy: Some(retry_policy(retries)),
                            ..action.clone()
                        })),
                        ..base.clone()
                    });
                    out.push(Route {
                        action: Some(route::Action::Route(action)),
                        ..base
                    });
                }
                retries => {
                    action.retry_policy = retries.as_ref().map(retry_policy);
                    out.push(Route {
                        action: Some(route::Action::Route(action)),
                        ..base
                    });
                }
            }
        }
        Action::Respond(respond) => {
            let mut response_headers: Vec<_> = respond
                .headers
                .iter()
                .map(|(k, v)| pb::set_header(k.as_str(), v))
                .collect();
            response_headers.extend(base.response_headers_to_add.iter().cloned());
            out.push(Route {
                action: Some(route::Action::DirectResponse(DirectResponseAction {
                    status: u32::from(respond.status),
                    body: respond.body.as_ref().map(|b| DataSource {
                        specifier: Some(data_source::Specifier::InlineString(b.clone())),
                        ..Default::default()
                    }),
                    body_format: None,
                })),
                response_headers_to_add: response_headers,
                ..base
            });
        }
        Action::Redirect(redirect) => out.push(Route {
            action: Some(route::Action::Redirect(redirect_action(
                redirect,
                route.rewrite.as_ref(),
            ))),
            ..base
        }),
    }
    out
}

fn names(headers: &[model::HeaderName]) -> Vec<String> {
    headers.iter().map(|h| h.as_str().to_owned()).collect()
}

fn route_match(m: &model::RouteMatch, methods: &Methods<'_>) -> RouteMatch {
    let path_specifier = match &m.path {
        PathMatch::Prefix(p) => route_match::PathSpecifier::Prefix(p.clone()),
        PathMatch::Exact(p) => route_match::PathSpecifier::Path(p.clone()),
        PathMatch::Regex(r) => route_match::PathSpecifier::SafeRegex(regex(r)),
        PathMatch::Template(t) => route_match::PathSpecifier::PathMatchPolicy(pb::typed_extension(
            URI_TEMPLATE_MATCHER,
            UriTemplateMatchConfig {
                path_template: t.source.clone(),
            },
        )),
    };
    let mut headers = Vec::new();
    let methods: Vec<&str> = match methods {
        Methods::Listed(list) => list.iter().map(|m| m.0.as_str()).collect(),
        Methods::Only(list) => list.to_vec(),
    };
    if let Some(matcher) = method_matcher(&methods) {
        headers.push(matcher);
    }
    headers.extend(
        m.headers
            .iter()
            .map(|(name, value)| exact_header(name.as_str(), value)),
    );
    RouteMatch {
        path_specifier: Some(path_specifier),
        headers,
        ..Default::default()
    }
}

/// `:method` equal to one of `methods` (none: any method, no matcher).
fn method_matcher(methods: &[&str]) -> Option<HeaderMatcher> {
    match methods {
        [] => None,
        [one] => Some(exact_header(":method", one)),
        several => {
            let alternatives: Vec<String> = several.iter().map(|m| regex::escape(m)).collect();
            Some(HeaderMatcher {
                name: ":method".to_owned(),
                header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                    StringMatcher {
                        // Envoy's safe_regex header matching is a full match.
                        match_pattern: Some(string_matcher::MatchPattern::SafeRegex(regex(
                            &alternatives.join("|"),
                        ))),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            })
        }
    }
}

fn exact_header(name: &str, value: &str) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(value.to_owned())),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn present_header(name: &str) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::PresentMatch(true)),
        ..Default::default()
    }
}

/// An RE2 regex (Envoy's only engine).
fn regex(source: &str) -> RegexMatcher {
    RegexMatcher {
        regex: source.to_owned(),
        ..Default::default()
    }
}

fn route_action(route: &model::Route, cluster: &str, upstream: Option<&Upstream>) -> RouteAction {
    let mut action = RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.to_owned())),
        // None keeps Envoy's 15 s.
        timeout: route.timeout.map(pb::duration),
        hash_policy: upstream
            .map(|u| hash_policy(&u.balance))
            .unwrap_or_default(),
        // On every Envoy route made from this route (retry and method variants alike).
        rate_limits: super::rate_limit::route_rate_limits(route),
        ..Default::default()
    };
    match &route.rewrite {
        Some(Rewrite::PathPrefix(prefix)) => action.prefix_rewrite = prefix.clone(),
        Some(Rewrite::PathTemplate(template)) => {
            action.path_rewrite_policy = Some(pb::typed_extension(
                URI_TEMPLATE_REWRITER,
                UriTemplateRewriteConfig {
                    path_template_rewrite: template.clone(),
                },
            ));
        }
        Some(Rewrite::Regex {
            regex: pattern,
            substitution,
        }) => {
            action.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(regex(pattern)),
                substitution: substitution.clone(),
            });
        }
        None => {}
    }
    action
}

/// What a consistent-hash balancer hashes, on every route to its upstream.
pub(super) fn hash_policy(balance: &Balance) -> Vec<route_action::HashPolicy> {
    use route_action::hash_policy::{ConnectionProperties, Cookie, Header, PolicySpecifier};
    let hash_on = match balance {
        Balance::RingHash(on) | Balance::Maglev(on) => on,
        Balance::RoundRobin | Balance::LeastRequest | Balance::Random => return Vec::new(),
    };
    let specifier = match hash_on {
        HashOn::Header(name) => PolicySpecifier::Header(Header {
            header_name: name.as_str().to_owned(),
            ..Default::default()
        }),
        // No ttl: hash on the cookie when the client has it; never mint one.
        HashOn::Cookie(name) => PolicySpecifier::Cookie(Cookie {
            name: name.clone(),
            ..Default::default()
        }),
        // The HCM's remote address is the trusted client address (after trusted_hops).
        HashOn::Ip => {
            PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true })
        }
    };
    vec![route_action::HashPolicy {
        policy_specifier: Some(specifier),
        terminal: false,
    }]
}

fn retry_policy(retries: &Retries) -> RetryPolicy {
    let mut on: Vec<&str> = Vec::new();
    let mut codes: Vec<u32> = Vec::new();
    let mut push = |condition: &'static str| {
        if !on.contains(&condition) {
            on.push(condition);
        }
    };
    for condition in &retries.retry_on {
        match condition {
            RetryOn::ConnectFailure => push("connect-failure"),
            RetryOn::Reset => push("reset"),
            RetryOn::ServerError => push("5xx"),
            RetryOn::GatewayError => push("gateway-error"),
            RetryOn::RetriableStatus(code) => {
                push("retriable-status-codes");
                let code = u32::from(*code);
                if !codes.contains(&code) {
                    codes.push(code);
                }
            }
        }
    }
    RetryPolicy {
        retry_on: on.join(","),
        num_retries: Some(pb::u32_value(retries.attempts)),
        per_try_timeout: retries.per_try_timeout.map(pb::duration),
        retriable_status_codes: codes,
        ..Default::default()
    }
}

fn redirect_action(redirect: &model::Redirect, rewrite: Option<&Rewrite>) -> RedirectAction {
    let path_rewrite_specifier = match (&redirect.path, rewrite) {
        (Some(path), _) => Some(redirect_action::PathRewriteSpecifier::PathRedirect(
            path.clone(),
        )),
        (None, Some(Rewrite::PathPrefix(prefix))) => Some(
            redirect_action::PathRewriteSpecifier::PrefixRewrite(prefix.clone()),
        ),
        (
            None,
            Some(Rewrite::Regex {
                regex: pattern,
                substitution,
            }),
        ) => Some(redirect_action::PathRewriteSpecifier::RegexRewrite(
            RegexMatchAndSubstitute {
                pattern: Some(regex(pattern)),
                substitution: substitution.clone(),
            },
        )),
        // Envoy's RedirectAction has no template rewrite; the config layer rejects the
        // combination. Without a path, the request's path is kept.
        (None, Some(Rewrite::PathTemplate(_)) | None) => None,
    };
    RedirectAction {
        scheme_rewrite_specifier: redirect.scheme.map(|s| {
            redirect_action::SchemeRewriteSpecifier::SchemeRedirect(
                match s {
                    Scheme::Http => "http",
                    Scheme::Https => "https",
                }
                .to_owned(),
            )
        }),
        host_redirect: redirect.host.clone().unwrap_or_default(),
        path_rewrite_specifier,
        response_code: match redirect.status {
            RedirectStatus::MovedPermanently301 => {
                redirect_action::RedirectResponseCode::MovedPermanently
            }
            RedirectStatus::Found302 => redirect_action::RedirectResponseCode::Found,
            RedirectStatus::TemporaryRedirect307 => {
                redirect_action::RedirectResponseCode::TemporaryRedirect
            }
            RedirectStatus::PermanentRedirect308 => {
                redirect_action::RedirectResponseCode::PermanentRedirect
            }
        } as i32,
        ..Default::default()
    }
}

fn cors_policy(cors: &model::Cors) -> CorsPolicy {
    let join = |items: Vec<&str>| items.join(",");
    CorsPolicy {
        // `*` as an exact origin is Envoy's "any origin" (the request's origin is echoed).
        allow_origin_string_match: cors
            .allow_origins
            .iter()
            .map(|o| StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(o.clone())),
                ..Default::default()
            })
            .collect(),
        allow_methods: join(cors.allow_methods.iter().map(|m| m.0.as_str()).collect()),
        allow_headers: join(cors.allow_headers.iter().map(|h| h.as_str()).collect()),
        expose_headers: join(cors.expose_headers.iter().map(|h| h.as_str()).collect()),
        max_age: cors
            .max_age
            .map(|d| d.as_secs().to_string())
            .unwrap_or_default(),
        allow_credentials: cors.allow_credentials.then(|| pb::bool_value(true)),
        // The gateway owns CORS for this route: a preflight from another origin is answered
        // (without CORS headers, so the browser refuses) rather than passed to the upstream.
        forward_not_matching_preflights: Some(pb::bool_value(false)),
        ..Default::default()
    }
}

/// The route that lets Envoy's CORS filter see the preflights of a method-restricted route:
/// same path, OPTIONS with `Origin` and `Access-Control-Request-Method`. The route's header
/// matchers are left out: browsers do not send custom headers in a preflight. It must route to
/// an upstream (the CORS filter skips direct responses), but the filter answers every preflight
/// on it (`forward_not_matching_preflights: false`), so none reaches the upstream.
fn preflight_route(route: &model::Route, cors: &CorsPolicy, cluster: &str) -> Route {
    let mut r#match = route_match(
        &model::RouteMatch {
            hosts: Vec::new(),
            path: route.matcher.path.clone(),
            methods: Vec::new(),
            headers: Vec::new(),
        },
        &Methods::Only(&["OPTIONS"]),
    );
    r#match.headers.push(present_header("origin"));
    r#match
        .headers
        .push(present_header("access-control-request-method"));
    Route {
        name: route.name.as_str().to_owned(),
        stat_prefix: route.name.as_str().to_owned(),
        r#match: Some(r#match),
        typed_per_filter_config: [(CORS_FILTER.to_owned(), pb::any(cors.clone()))]
            .into_iter()
            .collect(),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.to_owned())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// 400 for a Host holding several values (`a,b`: duplicate Host headers joined by the codec).
fn ambiguous_host_route() -> Route {
    Route {
        name: "vrata:ambiguous-host".to_owned(),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_owned())),
            headers: vec![HeaderMatcher {
                name: ":authority".to_owned(),
                header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                    StringMatcher {
                        match_pattern: Some(string_matcher::MatchPattern::Contains(",".to_owned())),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }],
            ..Default::default()
        }),
        action: Some(route::Action::DirectResponse(DirectResponseAction {
            status: 400,
            body: None,
            body_format: Some(local_reply::route_problem(
                &local_reply::AMBIGUOUS_HOST,
                400,
            )),
        })),
        ..Default::default()
    }
}

/// 405 routes for the path matches whose routes (in this virtual host) all restrict methods.
fn method_not_allowed_routes(routes: &[&model::Route]) -> Vec<Route> {
    // Groups in first-seen order; the index keeps grouping linear for large route tables.
    let mut groups: Vec<(&PathMatch, Vec<&model::Route>)> = Vec::new();
    let mut index: std::collections::HashMap<(u8, &str), usize> = std::collections::HashMap::new();
    for route in routes {
        let key = match &route.matcher.path {
            PathMatch::Prefix(p) => (0, p.as_str()),
            PathMatch::Exact(p) => (1, p.as_str()),
            PathMatch::Template(t) => (2, t.source.as_str()),
            PathMatch::Regex(r) => (3, r.as_str()),
        };
        match index.get(&key) {
            Some(&i) => groups[i].1.push(route),
            None => {
                index.insert(key, groups.len());
                groups.push((&route.matcher.path, vec![route]));
            }
        }
    }
    groups
        .into_iter()
        .filter(|(_, members)| members.iter().all(|r| !r.matcher.methods.is_empty()))
        .map(|(path, members)| {
            let mut allowed: Vec<&str> = Vec::new();
            for m in members.iter().flat_map(|r| r.matcher.methods.iter()) {
                if !allowed.contains(&m.0.as_str()) {
                    allowed.push(&m.0);
                }
            }
            let first = members[0];
            Route {
                name: format!("{}:method-not-allowed", first.name),
                r#match: Some(route_match(
                    &model::RouteMatch {
                        hosts: Vec::new(),
                        path: path.clone(),
                        methods: Vec::new(),
                        headers: Vec::new(),
                    },
                    &Methods::Listed(&[]),
                )),
                action: Some(route::Action::DirectResponse(DirectResponseAction {
                    status: 405,
                    body: None,
                    body_format: Some(local_reply::route_problem(
                        &local_reply::METHOD_NOT_ALLOWED,
                        405,
                    )),
                })),
                response_headers_to_add: vec![pb::set_header("allow", &allowed.join(", "))],
                ..Default::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use envoy_types::pb::envoy::config::route::v3::retry_policy;

    use super::*;
    use crate::model::{
        Cors, Endpoints, FailureMode, HeaderMutation, HeaderName, Name, Redirect, Respond,
        Services, defaults,
    };

    fn name(s: &str) -> Name {
        Name::new(s).expect("valid name")
    }

    fn header(s: &str) -> HeaderName {
        HeaderName::new(s).expect("valid header")
    }

    fn methods(list: &[&str]) -> Vec<Method> {
        list.iter().map(|m| Method((*m).to_owned())).collect()
    }

    fn model_route(n: &str, hosts: &[&str], prefix: &str) -> model::Route {
        let mut r = model::Route::to_upstream(name(n), prefix, name("svc"));
        r.matcher.hosts = hosts.iter().map(|h| (*h).to_owned()).collect();
        r
    }

    fn upstream(balance: Balance) -> Upstream {
        Upstream {
            balance,
            ..Upstream::new(name("svc"), Endpoints::Static(Vec::new()))
        }
    }

    fn listener(redirect_https: bool, trusted_hops: u32) -> model::Listener {
        model::Listener {
            name: name("public"),
            address: "127.0.0.1:8080".parse().expect("addr"),
            trusted_hops,
            http2: false,
            redirect_https,
            access_log: false,
            tls: None,
        }
    }

    fn gateway(routes: Vec<model::Route>) -> Gateway {
        Gateway {
            listeners: vec![listener(false, 0)],
            upstreams: BTreeMap::from([(name("svc"), upstream(Balance::RoundRobin))]),
            routes,
            services: Services {
                ext_authz: defaults::EXT_AUTHZ,
                ratelimit: defaults::RATELIMIT,
                timeout: defaults::SERVICE_TIMEOUT,
                ext_authz_failure: FailureMode::Deny,
                ratelimit_failure: FailureMode::Allow,
                aggregator: defaults::AGGREGATOR,
                aggregator_loopback: defaults::AGGREGATOR_LOOPBACK,
                response_cache: defaults::RESPONSE_CACHE,
            },
            auth_providers: BTreeMap::new(),
            rate_limits: Default::default(),
            observability: Default::default(),
            cache_redis: Vec::new(),
        }
    }

    fn route_action_of(r: &Route) -> &RouteAction {
        match &r.action {
            Some(route::Action::Route(a)) => a,
            other => panic!("route action expected, got {other:?}"),
        }
    }

    fn method_matcher_of(r: &Route) -> Option<&HeaderMatcher> {
        r.r#match
            .as_ref()
            .and_then(|m| m.headers.iter().find(|h| h.name == ":method"))
    }

    fn exact(value: &str) -> Option<header_matcher::HeaderMatchSpecifier> {
        Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(value.to_owned())),
                ..Default::default()
            },
        ))
    }

    fn regex_of(m: &HeaderMatcher) -> &str {
        match &m.header_match_specifier {
            Some(header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::SafeRegex(r)),
                ..
            })) => &r.regex,
            other => panic!("regex expected, got {other:?}"),
        }
    }

    /// The user routes of a virtual host (without vrata's ambiguous-host guard).
    fn user_routes(vh: &VirtualHost) -> Vec<&str> {
        vh.routes.iter().skip(1).map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn host_patterns_cover_domains() {
        for (pattern, domain, expected) in [
            ("*", "api.example.com", true),
            ("*", "*", true),
            ("*", "*.example.com", true),
            ("api.example.com", "api.example.com", true),
            ("API.example.com", "api.EXAMPLE.com", true),
            ("api.example.com", "www.example.com", false),
            ("api.example.com", "*", false),
            ("*.example.com", "api.example.com", true),
            ("*.example.com", "a.b.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "*.api.example.com", true),
            ("*.api.example.com", "*.example.com", false),
            ("*.example.com", "*", false),
            ("api.*", "api.example.com", true),
            ("api.*", "api.example.*", true),
            ("api.*", "*.example.com", false),
            ("api.example.com", "*.example.com", false),
        ] {
            assert_eq!(
                covers(pattern, domain),
                expected,
                "{pattern} covers {domain}"
            );
        }
    }

    #[test]
    fn virtual_hosts_hold_every_covering_route_in_file_order() {
        let gw = gateway(vec![
            model_route("any-first", &["*"], "/a"),
            model_route("exact", &["api.example.com"], "/b"),
            model_route("wild", &["*.example.com"], "/c"),
            model_route("other", &["www.example.org", "API.example.com"], "/d"),
            model_route("any-last", &["*"], "/e"),
        ]);
        let rc = route_configuration(&gw, &gw.listeners[0]);
        assert_eq!(rc.name, "public");
        let hosts: Vec<&str> = rc.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            hosts,
            ["*", "*.example.com", "api.example.com", "www.example.org"]
        );
        for vh in &rc.virtual_hosts {
            assert_eq!(vh.domains, std::slice::from_ref(&vh.name));
        }
        let by_name = |n: &str| {
            rc.virtual_hosts
                .iter()
                .find(|v| v.name == n)
                .expect("virtual host")
        };
        assert_eq!(user_routes(by_name("*")), ["any-first", "any-last"]);
        assert_eq!(
            user_routes(by_name("*.example.com")),
            ["any-first", "wild", "any-last"]
        );
        assert_eq!(
            user_routes(by_name("api.example.com")),
            ["any-first", "exact", "wild", "other", "any-last"]
        );
        assert_eq!(
            user_routes(by_name("www.example.org")),
            ["any-first", "other", "any-last"]
        );
    }

    #[test]
    fn every_virtual_host_refuses_ambiguous_hosts_first() {
        let gw = gateway(vec![model_route("r", &["api.example.com"], "/")]);
        for redirect in [false, true] {
            let rc = route_configuration(&gw, &listener(redirect, 0));
            for vh in &rc.virtual_hosts {
                let guard = &vh.routes[0];
                assert_eq!(guard.name, "vrata:ambiguous-host");
                let m = guard.r#match.as_ref().expect("match");
                assert_eq!(m.headers[0].name, ":authority");
                let Some(route::Action::DirectResponse(d)) = &guard.action else {
                    panic!("direct response expected");
                };
                assert_eq!(d.status, 400);
                assert_eq!(
                    d.body_format.as_ref().map(|f| f.content_type.as_str()),
                    Some(local_reply::PROBLEM_JSON)
                );
            }
        }
    }

    #[test]
    fn path_matches() {
        let mut r = model_route("r", &["*"], "/api");
        let path_of = |r: &model::Route| {
            routes_for(r, None)[0]
                .r#match
                .as_ref()
                .and_then(|m| m.path_specifier.clone())
        };
        assert_eq!(
            path_of(&r),
            Some(route_match::PathSpecifier::Prefix("/api".into()))
        );
        r.matcher.path = PathMatch::Exact("/x".into());
        assert_eq!(
            path_of(&r),
            Some(route_match::PathSpecifier::Path("/x".into()))
        );
        r.matcher.path = PathMatch::Regex("^/x/[0-9]+$".into());
        assert_eq!(
            path_of(&r),
            Some(route_match::PathSpecifier::SafeRegex(regex("^/x/[0-9]+$")))
        );
        r.matcher.path = PathMatch::Template(model::PathTemplate {
            source: "/x/{id}".into(),
            variables: vec!["id".into()],
        });
        let Some(route_match::PathSpecifier::PathMatchPolicy(policy)) = path_of(&r) else {
            panic!("path match policy expected");
        };
        assert_eq!(policy.name, URI_TEMPLATE_MATCHER);
        let config: UriTemplateMatchConfig =
            prost::Message::decode(policy.typed_config.expect("config").value.as_slice())
                .expect("decodes");
        assert_eq!(config.path_template, "/x/{id}");
    }

    #[test]
    fn methods_and_headers_become_header_matchers() {
        let mut r = model_route("r", &["*"], "/");
        assert!(method_matcher_of(&routes_for(&r, None)[0]).is_none());
        r.matcher.methods = methods(&["GET"]);
        r.matcher.headers = vec![(header("x-api-version"), "2".into())];
        let routes = routes_for(&r, None);
        let m = routes[0].r#match.as_ref().expect("match");
        assert_eq!(m.headers.len(), 2);
        assert_eq!(m.headers[0].header_match_specifier, exact("GET"));
        assert_eq!(m.headers[1].name, "x-api-version");
        assert_eq!(m.headers[1].header_match_specifier, exact("2"));
        r.matcher.methods = methods(&["GET", "M-SEARCH"]);
        let routes = routes_for(&r, None);
        assert_eq!(
            regex_of(method_matcher_of(&routes[0]).expect("matcher")),
            "GET|M\\-SEARCH"
        );
    }

    #[test]
    fn retries_only_for_idempotent_methods_unless_listed() {
        let mut r = model_route("r", &["*"], "/");
        r.retries = Some(Retries {
            attempts: 2,
            retry_on: vec![
                RetryOn::ConnectFailure,
                RetryOn::RetriableStatus(503),
                RetryOn::Reset,
                RetryOn::RetriableStatus(503),
                RetryOn::RetriableStatus(502),
                RetryOn::ServerError,
                RetryOn::GatewayError,
            ],
            per_try_timeout: Some(Duration::from_millis(500)),
        });
        r.timeout = Some(Duration::from_secs(3));

        let routes = routes_for(&r, None);
        assert_eq!(routes.len(), 2);
        assert!(routes.iter().all(|x| x.name == "r"));
        assert_eq!(
            regex_of(method_matcher_of(&routes[0]).expect("idempotent methods")),
            "GET|HEAD|OPTIONS|PUT|DELETE|TRACE"
        );
        let policy = route_action_of(&routes[0])
            .retry_policy
            .as_ref()
            .expect("retry policy");
        assert_eq!(
            policy.retry_on,
            "connect-failure,retriable-status-codes,reset,5xx,gateway-error"
        );
        assert_eq!(policy.retriable_status_codes, [503, 502]);
        assert_eq!(policy.num_retries, Some(pb::u32_value(2)));
        assert_eq!(
            policy.per_try_timeout,
            Some(pb::duration(Duration::from_millis(500)))
        );
        assert!(method_matcher_of(&routes[1]).is_none());
        assert!(route_action_of(&routes[1]).retry_policy.is_none());
        // Everything else is the same on both.
        for x in &routes {
            assert_eq!(
                route_action_of(x).timeout,
                Some(pb::duration(Duration::from_secs(3)))
            );
        }

        r.matcher.methods = methods(&["POST"]);
        let routes = routes_for(&r, None);
        assert_eq!(routes.len(), 1);
        assert!(route_action_of(&routes[0]).retry_policy.is_some());
        assert_eq!(
            method_matcher_of(&routes[0]).map(|m| m.header_match_specifier.clone()),
            Some(exact("POST"))
        );
        for m in IDEMPOTENT_METHODS {
            assert!(Method((*m).to_owned()).is_idempotent(), "{m}");
        }
        // Default retry backoff and host selection: Envoy's.
        assert_eq!(policy.retry_back_off, None::<retry_policy::RetryBackOff>);
    }

    #[test]
    fn method_not_allowed_fallbacks_follow_all_routes() {
        let mut read = model_route("read", &["*"], "/orders");
        read.matcher.methods = methods(&["GET", "HEAD"]);
        let mut write = model_route("write", &["*"], "/orders");
        write.matcher.methods = methods(&["POST", "GET"]);
        let mut open = model_route("open", &["*"], "/open");
        let mut open_get = model_route("open-get", &["*"], "/open");
        open_get.matcher.methods = methods(&["GET"]);
        open.matcher.headers = vec![(header("x-a"), "1".into())];
        let gw = gateway(vec![read, open_get, write, open]);
        let rc = route_configuration(&gw, &gw.listeners[0]);
        let vh = &rc.virtual_hosts[0];
        assert_eq!(
            user_routes(vh),
            [
                "read",
                "open-get",
                "write",
                "open",
                "read:method-not-allowed"
            ]
        );
        let fallback = vh.routes.last().expect("fallback");
        let m = fallback.r#match.as_ref().expect("match");
        assert!(m.headers.is_empty());
        assert_eq!(
            m.path_specifier,
            Some(route_match::PathSpecifier::Prefix("/orders".into()))
        );
        let Some(route::Action::DirectResponse(d)) = &fallback.action else {
            panic!("direct response expected");
        };
        assert_eq!(d.status, 405);
        assert!(d.body.is_none());
        assert_eq!(
            d.body_format,
            Some(local_reply::route_problem(
                &local_reply::METHOD_NOT_ALLOWED,
                405
            ))
        );
        let allow = &fallback.response_headers_to_add[0];
        assert_eq!(
            allow
                .header
                .as_ref()
                .map(|h| (h.key.as_str(), h.value.as_str())),
            Some(("allow", "GET, HEAD, POST"))
        );
    }

    #[test]
    fn cors_policy_and_preflight_route() {
        let mut r = model_route("r", &["*"], "/api");
        r.matcher.methods = methods(&["GET"]);
        r.matcher.headers = vec![(header("x-api-version"), "2".into())];
        r.cors = Some(Cors {
            allow_origins: vec!["https://app.example.com".into(), "*".into()],
            allow_methods: methods(&["GET", "PUT"]),
            allow_headers: vec![header("authorization"), header("x-b")],
            expose_headers: vec![header("x-request-id")],
            allow_credentials: true,
            max_age: Some(Duration::from_secs(600)),
        });
        let routes = routes_for(&r, None);
        assert_eq!(routes.len(), 2);
        let (preflight, main) = (&routes[0], &routes[1]);
        let policy: CorsPolicy =
            prost::Message::decode(main.typed_per_filter_config[CORS_FILTER].value.as_slice())
                .expect("a CorsPolicy");
        assert_eq!(policy.allow_methods, "GET,PUT");
        assert_eq!(policy.allow_headers, "authorization,x-b");
        assert_eq!(policy.expose_headers, "x-request-id");
        assert_eq!(policy.max_age, "600");
        assert_eq!(policy.allow_credentials, Some(pb::bool_value(true)));
        assert_eq!(
            policy.forward_not_matching_preflights,
            Some(pb::bool_value(false))
        );
        assert_eq!(policy.allow_origin_string_match.len(), 2);

        assert_eq!(preflight.name, "r");
        assert_eq!(
            preflight.typed_per_filter_config,
            main.typed_per_filter_config
        );
        let m = preflight.r#match.as_ref().expect("match");
        let names: Vec<&str> = m.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            [":method", "origin", "access-control-request-method"]
        );
        assert_eq!(m.headers[0].header_match_specifier, exact("OPTIONS"));
        // The CORS filter only acts on routes with an upstream.
        assert_eq!(
            route_action_of(preflight).cluster_specifier,
            Some(route_action::ClusterSpecifier::Cluster("svc".into()))
        );

        // OPTIONS listed, or no method list: the route itself sees the preflight.
        r.matcher.methods = methods(&["GET", "OPTIONS"]);
        assert_eq!(routes_for(&r, None).len(), 1);
        r.matcher.methods.clear();
        assert_eq!(routes_for(&r, None).len(), 1);
    }

    #[test]
    fn consistent_hashing_on_every_route_to_the_upstream() {
        use route_action::hash_policy::PolicySpecifier;
        let r = model_route("r", &["*"], "/");
        for (balance, expected) in [
            (Balance::RoundRobin, None),
            (Balance::LeastRequest, None),
            (Balance::Random, None),
            (
                Balance::RingHash(HashOn::Header(header("x-user-id"))),
                Some(PolicySpecifier::Header(route_action::hash_policy::Header {
                    header_name: "x-user-id".into(),
                    ..Default::default()
                })),
            ),
            (
                Balance::Maglev(HashOn::Cookie("session".into())),
                Some(PolicySpecifier::Cookie(route_action::hash_policy::Cookie {
                    name: "session".into(),
                    ..Default::default()
                })),
            ),
            (
                Balance::Maglev(HashOn::Ip),
                Some(PolicySpecifier::ConnectionProperties(
                    route_action::hash_policy::ConnectionProperties { source_ip: true },
                )),
            ),
        ] {
            let routes = routes_for(&r, Some(&upstream(balance)));
            let policy = &route_action_of(&routes[0]).hash_policy;
            assert_eq!(
                policy.first().and_then(|p| p.policy_specifier.clone()),
                expected
            );
            assert!(policy.len() <= 1);
        }
    }

    #[test]
    fn rewrites_and_header_mutations() {
        let mut r = model_route("r", &["*"], "/api");
        r.rewrite = Some(Rewrite::PathPrefix("/v2".into()));
        r.request_headers = HeaderMutation {
            set: vec![
                (header("x-gateway"), "vrata 100%".into()),
                (header("host"), "inner.example".into()),
            ],
            remove: vec![header("cookie")],
        };
        r.response_headers = HeaderMutation {
            set: vec![(header("x-served-by"), "vrata".into())],
            remove: vec![header("server")],
        };
        let routes = routes_for(&r, None);
        let route = &routes[0];
        let action = route_action_of(route);
        assert_eq!(action.prefix_rewrite, "/v2");
        assert_eq!(
            action.host_rewrite_specifier,
            Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(
                "inner.example".into()
            ))
        );
        let added: Vec<(&str, &str)> = route
            .request_headers_to_add
            .iter()
            .filter_map(|h| h.header.as_ref())
            .map(|h| (h.key.as_str(), h.value.as_str()))
            .collect();
        assert_eq!(
            added,
            [
                ("x-envoy-original-path", "%REQ(:PATH)%"),
                ("x-gateway", "vrata 100%%")
            ]
        );
        assert_eq!(route.request_headers_to_remove, ["cookie"]);
        assert_eq!(route.response_headers_to_remove, ["server"]);
        assert_eq!(
            route.response_headers_to_add[0]
                .header
                .as_ref()
                .map(|h| h.key.as_str()),
            Some("x-served-by")
        );

        r.rewrite = Some(Rewrite::Regex {
            regex: "^/api/(.*)$".into(),
            substitution: "/\\1".into(),
        });
        let routes = routes_for(&r, None);
        assert_eq!(
            route_action_of(&routes[0]).regex_rewrite,
            Some(RegexMatchAndSubstitute {
                pattern: Some(regex("^/api/(.*)$")),
                substitution: "/\\1".into(),
            })
        );
        r.rewrite = Some(Rewrite::PathTemplate("/v2/{id}".into()));
        let routes = routes_for(&r, None);
        let policy = route_action_of(&routes[0])
            .path_rewrite_policy
            .clone()
            .expect("rewrite policy");
        assert_eq!(policy.name, URI_TEMPLATE_REWRITER);

        // Without a rewrite nothing extra is added (a lean plain route).
        r.rewrite = None;
        r.request_headers = HeaderMutation::default();
        let routes = routes_for(&r, None);
        assert!(routes[0].request_headers_to_add.is_empty());
    }

    #[test]
    fn respond_and_redirect() {
        let mut r = model_route("r", &["*"], "/");
        r.action = Action::Respond(Respond {
            status: 503,
            body: Some("down".into()),
            headers: vec![(header("content-type"), "text/plain".into())],
        });
        r.response_headers.set = vec![(header("retry-after"), "60".into())];
        r.request_headers.set = vec![(header("x-ignored"), "1".into())];
        r.cors = Some(Cors {
            allow_origins: vec!["*".into()],
            allow_methods: Vec::new(),
            allow_headers: Vec::new(),
            expose_headers: Vec::new(),
            allow_credentials: false,
            max_age: None,
        });
        let routes = routes_for(&r, None);
        assert_eq!(routes.len(), 1);
        let Some(route::Action::DirectResponse(d)) = &routes[0].action else {
            panic!("direct response expected");
        };
        assert_eq!(d.status, 503);
        assert_eq!(
            d.body.as_ref().and_then(|b| b.specifier.clone()),
            Some(data_source::Specifier::InlineString("down".into()))
        );
        assert!(d.body_format.is_none(), "user bodies are sent as written");
        let keys: Vec<&str> = routes[0]
            .response_headers_to_add
            .iter()
            .filter_map(|h| h.header.as_ref().map(|h| h.key.as_str()))
            .collect();
        assert_eq!(keys, ["content-type", "retry-after"]);
        // Nothing is forwarded: no request mutations; Envoy's CORS filter skips such routes.
        assert!(routes[0].request_headers_to_add.is_empty());
        assert!(routes[0].typed_per_filter_config.is_empty());

        r.action = Action::Redirect(Redirect {
            path: None,
            host: Some("docs.example.com".into()),
            scheme: Some(Scheme::Https),
            status: RedirectStatus::PermanentRedirect308,
        });
        r.rewrite = Some(Rewrite::PathPrefix("/v1".into()));
        let routes = routes_for(&r, None);
        let Some(route::Action::Redirect(redirect)) = &routes[0].action else {
            panic!("redirect expected");
        };
        assert_eq!(redirect.host_redirect, "docs.example.com");
        assert_eq!(
            redirect.scheme_rewrite_specifier,
            Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect(
                "https".into()
            ))
        );
        assert_eq!(
            redirect.path_rewrite_specifier,
            Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(
                "/v1".into()
            ))
        );
        assert_eq!(
            redirect.response_code,
            redirect_action::RedirectResponseCode::PermanentRedirect as i32
        );
        r.action = Action::Redirect(Redirect {
            path: Some("/new".into()),
            host: None,
            scheme: None,
            status: RedirectStatus::Found302,
        });
        let routes = routes_for(&r, None);
        let Some(route::Action::Redirect(redirect)) = &routes[0].action else {
            panic!("redirect expected");
        };
        assert_eq!(
            redirect.path_rewrite_specifier,
            Some(redirect_action::PathRewriteSpecifier::PathRedirect(
                "/new".into()
            ))
        );
        assert_eq!(redirect.scheme_rewrite_specifier, None);
        assert_eq!(
            redirect.response_code,
            redirect_action::RedirectResponseCode::Found as i32
        );
    }

    #[test]
    fn large_respond_bodies_raise_envoys_limit() {
        let mut r = model_route("r", &["*"], "/");
        r.action = Action::Respond(Respond {
            status: 200,
            body: Some("x".repeat(ENVOY_DIRECT_RESPONSE_BODY_LIMIT)),
            headers: Vec::new(),
        });
        let gw = gateway(vec![r.clone()]);
        let rc = route_configuration(&gw, &gw.listeners[0]);
        assert_eq!(rc.max_direct_response_body_size_bytes, None);
        r.action = Action::Respond(Respond {
            status: 200,
            body: Some("x".repeat(10_000)),
            headers: Vec::new(),
        });
        let gw = gateway(vec![r]);
        let rc = route_configuration(&gw, &gw.listeners[0]);
        assert_eq!(
            rc.max_direct_response_body_size_bytes,
            Some(pb::u32_value(10_000))
        );
    }

    #[test]
    fn https_redirect_listener_answers_308_everywhere() {
        let gw = gateway(vec![model_route("r", &["api.example.com"], "/")]);
        let rc = route_configuration(&gw, &listener(true, 0));
        assert_eq!(rc.virtual_hosts.len(), 2);
        for vh in &rc.virtual_hosts {
            assert_eq!(vh.routes.len(), 2);
            let Some(route::Action::Redirect(redirect)) = &vh.routes[1].action else {
                panic!("redirect expected");
            };
            assert_eq!(
                redirect.scheme_rewrite_specifier,
                Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true))
            );
            assert_eq!(
                redirect.response_code,
                redirect_action::RedirectResponseCode::PermanentRedirect as i32
            );
        }
    }

    #[test]
    fn forwarding_headers_dropped_without_trusted_proxies() {
        let gw = gateway(vec![model_route("r", &["*"], "/")]);
        let rc = route_configuration(&gw, &listener(false, 0));
        assert_eq!(rc.request_headers_to_remove, UNTRUSTED_FORWARDING_HEADERS);
        assert!(rc.most_specific_header_mutations_wins);
        let rc = route_configuration(&gw, &listener(false, 1));
        assert!(rc.request_headers_to_remove.is_empty());
    }

    #[test]
    fn settings_never_leak_between_routes() {
        let mut loaded = model_route("loaded", &["*"], "/loaded");
        loaded.timeout = Some(Duration::from_secs(1));
        loaded.retries = Some(Retries {
            attempts: 1,
            retry_on: vec![RetryOn::Reset],
            per_try_timeout: None,
        });
        loaded.rewrite = Some(Rewrite::PathPrefix("/x".into()));
        loaded.request_headers.set = vec![(header("x-a"), "1".into())];
        loaded.response_headers.remove = vec![header("server")];
        loaded.cors = Some(Cors {
            allow_origins: vec!["*".into()],
            allow_methods: Vec::new(),
            allow_headers: Vec::new(),
            expose_headers: Vec::new(),
            allow_credentials: false,
            max_age: None,
        });
        let plain = model_route("plain", &["*"], "/plain");
        let gw = gateway(vec![loaded, plain]);
        let rc = route_configuration(&gw, &gw.listeners[0]);
        let plain = rc.virtual_hosts[0]
            .routes
            .iter()
            .find(|r| r.name == "plain")
            .expect("plain route");
        assert_eq!(
            *plain,
            Route {
                name: "plain".into(),
                stat_prefix: "plain".into(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/plain".into())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("svc".into())),
                    ..Default::default()
                })),
                ..Default::default()
            }
        );
    }
}
