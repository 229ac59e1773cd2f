//! routing-gateway (port 5001): the OpenAI-compatible model ingress. Every model call
//! passes the `model.call` policy point (the decision may mask what the prompt carries
//! before it reaches the provider) and leaves a `ModelCall` in provenance, linked from
//! the calling agent.
//!
//! This is the gateway's first slice: the built-in `sim` provider and OpenAI-compatible
//! upstreams, whole or streamed text completions, retries with backoff, failover to a
//! fallback model and a circuit breaker per provider. Tool calls, the Anthropic API,
//! routing strategies, rate limits and budgets are the routing-gateway issue's remaining
//! work.

mod admission;
mod agent_routing;
mod anthropic;
mod budget;
mod call;
mod chat;
mod ensemble;
mod ensemble_stream;
mod providers;
mod ratelimit;
mod record;
mod resilience;
mod routes;
mod routing;
pub mod sim;
mod sim_shapes;
mod spans;
mod stream;
mod trail;
mod translate;

pub use agent_routing::{TaskRouteDecision, TaskRouteRequest};
pub use budget::BudgetsConfig;
pub use call::{CallContext, Completed, Protocol};
pub use chat::{ChatRequest, Completion, Message};
pub use providers::{Provider, ProviderConfig, Upstream};
pub use ratelimit::{LimitsConfig, RateLimiter};
pub use routes::router;
pub use routing::{RouteDecision, RouteRequest, RouteRule, Strategy};

use mesh_policy::{DecisionLogger, Enforcer};
use mesh_service::ServiceContext;
use serde_json::{Value, json};
use std::sync::Arc;

pub struct Gateway {
    ctx: ServiceContext,
    policy: Arc<Enforcer>,
    providers: Vec<Provider>,
    http: reqwest::Client,
    /// Call records go to provenance in batches, off the reply's path (see `record`).
    records: DecisionLogger,
    limiter: Option<RateLimiter>,
    budgets: BudgetsConfig,
    rules: Vec<RouteRule>,
    latency: routing::LatencyBook,
    /// One breaker per calling agent: an agent whose calls keep failing is stopped for
    /// a while, so it cannot keep a provider busy with calls that fail.
    agent_breakers:
        std::sync::Mutex<std::collections::HashMap<uuid::Uuid, Arc<resilience::Breaker>>>,
    agent_breaker: AgentBreakerConfig,
    /// Where prompts and responses are archived; unset keeps only their hashes.
    archive: std::sync::OnceLock<Arc<mesh_archive::Archive>>,
}

/// `[gateway.agent_breaker]`: provider failures in a row that stop an agent's calls,
/// and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentBreakerConfig {
    #[serde(default = "default_agent_failures")]
    pub failures: u32,
    #[serde(default = "default_agent_cooldown_ms")]
    pub cooldown_ms: u64,
}

fn default_agent_failures() -> u32 {
    5
}

fn default_agent_cooldown_ms() -> u64 {
    30_000
}

impl Default for AgentBreakerConfig {
    fn default() -> Self {
        AgentBreakerConfig {
            failures: default_agent_failures(),
            cooldown_ms: default_agent_cooldown_ms(),
        }
    }
}

impl AgentBreakerConfig {
    pub(crate) fn cooldown(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.cooldown_ms)
    }

    pub fn check(&self) -> Result<(), String> {
        if self.failures == 0 || self.cooldown_ms == 0 {
            return Err(
                "[gateway.agent_breaker] failures and cooldown_ms must be at least 1".into(),
            );
        }
        Ok(())
    }
}

/// What a gateway is configured with besides its providers.
pub struct GatewayOptions {
    /// `[gateway.limits]`: `None` for no rate limits.
    pub limiter: Option<RateLimiter>,
    pub budgets: BudgetsConfig,
    /// `[[gateway.routes]]`, in order.
    pub rules: Vec<RouteRule>,
    /// The `sim` provider's scripted replies.
    pub sim_script: Arc<sim::Script>,
    pub agent_breaker: AgentBreakerConfig,
}

