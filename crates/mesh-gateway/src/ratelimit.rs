//! Token-bucket rate limits — global, per API key, per agent and per model — checked
//! together: a call takes a token from every bucket that applies or from none. In one
//! process the buckets live in memory; with `store = "redis://…"` they live in Redis
//! (see [`mesh_service::buckets`]: one atomic script per call, so several gateway
//! processes share one exact limit). A call over a limit waits up to `max_wait_ms` for its tokens (the
//! seed's "queue, apply backpressure"), then gets 429 with `Retry-After`.

use mesh_service::ApiError;
pub use mesh_service::buckets::Bucket;
use mesh_service::buckets::BucketStore;
use serde::Deserialize;
use std::time::{Duration, Instant};

/// `[gateway.limits]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub global_rps: Option<f64>,
    pub per_key_rps: Option<f64>,
    pub per_agent_rps: Option<f64>,
    pub per_model_rps: Option<f64>,
    /// Tokens a bucket holds when full (default: one second's worth, at least 1).
    pub burst_secs: Option<f64>,
    /// Longest a call waits for tokens before its 429 (default 0: no waiting).
    pub max_wait_ms: Option<u64>,
    /// `redis://HOST:PORT[/DB][?prefix=NAME]` to share the buckets between gateway
    /// processes (`prefix` separates meshes sharing one Redis).
    pub store: Option<String>,
}

pub struct RateLimiter {
    config: LimitsConfig,
    store: BucketStore,
}

impl RateLimiter {
    /// `None` when no limit is configured.
    pub async fn new(config: LimitsConfig) -> Result<Option<Self>, String> {
        let rates = [
            config.global_rps,
            config.per_key_rps,
            config.per_agent_rps,
            config.per_model_rps,
        ];
        if rates.iter().all(Option::is_none) {
            return Ok(None);
        }
        if rates.iter().flatten().any(|r| !r.is_finite() || *r <= 0.0) {
            return Err("[gateway.limits]: rates must be positive numbers".into());
        }
        let store = BucketStore::open(config.store.as_deref(), "[gateway.limits] store").await?;
        Ok(Some(RateLimiter { config, store }))
    }

    /// The buckets a call draws from; `model: None` leaves out the model's bucket (an
    /// `auto` call takes it per candidate, see [`RateLimiter::try_model`]).
    pub fn buckets(&self, key_id: &str, agent: Option<&str>, model: Option<&str>) -> Vec<Bucket> {
        let burst_secs = self.config.burst_secs.unwrap_or(1.0).max(0.0);
        let bucket = |key: String, rate: f64| Bucket {
            key,
            rate,
            burst: (rate * burst_secs).max(1.0),
        };
        let c = &self.config;
        let mut out = Vec::new();
        if let Some(rate) = c.global_rps {
            out.push(bucket("global".into(), rate));
        }
        if let Some(rate) = c.per_key_rps {
            out.push(bucket(format!("key:{key_id}"), rate));
        }
        if let (Some(rate), Some(agent)) = (c.per_agent_rps, agent) {
            out.push(bucket(format!("agent:{agent}"), rate));
        }
        if let (Some(rate), Some(model)) = (c.per_model_rps, model) {
            out.push(bucket(format!("model:{model}"), rate));
        }
        out
    }

    /// A token from `model`'s bucket now, without waiting: whether the model may take
    /// one more call. Routing passes over a model that may not (degrading under load).
    pub async fn try_model(&self, model: &str) -> Result<bool, ApiError> {
        let Some(rate) = self.config.per_model_rps else {
            return Ok(true);
        };
        let burst = (rate * self.config.burst_secs.unwrap_or(1.0).max(0.0)).max(1.0);
        let bucket = Bucket {
            key: format!("model:{model}"),
            rate,
            burst,
        };
        Ok(self
            .store
            .take(std::slice::from_ref(&bucket))
            .await?
            .is_zero())
    }

    /// Takes a token from each bucket, waiting up to `max_wait_ms`; else 429.
    pub async fn acquire(&self, buckets: &[Bucket]) -> Result<(), ApiError> {
        if buckets.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_millis(self.config.max_wait_ms.unwrap_or(0));
        loop {
            let wait = self.store.take(buckets).await?;
            if wait.is_zero() {
                return Ok(());
            }
            if Instant::now() + wait > deadline {
                let secs = wait.as_secs_f64().ceil() as u64;
                return Err(ApiError::rate_limited(
                    format!("rate limit reached; try again in {secs} s"),
                    secs,
                ));
            }
            tokio::time::sleep(wait).await;
        }
    }
}
