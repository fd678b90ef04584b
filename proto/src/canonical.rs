//! Deterministic encoding: equal messages give equal bytes.
//!
//! prost writes map fields in `HashMap` order, which changes from one run (even one map) to the
//! next. At the top level of a resource that is harmless — Envoy parses the bytes and hashes the
//! parsed message — but inside a packed `Any` (an HCM in a listener, a per-route filter config)
//! the bytes are kept as they are: a listener whose HCM bytes differ is a changed listener, and
//! Envoy drains its connections. So vrata packs `Any`s canonically: map entries sorted by key,
//! recursively, including inside nested `Any`s whose type is in the descriptor pool.
//!
//! Works on the wire format, guided by the descriptors: fields are copied as they are except map
//! entries (sorted) and nested messages (canonicalized in turn).

use prost_reflect::{Kind, MessageDescriptor};

use crate::{Error, descriptor_pool};

const ANY: &str = "google.protobuf.Any";

/// `bytes` (an encoded `type_name`) with every map's entries sorted by key, recursively.
pub fn canonicalize(type_name: &str, bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let descriptor = descriptor_pool()?
        .get_message_by_name(type_name)
        .ok_or_else(|| Error::UnknownType(type_name.to_owned()))?;
    let mut out = Vec::with_capacity(bytes.len());
    message(&descriptor, bytes, &mut out)?;
    Ok(out)
}

/// A piece of the output: bytes copied in order, or the entries of one map field, emitted
/// sorted where its first entry was.
enum Piece {
    Bytes(Vec<u8>),
    Map {
        number: u32,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    },
}

fn message(descriptor: &MessageDescriptor, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    if descriptor.full_name() == ANY {
        return any(bytes, out);
    }
    let malformed = |message: &str| Error::Decode {
        type_name: descriptor.full_name().to_owned(),
        message: message.to_owned(),
    };
    let mut pieces: Vec<Piece> = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let field_start = rest;
        let key = read_varint(&mut rest).ok_or_else(|| malformed("bad field key"))?;
        let number = u32::try_from(key >> 3).map_err(|_| malformed("field number too large"))?;
        let payload = match key & 7 {
            0 => {
                read_varint(&mut rest).ok_or_else(|| malformed("bad varint"))?;
                None
            }
            1 => {
                take(&mut rest, 8).ok_or_else(|| malformed("truncated fixed64"))?;
                None
            }
            5 => {
                take(&mut rest, 4).ok_or_else(|| malformed("truncated fixed32"))?;
                None
            }
            2 => {
                let len = read_varint(&mut rest).ok_or_else(|| malformed("bad length"))?;
                let len = usize::try_from(len).map_err(|_| malformed("length too large"))?;
                Some(take(&mut rest, len).ok_or_else(|| malformed("truncated field"))?)
            }
            _ => return Err(malformed("groups are not supported")),
        };
        let raw = &field_start[..field_start.len() - rest.len()];
        let field = descriptor.get_field(number);
        let message_kind = field.as_ref().and_then(|f| match f.kind() {
            Kind::Message(m) => Some((f.is_map(), m)),
            _ => None,
        });
        match (payload, message_kind) {
            (Some(payload), Some((true, entry))) => {
                let mut canonical = Vec::with_capacity(payload.len());
                message(&entry, payload, &mut canonical)?;
                let sort_key = entry_key(&canonical);
                let mut encoded = Vec::with_capacity(canonical.len() + 8);
                write_length_delimited(number, &canonical, &mut encoded);
                let entry = (sort_key, encoded);
                match pieces.iter_mut().find_map(|p| match p {
                    Piece::Map { number: n, entries } if *n == number => Some(entries),
                    _ => None,
                }) {
                    Some(entries) => entries.push(entry),
                    None => pieces.push(Piece::Map {
                        number,
                        entries: vec![entry],
                    }),
                }
            }
            (Some(payload), Some((false, nested))) => {
                let mut canonical = Vec::with_capacity(payload.len());
                message(&nested, payload, &mut canonical)?;
                let mut encoded = Vec::with_capacity(canonical.len() + 8);
                write_length_delimited(number, &canonical, &mut encoded);
                pieces.push(Piece::Bytes(encoded));
            }
            _ => pieces.push(Piece::Bytes(raw.to_vec())),
        }
    }
    for piece in pieces {
        match piece {
            Piece::Bytes(bytes) => out.extend_from_slice(&bytes),
            Piece::Map { mut entries, .. } => {
                entries.sort();
                for (_, bytes) in entries {
                    out.extend_from_slice(&bytes);
                }
            }
        }
    }
    Ok(())
}

/// The bytes of a map entry's key field (number 1), for ordering.
fn entry_key(entry: &[u8]) -> Vec<u8> {
    let mut rest = entry;
    while !rest.is_empty() {
        let start = rest;
        let Some(key) = read_varint(&mut rest) else {
            break;
        };
        let skipped = match key & 7 {
            0 => read_varint(&mut rest).map(|_| ()),
            1 => take(&mut rest, 8).map(|_| ()),
            5 => take(&mut rest, 4).map(|_| ()),
            2 => read_varint(&mut rest)
                .and_then(|len| usize::try_from(len).ok())
                .and_then(|len| take(&mut rest, len))
                .map(|_| ()),
            _ => None,
        };
        if skipped.is_none() {
            break;
        }
        if key >> 3 == 1 {
            return start[..start.len() - rest.len()].to_vec();
        }
    }
    Vec::new()
}

