//! In-process token buckets: a call takes one token from every bucket that applies, or
//! from none, and learns how long until it could. Shared by the gateway's rate limits
//! (when not in Redis) and the tool registry's per-tool limits.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One bucket a call draws from: its key, refill rate (tokens per second) and size.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub key: String,
    pub rate: f64,
    pub burst: f64,
}

#[derive(Debug, Default)]
pub struct TokenBuckets(Mutex<HashMap<String, (f64, Instant)>>);

impl TokenBuckets {
    /// Zero when a token was taken from every bucket; else how long until each has one
    /// (and nothing was taken).
    pub fn take(&self, buckets: &[Bucket]) -> Duration {
        self.take_at(buckets, Instant::now())
    }

    fn take_at(&self, buckets: &[Bucket], now: Instant) -> Duration {
        let Ok(mut state) = self.0.lock() else {
            return Duration::ZERO;
        };
        let mut wait = Duration::ZERO;
        let mut levels = Vec::with_capacity(buckets.len());
        for b in buckets {
            let (have, at) = state.get(&b.key).copied().unwrap_or((b.burst, now));
            let have =
                (have + now.saturating_duration_since(at).as_secs_f64() * b.rate).min(b.burst);
            if have < 1.0 {
                wait = wait.max(Duration::from_secs_f64((1.0 - have) / b.rate));
            }
            levels.push(have);
        }
        if wait.is_zero() {
            for (b, have) in buckets.iter().zip(levels) {
                state.insert(b.key.clone(), (have - 1.0, now));
            }
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_buckets_or_none() {
        let state = TokenBuckets::default();
        let t0 = Instant::now();
        let a = Bucket {
            key: "a".into(),
            rate: 1.0,
            burst: 2.0,
        };
        let b = Bucket {
            key: "b".into(),
            rate: 10.0,
            burst: 1.0,
        };
        assert!(state.take_at(&[a.clone(), b.clone()], t0).is_zero());
        // b is empty: nothing is taken from a either.
        let wait = state.take_at(&[a.clone(), b.clone()], t0);
        assert_eq!(wait, Duration::from_millis(100));
        assert_eq!(state.0.lock().unwrap()["a"].0, 1.0);
        // 100 ms later b has refilled one token.
        assert!(
            state
                .take_at(&[a.clone(), b], t0 + Duration::from_millis(100))
                .is_zero()
        );
        let wait = state.take_at(&[a], t0 + Duration::from_millis(100));
        assert!(wait > Duration::from_millis(800), "{wait:?}");
    }
}
