//! Decoded files to the typed model: merging a directory's files, semantic checks with the
//! positions of the offending values, and the defaults of `model::defaults`.
//!
//! Conversion never stops at a problem: it reports it, substitutes a default or skips the item,
//! and checks the rest. The model it returns is only used when nothing was reported.

mod aggregate;
mod auth;
mod cache;
mod listener;
mod observability;
mod rate_limits;
mod route;
mod services;
pub(crate) mod tls;
mod upstream;

use std::collections::BTreeMap;

use super::diagnostic::{Pos, Sink, already_defined};
use super::dto::GatewayDto;
use super::spanned::Spanned;
use crate::model::{Gateway, Name};

/// Cluster names vrata generates for its own services (`vrata_ext_authz`, `vrata_ratelimit`) start with this.
const RESERVED_PREFIX: &str = "vrata_";

/// Shared state of one conversion.
pub(crate) struct Cx<'a> {
    pub sink: &'a Sink,
    /// Certificate and key files.
    pub materials: &'a tls::Materials,
}

impl Cx<'_> {
    pub fn error(&self, pos: Pos, message: impl Into<String>) {
        self.sink.error(pos, message);
    }

    /// Checks a field's value with `check`, reporting a failure at the value.
    pub fn check<T, U>(
        &self,
        field: &Spanned<T>,
        check: impl FnOnce(&T) -> Result<U, String>,
    ) -> Option<U> {
        match check(field.get()?) {
            Ok(v) => Some(v),
            Err(message) => {
                self.error(field.pos(), message);
                None
            }
        }
    }

    /// Like [`Cx::check`] for an optional field: `Ok(None)` when absent, `Err(())` when invalid.
    pub fn check_opt<T, U>(
        &self,
        field: &Option<Spanned<T>>,
        check: impl FnOnce(&T) -> Result<U, String>,
    ) -> Result<Option<U>, ()> {
        match field {
            None => Ok(None),
            Some(f) => self.check(f, check).map(Some).ok_or(()),
        }
    }

    pub fn name(&self, field: &Spanned<String>) -> Option<Name> {
        self.check(field, |s| Name::new(s.as_str()).map_err(|e| e.to_string()))
    }
}

/// One decoded file.
pub(crate) struct FileDto {
    pub gateway: Option<GatewayDto>,
}

/// Names defined so far, for "already defined at" messages.
#[derive(Default)]
pub(crate) struct Defined(BTreeMap<String, Pos>);

impl Defined {
    /// Records `name` at `pos`; reports it if it was defined before.
    pub fn define(&mut self, cx: &Cx<'_>, what: &str, name: &str, pos: Pos) -> bool {
        if let Some(first) = self.0.get(name) {
            cx.error(pos, already_defined(cx.sink, what, name, *first));
            false
        } else {
            self.0.insert(name.to_owned(), pos);
            true
        }
    }
}

