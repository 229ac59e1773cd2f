//! The two strategies that ask several models at once. `defensive_multi_model` sends
//! the call to the two best-ranked models and answers with the first valid reply (the
//! slower one is abandoned). `consensus` asks up to three and answers with the reply
//! most of them agree on (compared after trimming, case-folding and collapsing
//! whitespace), the best-ranked of them on a tie. Each model is decided by `model.call`
//! and budgeted like a single call; an abandoned call is charged its estimate, since
//! the provider may bill it.

use crate::Gateway;
use crate::admission::Admission;
use crate::budget::{self, Reservation};
use crate::call::Completed;
use crate::chat::{ChatRequest, Completion};
use crate::providers::Provider;
use crate::resilience::CallError;
use crate::routing::Strategy;
use crate::trail::{Caller, Trail, Usage, spend};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use mesh_service::ApiError;
use mesh_store::Spend;
use serde_json::json;

/// A model asked, with the request its `model.call` decision let through and its
/// budget reservation.
pub(crate) struct Asked {
    pub provider: Provider,
    pub model: String,
    pub request: ChatRequest,
    pub reservation: Option<Reservation>,
}

/// Each asked model's outcome, by position; `None`: abandoned before it answered.
pub(crate) type Outcomes<T> = Vec<Option<Result<T, CallError>>>;

