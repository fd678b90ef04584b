//! `routes[]`.

use super::auth::{self, Providers};
use super::upstream::bounded;
use super::{Cx, Defined};
use crate::config::diagnostic::{Pos, exclusive, one_of, suggestion};
use crate::config::dto::{
    CorsDto, HeaderRulesDto, MatchDto, NamedMap, RedirectDto, RespondDto, RetriesDto, RouteDto,
    SchemeDto,
};
use crate::config::spanned::{Spanned, or};
use crate::config::{re2, syntax, template};
use crate::model::{
    Action, Cors, HeaderMutation, HeaderName, Method, Name, PathMatch, PathTemplate, Redirect,
    RedirectStatus, Respond, Retries, RetryOn, Rewrite, Route, RouteMatch, Scheme, defaults,
};

/// The upstream names a route may refer to.
pub(crate) struct Upstreams<'a> {
    pub names: Vec<&'a str>,
    /// False when some upstreams could not be read: unknown names are then not reported.
    pub complete: bool,
}

pub(crate) fn convert(
    cx: &Cx<'_>,
    dto: &Spanned<RouteDto>,
    upstreams: &Upstreams<'_>,
    providers: &Providers<'_>,
    names: &mut Defined,
) -> Option<Route> {
    let r = dto.get()?;
    let name = cx.name(&r.name);
    let unique = name
        .as_ref()
        .is_some_and(|n| names.define(cx, "route", n.as_str(), r.name.pos()));
    let matcher = match &r.matcher {
        None => Some(RouteMatch {
            hosts: vec!["*".to_owned()],
            path: PathMatch::Prefix("/".to_owned()),
            methods: Vec::new(),
            headers: Vec::new(),
        }),
        Some(m) => m.get().and_then(|m| route_match(cx, m)),
    };
    let action = action(
        cx,
        r,
        dto.pos(),
        matcher.as_ref().map(|m| &m.path),
        upstreams,
    );
    let rewrite = rewrite(cx, r, matcher.as_ref().map(|m| &m.path));
    let request_headers = header_rules(cx, &r.request_headers);
    let response_headers = header_rules(cx, &r.response_headers);
    let retries = optional(&r.retries, |x| retries(cx, x));
    let cors = optional(&r.cors, |c| cors(cx, c));
    let auth = optional(&r.auth, |a| {
        auth::route_auth(cx, a, providers, request_headers.as_ref())
    });
    let rate_limit = match &r.rate_limit {
        None => Some(Vec::new()),
        Some(list) => list
            .get()
            .and_then(|items| super::rate_limits::route_limits(cx, items)),
    };
    let response_json = match r.response.as_ref() {
        None => Some(None),
        Some(f) => f.get().and_then(|resp| match &resp.json {
            None => Some(None),
            Some(j) => j
                .get()
                .and_then(|j| super::aggregate::json_shape(cx, j))
                .map(Some),
        }),
    };
    let cache = optional(&r.cache, |c| {
        super::cache::route_cache(cx, c, r.auth.is_some())
    });
    let proxy_settings_ok = proxy_only(cx, r);
    let aggregate_settings_ok = not_on_aggregates(cx, r);
    if !proxy_settings_ok || !aggregate_settings_ok {
        return None;
    }
    let route = Route {
        name: name?,
        matcher: matcher?,
        action: action?,
        rewrite: rewrite.ok()?,
        request_headers: request_headers?,
        response_headers: response_headers?,
        timeout: r.timeout.as_ref().and_then(Spanned::get).map(|d| d.0),
        retries: retries?,
        cors: cors?,
        auth: auth?,
        rate_limit: rate_limit?,
        response_json: response_json?,
        cache: cache?,
    };
    unique.then_some(route)
}

