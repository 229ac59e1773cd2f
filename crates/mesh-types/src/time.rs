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
    use chrono::{Datelike, Timelike};
    use std::fmt::Write;
    let nanos = ts.nanosecond();
    // Written by hand: chrono's strftime parses its pattern on every call, and every
    // stored row and sealed event formats several timestamps. Leap seconds and years
    // beyond four digits, which never occur here, take chrono's path.
    if nanos >= 1_000_000_000 || !(0..=9999).contains(&ts.year()) {
        return ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    }
    let mut out = String::with_capacity(27);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        ts.year(),
        ts.month(),
        ts.day(),
        ts.hour(),
        ts.minute(),
        ts.second(),
        nanos / 1_000
    );
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_hand_written_format_matches_chrono() {
        let reference = |ts: &Timestamp| ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        let mut samples = vec![
            now(),
            Utc.timestamp_opt(0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::microseconds(7),
        ];
        // A leap second takes chrono's path and still formats as chrono does.
        samples.push(Utc.timestamp_opt(1_483_228_799, 1_500_000_000).unwrap());
        for ts in samples {
            assert_eq!(format(&ts), reference(&ts));
        }
    }
}
