//! Model selection (seed principle 5): task, risk, cost and latency aware. Candidates
//! are every served model less those whose breaker is open and those the `model.call`
//! policy would refuse for this caller and data classification; the strategy ranks the
//! rest on configured price and quality and on latency observed per model (EWMA, p95).
//! `POST /api/v1/route/model` answers the decision without calling; `model: "auto"`
//! in a chat request calls the ranking in order, failing over down the list.

use crate::Gateway;
use mesh_policy::{PolicyContext, Resource, inputs};
use mesh_service::ApiError;
use mesh_types::Principal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// The model name that asks the gateway to choose.
pub const AUTO: &str = "auto";
const SAMPLES: usize = 100;
const EWMA_ALPHA: f64 = 0.2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The cheapest model whose observed p95 latency meets `sloMs` (unknown counts as
    /// meeting it); the fastest when none does.
    #[default]
    CheapestMeetingSlo,
    /// The lowest observed latency (EWMA); models never observed come after.
    Fastest,
    /// The highest configured quality; the cheaper on a tie.
    MaxQuality,
    /// Ask the two best (ranked as `cheapest_meeting_slo`) at once and answer with the
    /// first valid reply.
    DefensiveMultiModel,
    /// Ask up to three (ranked as `cheapest_meeting_slo`) and answer with what most of
    /// them said.
    Consensus,
}