/// An optional section: `Some(None)` when absent, `None` when invalid.
/// Settings that only mean something on a route that proxies to an upstream: on `respond` and
/// `redirect` routes Envoy would silently ignore them, so they are errors.
fn proxy_only(cx: &Cx<'_>, r: &RouteDto) -> bool {
    if r.respond.is_none() && r.redirect.is_none() {
        return true;
    }
    let fields = [
        ("rewrite", r.rewrite.as_ref().map(|f| f.pos())),
        ("cors", r.cors.as_ref().map(|f| f.pos())),
        ("retries", r.retries.as_ref().map(|f| f.pos())),
        ("timeout", r.timeout.as_ref().map(|f| f.pos())),
        // Envoy's ratelimit filter only acts on routes with a route action.
        ("rate_limit", r.rate_limit.as_ref().map(|f| f.pos())),
        // Nothing to reshape: the answer is the gateway's own.
        ("response", r.response.as_ref().map(|f| f.pos())),
        // Envoy answers these routes itself, at no cost: nothing to keep.
        ("cache", r.cache.as_ref().map(|f| f.pos())),
    ];
    let mut ok = true;
    for (key, pos) in fields {
        if let Some(pos) = pos {
            cx.error(
                pos,
                format!("`{key}` only applies to routes that proxy to an `upstream`"),
            );
            ok = false;
        }
    }
    ok
}

/// Settings an aggregate route cannot have: the aggregator builds the backend paths itself
/// (no `rewrite`) and a retried aggregate would call every backend again (no `retries`).
fn not_on_aggregates(cx: &Cx<'_>, r: &RouteDto) -> bool {
    if r.aggregate.is_none() {
        return true;
    }
    let mut ok = true;
    if let Some(f) = &r.rewrite {
        cx.error(
            f.pos(),
            "`rewrite` does not apply to an `aggregate` route: each backend's `path` says what it \
             is called with",
        );
        ok = false;
    }
    if let Some(f) = &r.retries {
        cx.error(
            f.pos(),
            "`retries` does not apply to an `aggregate` route: a retry would call every backend \
             again",
        );
        ok = false;
    }
    ok
}

fn optional<T, U>(
    field: &Option<Spanned<T>>,
    convert: impl FnOnce(&T) -> Option<U>,
) -> Option<Option<U>> {
    match field {
        None => Some(None),
        Some(f) => f.get().and_then(convert).map(Some),
    }
}