impl Gateway {
    /// A gateway serving `sim` and the configured providers. A model served by two
    /// providers is refused (choosing between them is routing, not built yet), and so
    /// is a fallback model nobody serves.
    pub fn new(
        ctx: ServiceContext,
        policy: Arc<Enforcer>,
        configured: Vec<Provider>,
        records: DecisionLogger,
        options: GatewayOptions,
    ) -> Result<Arc<Self>, String> {
        let GatewayOptions {
            limiter,
            budgets,
            rules,
            sim_script,
            agent_breaker,
        } = options;
        agent_breaker.check()?;
        let mut sim = Provider::sim();
        sim.script(sim_script.clone());
        let mut providers = vec![sim];
        for mut p in configured {
            p.script(sim_script.clone());
            if providers.iter().any(|q| q.name == p.name) {
                return Err(format!(
                    "[[gateway.providers]]: two providers are named {}",
                    p.name
                ));
            }
            if let Some(model) = p
                .models
                .iter()
                .find(|m| *m == routing::AUTO || providers.iter().any(|q| q.models.contains(m)))
            {
                return Err(format!(
                    "[[gateway.providers]] {}: model {model} is already served (or reserved)",
                    p.name
                ));
            }
            providers.push(p);
        }
        for rule in &rules {
            for model in rule.candidates.iter().flatten() {
                if !providers.iter().any(|p| p.models.contains(model)) {
                    return Err(format!(
                        "[[gateway.routes]] {}: candidate {model} is not served by any provider",
                        rule.name
                    ));
                }
            }
        }
        for p in &providers {
            if let Some(fallback) = &p.fallback_model
                && !providers.iter().any(|q| q.models.contains(fallback))
            {
                return Err(format!(
                    "[[gateway.providers]] {}: fallback_model {fallback} is not served by any provider",
                    p.name
                ));
            }
        }
        let gateway = Arc::new(Self {
            ctx,
            policy,
            providers,
            http: reqwest::Client::builder()
                .tcp_nodelay(true)
                .build()
                .map_err(|e| e.to_string())?,
            records,
            limiter,
            budgets,
            rules,
            latency: routing::LatencyBook::default(),
            agent_breakers: Default::default(),
            agent_breaker,
            archive: std::sync::OnceLock::new(),
        });
        let weak = Arc::downgrade(&gateway);
        let service = gateway.ctx.name.as_str();
        gateway.ctx.metrics.add_collector(Box::new(move |out| {
            use std::fmt::Write;
            let Some(gateway) = weak.upgrade() else {
                return;
            };
            let _ = writeln!(out, "# HELP mesh_gateway_breaker_state Circuit breaker per provider: 0 closed, 1 half-open, 2 open.");
            let _ = writeln!(out, "# TYPE mesh_gateway_breaker_state gauge");
            for (provider, state) in gateway.breaker_gauges() {
                let _ = writeln!(out, "mesh_gateway_breaker_state{{service=\"{service}\",provider=\"{provider}\"}} {state}");
            }
            let _ = writeln!(out, "# HELP mesh_gateway_agents_stopped Agents whose calls a circuit breaker is holding back.");
            let _ = writeln!(out, "# TYPE mesh_gateway_agents_stopped gauge");
            let _ = writeln!(out, "mesh_gateway_agents_stopped{{service=\"{service}\"}} {}", gateway.stopped_agents().len());
        }));
        Ok(gateway)
    }

    /// Archives every call's prompt and response from now on (`[archive]`).
    pub fn set_archive(&self, archive: Arc<mesh_archive::Archive>) {
        self.ctx
            .metrics
            .add_collector(archive.collector(self.ctx.name.as_str()));
        let _ = self.archive.set(archive);
    }

    pub fn context(&self) -> &ServiceContext {
        &self.ctx
    }

    /// The models this gateway serves, as `(id, provider)`.
    pub fn models(&self) -> Vec<(&str, &str)> {
        self.providers
            .iter()
            .flat_map(|p| p.models.iter().map(move |m| (m.as_str(), p.name.as_str())))
            .collect()
    }

    /// Providers with their models, fallbacks and circuit-breaker state.
    pub fn provider_status(&self) -> Vec<Value> {
        self.providers
            .iter()
            .map(|p| {
                json!({
                    "name": p.name, "models": p.models, "fallbackModel": p.fallback_model,
                    "maxAttempts": p.max_attempts, "breaker": p.breaker.snapshot(),
                })
            })
            .collect()
    }

    /// The calling agent's breaker.
    fn agent_breaker(&self, agent: uuid::Uuid) -> Arc<resilience::Breaker> {
        let mut map = match self.agent_breakers.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(agent)
            .or_insert_with(|| {
                Arc::new(resilience::Breaker::new(
                    self.agent_breaker.failures,
                    self.agent_breaker.cooldown(),
                ))
            })
            .clone()
    }

    /// Agents whose breaker is not closed.
    pub fn stopped_agents(&self) -> Vec<Value> {
        let map = match self.agent_breakers.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.iter()
            .map(|(id, b)| json!({"agentId": id, "breaker": b.snapshot()}))
            .filter(|v| v["breaker"]["state"] != "closed")
            .collect()
    }

    /// `(provider, breaker gauge)` for `/metrics`.
    pub fn breaker_gauges(&self) -> Vec<(String, f64)> {
        self.providers
            .iter()
            .map(|p| (p.name.clone(), p.breaker.gauge()))
            .collect()
    }

    /// Queues an event for the provenance log with the call records.
    pub async fn log(&self, event: mesh_types::EventDraft) {
        self.records.log(event).await;
    }

    fn provider_of(&self, model: &str) -> Option<&Provider> {
        self.providers
            .iter()
            .find(|p| p.models.iter().any(|m| m == model))
    }
}
