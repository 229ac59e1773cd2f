use crate::core::{AckBody, EventsBus, GroupReadBody};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use mesh_service::openapi::{Op, document};
use mesh_service::{ApiError, Caller, JsonBody, QueryParams, ServiceName};
use mesh_types::Permission;
use mesh_types::bus::{BusEvent, Delivery, validate_name};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// How often a stream looks for events published by other processes.
const STREAM_POLL: Duration = Duration::from_millis(250);
const MAX_STREAM_TOPICS: usize = 32;

pub fn router(core: Arc<EventsBus>) -> Router {
    let auth = core.context().auth.clone();
    let api = Router::new()
        .route(
            "/api/v1/events/stream",
            get(stream_events).route_layer(auth.require(Permission::EventsRead)),
        )
        .route(
            "/api/v1/events/{topic}",
            post(publish)
                .route_layer(auth.require(Permission::EventsPublish))
                .merge(get(read).route_layer(auth.require(Permission::EventsRead))),
        )
        .route(
            "/api/v1/events/{topic}/groups/{group}/read",
            post(read_group).route_layer(auth.require(Permission::EventsRead)),
        )
        .route(
            "/api/v1/events/{topic}/groups/{group}/ack",
            post(ack).route_layer(auth.require(Permission::EventsRead)),
        )
        .with_state(core.clone());
    mesh_service::server::finish_router(core.context(), api, openapi())
}

async fn publish(
    State(core): State<Arc<EventsBus>>,
    caller: Caller,
    Path(topic): Path<String>,
    JsonBody(payload): JsonBody<Value>,
) -> Result<(StatusCode, Json<BusEvent>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(core.publish(&caller, &topic, payload).await?),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    after: Option<String>,
    limit: Option<u32>,
}

async fn read(
    State(core): State<Arc<EventsBus>>,
    _caller: Caller,
    Path(topic): Path<String>,
    QueryParams(q): QueryParams<ReadQuery>,
) -> Result<Json<Vec<BusEvent>>, ApiError> {
    Ok(Json(core.read(&topic, q.after.as_deref(), q.limit).await?))
}

async fn read_group(
    State(core): State<Arc<EventsBus>>,
    _caller: Caller,
    Path((topic, group)): Path<(String, String)>,
    JsonBody(body): JsonBody<GroupReadBody>,
) -> Result<Json<Vec<Delivery>>, ApiError> {
    Ok(Json(core.read_group(&topic, &group, body).await?))
}

async fn ack(
    State(core): State<Arc<EventsBus>>,
    _caller: Caller,
    Path((topic, group)): Path<(String, String)>,
    JsonBody(body): JsonBody<AckBody>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({"acked": core.ack(&topic, &group, body).await?}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    /// Comma-separated topics.
    topics: String,
    /// Where to resume, `topic:offset` pairs separated by commas; topics not named
    /// start from their beginning.
    after: Option<String>,
}

/// Per-topic positions from `topic:offset,…` (the same form as SSE event ids, so a
/// reconnecting client's `Last-Event-ID` resumes its last topic).
fn positions(spec: Option<&str>) -> HashMap<String, String> {
    spec.unwrap_or_default()
        .split(',')
        .filter_map(|pair| pair.trim().rsplit_once(':'))
        .map(|(t, o)| (t.to_string(), o.to_string()))
        .collect()
}

async fn stream_events(
    State(core): State<Arc<EventsBus>>,
    _caller: Caller,
    headers: HeaderMap,
    QueryParams(q): QueryParams<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let topics: Vec<String> = q
        .topics
        .split(',')
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    if topics.is_empty() || topics.len() > MAX_STREAM_TOPICS {
        return Err(ApiError::invalid(
            "topics",
            format!("topics: name 1 to {MAX_STREAM_TOPICS} topics, comma-separated"),
        ));
    }
    for t in &topics {
        validate_name("topics", t)?;
    }
    let mut after = positions(q.after.as_deref());
    if let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        after.extend(positions(Some(last)));
    }
    let state = (core, topics, after, VecDeque::<BusEvent>::new());
    let events = stream::unfold(state, |(core, topics, mut after, mut ready)| async move {
        loop {
            if let Some(event) = ready.pop_front() {
                after.insert(event.topic.clone(), event.offset.clone());
                let sse = Event::default()
                    .id(format!("{}:{}", event.topic, event.offset))
                    .event(event.topic.clone())
                    .json_data(&event)
                    .unwrap_or_else(|_| Event::default().comment("unserialisable event"));
                return Some((Ok(sse), (core, topics, after, ready)));
            }
            // Register for wake-ups before reading, so a publish in between is not missed.
            // Task transitions wake the queue's claimers, and lifecycle topics with them.
            let woken = core.published.notified();
            let work = core.ctx.store.queue.work_signal();
            let transition = work.notified();
            for topic in &topics {
                match core
                    .read(topic, after.get(topic).map(String::as_str), Some(100))
                    .await
                {
                    Ok(batch) => ready.extend(batch),
                    Err(err) => tracing::warn!(error = %err, topic, "stream read failed"),
                }
            }
            if ready.is_empty() {
                tokio::select! {
                    _ = woken => {}
                    _ = transition => {}
                    _ = tokio::time::sleep(STREAM_POLL) => {}
                }
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

fn openapi() -> Value {
    let topic_body = Some(json!({"description": "Any JSON value: the event's payload"}));
    document(
        ServiceName::EventsBus,
        &[
            Op::guarded(
                "post",
                "/api/v1/events/{topic}",
                "Publish an event (topic: a-z 0-9 . _ -)",
                Permission::EventsPublish,
                topic_body,
                (201, "The event with its offset"),
            ),
            Op::guarded(
                "get",
                "/api/v1/events/{topic}",
                "Replay a topic from an offset (after, limit)",
                Permission::EventsRead,
                None,
                (200, "Events"),
            ),
            Op::guarded(
                "get",
                "/api/v1/events/stream",
                "Server-Sent Events for ?topics=a,b (resume with after=topic:offset or Last-Event-ID)",
                Permission::EventsRead,
                None,
                (200, "text/event-stream"),
            ),
            Op::guarded(
                "post",
                "/api/v1/events/{topic}/groups/{group}/read",
                "Consumer group read: at-least-once, unacknowledged events redelivered after visibilityMs",
                Permission::EventsRead,
                Some(
                    json!({"type": "object", "required": ["consumer"], "properties": {"consumer": {"type": "string"}, "limit": {"type": "integer"}, "visibilityMs": {"type": "integer"}}}),
                ),
                (200, "Deliveries"),
            ),
            Op::guarded(
                "post",
                "/api/v1/events/{topic}/groups/{group}/ack",
                "Acknowledge deliveries",
                Permission::EventsRead,
                Some(
                    json!({"type": "object", "required": ["offsets"], "properties": {"offsets": {"type": "array", "items": {"type": "string"}}}}),
                ),
                (200, "{acked}"),
            ),
        ],
    )
}
