//! Token buckets: a call takes one token from every bucket that applies, or from none,
//! and learns how long until it could. The buckets live in this process's memory or,
//! with a `redis://` store, in Redis, where every process using the same prefix shares
//! them exactly. Shared by the gateway's rate limits and the tool registry's per-tool
//! limits, so both behave alike (including when Redis is down: 503).

use crate::ApiError;
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

/// Where the buckets live.
pub enum BucketStore {
    /// This process only.
    Memory(TokenBuckets),
    /// Redis, shared by every process with the same key prefix.
    Redis {
        conn: redis::aio::ConnectionManager,
        prefix: String,
    },
}

/// Takes a token from every bucket or none; returns 0 or the milliseconds until all
/// have one. One script, so it is atomic across processes, and clocked by the Redis
/// server, so processes' clocks do not matter.
const TAKE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
local tokens = {}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local v = redis.call('HMGET', key, 't', 'ts')
  local have = tonumber(v[1]) or burst
  local ts = tonumber(v[2]) or now
  have = math.min(burst, have + math.max(0, now - ts) / 1000 * rate)
  if have < 1 then
    wait = math.max(wait, math.ceil((1 - have) / rate * 1000))
  end
  tokens[i] = have
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  redis.call('HSET', key, 't', tokens[i] - 1, 'ts', now)
  redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
end
return 0
"#;

impl BucketStore {
    /// In memory when `store` is `None`; else `redis://HOST:PORT[/DB][?prefix=NAME]`
    /// (`prefix` separates meshes sharing one Redis). A Redis that does not answer
    /// within 5 s is an error here, at start-up. `setting` names the option in errors.
    pub async fn open(store: Option<&str>, setting: &str) -> Result<Self, String> {
        let Some(url) = store else {
            return Ok(BucketStore::Memory(TokenBuckets::default()));
        };
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(format!("{setting} {url}: expected redis://"));
        }
        let (server, prefix) = match url.split_once("?prefix=") {
            Some((server, prefix)) if !prefix.is_empty() && !prefix.contains(['&', '?']) => {
                (server, format!("mesh:ratelimit:{prefix}:"))
            }
            Some(_) => return Err(format!("{setting} {url}: malformed ?prefix=")),
            None => (url, "mesh:ratelimit:".to_string()),
        };
        let client = redis::Client::open(server).map_err(|e| format!("{setting} {url}: {e}"))?;
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            redis::aio::ConnectionManager::new(client),
        )
        .await
        .map_err(|_| format!("{setting} {url}: no answer within 5 s"))?
        .map_err(|e| format!("{setting} {url}: {e}"))?;
        Ok(BucketStore::Redis { conn, prefix })
    }

    /// Zero when the tokens were taken, else how long until they would be there. A
    /// Redis that cannot be reached is 503 `rate_limit_store`: failing closed, since
    /// letting calls through unlimited is what the limit is there to prevent.
    pub async fn take(&self, buckets: &[Bucket]) -> Result<Duration, ApiError> {
        match self {
            BucketStore::Memory(state) => Ok(state.take(buckets)),
            BucketStore::Redis { conn, prefix } => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(TAKE).arg(buckets.len());
                for b in buckets {
                    cmd.arg(format!("{prefix}{}", b.key));
                }
                for b in buckets {
                    cmd.arg(b.rate).arg(b.burst);
                }
                let mut conn = conn.clone();
                let wait: u64 = cmd.query_async(&mut conn).await.map_err(|e| {
                    ApiError::unavailable("rate_limit_store", format!("rate-limit store: {e}"))
                })?;
                Ok(Duration::from_millis(wait))
            }
        }
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

    #[tokio::test]
    async fn a_store_is_memory_or_a_well_formed_redis_url() {
        let memory = BucketStore::open(None, "[x] store").await.unwrap();
        assert!(matches!(memory, BucketStore::Memory(_)));
        let err = |url: &'static str| async move {
            match BucketStore::open(Some(url), "[x] store").await {
                Err(e) => e,
                Ok(_) => panic!("{url} was accepted"),
            }
        };
        assert!(err("http://h:1").await.contains("expected redis://"));
        assert!(
            err("redis://h:1?prefix=")
                .await
                .contains("malformed ?prefix=")
        );
        assert!(
            err("redis://h:1?prefix=a&b=c")
                .await
                .starts_with("[x] store")
        );
    }
}
