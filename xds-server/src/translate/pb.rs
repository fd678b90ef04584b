//! Small constructors for the protobuf building blocks every translation module uses.

use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, HeaderValue, HeaderValueOption,
    SocketAddress, SubstitutionFormatString, TypedExtensionConfig, address, config_source,
    header_value_option, socket_address, substitution_format_string,
};
use envoy_types::pb::google::protobuf::{self as wkt, Any, value};
use envoy_types::util::pack_any;

/// A protobuf `Duration`. Model durations are validated and far below `i64::MAX` seconds;
/// saturating keeps the conversion total.
pub(crate) fn duration(d: Duration) -> wkt::Duration {
    wkt::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Always < 1e9, so it fits.
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

pub(crate) fn bool_value(value: bool) -> wkt::BoolValue {
    wkt::BoolValue { value }
}

pub(crate) fn u32_value(value: u32) -> wkt::UInt32Value {
    wkt::UInt32Value { value }
}

/// Resources fetched over the one ADS stream (the bootstrap's `ads_config`).
pub(crate) fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

pub(crate) fn socket_address(host: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

pub(crate) fn ip_address(addr: SocketAddr) -> Address {
    socket_address(&addr.ip().to_string(), addr.port())
}

/// Packs `message` with canonical bytes, so that translating the same model twice gives
/// byte-identical resources (prost writes maps in random order, and Envoy keeps `Any` bytes as
/// they are: a listener whose HCM bytes change is drained).
///
/// Canonical packing needs the type's descriptor in `vrata-proto`. Every type translation packs
/// is there (rendering, which needs the same descriptors, is tested on every feature); a type
/// added to translation without its descriptor packs with prost's encoding here and makes
/// `render_yaml` fail with `UnknownType`.
pub(crate) fn any<M: prost::Name>(message: M) -> Any {
    vrata_proto::pack_any(&message).unwrap_or_else(|_| pack_any(message))
}

pub(crate) fn typed_extension<M: prost::Name>(name: &str, message: M) -> TypedExtensionConfig {
    TypedExtensionConfig {
        name: name.to_owned(),
        typed_config: Some(any(message)),
    }
}

/// A header set on a request or response, replacing any value it had.
///
/// Envoy reads `%...%` in header values as substitution commands; vrata's values are literal,
/// so `%` is escaped as `%%`.
pub(crate) fn set_header(name: &str, value: &str) -> HeaderValueOption {
    formatted_header(name, &value.replace('%', "%%"))
}

/// A header set from an Envoy substitution format (`%REQ(:PATH)%`...), replacing any value.
pub(crate) fn formatted_header(name: &str, format: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            value: format.to_owned(),
            ..Default::default()
        }),
        append_action: header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// A value in a JSON format dictionary: a string with `%COMMAND%`s, or a constant number.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FormatValue<'a> {
    Text(&'a str),
    Number(f64),
}

/// A `json_format` substitution format (Envoy writes its keys sorted).
pub(crate) fn json_format(
    fields: &[(&str, FormatValue<'_>)],
    content_type: &str,
) -> SubstitutionFormatString {
    let fields = fields
        .iter()
        .map(|(key, value)| {
            let kind = match value {
                FormatValue::Text(text) => value::Kind::StringValue((*text).to_owned()),
                FormatValue::Number(n) => value::Kind::NumberValue(*n),
            };
            ((*key).to_owned(), wkt::Value { kind: Some(kind) })
        })
        .collect();
    SubstitutionFormatString {
        content_type: content_type.to_owned(),
        format: Some(substitution_format_string::Format::JsonFormat(
            wkt::Struct { fields },
        )),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_keep_sub_second_precision() {
        assert_eq!(
            duration(Duration::from_millis(1500)),
            wkt::Duration {
                seconds: 1,
                nanos: 500_000_000
            }
        );
    }

    #[test]
    fn header_values_are_literal() {
        let h = set_header("x-discount", "100%");
        assert_eq!(h.header.map(|h| h.value).as_deref(), Some("100%%"));
    }
}