impl Strategy {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        serde_json::from_value(json!(s)).map_err(|_| {
            ApiError::invalid(
                "strategy",
                format!(
                    "strategy: `{s}` is not one of cheapest_meeting_slo, fastest, max_quality, defensive_multi_model, consensus"
                ),
            )
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteRequest {
    #[serde(default)]
    pub task_type: Option<String>,
    #[serde(default)]
    pub risk_tier: Option<mesh_types::RiskTier>,
    #[serde(default)]
    pub data_classification: Option<mesh_types::DataClassification>,
    /// Unset: the matching routing rule's, else `cheapest_meeting_slo`.
    #[serde(default)]
    pub strategy: Option<Strategy>,
    #[serde(default)]
    pub slo_ms: Option<f64>,
    /// Choose only among these models.
    #[serde(default)]
    pub candidates: Option<Vec<String>>,
}

/// `[[gateway.routes]]`: the first rule whose `when` matches a request picks its
/// candidates (narrowing any the request names), and its strategy and SLO unless the
/// request sets them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    pub name: String,
    #[serde(default)]
    pub when: RuleCondition,
    #[serde(default)]
    pub strategy: Option<Strategy>,
    #[serde(default)]
    pub candidates: Option<Vec<String>>,
    #[serde(default)]
    pub slo_ms: Option<f64>,
}

/// Every condition given must hold; `task_type` may use `*` wildcards.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleCondition {
    #[serde(default)]
    pub task_type: Option<String>,
    #[serde(default)]
    pub data_classification: Option<Vec<mesh_types::DataClassification>>,
    #[serde(default)]
    pub risk_tier: Option<Vec<mesh_types::RiskTier>>,
}

impl RuleCondition {
    fn matches(&self, req: &RouteRequest) -> bool {
        let task = match (&self.task_type, &req.task_type) {
            (None, _) => true,
            (Some(pattern), Some(task)) => wildcard(pattern, task),
            (Some(_), None) => false,
        };
        let class = self.data_classification.as_ref().is_none_or(|allowed| {
            allowed.contains(
                &req.data_classification
                    .unwrap_or(mesh_types::DataClassification::Internal),
            )
        });
        let tier = self
            .risk_tier
            .as_ref()
            .is_none_or(|allowed| allowed.contains(&req.risk_tier.unwrap_or_default()));
        task && class && tier
    }
}

/// `*` matches any run of characters.
fn wildcard(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

/// What the gateway has seen of a model's latency.
#[derive(Debug, Default)]
pub struct LatencyBook(Mutex<HashMap<String, (f64, VecDeque<f64>)>>);

impl LatencyBook {
    pub fn observe(&self, model: &str, ms: f64) {
        if let Ok(mut book) = self.0.lock() {
            let (ewma, recent) = book
                .entry(model.to_string())
                .or_insert((ms, VecDeque::new()));
            *ewma = EWMA_ALPHA * ms + (1.0 - EWMA_ALPHA) * *ewma;
            if recent.len() == SAMPLES {
                recent.pop_front();
            }
            recent.push_back(ms);
        }
    }

    /// `(ewma, p95, samples)`.
    fn stats(&self, model: &str) -> Option<(f64, f64, usize)> {
        let book = self.0.lock().ok()?;
        let (ewma, recent) = book.get(model)?;
        let mut sorted: Vec<f64> = recent.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let p95 = sorted[((sorted.len() - 1) as f64 * 0.95).round() as usize];
        Some((*ewma, p95, sorted.len()))
    }
}

/// One ranked (or excluded) candidate.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    pub model: String,
    pub provider: String,
    pub cost_per_1k: f64,
    pub quality: f64,
    pub latency_ewma_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excluded: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteDecision {
    pub selected_model: String,
    pub provider: String,
    pub strategy: Strategy,
    pub confidence: f64,
    pub alternatives: Vec<Candidate>,
    pub reasons: Vec<String>,
    #[serde(with = "mesh_types::time::rfc3339_micros")]
    pub decided_at: mesh_types::time::Timestamp,
    /// Eligible models best first: the failover order of an `auto` call.
    #[serde(skip)]
    pub ranking: Vec<String>,
}

impl Gateway {
    /// Ranks the eligible models for `req`; 503 when none is eligible.
    pub fn route(&self, caller: &Principal, req: &RouteRequest) -> Result<RouteDecision, ApiError> {
        let rule = self.rules.iter().find(|r| r.when.matches(req));
        let mut effective = req.clone();
        if let Some(rule) = rule {
            effective.strategy = req.strategy.or(rule.strategy);
            effective.slo_ms = req.slo_ms.or(rule.slo_ms);
            effective.candidates = match (&req.candidates, &rule.candidates) {
                (Some(asked), Some(allowed)) => Some(
                    asked
                        .iter()
                        .filter(|m| allowed.contains(m))
                        .cloned()
                        .collect(),
                ),
                (asked, allowed) => asked.clone().or_else(|| allowed.clone()),
            };
        }
        let strategy = effective.strategy.unwrap_or_default();
        let req = &effective;
        let mut eligible = Vec::new();
        let mut excluded = Vec::new();
        for (model, provider) in self.models() {
            if model == AUTO
                || req
                    .candidates
                    .as_ref()
                    .is_some_and(|c| !c.iter().any(|m| m == model))
            {
                continue;
            }
            let p = self
                .provider_of(model)
                .ok_or_else(|| ApiError::internal("model without provider"))?;
            let stats = self.latency.stats(model);
            let mut c = Candidate {
                model: model.to_string(),
                provider: provider.to_string(),
                cost_per_1k: p.pricing.input_per_1k + p.pricing.output_per_1k,
                quality: p.pricing.quality,
                latency_ewma_ms: stats.map(|s| s.0),
                latency_p95_ms: stats.map(|s| s.1),
                excluded: None,
            };
            if p.breaker.snapshot()["state"] == "open" {
                c.excluded = Some("circuit breaker open".into());
            } else if let Some(reason) = self.policy_refusal(caller, req, provider, model) {
                c.excluded = Some(format!("policy: {reason}"));
            }
            if c.excluded.is_some() {
                excluded.push(c);
            } else {
                eligible.push(c);
            }
        }
        rank(&mut eligible, strategy, req.slo_ms);
        let Some(best) = eligible.first().cloned() else {
            return Err(ApiError::unavailable(
                "no_eligible_model",
                format!(
                    "no model is eligible: {}",
                    excluded
                        .iter()
                        .map(|c| format!("{} ({})", c.model, c.excluded.as_deref().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        let samples = self.latency.stats(&best.model).map(|s| s.2).unwrap_or(0);
        let mut reasons = vec![format!(
            "{:?} over {} eligible of {} models",
            strategy,
            eligible.len(),
            eligible.len() + excluded.len()
        )];
        if let Some(rule) = rule {
            reasons.push(format!("routing rule `{}` matched", rule.name));
        }
        reasons.push(match strategy {
            Strategy::CheapestMeetingSlo => format!(
                "cheapest at {:.4} per 1K tokens{}",
                best.cost_per_1k,
                req.slo_ms
                    .map(|s| format!(" within the {s} ms SLO"))
                    .unwrap_or_default()
            ),
            Strategy::Fastest => match best.latency_ewma_ms {
                Some(ms) => format!("fastest observed, {ms:.1} ms EWMA"),
                None => "no latency observed yet for any model".into(),
            },
            Strategy::MaxQuality => format!("highest quality {:.2}", best.quality),
            Strategy::DefensiveMultiModel | Strategy::Consensus => format!(
                "asks {} at once, ranked by cost within the SLO",
                eligible.len().min(if strategy == Strategy::Consensus {
                    3
                } else {
                    2
                })
            ),
        });
        for c in &excluded {
            reasons.push(format!(
                "{} excluded: {}",
                c.model,
                c.excluded.as_deref().unwrap_or("")
            ));
        }
        let ranking = eligible.iter().map(|c| c.model.clone()).collect();
        Ok(RouteDecision {
            selected_model: best.model.clone(),
            provider: best.provider.clone(),
            strategy,
            // More latency samples behind the choice, more confidence in it.
            confidence: (0.5 + 0.5 * samples as f64 / (samples as f64 + 10.0)).min(0.99),
            alternatives: eligible.into_iter().skip(1).chain(excluded).collect(),
            reasons,
            decided_at: mesh_types::time::now(),
            ranking,
        })
    }

    /// What `model.call` would say for this candidate (evaluated, not recorded: the
    /// call itself is decided and recorded when made).
    fn policy_refusal(
        &self,
        caller: &Principal,
        req: &RouteRequest,
        provider: &str,
        model: &str,
    ) -> Option<String> {
        let ctx = PolicyContext {
            action: mesh_policy::Point::ModelCall.as_str().into(),
            subject: inputs::principal(caller),
            resource: Resource {
                kind: Some("model".into()),
                id: Some(model.into()),
                classification: Some(
                    req.data_classification
                        .map(|c| c.as_str().to_string())
                        .unwrap_or_else(|| "internal".into()),
                ),
                attributes: json!({"provider": provider, "model": model, "taskType": req.task_type, "riskTier": req.risk_tier}),
            },
            environment: inputs::environment(self.ctx.name.as_str()),
        };
        let (decision, _, _) = self.policy.decide(&ctx);
        (!decision.permits()).then_some(decision.reason)
    }

    pub fn route_event(
        &self,
        caller: &Principal,
        decision: &RouteDecision,
        req: &RouteRequest,
    ) -> mesh_types::EventDraft {
        mesh_types::EventDraft::new(
            "routing_decision",
            &caller.name,
            "model",
            Some(decision.selected_model.clone()),
        )
        .payload(json!({
            "selectedModel": decision.selected_model,
            "provider": decision.provider,
            "strategy": decision.strategy,
            "confidence": decision.confidence,
            "reasons": decision.reasons,
            "alternatives": decision.alternatives,
            "taskType": req.task_type,
            "dataClassification": req.data_classification,
            "sloMs": req.slo_ms,
        }))
    }
}

fn rank(candidates: &mut [Candidate], strategy: Strategy, slo_ms: Option<f64>) {
    let latency = |c: &Candidate| c.latency_ewma_ms.unwrap_or(f64::INFINITY);
    match strategy {
        Strategy::CheapestMeetingSlo | Strategy::DefensiveMultiModel | Strategy::Consensus => {
            let meets = |c: &Candidate| match (slo_ms, c.latency_p95_ms) {
                (Some(slo), Some(p95)) => p95 <= slo,
                _ => true,
            };
            candidates.sort_by(|a, b| {
                meets(b)
                    .cmp(&meets(a))
                    .then(a.cost_per_1k.total_cmp(&b.cost_per_1k))
                    .then(latency(a).total_cmp(&latency(b)))
            });
        }
        Strategy::Fastest => candidates.sort_by(|a, b| {
            latency(a)
                .total_cmp(&latency(b))
                .then(a.cost_per_1k.total_cmp(&b.cost_per_1k))
        }),
        Strategy::MaxQuality => candidates.sort_by(|a, b| {
            b.quality
                .total_cmp(&a.quality)
                .then(a.cost_per_1k.total_cmp(&b.cost_per_1k))
        }),
    }
}

/// Strategy and SLO an `auto` chat call asks for, from its headers.
pub fn route_from_headers(
    strategy: Option<&str>,
    slo_ms: Option<&str>,
) -> Result<(Option<Strategy>, Option<f64>), ApiError> {
    let strategy = strategy.map(Strategy::parse).transpose()?;
    let slo = slo_ms
        .map(|s| {
            s.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "x-mesh-slo-ms",
                        "x-mesh-slo-ms: a positive number of milliseconds",
                    )
                })
        })
        .transpose()?;
    Ok((strategy, slo))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(model: &str, cost: f64, quality: f64, ewma: Option<f64>, p95: Option<f64>) -> Candidate {
        Candidate {
            model: model.into(),
            provider: "p".into(),
            cost_per_1k: cost,
            quality,
            latency_ewma_ms: ewma,
            latency_p95_ms: p95,
            excluded: None,
        }
    }

    fn order(mut cs: Vec<Candidate>, strategy: Strategy, slo: Option<f64>) -> Vec<String> {
        rank(&mut cs, strategy, slo);
        cs.into_iter().map(|c| c.model).collect()
    }

    #[test]
    fn strategies_rank_as_documented() {
        let cs = vec![
            c("cheap-slow", 0.1, 0.3, Some(900.0), Some(1500.0)),
            c("dear-fast", 2.0, 0.9, Some(50.0), Some(80.0)),
            c("mid", 0.5, 0.6, None, None),
        ];
        assert_eq!(
            order(cs.clone(), Strategy::CheapestMeetingSlo, None),
            ["cheap-slow", "mid", "dear-fast"]
        );
        assert_eq!(
            order(cs.clone(), Strategy::CheapestMeetingSlo, Some(1000.0)),
            ["mid", "dear-fast", "cheap-slow"]
        );
        assert_eq!(
            order(cs.clone(), Strategy::Fastest, None),
            ["dear-fast", "cheap-slow", "mid"]
        );
        assert_eq!(
            order(cs, Strategy::MaxQuality, None),
            ["dear-fast", "mid", "cheap-slow"]
        );
    }

    #[test]
    fn rules_match_on_task_class_and_tier() {
        assert!(wildcard("code_*", "code_refactor"));
        assert!(wildcard("*_review", "pr_review"));
        assert!(wildcard("a*b*c", "axxbyyc"));
        assert!(!wildcard("code_*", "docs_refactor"));
        assert!(!wildcard("exact", "exactly"));
        let when = RuleCondition {
            task_type: Some("code_*".into()),
            data_classification: Some(vec![mesh_types::DataClassification::Restricted]),
            risk_tier: None,
        };
        let mut req = RouteRequest {
            task_type: Some("code_fix".into()),
            data_classification: Some(mesh_types::DataClassification::Restricted),
            ..RouteRequest::default()
        };
        assert!(when.matches(&req));
        req.data_classification = None;
        assert!(
            !when.matches(&req),
            "unset classification counts as internal"
        );
    }

    #[test]
    fn latency_book_keeps_ewma_and_p95() {
        let book = LatencyBook::default();
        for ms in 1..=100 {
            book.observe("m", ms as f64);
        }
        let (ewma, p95, n) = book.stats("m").unwrap();
        assert_eq!(n, 100);
        assert_eq!(p95, 95.0);
        assert!(ewma > 90.0 && ewma < 100.0, "{ewma}");
    }
}
