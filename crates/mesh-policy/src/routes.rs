//! HTTP on port 5002: OPA's Data API and policy listing (OPA's shapes, so OPA clients
//! work unchanged), the mesh's decision API, the decision log and the policy status.

use crate::decision::PolicyContext;
use crate::decision_log::{DecisionLogger, opa_entry};
use crate::enforcer::{Actor, DecisionRecord, Enforcer};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mesh_service::openapi::{Op, document};
use mesh_service::{ApiError, Caller, JsonBody, QueryParams, ServiceContext, ServiceName};
use mesh_types::Permission;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// The policy-enforcer service: the process's enforcer, served to outside callers.
pub struct PolicyService {
    pub ctx: ServiceContext,
    pub enforcer: Arc<Enforcer>,
    pub logger: DecisionLogger,
}

pub fn router(service: Arc<PolicyService>) -> Router {
    let auth = service.ctx.auth.clone();
    let evaluate = || auth.require(Permission::PolicyEvaluate);
    let api = Router::new()
        .route(
            "/v1/data",
            post(data_root).get(data_root).route_layer(evaluate()),
        )
        .route(
            "/v1/data/{*path}",
            post(data_path).get(data_path).route_layer(evaluate()),
        )
        .route(
            "/v1/policies",
            get(list_policies).route_layer(auth.require(Permission::PolicyRead)),
        )
        .route(
            "/api/v1/evaluate",
            post(evaluate_context).route_layer(evaluate()),
        )
        // OPA's health check, for OPA clients and probes that expect it.
        .route("/health", get(|| async { Json(json!({})) }))
        .route(
            "/api/v1/policy/status",
            get(status).route_layer(auth.require(Permission::PolicyRead)),
        )
        .route(
            "/api/v1/policy/decisions",
            get(decisions).route_layer(auth.require(Permission::PolicyRead)),
        )
        .with_state(service.clone());
    mesh_service::server::finish_router(&service.ctx, api, openapi())
}

/// OPA's error body: `{"code", "message"}`.
fn opa_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"code": code, "message": message.into()})),
    )
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
struct DataParams {
    /// OPA's GET form: the input document as JSON in the query string.
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    metrics: Option<bool>,
    #[serde(default)]
    provenance: Option<bool>,
    #[serde(default)]
    pretty: Option<bool>,
}

async fn data_root(
    State(svc): State<Arc<PolicyService>>,
    caller: Caller,
    QueryParams(params): QueryParams<DataParams>,
    body: Bytes,
) -> Response {
    data(svc, caller, String::new(), params, body).await
}

async fn data_path(
    State(svc): State<Arc<PolicyService>>,
    caller: Caller,
    Path(path): Path<String>,
    QueryParams(params): QueryParams<DataParams>,
    body: Bytes,
) -> Response {
    data(svc, caller, path, params, body).await
}

/// `POST /v1/data/{path}` with `{"input": …}`: the document at `data.<path>`.
/// Undefined is a 200 without `result`, as in OPA.
async fn data(
    svc: Arc<PolicyService>,
    caller: Caller,
    path: String,
    params: DataParams,
    body: Bytes,
) -> Response {
    let input = match (request_input(&body), params.input.as_deref()) {
        (Err(message), _) => {
            return opa_error(StatusCode::BAD_REQUEST, "invalid_parameter", message);
        }
        (Ok(None), None) => None,
        (Ok(Some(input)), None) => Some(input),
        // Evaluating without it would answer for a different question (and for a
        // policy that denies on the input, allow): a malformed one is refused.
        (Ok(None), Some(query)) => match serde_json::from_str::<Value>(query) {
            Ok(input) => Some(input),
            Err(e) => {
                return opa_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_parameter",
                    format!("input: the query parameter is not JSON: {e}"),
                );
            }
        },
        (Ok(Some(_)), Some(_)) => {
            return opa_error(
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
                "input: given both in the body and in the query string; give it once",
            );
        }
    };
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let policies = svc.enforcer.current();
    let eval = match policies.eval_path(&segments, input.clone()) {
        Ok(eval) => eval,
        Err(e @ crate::PolicyError::Path(_)) => {
            return opa_error(StatusCode::BAD_REQUEST, "invalid_parameter", e.to_string());
        }
        Err(e) => {
            return opa_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                e.to_string(),
            );
        }
    };
    let decision_id = uuid::Uuid::now_v7();
    let mut reply = json!({"decision_id": decision_id});
    if let Some(result) = &eval.value {
        reply["result"] = result.clone();
    }
    if params.metrics == Some(true) {
        reply["metrics"] = json!({"timer_rego_query_eval_ns": eval.eval_ns});
    }
    if params.provenance == Some(true) {
        reply["provenance"] = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "bundles": {"mesh": {"revision": policies.revision()}},
        });
    }
    let record = DecisionRecord {
        point: "data_api".into(),
        path: segments.join("/"),
        decision_id,
        result: eval.value.unwrap_or(Value::Null),
        input: input.unwrap_or(Value::Null),
        eval_ns: eval.eval_ns,
    };
    let event = svc
        .enforcer
        .audit_event(record, &policies, &Actor::named(caller.actor()));
    svc.logger.log(event).await;
    if params.pretty == Some(true) {
        let text = serde_json::to_string_pretty(&reply).unwrap_or_default();
        return (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            text,
        )
            .into_response();
    }
    Json(reply).into_response()
}

