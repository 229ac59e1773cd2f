//! The seed's "Model Provider Failures" table: retries with backoff for timeouts and
//! transient errors, failover to a fallback when a provider is down or answers garbage,
//! and a circuit breaker per provider so a dead one is skipped instead of waited on.

use serde_json::{Value, json};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a provider call failed, which decides what happens next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Timeout, refused connection, HTTP 5xx or 429: retry, then fail over.
    Transient,
    /// An answer that is not a chat completion: fail over at once.
    Garbage,
    /// The provider refused the request itself (HTTP 4xx): the client's problem; no
    /// retry, no failover, and not the provider's fault.
    Rejected(u16),
}

#[derive(Debug, Clone)]
pub struct CallError {
    pub failure: Failure,
    pub message: String,
}

/// Exponential backoff with full jitter: up to 100 ms, 200 ms, 400 ms …, capped at 2 s.
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = (100u64 << attempt.min(5)).min(2_000);
    let random = (uuid::Uuid::new_v4().as_u128() as u64) % (ceiling + 1);
    Duration::from_millis(random)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    /// The cooldown is over; one probe call is in flight or allowed.
    HalfOpen {
        probing: bool,
    },
}

/// Opens after `threshold` consecutive failures; after `cooldown` lets one probe
/// through (half-open): its success closes the breaker, its failure opens it again.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<(Phase, u32)>,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new((Phase::Closed, 0)),
        }
    }

    /// Whether a call may go to the provider now.
    pub fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return true;
        };
        match state.0 {
            Phase::Closed => true,
            Phase::Open { until } if now < until => false,
            Phase::Open { .. } | Phase::HalfOpen { probing: false } => {
                state.0 = Phase::HalfOpen { probing: true };
                true
            }
            Phase::HalfOpen { probing: true } => false,
        }
    }

    pub fn success(&self) {
        if let Ok(mut state) = self.state.lock() {
            *state = (Phase::Closed, 0);
        }
    }

    pub fn failure(&self) {
        self.failure_at(Instant::now());
    }

    fn failure_at(&self, now: Instant) {
        if let Ok(mut state) = self.state.lock() {
            state.1 += 1;
            let trip = matches!(state.0, Phase::HalfOpen { .. }) || state.1 >= self.threshold;
            if trip {
                state.0 = Phase::Open {
                    until: now + self.cooldown,
                };
            }
        }
    }

    /// `closed`, `open` or `half_open`, and the failures in a row.
    pub fn snapshot(&self) -> Value {
        let (phase, failures) = self.state.lock().map(|s| *s).unwrap_or((Phase::Closed, 0));
        let name = match phase {
            Phase::Closed => "closed",
            Phase::Open { until } if Instant::now() < until => "open",
            Phase::Open { .. } | Phase::HalfOpen { .. } => "half_open",
        };
        json!({"state": name, "consecutiveFailures": failures})
    }

    /// 0 closed, 1 half-open, 2 open: for the Prometheus gauge.
    pub fn gauge(&self) -> f64 {
        match self.snapshot()["state"].as_str() {
            Some("open") => 2.0,
            Some("half_open") => 1.0,
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_probes_after_the_cooldown() {
        let cooldown = Duration::from_secs(10);
        let b = Breaker::new(2, cooldown);
        let t0 = Instant::now();
        assert!(b.allow_at(t0));
        b.failure_at(t0);
        assert!(b.allow_at(t0), "one failure is below the threshold");
        b.failure_at(t0);
        assert!(!b.allow_at(t0 + Duration::from_secs(1)), "open");
        let later = t0 + cooldown + Duration::from_millis(1);
        assert!(b.allow_at(later), "the probe");
        assert!(!b.allow_at(later), "only one probe at a time");
        b.failure_at(later);
        assert!(
            !b.allow_at(later + Duration::from_secs(1)),
            "a failed probe opens it again"
        );
        assert!(b.allow_at(later + cooldown + Duration::from_millis(1)));
        b.success();
        assert_eq!(
            b.snapshot(),
            json!({"state": "closed", "consecutiveFailures": 0})
        );
        assert!(b.allow_at(later) && b.allow_at(later));
    }

    #[test]
    fn backoff_is_bounded() {
        for attempt in 0..10 {
            assert!(backoff(attempt) <= Duration::from_millis(2_000));
        }
    }
}
