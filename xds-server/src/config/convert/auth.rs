//! `auth.providers` and `routes[].auth`.
//!
//! Everything ext-authz would refuse when it compiles a policy is refused here first, with a
//! position: a policy version ext-authz NACKs would leave the gateway on an older one.

use std::collections::BTreeMap;
use std::time::Duration;

use super::upstream::duration;
use super::{Cx, Defined};
use crate::config::diagnostic::suggestion;
use crate::config::dto::{
    AlgorithmDto, AuthDto, DurationDto, ProviderDto, RequirementDto, RouteAuthDto,
};
use crate::config::spanned::{Spanned, or};
use crate::config::syntax;
use crate::model::{
    Algorithm, AuthProvider, ClaimPath, HeaderMutation, HeaderName, Name, Requirement, RouteAuth,
    defaults,
};

/// Headers a claim may not be forwarded into: they steer framing, routing, or are the
/// credentials and request id the gateway itself relies on (ext-authz refuses them too).
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "x-request-id",
];

/// The providers defined so far (all files), for routes to refer to.
pub(crate) struct Providers<'a> {
    pub names: Vec<&'a str>,
    /// False when some `auth` section could not be read: unknown names are then not reported.
    pub complete: bool,
}

/// Converts one file's `auth` section into `out`, checking names across files.
pub(crate) fn convert_section(
    cx: &Cx<'_>,
    dto: &AuthDto,
    defined: &mut Defined,
    out: &mut BTreeMap<Name, AuthProvider>,
) -> bool {
    let Some(map) = dto.providers.get() else {
        return false;
    };
    let mut complete = true;
    for (name, provider) in &map.0 {
        let Some(text) = name.get() else {
            complete = false;
            continue;
        };
        if !defined.define(cx, "auth provider", text, name.pos()) {
            continue;
        }
        let checked_name = cx.name(name);
        if let Some(p) = provider
            .get()
            .and_then(|p| convert_provider(cx, checked_name, p))
        {
            out.insert(p.name.clone(), p);
        }
    }
    complete
}

/// Checks every field even when `name` is invalid (`None`), so all problems are reported.
fn convert_provider(cx: &Cx<'_>, name: Option<Name>, p: &ProviderDto) -> Option<AuthProvider> {
    let issuer = cx.check(&p.issuer, |s| http_url(s, "issuer"));
    let jwks_url = cx.check_opt(&p.jwks_url, |s| http_url(s, "jwks_url"));
    let audiences = p.audiences.get().and_then(|items| {
        if items.is_empty() {
            cx.error(
                p.audiences.pos(),
                "`audiences` is empty: name the audience (client id) tokens for this gateway carry",
            );
            return None;
        }
        names_list(cx, items, "audience")
    });
    let algorithms = match &p.algorithms {
        None => Some(vec![defaults::ALGORITHM]),
        Some(list) => list.get().and_then(|items| {
            if items.is_empty() {
                cx.error(
                    list.pos(),
                    "`algorithms` is empty: leave it out for [RS256], or list the provider's",
                );
                return None;
            }
            let mut out = Vec::new();
            let mut ok = true;
            for item in items {
                let Some(a) = item.get() else {
                    ok = false;
                    continue;
                };
                let a = algorithm(*a);
                if out.contains(&a) {
                    cx.error(
                        item.pos(),
                        format!("algorithm `{}` is listed twice", a.as_str()),
                    );
                    ok = false;
                } else {
                    out.push(a);
                }
            }
            ok.then_some(out)
        }),
    };
    let leeway = match &p.leeway {
        None => Some(defaults::LEEWAY),
        Some(f) => cx.check(f, |d: &DurationDto| {
            if d.0 > defaults::MAX_LEEWAY {
                Err(format!(
                    "`leeway` must be at most {}s: a longer one keeps expired tokens working",
                    defaults::MAX_LEEWAY.as_secs()
                ))
            } else {
                Ok(d.0)
            }
        }),
    };
    let roles_claims = match &p.roles_claims {
        None => ClaimPath::new(defaults::ROLES_CLAIM).ok().map(|c| vec![c]),
        Some(list) => list.get().and_then(|items| {
            let mut out: Vec<ClaimPath> = Vec::new();
            let mut ok = true;
            for item in items {
                match cx.check(item, |s| ClaimPath::new(s).map_err(|e| e.to_string())) {
                    Some(c) if out.contains(&c) => {
                        cx.error(
                            item.pos(),
                            format!("claim `{}` is listed twice", c.as_str()),
                        );
                        ok = false;
                    }
                    Some(c) => out.push(c),
                    None => ok = false,
                }
            }
            ok.then_some(out)
        }),
    };
    let jwks_refresh = duration(&p.jwks_refresh, defaults::JWKS_REFRESH);
    let jwks_min_refetch = refetch(cx, p, jwks_refresh);
    Some(AuthProvider {
        name: name?,
        issuer: issuer?,
        jwks_url: jwks_url.ok()?,
        audiences: audiences?,
        algorithms: algorithms?,
        leeway: leeway?,
        roles_claims: roles_claims?,
        jwks_refresh,
        jwks_min_refetch: jwks_min_refetch?,
    })
}

