//! `defensive_multi_model` for `stream: true`: the two best-ranked models are asked at
//! once, as for a whole call, and the client gets the stream of the first whose first
//! frame is valid; the other is abandoned (charged its estimate) and a candidate that
//! fails before its first frame leaves the race to the other. Failover is only possible
//! until then: once a frame has gone to the client, the stream is that model's.
//! (`consensus` needs every reply whole to vote, so it is a whole call streamed after;
//! see `call.rs`.)

use crate::Gateway;
use crate::call::Protocol;
use crate::chat::{ChatRequest, Completion};
use crate::ensemble::{Asked, Outcomes, first_ok, judge, last_error, settle_asked, summary};
use crate::providers::{Provider, Upstream};
use crate::resilience::{CallError, Failure};
use crate::routing::Strategy;
use crate::stream::{self, Relayed, UpstreamBytes};
use crate::trail::{Caller, Trail, Usage, spend};
use axum::body::Bytes;
use futures_util::{FutureExt, StreamExt};
use mesh_service::ApiError;
use mesh_store::Spend;
use serde_json::Value;
use std::sync::Arc;

/// The most a stream may send before its first whole line, for it to count as valid.
const FIRST_FRAME_LIMIT: usize = 64 * 1024;

/// A stream that has shown a valid start.
enum Opening {
    /// `sim` answers whole.
    Whole(Completion),
    /// The bytes read so far (up to the first frame) and the rest of the stream.
    Relay(Bytes, UpstreamBytes),
}

impl Gateway {
    /// A streamed `defensive_multi_model` call, recorded as the whole-call ensemble is:
    /// one `model_call` naming every model asked, with the failures before the first
    /// frame among its failed attempts.
    pub(crate) async fn race_streams(
        self: &Arc<Self>,
        caller: &Caller<'_>,
        request: &ChatRequest,
        trail: Trail,
        plan: Vec<(Provider, String)>,
        client: Protocol,
    ) -> Result<axum::body::Body, ApiError> {
        let (asked, mut trail) = self.ask(caller, request, trail, plan, 2).await?;
        let mut results: Outcomes<Opening> = Vec::new();
        results.resize_with(asked.len(), || None);
        let opens = asked
            .iter()
            .enumerate()
            .map(|(i, a)| open(&self.http, a).map(move |r| (i, r)).boxed())
            .collect();
        first_ok(opens, &mut results).await;
        judge(&asked, &results, &mut trail);
        let winner = results.iter().position(|r| matches!(r, Some(Ok(_))));
        // What each used, worked out before any await: a stream is not `Sync`, so no
        // reference to `results` may be held across one.
        let spent: Vec<Option<Option<Spend>>> = asked
            .iter()
            .zip(&results)
            .map(|(a, result)| match result {
                Some(Ok(Opening::Whole(c))) => Some(Some(spend(&a.provider, &Usage::from(c)))),
                // The relay settles the winner's reservation when its stream ends.
                Some(Ok(Opening::Relay(..))) => None,
                Some(Err(_)) => Some(Some(Spend::default())),
                None => Some(None),
            })
            .collect();
        for (a, used) in asked.iter().zip(spent) {
            if let Some(used) = used {
                settle_asked(self, a, used).await;
            }
        }
        let Some(index) = winner else {
            return Err(self.give_up(caller, trail, last_error(results)).await);
        };
        trail.ensemble = Some(summary(
            Strategy::DefensiveMultiModel,
            &asked,
            index,
            1,
            &results,
        ));
        let Some(Some(Ok(opening))) = results.into_iter().nth(index) else {
            return Err(ApiError::internal("ensemble lost its chosen reply"));
        };
        let Asked {
            provider,
            model,
            reservation,
            ..
        } = asked
            .into_iter()
            .nth(index)
            .ok_or_else(|| ApiError::internal("ensemble lost its chosen model"))?;
        match opening {
            Opening::Whole(completion) => {
                let body = stream::whole(&completion, &trail.reply_id(), &model, client);
                let usage = Usage::from(&completion);
                self.record(caller, trail, Some((&provider, &model, usage)), None)
                    .await?;
                Ok(body)
            }
            Opening::Relay(first, rest) => {
                let bytes = futures_util::stream::once(async { Ok(first) })
                    .chain(rest)
                    .boxed();
                let relayed = Relayed {
                    provider,
                    model,
                    reservation,
                    client,
                };
                Ok(self.relay(bytes, relayed, trail, caller.actor()))
            }
        }
    }
}

/// Opens `a`'s stream and reads it up to its first frame, which must be valid.
async fn open(http: &reqwest::Client, a: &Asked) -> Result<Opening, CallError> {
    let response = match a.provider.open_stream(http, &a.request).await? {
        Upstream::Whole(completion) => return Ok(Opening::Whole(completion)),
        Upstream::Relay(response) => response,
    };
    let failed = |failure, detail: String| CallError {
        failure,
        message: format!("provider {}: {detail}", a.provider.name),
    };
    let mut bytes = response.bytes_stream().boxed();
    let mut head = Vec::new();
    loop {
        match bytes.next().await {
            Some(Ok(chunk)) => head.extend_from_slice(&chunk),
            Some(Err(e)) => {
                return Err(failed(
                    Failure::Transient,
                    format!("stream broke before its first frame: {e}"),
                ));
            }
            None => {
                return Err(failed(
                    Failure::Garbage,
                    "stream ended before its first frame".into(),
                ));
            }
        }
        match first_frame(&head) {
            Some(Ok(())) => return Ok(Opening::Relay(Bytes::from(head), bytes)),
            Some(Err(why)) => return Err(failed(Failure::Garbage, why)),
            None if head.len() > FIRST_FRAME_LIMIT => {
                return Err(failed(
                    Failure::Garbage,
                    "stream sent no frame in its first 64 KiB".into(),
                ));
            }
            None => {}
        }
    }
}

/// Whether a stream's start holds a valid first frame: `None` until its first whole
/// `data:` line is in; then valid if that is a JSON chunk or event, not an error.
fn first_frame(head: &[u8]) -> Option<Result<(), String>> {
    let text = String::from_utf8_lossy(head);
    for line in text.split_inclusive('\n') {
        if !line.ends_with('\n') {
            return None;
        }
        let Some(data) = line.trim().strip_prefix("data:") else {
            continue;
        };
        return Some(match serde_json::from_str::<Value>(data.trim()) {
            Ok(v) if v.get("error").is_some() || v["type"] == "error" => {
                Err(format!("stream opened with an error: {v}"))
            }
            Ok(_) => Ok(()),
            Err(_) => Err("stream opened with something that is not JSON".into()),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::first_frame;

    #[test]
    fn a_first_frame_is_a_whole_json_data_line_that_is_no_error() {
        assert_eq!(first_frame(b"data: {\"choices\":"), None);
        assert_eq!(first_frame(b": keep-alive\n\nevent: message_start\n"), None);
        assert_eq!(
            first_frame(b"event: message_start\ndata: {\"type\":\"message_start\"}\n"),
            Some(Ok(()))
        );
        assert_eq!(first_frame(b"data: {\"choices\":[]}\n\n"), Some(Ok(())));
        assert!(matches!(first_frame(b"data: <html>\n"), Some(Err(_))));
        assert!(matches!(
            first_frame(b"data: {\"error\":{\"message\":\"overloaded\"}}\n"),
            Some(Err(_))
        ));
        assert!(matches!(
            first_frame(b"event: error\ndata: {\"type\":\"error\"}\n"),
            Some(Err(_))
        ));
    }
}