/// An `Any` with its value canonicalized when its type is known (else kept as it is).
fn any(bytes: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    let malformed = |message: &str| Error::Decode {
        type_name: ANY.to_owned(),
        message: message.to_owned(),
    };
    let mut type_url: &[u8] = &[];
    let mut value: &[u8] = &[];
    let mut rest = bytes;
    while !rest.is_empty() {
        let key = read_varint(&mut rest).ok_or_else(|| malformed("bad field key"))?;
        if key & 7 != 2 {
            return Err(malformed("unexpected wire type"));
        }
        let len = read_varint(&mut rest).ok_or_else(|| malformed("bad length"))?;
        let len = usize::try_from(len).map_err(|_| malformed("length too large"))?;
        let payload = take(&mut rest, len).ok_or_else(|| malformed("truncated field"))?;
        match key >> 3 {
            1 => type_url = payload,
            2 => value = payload,
            _ => {}
        }
    }
    let type_name = std::str::from_utf8(type_url)
        .map_err(|_| malformed("type_url is not UTF-8"))?
        .rsplit('/')
        .next()
        .unwrap_or_default();
    let canonical_value = match descriptor_pool()?.get_message_by_name(type_name) {
        Some(descriptor) => {
            let mut canonical = Vec::with_capacity(value.len());
            message(&descriptor, value, &mut canonical)?;
            canonical
        }
        None => value.to_vec(),
    };
    if !type_url.is_empty() {
        write_length_delimited(1, type_url, out);
    }
    if !canonical_value.is_empty() {
        write_length_delimited(2, &canonical_value, out);
    }
    Ok(())
}

fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, byte) in buf.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Some(value);
        }
    }
    None
}

fn take<'a>(buf: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if buf.len() < len {
        return None;
    }
    let (head, tail) = buf.split_at(len);
    *buf = tail;
    Some(head)
}

fn write_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn write_length_delimited(number: u32, payload: &[u8], out: &mut Vec<u8>) {
    write_varint((u64::from(number) << 3) | 2, out);
    write_varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::{
        SubstitutionFormatString, substitution_format_string,
    };
    use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
        StdoutAccessLog, stdout_access_log,
    };
    use envoy_types::pb::google::protobuf::{Struct, Value, value};
    use prost::{Message, Name};

    use super::*;

    fn log_with_fields(n: usize) -> StdoutAccessLog {
        let fields = (0..n)
            .map(|i| {
                (
                    format!("field{i}"),
                    Value {
                        kind: Some(value::Kind::StringValue(format!("%REQ(X-{i})%"))),
                    },
                )
            })
            .collect();
        StdoutAccessLog {
            access_log_format: Some(stdout_access_log::AccessLogFormat::LogFormat(
                SubstitutionFormatString {
                    format: Some(substitution_format_string::Format::JsonFormat(Struct {
                        fields,
                    })),
                    ..Default::default()
                },
            )),
        }
    }

    #[test]
    fn equal_messages_give_equal_bytes() {
        // Each HashMap has its own random order: build many and compare their encodings.
        let raw: Vec<Vec<u8>> = (0..8)
            .map(|_| log_with_fields(20).encode_to_vec())
            .collect();
        assert!(
            raw.windows(2).any(|w| w[0] != w[1]),
            "prost's map order varies (what this module is for)"
        );
        let canonical: Vec<Vec<u8>> = raw
            .iter()
            .map(|bytes| canonicalize(&StdoutAccessLog::full_name(), bytes).expect("canonicalizes"))
            .collect();
        assert!(canonical.windows(2).all(|w| w[0] == w[1]));
        let decoded = StdoutAccessLog::decode(canonical[0].as_slice()).expect("still valid");
        assert_eq!(decoded, log_with_fields(20));
    }

    #[test]
    fn nested_anys_are_canonical_too() {
        let pack = || {
            let inner = envoy_types::util::pack_any(log_with_fields(20));
            let outer = envoy_types::pb::envoy::config::accesslog::v3::AccessLog {
                name: "x".into(),
                filter: None,
                config_type: Some(
                    envoy_types::pb::envoy::config::accesslog::v3::access_log::ConfigType::TypedConfig(
                        inner,
                    ),
                ),
            };
            let name = envoy_types::pb::envoy::config::accesslog::v3::AccessLog::full_name();
            canonicalize(&name, &outer.encode_to_vec()).expect("canonicalizes")
        };
        let first = pack();
        for _ in 0..8 {
            assert_eq!(pack(), first);
        }
    }

    #[test]
    fn varints_round_trip() {
        for v in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut buf = Vec::new();
            write_varint(v, &mut buf);
            let mut slice = buf.as_slice();
            assert_eq!(read_varint(&mut slice), Some(v));
            assert!(slice.is_empty());
        }
    }
}
