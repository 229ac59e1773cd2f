//! The two strategies that ask several models at once. `defensive_multi_model` sends
//! the call to the two best-ranked models and answers with the first valid reply (the
//! slower one is abandoned). `consensus` asks up to three and answers with the reply
//! most of them agree on (compared after trimming, case-folding and collapsing
//! whitespace), the best-ranked of them on a tie. Each model is decided by `model.call`
//! and budgeted like a single call; an abandoned call is charged its estimate, since
//! the provider may bill it.

use crate::Gateway;
use crate::budget::{self, Reservation};
use crate::call::{Admission, Completed};
use crate::chat::{ChatRequest, Completion};
use crate::providers::Provider;
use crate::resilience::CallError;
use crate::routing::Strategy;
use crate::trail::{Caller, Trail, Usage, spend};
use futures_util::FutureExt;
use mesh_service::ApiError;
use serde_json::json;

struct Asked {
    provider: Provider,
    model: String,
    request: ChatRequest,
    reservation: Option<Reservation>,
}

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
        mut trail: Trail,
        plan: Vec<(Provider, String)>,
        strategy: Strategy,
    ) -> Result<Completed, ApiError> {
        let wanted = if strategy == Strategy::Consensus {
            3
        } else {
            2
        };
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
        let models: Vec<&str> = asked.iter().map(|a| a.model.as_str()).collect();
        let calls = asked.iter().enumerate().map(|(i, a)| {
            a.provider
                .complete(&self.http, &a.request)
                .map(move |r| (i, r))
                .boxed()
        });
        // Results by position in `asked`; `None`: abandoned before it answered.
        let mut results: Vec<Option<Result<Completion, CallError>>> = vec![None; 0];
        results.resize_with(asked.len(), || None);
        if strategy == Strategy::DefensiveMultiModel {
            let mut pending: Vec<_> = calls.collect();
            while !pending.is_empty() {
                let ((i, result), _, rest) = futures_util::future::select_all(pending).await;
                pending = rest;
                let ok = result.is_ok();
                results[i] = Some(result);
                if ok {
                    break;
                }
            }
        } else {
            for (i, result) in futures_util::future::join_all(calls).await {
                results[i] = Some(result);
            }
        }
        for (a, result) in asked.iter().zip(&results) {
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
        let chosen = pick(&results, strategy);
        for (a, result) in asked.iter().zip(&results) {
            let used = match result {
                Some(Ok(c)) => spend(&a.provider, &Usage::from(c)),
                Some(Err(_)) => Default::default(),
                None => a.reservation.as_ref().map(|r| r.spend).unwrap_or_default(),
            };
            budget::settle(&self.ctx.store, a.reservation.clone(), used).await;
        }
        let Some((index, agreeing)) = chosen else {
            let last = results
                .into_iter()
                .flatten()
                .filter_map(Result::err)
                .next_back();
            return Err(self.give_up(caller, trail, last).await);
        };
        let Some(Some(Ok(completion))) = results.get(index).cloned() else {
            return Err(ApiError::internal("ensemble lost its chosen reply"));
        };
        let winner = &asked[index];
        trail.ensemble = Some(json!({
            "strategy": strategy, "asked": models, "answeredBy": winner.model,
            "agreeing": agreeing, "answered": results.iter().filter(|r| matches!(r, Some(Ok(_)))).count(),
        }));
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
