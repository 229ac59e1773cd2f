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
    let nanos = ts.nanosecond();
    // Written by hand, digit by digit: chrono's strftime parses its pattern on every
    // call and `write!` pads through the formatting machinery, and every stored row and
    // sealed event formats several timestamps (the SQLite writer spent 5% of its time
    // here). Leap seconds and years beyond four digits, which never occur here, take
    // chrono's path.
    if nanos >= 1_000_000_000 || !(0..=9999).contains(&ts.year()) {
        return ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    }
    let mut out = [0u8; 27];
    let mut put = |at: usize, width: usize, mut value: u32| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, ts.year() as u32);
    put(5, 2, ts.month());
    put(8, 2, ts.day());
    put(11, 2, ts.hour());
    put(14, 2, ts.minute());
    put(17, 2, ts.second());
    put(20, 6, nanos / 1_000);
    for (at, separator) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (26, b'Z'),
    ] {
        out[at] = separator;
    }
    out.iter().map(|&b| b as char).collect()
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
        // Spread over the years and every field's digits (a fixed LCG, no RNG needed).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let secs = (x >> 11) as i64 % 253_402_300_799;
            let micros = (x % 1_000_000) as u32;
            samples.push(Utc.timestamp_opt(secs, micros * 1_000).unwrap());
        }
        // A leap second takes chrono's path and still formats as chrono does.
        samples.push(Utc.timestamp_opt(1_483_228_799, 1_500_000_000).unwrap());
        for ts in samples {
            assert_eq!(format(&ts), reference(&ts));
        }
    }
}
