//! `#[serde(with = "crate::unix_seconds")]`: a `SystemTime` as fractional Unix seconds.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default(),
    )
}