/// `jwks_min_refetch`, at most `jwks_refresh` (a refetch bound longer than the refresh period
/// would mean nothing).
fn refetch(cx: &Cx<'_>, p: &ProviderDto, refresh: Duration) -> Option<Duration> {
    let Some(f) = &p.jwks_min_refetch else {
        return Some(defaults::JWKS_MIN_REFETCH.min(refresh));
    };
    cx.check(f, |d: &DurationDto| {
        if d.0 > refresh {
            Err(format!(
                "`jwks_min_refetch` ({}s) must not be longer than `jwks_refresh` ({}s)",
                d.0.as_secs_f64(),
                refresh.as_secs_f64()
            ))
        } else {
            Ok(d.0)
        }
    })
}

fn algorithm(a: AlgorithmDto) -> Algorithm {
    match a {
        AlgorithmDto::RS256 => Algorithm::RS256,
        AlgorithmDto::RS384 => Algorithm::RS384,
        AlgorithmDto::RS512 => Algorithm::RS512,
        AlgorithmDto::PS256 => Algorithm::PS256,
        AlgorithmDto::PS384 => Algorithm::PS384,
        AlgorithmDto::PS512 => Algorithm::PS512,
        AlgorithmDto::ES256 => Algorithm::ES256,
        AlgorithmDto::ES384 => Algorithm::ES384,
        AlgorithmDto::EdDSA => Algorithm::EdDSA,
    }
}