/// Merges and converts the decoded files, in file order. `complete` is false when a file could
/// not be read or parsed: references to upstreams are then not checked (the upstream may be in
/// the broken file), to avoid reporting follow-up errors.
pub(crate) fn convert(
    files: &[FileDto],
    complete: bool,
    sink: &Sink,
    materials: &tls::Materials,
) -> Gateway {
    let cx = Cx { sink, materials };
    let gateways: Vec<&GatewayDto> = files.iter().filter_map(|f| f.gateway.as_ref()).collect();
    let complete = complete && gateways.len() == files.len();

    // Upstreams first: routes refer to them.
    let mut upstream_names = Defined::default();
    let mut upstreams_complete = complete;
    let mut upstreams = BTreeMap::new();
    for gw in &gateways {
        let Some(section) = &gw.upstreams else {
            continue;
        };
        let Some(map) = section.get() else {
            upstreams_complete = false;
            continue;
        };
        for (name, dto) in &map.0 {
            let Some(text) = name.get() else {
                upstreams_complete = false;
                continue;
            };
            if !upstream_names.define(&cx, "upstream", text, name.pos()) {
                continue;
            }
            if text.starts_with(RESERVED_PREFIX) {
                cx.error(
                    name.pos(),
                    format!(
                        "upstream names starting with `{RESERVED_PREFIX}` are reserved for the \
                         clusters of vrata's own services"
                    ),
                );
                continue;
            }
            if let Some(u) = upstream::convert(&cx, name, dto) {
                upstreams.insert(u.name.clone(), u);
            }
        }
    }

    let mut listener_names = Defined::default();
    let mut addresses = listener::Addresses::default();
    let mut listeners = Vec::new();
    for gw in &gateways {
        for dto in items(&gw.listeners) {
            if let Some(l) = listener::convert(&cx, dto, &mut listener_names, &mut addresses) {
                listeners.push(l);
            }
        }
    }

    // Providers before routes: routes refer to them. Merged by name like upstreams.
    let mut provider_names = Defined::default();
    let mut providers_complete = complete;
    let mut auth_providers = BTreeMap::new();
    for gw in &gateways {
        let Some(section) = &gw.auth else {
            continue;
        };
        let read = section.get().is_some_and(|a| {
            auth::convert_section(&cx, a, &mut provider_names, &mut auth_providers)
        });
        providers_complete &= read;
    }

    let known = route::Upstreams {
        names: upstream_names.0.keys().map(String::as_str).collect(),
        complete: upstreams_complete,
    };
    let providers = auth::Providers {
        names: provider_names.0.keys().map(String::as_str).collect(),
        complete: providers_complete,
    };
    let mut route_names = Defined::default();
    let mut routes = Vec::new();
    for gw in &gateways {
        for dto in items(&gw.routes) {
            if let Some(r) = route::convert(&cx, dto, &known, &providers, &mut route_names) {
                routes.push(r);
            }
        }
    }

    let services = services::convert(
        &cx,
        one_section(&cx, &gateways, "services", |g| g.services.as_ref()),
    );
    let rate_limits = rate_limits::store(
        &cx,
        one_section(&cx, &gateways, "rate_limits", |g| g.rate_limits.as_ref()),
    );

    let observability = observability::convert(
        &cx,
        one_section(&cx, &gateways, "observability", |g| {
            g.observability.as_ref()
        }),
        &mut addresses,
    );

    let cache_redis = cache::redis(
        &cx,
        one_section(&cx, &gateways, "cache_store", |g| g.cache_store.as_ref()),
        &rate_limits.redis,
        cache::first_redis_route(&gateways),
    );

    Gateway {
        listeners,
        upstreams,
        routes,
        services,
        auth_providers,
        rate_limits,
        observability,
        cache_redis,
    }
}

/// A top-level section that one file at most may define; later definitions are reported.
fn one_section<'a, T>(
    cx: &Cx<'_>,
    gateways: &[&'a GatewayDto],
    key: &str,
    section: impl Fn(&'a GatewayDto) -> Option<&'a Spanned<T>>,
) -> Option<&'a T> {
    let mut first: Option<&Spanned<T>> = None;
    for gw in gateways {
        if let Some(s) = section(gw) {
            match first {
                None => first = Some(s),
                Some(f) => cx.error(
                    s.pos(),
                    format!(
                        "`{key}` is already defined at {}: define it in one file only",
                        cx.sink.locate(f.pos())
                    ),
                ),
            }
        }
    }
    first.and_then(Spanned::get)
}

/// The valid items of an optional list field (of items inline or boxed).
pub(crate) fn items<'a, T: 'a, I: std::borrow::Borrow<Spanned<T>> + 'a>(
    list: &'a Option<Spanned<Vec<I>>>,
) -> impl Iterator<Item = &'a Spanned<T>> {
    list.iter()
        .filter_map(Spanned::get)
        .flat_map(|v| v.iter().map(std::borrow::Borrow::borrow))
}
