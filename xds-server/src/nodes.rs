//! Who is connected, what each node has acknowledged, and what it rejected.
//!
//! Every ADS stream registers here. Per stream and xDS type we keep the version last sent, the
//! version last ACKed and the last NACK (its error text redacted: Envoy echoes whole resources
//! in NACK messages, inline secrets included). The admin API and the tests read this.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::Serialize;

use crate::snapshot::TypeKind;

/// How many recent NACKs the status API shows, over all nodes.
const NACK_HISTORY: usize = 32;
/// A NACK message longer than this is cut: it is for humans, and Envoy can echo megabytes.
const NACK_MESSAGE_MAX: usize = 4096;

#[derive(Debug, Clone, Serialize)]
pub struct Nack {
    pub node: String,
    pub r#type: &'static str,
    /// The version the client rejected.
    pub version: String,
    /// The error, redacted.
    pub message: String,
    #[serde(with = "crate::unix_seconds")]
    pub at: SystemTime,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeStatus {
    pub sent_version: Option<String>,
    /// Unix seconds of the last response sent.
    pub sent_at: Option<f64>,
    pub acked_version: Option<String>,
    /// Unix seconds of the last ACK: `acked_at - sent_at` is how long the client took to apply.
    pub acked_at: Option<f64>,
    pub last_nack: Option<Nack>,
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub stream: u64,
    pub node_id: String,
    pub cluster: String,
    /// What the client says it runs, e.g. `envoy 1.40.0` (empty when it says nothing).
    pub agent: String,
    /// `sotw` or `delta`.
    pub protocol: &'static str,
    pub peer: Option<String>,
    #[serde(with = "crate::unix_seconds")]
    pub connected_at: SystemTime,
    pub types: BTreeMap<&'static str, TypeStatus>,
}

#[derive(Debug, Default)]
pub struct Nodes {
    next_stream: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    streams: BTreeMap<u64, NodeStatus>,
    nacks: VecDeque<Nack>,
}

impl Nodes {
    pub fn next_stream_id(&self) -> u64 {
        self.next_stream.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        // A panic while holding this lock cannot leave the maps half-updated in a way that
        // matters for a status view, so a poisoned lock is recovered rather than propagated.
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub fn connect(
        &self,
        stream: u64,
        node_id: String,
        cluster: String,
        agent: String,
        protocol: &'static str,
        peer: Option<String>,
    ) {
        self.with(|i| {
            i.streams.insert(
                stream,
                NodeStatus {
                    stream,
                    node_id,
                    cluster,
                    agent,
                    protocol,
                    peer,
                    connected_at: SystemTime::now(),
                    types: BTreeMap::new(),
                },
            );
        });
    }

    pub fn disconnect(&self, stream: u64) {
        self.with(|i| i.streams.remove(&stream));
    }

    pub fn sent(&self, stream: u64, kind: TypeKind, version: &str) {
        self.with(|i| {
            if let Some(s) = i.streams.get_mut(&stream) {
                let t = s.types.entry(kind.short()).or_default();
                t.sent_version = Some(version.to_owned());
                t.sent_at = Some(now_seconds());
            }
        });
    }

    pub fn acked(&self, stream: u64, kind: TypeKind, version: &str) {
        self.with(|i| {
            if let Some(s) = i.streams.get_mut(&stream) {
                let t = s.types.entry(kind.short()).or_default();
                t.acked_version = Some(version.to_owned());
                t.acked_at = Some(now_seconds());
            }
        });
    }

    /// Records a NACK and returns it (redacted) for logging.
    pub fn nacked(&self, stream: u64, kind: TypeKind, version: &str, message: &str) -> Nack {
        self.with(|i| {
            let node = i
                .streams
                .get(&stream)
                .map(|s| s.node_id.clone())
                .unwrap_or_default();
            let nack = Nack {
                node,
                r#type: kind.short(),
                version: version.to_owned(),
                message: redact(message),
                at: SystemTime::now(),
            };
            if let Some(s) = i.streams.get_mut(&stream) {
                s.types.entry(kind.short()).or_default().last_nack = Some(nack.clone());
            }
            if i.nacks.len() == NACK_HISTORY {
                i.nacks.pop_front();
            }
            i.nacks.push_back(nack.clone());
            nack
        })
    }

    pub fn list(&self) -> Vec<NodeStatus> {
        self.with(|i| i.streams.values().cloned().collect())
    }

    pub fn recent_nacks(&self) -> Vec<Nack> {
        self.with(|i| i.nacks.iter().rev().cloned().collect())
    }
}

/// Removes what must never reach a log or the admin API from a client's error text: PEM
/// private keys and the values of inline secret fields, then bounds the length.
/// `envoy 1.40.0` from a node's user agent fields; empty when it sent none.
pub fn agent(node: &envoy_types::pb::envoy::config::core::v3::Node) -> String {
    use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
    let version = match &node.user_agent_version_type {
        Some(UserAgentVersionType::UserAgentVersion(v)) => v.clone(),
        Some(UserAgentVersionType::UserAgentBuildVersion(b)) => b
            .version
            .as_ref()
            .map(|v| format!("{}.{}.{}", v.major_number, v.minor_number, v.patch))
            .unwrap_or_default(),
        None => String::new(),
    };
    format!("{} {version}", node.user_agent_name)
        .trim()
        .to_owned()
}

pub fn redact(message: &str) -> String {
    static PATTERNS: std::sync::OnceLock<Vec<regex::Regex>> = std::sync::OnceLock::new();
    let patterns = PATTERNS.get_or_init(|| {
        [
            // PEM private keys, whatever their kind, even when cut off.
            r"(?s)-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)",
            // Inline secret data as Envoy prints it (text proto and JSON forms).
            r#"(?i)(inline_bytes|inline_string|private_key|password)("?\s*[:=]\s*)("(?:[^"\\]|\\.)*"|[^\s,}]+)"#,
        ]
        .iter()
        .filter_map(|p| regex::Regex::new(p).ok())
        .collect()
    });
    let mut out = message.to_owned();
    if let Some(pem) = patterns.first() {
        out = pem.replace_all(&out, "[REDACTED PRIVATE KEY]").into_owned();
    }
    if let Some(inline) = patterns.get(1) {
        out = inline.replace_all(&out, "$1$2[REDACTED]").into_owned();
    }
    if out.len() > NACK_MESSAGE_MAX {
        let mut cut = NACK_MESSAGE_MAX;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("… [truncated]");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_keys_and_inline_secrets_are_redacted() {
        let msg = "Proto constraint validation failed: private_key { inline_string: \"-----BEGIN PRIVATE KEY-----\nMIIEv...\n-----END PRIVATE KEY-----\n\" } inline_bytes: \"c2VjcmV0\" and \"password\": \"hunter2\"";
        let out = redact(msg);
        assert!(!out.contains("MIIEv"), "{out}");
        assert!(!out.contains("c2VjcmV0"), "{out}");
        assert!(!out.contains("hunter2"), "{out}");
        assert!(
            out.starts_with("Proto constraint validation failed"),
            "{out}"
        );
    }

    #[test]
    fn a_cut_off_key_is_still_redacted() {
        let out = redact("x -----BEGIN RSA PRIVATE KEY-----\nMIIEsecret");
        assert!(!out.contains("MIIEsecret"), "{out}");
    }

    #[test]
    fn long_messages_are_bounded() {
        let out = redact(&"é".repeat(10_000));
        assert!(out.len() <= NACK_MESSAGE_MAX + 20);
        assert!(out.ends_with("[truncated]"));
    }

    #[test]
    fn nacks_are_recorded_per_node_and_in_history() {
        let nodes = Nodes::default();
        let id = nodes.next_stream_id();
        nodes.connect(
            id,
            "envoy-1".into(),
            "c".into(),
            "envoy 1.40.0".into(),
            "sotw",
            None,
        );
        nodes.sent(id, TypeKind::Cluster, "v2");
        let nack = nodes.nacked(id, TypeKind::Cluster, "v2", "bad cluster");
        assert_eq!(nack.node, "envoy-1");
        let list = nodes.list();
        let status = &list[0].types["CDS"];
        assert_eq!(
            status.last_nack.as_ref().map(|n| n.version.as_str()),
            Some("v2")
        );
        assert_eq!(nodes.recent_nacks().len(), 1);
        nodes.disconnect(id);
        assert!(nodes.list().is_empty());
        assert_eq!(nodes.recent_nacks().len(), 1, "history outlives the stream");
    }
}