/// An absolute http(s) URL with a host, no fragment. ext-authz fetches it; `http` is allowed
/// for IdPs on a private network or loopback.
fn http_url(text: &str, key: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(|| format!("`{key}` must be an http(s) URL, found `{text}`"))?;
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("`{key}` `{text}` has no host"));
    }
    if text.contains('#') || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{key}` `{text}` cannot contain a fragment, spaces or control characters"
        ));
    }
    Ok(text.to_owned())
}

/// Non-empty strings, each listed once.
fn names_list(cx: &Cx<'_>, items: &[Spanned<String>], what: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let mut ok = true;
    for item in items {
        let Some(text) = item.get() else {
            ok = false;
            continue;
        };
        if text.is_empty() {
            cx.error(item.pos(), format!("an empty {what} never matches"));
            ok = false;
        } else if out.contains(text) {
            cx.error(item.pos(), format!("{what} `{text}` is listed twice"));
            ok = false;
        } else {
            out.push(text.clone());
        }
    }
    ok.then_some(out)
}

/// `routes[].auth`. `headers` are the route's own request header rules: a forwarded claim may
/// not fight them.
pub(crate) fn route_auth(
    cx: &Cx<'_>,
    a: &RouteAuthDto,
    providers: &Providers<'_>,
    headers: Option<&HeaderMutation>,
) -> Option<RouteAuth> {
    let provider = a.provider.get().and_then(|name| {
        if providers.names.contains(&name.as_str()) {
            // An invalid provider name was reported where it is defined.
            return Name::new(name.as_str()).ok();
        }
        if providers.complete {
            let hint = if providers.names.is_empty() {
                " (no providers are defined under `auth.providers`)".to_owned()
            } else {
                suggestion(name, &providers.names)
            };
            cx.error(
                a.provider.pos(),
                format!("unknown auth provider `{name}`{hint}"),
            );
        }
        None
    });
    let roles = requirement(cx, &a.roles, "role");
    let scopes = requirement(cx, &a.scopes, "scope");
    let forward_claims = match &a.forward_claims {
        None => Some(Vec::new()),
        Some(f) => f.get().and_then(|map| {
            let mut out: Vec<(HeaderName, ClaimPath)> = Vec::new();
            let mut ok = true;
            for (key, value) in &map.0 {
                let header = cx.check(key, |k| forward_header(k, headers));
                let claim = cx.check(value, |v| ClaimPath::new(v).map_err(|e| e.to_string()));
                match (header, claim) {
                    (Some(h), _) if out.iter().any(|(o, _)| o == &h) => {
                        cx.error(key.pos(), format!("header `{h}` is listed twice"));
                        ok = false;
                    }
                    (Some(h), Some(c)) => out.push((h, c)),
                    _ => ok = false,
                }
            }
            ok.then_some(out)
        }),
    };
    Some(RouteAuth {
        provider: provider?,
        roles: roles?,
        scopes: scopes?,
        optional: or(&a.optional, false),
        forward_claims: forward_claims?,
    })
}

fn forward_header(text: &str, rules: Option<&HeaderMutation>) -> Result<HeaderName, String> {
    let name = syntax::mutable_header_name(text)?;
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(format!(
            "header `{name}` cannot carry a claim: the gateway relies on the client's or its own value"
        ));
    }
    if let Some(rules) = rules {
        if rules.set.iter().any(|(h, _)| h == &name) {
            return Err(format!(
                "header `{name}` is also set by `request_headers`: it would overwrite the claim"
            ));
        }
        if rules.remove.contains(&name) {
            return Err(format!(
                "header `{name}` is also removed by `request_headers`: it would remove the claim"
            ));
        }
    }
    Ok(name)
}

fn requirement(
    cx: &Cx<'_>,
    field: &Option<Spanned<RequirementDto>>,
    what: &str,
) -> Option<Requirement> {
    let Some(field) = field else {
        return Some(Requirement::default());
    };
    let r = field.get()?;
    let list = |f: &Option<Spanned<Vec<Spanned<String>>>>| match f {
        None => Some(Vec::new()),
        Some(l) => l.get().and_then(|items| names_list(cx, items, what)),
    };
    let any_of = list(&r.any_of);
    let all_of = list(&r.all_of);
    Some(Requirement {
        any_of: any_of?,
        all_of: all_of?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            http_url("https://sso.example.com/realms/demo", "issuer"),
            Ok("https://sso.example.com/realms/demo".into())
        );
        assert_eq!(
            http_url("http://127.0.0.1:8180/realms/demo", "issuer"),
            Ok("http://127.0.0.1:8180/realms/demo".into())
        );
        assert_eq!(
            http_url("sso.example.com", "issuer"),
            Err("`issuer` must be an http(s) URL, found `sso.example.com`".into())
        );
        assert_eq!(
            http_url("https:///realms", "jwks_url"),
            Err("`jwks_url` `https:///realms` has no host".into())
        );
        assert!(http_url("https://a/b#c", "issuer").is_err());
    }

    #[test]
    fn forwarded_headers() {
        assert_eq!(
            forward_header("X-User-Id", None).map(|h| h.as_str().to_owned()),
            Ok("x-user-id".into())
        );
        assert!(forward_header("authorization", None).is_err());
        assert!(forward_header(":path", None).is_err());
        let rules = HeaderMutation {
            set: vec![(HeaderName::new("x-user-id").expect("valid"), "a".into())],
            remove: vec![HeaderName::new("x-roles").expect("valid")],
        };
        assert!(forward_header("x-user-id", Some(&rules)).is_err());
        assert!(forward_header("x-roles", Some(&rules)).is_err());
        assert!(forward_header("x-other", Some(&rules)).is_ok());
    }
}