/// Checks every item; `None` if one was invalid.
fn each<T, U>(
    cx: &Cx<'_>,
    items: &[Spanned<T>],
    check: impl Fn(&T) -> Result<U, String>,
) -> Option<Vec<U>> {
    let mut ok = true;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match cx.check(item, &check) {
            Some(v) => out.push(v),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Upper-cased, deduplicated methods, in file order.
fn methods(cx: &Cx<'_>, items: &[Spanned<String>]) -> Option<Vec<Method>> {
    let mut methods = each(cx, items, |m| syntax::method(m))?;
    let mut seen = Vec::new();
    methods.retain(|m| {
        let new = !seen.contains(m);
        seen.push(m.clone());
        new
    });
    Some(methods)
}

fn route_match(cx: &Cx<'_>, m: &MatchDto) -> Option<RouteMatch> {
    let hosts = match &m.hosts {
        None => Some(vec!["*".to_owned()]),
        Some(list) => list.get().and_then(|items| {
            if items.is_empty() {
                cx.error(
                    list.pos(),
                    "`hosts` is empty: leave it out to match any host",
                );
                return None;
            }
            let hosts = each(cx, items, |h| syntax::virtual_host(h))?;
            let mut ok = true;
            for (i, h) in hosts.iter().enumerate() {
                if hosts[..i].contains(h) {
                    cx.error(items[i].pos(), format!("host `{h}` is listed twice"));
                    ok = false;
                }
            }
            ok.then_some(hosts)
        }),
    };
    let path = path_match(cx, m);
    let methods = match &m.methods {
        None => Some(Vec::new()),
        Some(list) => list.get().and_then(|items| {
            if items.is_empty() {
                cx.error(
                    list.pos(),
                    "`methods` is empty: leave it out to match any method",
                );
                None
            } else {
                methods(cx, items)
            }
        }),
    };
    let headers = optional_headers(cx, &m.headers);
    Some(RouteMatch {
        hosts: hosts?,
        path: path?,
        methods: methods?,
        headers: headers?,
    })
}

const PATH_KEYS: [&str; 4] = ["path", "path_prefix", "path_template", "path_regex"];

fn path_match(cx: &Cx<'_>, m: &MatchDto) -> Option<PathMatch> {
    let fields = [&m.path, &m.path_prefix, &m.path_template, &m.path_regex];
    let mut given: Vec<(usize, &Spanned<String>)> = fields
        .iter()
        .enumerate()
        .filter_map(|(i, f)| f.as_ref().map(|f| (i, f)))
        .collect();
    // The first in the file is the one meant; the others are reported.
    given.sort_by_key(|(_, f)| f.pos());
    let (first, field) = match given.as_slice() {
        [] => return Some(PathMatch::Prefix("/".to_owned())),
        [one] => *one,
        [(first, _), rest @ ..] => {
            for (i, f) in rest {
                cx.error(
                    f.pos(),
                    format!(
                        "{}: a route matches on one of {}",
                        exclusive(PATH_KEYS[*i], &[PATH_KEYS[*first]]),
                        one_of(&PATH_KEYS)
                    ),
                );
            }
            return None;
        }
    };
    let text = field.get()?;
    let result = match first {
        0 => syntax::path(text).map(PathMatch::Exact),
        1 => syntax::path(text).map(PathMatch::Prefix),
        2 => match template::parse_match(text) {
            Ok(variables) => Ok(PathMatch::Template(PathTemplate {
                source: text.clone(),
                variables,
            })),
            Err(e) => {
                cx.error(
                    field.pos_at(e.offset),
                    format!("invalid path template: {}", e.message),
                );
                return None;
            }
        },
        _ => match re2::check(text) {
            Ok(_) => Ok(PathMatch::Regex(text.clone())),
            Err(e) => {
                cx.error(field.pos_at(e.offset), e.message);
                return None;
            }
        },
    };
    result
        .map_err(|message| cx.error(field.pos(), message))
        .ok()
}

/// Header names to values; `what` completes "header `x` is ... twice".
/// An optional `name: value` header map (absent: none).
fn optional_headers(
    cx: &Cx<'_>,
    field: &Option<Spanned<NamedMap<String>>>,
) -> Option<Vec<(HeaderName, String)>> {
    match field {
        None => Some(Vec::new()),
        Some(h) => h
            .get()
            .and_then(|h| header_map(cx, h, syntax::header_name, "listed")),
    }
}

fn header_map(
    cx: &Cx<'_>,
    map: &NamedMap<String>,
    name: impl Fn(&str) -> Result<HeaderName, String>,
    what: &str,
) -> Option<Vec<(HeaderName, String)>> {
    let mut ok = true;
    let mut out: Vec<(HeaderName, String)> = Vec::new();
    for (key, value) in &map.0 {
        let key_checked = cx.check(key, |k| name(k));
        let value_checked = cx.check(value, |v| syntax::header_value(v));
        match (key_checked, value_checked) {
            (Some(k), _) if out.iter().any(|(o, _)| o == &k) => {
                cx.error(key.pos(), format!("header `{k}` is {what} twice"));
                ok = false;
            }
            (Some(k), Some(v)) => out.push((k, v)),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

fn action(
    cx: &Cx<'_>,
    r: &RouteDto,
    route: Pos,
    matched: Option<&PathMatch>,
    upstreams: &Upstreams<'_>,
) -> Option<Action> {
    const KEYS: [&str; 4] = ["upstream", "respond", "redirect", "aggregate"];
    let mut given: Vec<(&str, Pos)> = [
        r.upstream.as_ref().map(Spanned::pos),
        r.respond.as_ref().map(Spanned::pos),
        r.redirect.as_ref().map(Spanned::pos),
        r.aggregate.as_ref().map(Spanned::pos),
    ]
    .into_iter()
    .zip(KEYS)
    .filter_map(|(pos, key)| pos.map(|p| (key, p)))
    .collect();
    given.sort_by_key(|(_, pos)| *pos);
    match given.as_slice() {
        [] => {
            cx.error(route, format!("a route needs one of {}", one_of(&KEYS)));
            return None;
        }
        [_] => {}
        [(first, _), rest @ ..] => {
            for (key, pos) in rest {
                cx.error(
                    *pos,
                    format!(
                        "{}: a route has exactly one of {}",
                        exclusive(key, &[first]),
                        one_of(&KEYS)
                    ),
                );
            }
            return None;
        }
    }
    if let Some(u) = &r.upstream {
        let name = u.get()?;
        if upstreams.names.contains(&name.as_str()) {
            // An invalid upstream name has been reported where the upstream is defined.
            return Name::new(name.as_str()).ok().map(Action::Upstream);
        }
        if upstreams.complete {
            let hint = if upstreams.names.is_empty() {
                " (no upstreams are defined)".to_owned()
            } else {
                suggestion(name, &upstreams.names)
            };
            cx.error(u.pos(), format!("unknown upstream `{name}`{hint}"));
        }
        return None;
    }
    if let Some(resp) = &r.respond {
        return respond(cx, resp.get()?).map(Action::Respond);
    }
    if let Some(agg) = &r.aggregate {
        return super::aggregate::aggregate(cx, agg.get()?, agg.pos(), matched, upstreams)
            .map(Action::Aggregate);
    }
    let red = r.redirect.as_ref()?;
    redirect(cx, red.get()?, red.pos()).map(Action::Redirect)
}

fn respond(cx: &Cx<'_>, r: &RespondDto) -> Option<Respond> {
    let status = cx.check(&r.status, |s| {
        if (200..=599).contains(s) {
            Ok(*s)
        } else {
            Err(format!("`status` must be from 200 to 599, found {s}"))
        }
    });
    let headers = optional_headers(cx, &r.headers);
    Some(Respond {
        status: status?,
        body: r.body.as_ref().and_then(Spanned::get).cloned(),
        headers: headers?,
    })
}

fn redirect(cx: &Cx<'_>, r: &RedirectDto, pos: Pos) -> Option<Redirect> {
    if r.path.is_none() && r.host.is_none() && r.scheme.is_none() {
        cx.error(
            pos,
            "a redirect needs at least one of `path`, `host` or `scheme`",
        );
        return None;
    }
    let path = cx.check_opt(&r.path, |p| syntax::path(p));
    let host = cx.check_opt(&r.host, |h| {
        if syntax::is_hostname(h) {
            Ok(h.to_ascii_lowercase())
        } else {
            Err(format!(
                "invalid host `{h}`: expected a host name such as www.example.com"
            ))
        }
    });
    let status = cx.check_opt(&r.status, |s| match s {
        301 => Ok(RedirectStatus::MovedPermanently301),
        302 => Ok(RedirectStatus::Found302),
        307 => Ok(RedirectStatus::TemporaryRedirect307),
        308 => Ok(RedirectStatus::PermanentRedirect308),
        _ => Err(format!(
            "`status` of a redirect must be 301, 302, 307 or 308, found {s}"
        )),
    });
    Some(Redirect {
        path: path.ok()?,
        host: host.ok()?,
        scheme: optional(&r.scheme, |s| {
            Some(match s {
                SchemeDto::Http => Scheme::Http,
                SchemeDto::Https => Scheme::Https,
            })
        })?,
        status: status.ok()?.unwrap_or(RedirectStatus::Found302),
    })
}

fn path_kind(p: &PathMatch) -> &'static str {
    match p {
        PathMatch::Prefix(_) => "path_prefix",
        PathMatch::Exact(_) => "path",
        PathMatch::Template(_) => "path_template",
        PathMatch::Regex(_) => "path_regex",
    }
}

/// `Ok(None)`: no rewrite; `Err(())`: an invalid one (reported).
fn rewrite(cx: &Cx<'_>, r: &RouteDto, matched: Option<&PathMatch>) -> Result<Option<Rewrite>, ()> {
    let Some(field) = &r.rewrite else {
        return Ok(None);
    };
    let rw = field.get().ok_or(())?;
    if r.respond.is_some() || r.redirect.is_some() {
        return Err(()); // reported by `proxy_only`
    }
    const KEYS: [&str; 3] = ["path_prefix", "path_template", "regex"];
    let mut given: Vec<(usize, &Spanned<String>)> = [&rw.path_prefix, &rw.path_template, &rw.regex]
        .into_iter()
        .enumerate()
        .filter_map(|(i, f)| f.as_ref().map(|f| (i, f)))
        .collect();
    given.sort_by_key(|(_, f)| f.pos());
    let (kind, value) = match given.as_slice() {
        [] => {
            match &rw.substitution {
                Some(s) => cx.error(s.pos(), "`substitution` needs a `regex`"),
                None => cx.error(
                    field.pos(),
                    "`rewrite` needs one of `path_prefix`, `path_template` or `regex` (with `substitution`)",
                ),
            }
            return Err(());
        }
        [one] => *one,
        [(first, _), rest @ ..] => {
            for (i, f) in rest {
                cx.error(
                    f.pos(),
                    format!(
                        "{}: a rewrite is one of {}",
                        exclusive(KEYS[*i], &[KEYS[*first]]),
                        one_of(&KEYS)
                    ),
                );
            }
            return Err(());
        }
    };
    if kind != 2
        && let Some(s) = &rw.substitution
    {
        cx.error(s.pos(), "`substitution` only goes with `regex`");
        return Err(());
    }
    let text = value.get().ok_or(())?;
    let wrong_match = |needed: &str| {
        let found = matched.map_or("path_prefix", path_kind);
        cx.error(
            value.pos(),
            format!(
                "`rewrite: {{{needed}}}` needs a `{needed}` match (this route matches with `{found}`)"
            ),
        );
        Err(())
    };
    match kind {
        0 => {
            let prefix = syntax::path(text).map_err(|m| cx.error(value.pos(), m))?;
            match matched {
                Some(PathMatch::Prefix(_)) | None => Ok(Some(Rewrite::PathPrefix(prefix))),
                Some(_) => wrong_match("path_prefix"),
            }
        }
        1 => match matched {
            Some(PathMatch::Template(t)) => match template::check_rewrite(text, &t.variables) {
                Ok(()) => Ok(Some(Rewrite::PathTemplate(text.clone()))),
                Err(e) => {
                    cx.error(
                        value.pos_at(e.offset),
                        format!("invalid rewrite template: {}", e.message),
                    );
                    Err(())
                }
            },
            None => Err(()),
            Some(_) => wrong_match("path_template"),
        },
        _ => {
            let groups = re2::check(text).map_err(|e| cx.error(value.pos_at(e.offset), e.message));
            let Some(subst) = &rw.substitution else {
                cx.error(
                    field.pos(),
                    "`regex` needs a `substitution` (it may be empty: \"\")",
                );
                return Err(());
            };
            let groups = groups?;
            let s = subst.get().ok_or(())?;
            re2::check_substitution(s, groups)
                .map_err(|e| cx.error(subst.pos_at(e.offset), e.message))?;
            Ok(Some(Rewrite::Regex {
                regex: text.clone(),
                substitution: s.clone(),
            }))
        }
    }
}

fn header_rules(cx: &Cx<'_>, field: &Option<Spanned<HeaderRulesDto>>) -> Option<HeaderMutation> {
    let Some(field) = field else {
        return Some(HeaderMutation::default());
    };
    let rules = field.get()?;
    let set = match &rules.set {
        None => Some(Vec::new()),
        Some(s) => s
            .get()
            .and_then(|m| header_map(cx, m, syntax::mutable_header_name, "set")),
    };
    let remove = match &rules.remove {
        None => Some(Vec::new()),
        Some(list) => list.get().and_then(|items| {
            let names = each(cx, items, |n| syntax::mutable_header_name(n))?;
            let mut ok = true;
            for (i, n) in names.iter().enumerate() {
                if names[..i].contains(n) {
                    cx.error(items[i].pos(), format!("header `{n}` is listed twice"));
                    ok = false;
                } else if set
                    .as_ref()
                    .is_some_and(|set| set.iter().any(|(s, _)| s == n))
                {
                    cx.error(
                        items[i].pos(),
                        format!("header `{n}` is both set and removed"),
                    );
                    ok = false;
                }
            }
            ok.then_some(names)
        }),
    };
    Some(HeaderMutation {
        set: set?,
        remove: remove?,
    })
}

const RETRY_CONDITIONS: [&str; 4] = ["connect-failure", "reset", "5xx", "gateway-error"];

fn retry_on(text: &str) -> Result<RetryOn, String> {
    match text {
        "connect-failure" => return Ok(RetryOn::ConnectFailure),
        "reset" => return Ok(RetryOn::Reset),
        "5xx" => return Ok(RetryOn::ServerError),
        "gateway-error" => return Ok(RetryOn::GatewayError),
        _ => {}
    }
    if let Ok(status) = text.parse::<u16>() {
        return if (400..=599).contains(&status) {
            Ok(RetryOn::RetriableStatus(status))
        } else {
            Err(format!(
                "a retry status must be from 400 to 599, found {status}"
            ))
        };
    }
    Err(format!(
        "unknown retry condition `{text}`: expected {}, or a status code from 400 to 599{}",
        one_of(&RETRY_CONDITIONS),
        suggestion(text, &RETRY_CONDITIONS)
    ))
}

fn retries(cx: &Cx<'_>, r: &RetriesDto) -> Option<Retries> {
    let attempts = bounded(
        cx,
        &r.attempts,
        "attempts",
        1..=10,
        defaults::RETRY_ATTEMPTS,
    );
    let items = r.retry_on.get()?;
    if items.is_empty() {
        cx.error(
            r.retry_on.pos(),
            "`retry_on` is empty: list when to retry, e.g. [connect-failure, reset, 503]",
        );
        return None;
    }
    let conditions = each(cx, items, |c| retry_on(c))?;
    let mut ok = true;
    for (i, c) in conditions.iter().enumerate() {
        if conditions[..i].contains(c) {
            cx.error(items[i].pos(), "this retry condition is listed twice");
            ok = false;
        }
    }
    ok.then_some(Retries {
        attempts,
        retry_on: conditions,
        per_try_timeout: r
            .per_try_timeout
            .as_ref()
            .and_then(Spanned::get)
            .map(|d| d.0),
    })
}

fn cors(cx: &Cx<'_>, c: &CorsDto) -> Option<Cors> {
    let origins = c.allow_origins.get().and_then(|items| {
        if items.is_empty() {
            cx.error(
                c.allow_origins.pos(),
                "`allow_origins` is empty: list the origins allowed, or `*`",
            );
            return None;
        }
        each(cx, items, |o| syntax::origin(o))
    });
    let list = |field: &Option<Spanned<Vec<Spanned<String>>>>,
                check: fn(&str) -> Result<HeaderName, String>| {
        match field {
            None => Some(Vec::new()),
            Some(f) => f.get().and_then(|items| each(cx, items, |n| check(n))),
        }
    };
    let allow_methods = match &c.allow_methods {
        None => Some(Vec::new()),
        Some(f) => f.get().and_then(|items| methods(cx, items)),
    };
    let allow_headers = list(&c.allow_headers, syntax::header_name);
    let expose_headers = list(&c.expose_headers, syntax::header_name);
    let allow_credentials = or(&c.allow_credentials, false);
    if allow_credentials
        && let Some(origins) = &origins
        && origins.iter().any(|o| o == "*")
        && let Some(f) = &c.allow_credentials
    {
        cx.error(
            f.pos(),
            "`allow_credentials: true` cannot be used with origin `*` (browsers refuse it): list the origins",
        );
        return None;
    }
    let max_age = match &c.max_age {
        None => Some(None),
        Some(f) => f.get().and_then(|d| {
            if d.0.subsec_nanos() == 0 {
                Some(Some(d.0))
            } else {
                cx.error(
                    f.pos(),
                    "`max_age` is sent in whole seconds: write e.g. 10m or 600s",
                );
                None
            }
        }),
    };
    Some(Cors {
        allow_origins: origins?,
        allow_methods: allow_methods?,
        allow_headers: allow_headers?,
        expose_headers: expose_headers?,
        allow_credentials,
        max_age: max_age?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_conditions() {
        assert_eq!(retry_on("5xx"), Ok(RetryOn::ServerError));
        assert_eq!(retry_on("503"), Ok(RetryOn::RetriableStatus(503)));
        assert_eq!(
            retry_on("302"),
            Err("a retry status must be from 400 to 599, found 302".into())
        );
        assert_eq!(
            retry_on("rest"),
            Err("unknown retry condition `rest`: expected `connect-failure`, `reset`, `5xx` or `gateway-error`, or a status code from 400 to 599; did you mean `reset`?".into())
        );
    }
}
