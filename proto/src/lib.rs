//! Protobuf support shared by vrata's crates: descriptors of Envoy's API, used to render Envoy
//! resources as proto3 JSON/YAML (the form `envoy -c` and `xds-server render` use), and later
//! vrata's own `.proto` definitions. Holds no business logic.
//!
//! `envoy-types` gives prost structs without serde; the descriptors compiled by `build.rs` from
//! the `.proto` files envoy-types ships let `prost-reflect` print any of those structs in the
//! canonical proto3 JSON mapping, `Any` included (`"@type"` plus the packed message's fields).
//! Only the part of Envoy's API vrata emits is compiled in (see `build.rs`); rendering a type
//! outside it is an [`Error::UnknownType`]. The same descriptors drive [`pack_any`], which packs
//! messages with deterministic bytes (prost writes maps in random order).

mod canonical;

use std::sync::OnceLock;

use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

/// The encoded `FileDescriptorSet` built by `build.rs`.
const ENVOY_DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The embedded descriptors do not decode: a broken build, not a runtime condition.
    #[error("embedded Envoy descriptors are invalid: {0}")]
    Descriptors(String),
    /// The message type is not in the compiled part of Envoy's API (add its file to build.rs).
    #[error("no descriptor for protobuf type {0:?} (add its .proto file to proto/build.rs)")]
    UnknownType(String),
    /// The bytes do not decode as the named type.
    #[error("cannot decode {type_name}: {message}")]
    Decode { type_name: String, message: String },
    /// JSON that does not fit the message type (field names, enum names, value types).
    #[error("cannot convert {type_name} to or from JSON: {message}")]
    Json { type_name: String, message: String },
}

pub use canonical::canonicalize;

/// The descriptors of the compiled part of Envoy's API, decoded once.
pub fn descriptor_pool() -> Result<&'static DescriptorPool, Error> {
    static POOL: OnceLock<Result<DescriptorPool, Error>> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(ENVOY_DESCRIPTORS).map_err(|e| Error::Descriptors(e.to_string()))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// How vrata prints Envoy resources: Envoy's documented (snake_case) field names, enum names,
/// 64-bit integers as JSON numbers (Envoy accepts both; numbers read better), defaults omitted.
fn serialize_options() -> SerializeOptions {
    SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(true)
}

/// The proto3 JSON form of an Envoy message (Envoy's field names; packed `Any`s carry `@type`).
pub fn to_json<M: prost::Name>(message: &M) -> Result<serde_json::Value, Error> {
    dynamic_to_json(&M::full_name(), &message.encode_to_vec())
}

/// The proto3 JSON form of a packed message: `{"@type": "type.googleapis.com/...", ...fields}`.
pub fn any_to_json(any: &Any) -> Result<serde_json::Value, Error> {
    let type_name = any
        .type_url
        .rsplit_once('/')
        .map_or(any.type_url.as_str(), |(_, name)| name);
    let mut json = dynamic_to_json(type_name, &any.value)?;
    match &mut json {
        serde_json::Value::Object(fields) => {
            fields.insert(
                "@type".to_owned(),
                serde_json::Value::String(any.type_url.clone()),
            );
            Ok(json)
        }
        // Well-known types with a scalar JSON form (Duration, wrappers...) nest under "value".
        other => Ok(serde_json::json!({"@type": any.type_url, "value": other.take()})),
    }
}

/// Packs a message into an `Any` with canonical bytes (see [`canonicalize`]): the same message
/// always packs to the same bytes, so Envoy never sees a change where there is none.
pub fn pack_any<M: prost::Name>(message: &M) -> Result<Any, Error> {
    Ok(Any {
        type_url: M::type_url(),
        value: canonicalize(&M::full_name(), &message.encode_to_vec())?,
    })
}

/// Parses the proto3 JSON form of an Envoy message (the inverse of [`to_json`]); unknown fields
/// are errors.
pub fn from_json<M: prost::Name + Default>(json: &serde_json::Value) -> Result<M, Error> {
    let type_name = M::full_name();
    let descriptor = descriptor_pool()?
        .get_message_by_name(&type_name)
        .ok_or_else(|| Error::UnknownType(type_name.clone()))?;
    let dynamic = DynamicMessage::deserialize(descriptor, json).map_err(|e| Error::Json {
        type_name: type_name.clone(),
        message: e.to_string(),
    })?;
    M::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| Error::Decode {
        type_name,
        message: e.to_string(),
    })
}

fn dynamic_to_json(type_name: &str, bytes: &[u8]) -> Result<serde_json::Value, Error> {
    let descriptor = descriptor_pool()?
        .get_message_by_name(type_name)
        .ok_or_else(|| Error::UnknownType(type_name.to_owned()))?;
    let message = DynamicMessage::decode(descriptor, bytes).map_err(|e| Error::Decode {
        type_name: type_name.to_owned(),
        message: e.to_string(),
    })?;
    message
        .serialize_with_options(serde_json::value::Serializer, &serialize_options())
        .map_err(|e| Error::Json {
            type_name: type_name.to_owned(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
    use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
    use envoy_types::pb::google::protobuf::{BoolValue, Duration};

    #[test]
    fn renders_envoy_field_names_enums_and_durations() {
        let cluster = Cluster {
            name: "orders".into(),
            connect_timeout: Some(Duration {
                seconds: 1,
                nanos: 500_000_000,
            }),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::StrictDns as i32,
            )),
            lb_policy: cluster::LbPolicy::LeastRequest as i32,
            ..Default::default()
        };
        let json = to_json(&cluster).expect("renders");
        assert_eq!(
            json,
            serde_json::json!({
                "name": "orders",
                "connect_timeout": "1.500s",
                "type": "STRICT_DNS",
                "lb_policy": "LEAST_REQUEST",
            })
        );
        let back: Cluster = from_json(&json).expect("parses");
        assert_eq!(back, cluster);
    }

    #[test]
    fn renders_any_with_its_type() {
        let any = envoy_types::util::pack_any(Router {
            suppress_envoy_headers: true,
            dynamic_stats: Some(BoolValue { value: false }),
            ..Default::default()
        });
        assert_eq!(
            any_to_json(&any).expect("renders"),
            serde_json::json!({
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                "suppress_envoy_headers": true,
                "dynamic_stats": false,
            })
        );
    }

    #[test]
    fn unknown_types_are_errors() {
        let any = Any {
            type_url: "type.googleapis.com/not.a.Type".into(),
            value: vec![],
        };
        assert_eq!(
            any_to_json(&any),
            Err(Error::UnknownType("not.a.Type".into()))
        );
    }
}
