//! `listeners[]`.

use std::net::SocketAddr;

use super::{Cx, Defined};
use crate::config::diagnostic::Pos;
use crate::config::dto::ListenerDto;
use crate::config::spanned::{Spanned, or};
use crate::config::syntax;
use crate::model::Listener;

/// Addresses bound so far. Two listeners cannot bind the same address, nor the same port on a
/// wildcard and a specific address of the same family (the second bind would fail in Envoy).
#[derive(Default)]
pub(crate) struct Addresses(Vec<(SocketAddr, String, Pos)>);

impl Addresses {
    pub(crate) fn claim(&mut self, cx: &Cx<'_>, addr: SocketAddr, listener: &str, pos: Pos) {
        let clash = self.0.iter().find(|(other, _, _)| {
            other == &addr
                || (other.port() == addr.port()
                    && other.is_ipv4() == addr.is_ipv4()
                    && (other.ip().is_unspecified() || addr.ip().is_unspecified()))
        });
        match clash {
            Some((other, name, at)) if other == &addr => cx.error(
                pos,
                format!(
                    "address `{addr}` is already used by listener `{name}` at {}",
                    cx.sink.locate(*at)
                ),
            ),
            Some((other, name, at)) => cx.error(
                pos,
                format!(
                    "address `{addr}` overlaps `{other}` of listener `{name}` at {}: both bind port {}",
                    cx.sink.locate(*at),
                    addr.port()
                ),
            ),
            None => self.0.push((addr, listener.to_owned(), pos)),
        }
    }
}

pub(crate) fn convert(
    cx: &Cx<'_>,
    dto: &Spanned<ListenerDto>,
    names: &mut Defined,
    addresses: &mut Addresses,
) -> Option<Listener> {
    let l = dto.get()?;
    let name = cx.name(&l.name).filter(|n| {
        let reserved = n.as_str().starts_with(super::RESERVED_PREFIX);
        if reserved {
            cx.error(
                l.name.pos(),
                format!(
                    "listener names starting with `{}` are reserved for vrata's own listeners",
                    super::RESERVED_PREFIX
                ),
            );
        }
        !reserved
    });
    let unique = name
        .as_ref()
        .is_some_and(|n| names.define(cx, "listener", n.as_str(), l.name.pos()));
    let address = cx.check(&l.address, |a| syntax::socket_addr(a));
    if let Some(addr) = address {
        let shown = l.name.get().map_or("", String::as_str);
        addresses.claim(cx, addr, shown, l.address.pos());
    }
    let tls = match &l.tls {
        None => Some(None),
        Some(t) => super::tls::listener(cx, t).map(Some),
    };
    let listener = Listener {
        name: name?,
        address: address?,
        trusted_hops: or(&l.trusted_hops, 0),
        http2: or(&l.http2, true),
        redirect_https: or(&l.redirect_https, false),
        access_log: or(&l.access_log, true),
        tls: tls?,
    };
    unique.then_some(listener)
}