/// The request's `input`: absent body or field means no input.
fn request_input(body: &[u8]) -> Result<Option<Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    match doc {
        Value::Object(mut map) => Ok(map.remove("input")),
        _ => Err("body must be a JSON object like {\"input\": …}".into()),
    }
}

async fn list_policies(State(svc): State<Arc<PolicyService>>) -> Json<Value> {
    let policies = svc.enforcer.current();
    let result: Vec<Value> = policies
        .source
        .modules
        .iter()
        .map(|m| json!({"id": m.path, "raw": m.source}))
        .collect();
    Json(json!({"result": result}))
}

/// The mesh's decision API: a policy context in, a decision out.
async fn evaluate_context(
    State(svc): State<Arc<PolicyService>>,
    caller: Caller,
    JsonBody(ctx): JsonBody<PolicyContext>,
) -> Result<Json<Value>, ApiError> {
    if ctx.action.trim().is_empty() {
        return Err(ApiError::invalid(
            "action",
            "action: must name what is attempted, e.g. tool.call",
        ));
    }
    let (decision, eval_ns, policies) = svc.enforcer.decide(&ctx);
    let record = DecisionRecord {
        point: ctx.action.clone(),
        path: crate::enforcer::opa_path(crate::enforcer::DECISION_RULE),
        decision_id: decision.decision_id,
        result: json!(decision),
        input: serde_json::to_value(&ctx).unwrap_or(Value::Null),
        eval_ns,
    };
    let event = svc
        .enforcer
        .audit_event(record, &policies, &Actor::named(caller.actor()));
    svc.logger.log(event).await;
    Ok(Json(json!(decision)))
}

async fn status(State(svc): State<Arc<PolicyService>>) -> Json<Value> {
    let policies = svc.enforcer.current();
    let mut status = json!(svc.enforcer.status());
    status["tests"] = json!(policies.tests.len());
    status["decisionRule"] = json!(crate::enforcer::DECISION_RULE);
    Json(status)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionQuery {
    #[serde(default)]
    after: Option<i64>,
    #[serde(default)]
    limit: Option<u32>,
}

/// Decision log entries in OPA's shape, oldest first; page with `after=<seq>`.
async fn decisions(
    State(svc): State<Arc<PolicyService>>,
    QueryParams(q): QueryParams<DecisionQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let events = svc
        .ctx
        .store
        .provenance
        .events_with_action("policy_decision", q.after.unwrap_or(0), limit)
        .await?;
    let next = events.last().map(|e| e.seq);
    let entries: Vec<Value> = events.iter().map(opa_entry).collect();
    Ok(Json(json!({"decisions": entries, "next": next})))
}

fn openapi() -> Value {
    let context = json!({"type": "object", "required": ["action"], "properties": {
        "action": {"type": "string"}, "subject": {"type": "object"},
        "resource": {"type": "object", "properties": {"type": {"type": "string"},
            "id": {"type": "string"}, "classification": {"type": "string"},
            "attributes": {"type": "object"}}},
        "environment": {"type": "object"}}});
    let data_input = json!({"type": "object", "properties": {"input": {}}});
    document(
        ServiceName::PolicyEnforcer,
        &[
            Op::guarded(
                "post",
                "/v1/data/{path}",
                "OPA Data API: evaluate data.<path> with input (no result when undefined)",
                Permission::PolicyEvaluate,
                Some(data_input.clone()),
                (200, "{result?, decision_id}"),
            ),
            Op::guarded(
                "post",
                "/v1/data",
                "OPA Data API: the whole data document",
                Permission::PolicyEvaluate,
                Some(data_input),
                (200, "{result, decision_id}"),
            ),
            Op::guarded(
                "get",
                "/v1/data/{path}",
                "OPA Data API, GET form: the input as JSON in the `input` query parameter",
                Permission::PolicyEvaluate,
                None,
                (200, "{result?, decision_id}"),
            ),
            Op::guarded(
                "get",
                "/v1/data",
                "OPA Data API, GET form: the whole data document",
                Permission::PolicyEvaluate,
                None,
                (200, "{result, decision_id}"),
            ),
            Op::open("get", "/health", "OPA's health check", (200, "{}")),
            Op::guarded(
                "get",
                "/v1/policies",
                "OPA policy listing",
                Permission::PolicyRead,
                None,
                (200, "{result: [{id, raw}]}"),
            ),
            Op::guarded(
                "post",
                "/api/v1/evaluate",
                "Decide a policy context",
                Permission::PolicyEvaluate,
                Some(context),
                (
                    200,
                    "decision {action, reason, redactions, escalationTarget, auditRequired, decisionId, evaluatedAt}",
                ),
            ),
            Op::guarded(
                "get",
                "/api/v1/policy/status",
                "Policy set in force and the last load error",
                Permission::PolicyRead,
                None,
                (200, "status"),
            ),
            Op::guarded(
                "get",
                "/api/v1/policy/decisions",
                "Decision log in OPA's shape (after, limit)",
                Permission::PolicyRead,
                None,
                (200, "{decisions, next}"),
            ),
        ],
    )
}