fn normalised(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

impl Gateway {
    pub(crate) async fn ensemble(
        &self,
        caller: &Caller<'_>,
        request: &ChatRequest,
        trail: Trail,
        plan: Vec<(Provider, String)>,
        strategy: Strategy,
    ) -> Result<Completed, ApiError> {
        let wanted = if strategy == Strategy::Consensus {
            3
        } else {
            2
        };
        let (asked, mut trail) = self.ask(caller, request, trail, plan, wanted).await?;
        let calls = asked.iter().enumerate().map(|(i, a)| {
            a.provider
                .complete(&self.http, &a.request)
                .map(move |r| (i, r))
                .boxed()
        });
        let mut results: Outcomes<Completion> = Vec::new();
        results.resize_with(asked.len(), || None);
        if strategy == Strategy::DefensiveMultiModel {
            first_ok(calls.collect(), &mut results).await;
        } else {
            for (i, result) in futures_util::future::join_all(calls).await {
                results[i] = Some(result);
            }
        }
        judge(&asked, &results, &mut trail);
        let chosen = pick(&results, strategy);
        for (a, result) in asked.iter().zip(&results) {
            let used = match result {
                Some(Ok(c)) => Some(spend(&a.provider, &Usage::from(c))),
                Some(Err(_)) => Some(Spend::default()),
                None => None,
            };
            settle_asked(self, a, used).await;
        }
        let Some((index, agreeing)) = chosen else {
            return Err(self.give_up(caller, trail, last_error(results)).await);
        };
        let Some(Some(Ok(completion))) = results.get(index).cloned() else {
            return Err(ApiError::internal("ensemble lost its chosen reply"));
        };
        let winner = &asked[index];
        trail.ensemble = Some(summary(strategy, &asked, index, agreeing, &results));
        let id = trail.reply_id();
        self.record(
            caller,
            trail,
            Some((&winner.provider, &winner.model, Usage::from(&completion))),
            None,
        )
        .await?;
        Ok(Completed {
            completion,
            model: winner.model.clone(),
            id,
        })
    }

    /// Admits up to `wanted` models from the plan, in order: `model.call` and a budget
    /// reservation for each, as a single call's candidates get. With none admitted the
    /// call is recorded as failed.
    pub(crate) async fn ask(
        &self,
        caller: &Caller<'_>,
        request: &ChatRequest,
        mut trail: Trail,
        plan: Vec<(Provider, String)>,
        wanted: usize,
    ) -> Result<(Vec<Asked>, Trail), ApiError> {
        let mut asked = Vec::new();
        for (i, (provider, model)) in plan.into_iter().enumerate() {
            if asked.len() == wanted {
                break;
            }
            match self
                .admit(caller, i == 0, true, &provider, &model, request, &mut trail)
                .await
                .map_err(|e| trail.failing(e))?
            {
                Admission::Go(request, reservation) => asked.push(Asked {
                    provider,
                    model,
                    request,
                    reservation,
                }),
                Admission::Skip => continue,
                Admission::Stop(err) => return Err(self.fail(caller, trail, err).await),
            }
        }
        if asked.is_empty() {
            return Err(self.give_up(caller, trail, None).await);
        }
        Ok((asked, trail))
    }
}

/// Runs the calls until one succeeds, filling in `results`; the rest are dropped
/// (abandoned) when this returns.
pub(crate) async fn first_ok<T>(
    mut pending: Vec<BoxFuture<'_, (usize, Result<T, CallError>)>>,
    results: &mut Outcomes<T>,
) {
    while !pending.is_empty() {
        let ((i, result), _, rest) = futures_util::future::select_all(pending).await;
        pending = rest;
        let ok = result.is_ok();
        results[i] = Some(result);
        if ok {
            return;
        }
    }
}

/// Tells each provider's breaker how its call went, and puts the failures on the trail.
pub(crate) fn judge<T>(
    asked: &[Asked],
    results: &[Option<Result<T, CallError>>],
    trail: &mut Trail,
) {
    for (a, result) in asked.iter().zip(results) {
        match result {
            Some(Ok(_)) => a.provider.breaker.success(),
            Some(Err(e)) => {
                a.provider.breaker.failure();
                trail.attempts.push(
                    json!({"provider": a.provider.name, "model": a.model, "error": e.message}),
                );
            }
            None => {}
        }
    }
}

/// Settles one asked model's reservation with what it used; an abandoned call
/// (`None`) is charged its estimate, since the provider may bill it.
pub(crate) async fn settle_asked(gateway: &Gateway, a: &Asked, used: Option<Spend>) {
    let used = used.unwrap_or_else(|| a.reservation.as_ref().map(|r| r.spend).unwrap_or_default());
    budget::settle(&gateway.ctx.store, a.reservation.clone(), used).await;
}

/// The last failure, for the error when no reply was valid.
pub(crate) fn last_error<T>(results: Outcomes<T>) -> Option<CallError> {
    results
        .into_iter()
        .flatten()
        .filter_map(Result::err)
        .next_back()
}

/// The record's `ensemble`: who was asked and how they agreed.
pub(crate) fn summary<T>(
    strategy: Strategy,
    asked: &[Asked],
    winner: usize,
    agreeing: usize,
    results: &[Option<Result<T, CallError>>],
) -> serde_json::Value {
    let models: Vec<&str> = asked.iter().map(|a| a.model.as_str()).collect();
    json!({
        "strategy": strategy, "asked": models, "answeredBy": asked[winner].model,
        "agreeing": agreeing, "answered": results.iter().filter(|r| matches!(r, Some(Ok(_)))).count(),
    })
}

/// The reply to answer with, and how many replies agree with it.
fn pick(
    results: &[Option<Result<Completion, CallError>>],
    strategy: Strategy,
) -> Option<(usize, usize)> {
    let answers: Vec<(usize, String)> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Some(Ok(c)) => Some((i, normalised(&c.content))),
            _ => None,
        })
        .collect();
    if strategy == Strategy::DefensiveMultiModel {
        return answers.first().map(|(i, _)| (*i, 1));
    }
    // Most votes; on a tie the best-ranked (lowest index) wins, as `max_by_key` keeps
    // the last maximum, so compare on (votes, reversed index).
    answers
        .iter()
        .map(|(i, text)| (*i, answers.iter().filter(|(_, t)| t == text).count()))
        .max_by_key(|(i, votes)| (*votes, std::cmp::Reverse(*i)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Option<Result<Completion, CallError>> {
        Some(Ok(Completion {
            content: text.into(),
            extra: Default::default(),
            prompt_tokens: 1,
            completion_tokens: 1,
            finish_reason: "stop",
        }))
    }

    #[test]
    fn consensus_takes_the_majority_and_the_best_ranked_on_ties() {
        let results = vec![ok("Paris"), ok("Lyon"), ok(" paris ")];
        assert_eq!(pick(&results, Strategy::Consensus), Some((0, 2)));
        let tie = vec![ok("a"), ok("b")];
        assert_eq!(pick(&tie, Strategy::Consensus), Some((0, 1)));
        let failed: Vec<Option<Result<Completion, CallError>>> = vec![
            Some(Err(CallError {
                failure: crate::resilience::Failure::Transient,
                message: "x".into(),
            })),
            ok("b"),
        ];
        assert_eq!(pick(&failed, Strategy::Consensus), Some((1, 1)));
        assert_eq!(
            pick(&[None, ok("fast")], Strategy::DefensiveMultiModel),
            Some((1, 1))
        );
        assert_eq!(pick(&[None, None], Strategy::DefensiveMultiModel), None);
    }
}
