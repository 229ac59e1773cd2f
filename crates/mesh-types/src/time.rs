//! Timestamps. The mesh keeps microsecond precision everywhere because PostgreSQL's
//! `TIMESTAMPTZ` does: a timestamp that went through a store must hash the same as
//! the one that was sealed into a provenance event.

use chrono::{DateTime, SubsecRound, Utc};

pub type Timestamp = DateTime<Utc>;

/// Now, truncated to microseconds.
pub fn now() -> Timestamp {
    Utc::now().trunc_subsecs(6)
}

/// RFC 3339 UTC with exactly six fractional digits, the form hashed into events.
pub fn format(ts: &Timestamp) -> String {
    ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Serde adapter writing timestamps in [`format`].
pub mod rfc3339_micros {
    use super::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(ts))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        chrono::DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// A duration of `ms` milliseconds, for arithmetic on timestamps.
pub fn millis(ms: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(ms)
}
