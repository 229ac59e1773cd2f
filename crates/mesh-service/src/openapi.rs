//! A small OpenAPI 3.1 document builder: each service lists its operations.

use crate::ServiceName;
use mesh_types::Permission;
use serde_json::{Map, Value, json};

/// One operation of a service's API.
pub struct Op {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub permission: Option<Permission>,
    /// JSON Schema of the request body, if it takes one.
    pub request: Option<Value>,
    /// Success status and a description of what it returns.
    pub success: (u16, &'static str),
}

impl Op {
    /// An operation that requires `permission`.
    pub fn guarded(
        method: &'static str,
        path: &'static str,
        summary: &'static str,
        permission: Permission,
        request: Option<Value>,
        success: (u16, &'static str),
    ) -> Self {
        Op {
            permission: Some(permission),
            request,
            ..Op::open(method, path, summary, success)
        }
    }

    /// An operation anyone may call, without a key.
    pub fn open(
        method: &'static str,
        path: &'static str,
        summary: &'static str,
        success: (u16, &'static str),
    ) -> Self {
        Op {
            method,
            path,
            summary,
            permission: None,
            request: None,
            success,
        }
    }
}

/// `post` `/api/v1/tasks/{id}/cancel` → `post_api_v1_tasks_id_cancel`: unique per
/// operation, so client generators get stable method names.
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_string();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        id.push('_');
        id.extend(
            segment
                .chars()
                .filter(|c| !matches!(c, '{' | '}'))
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
        );
    }
    id
}

pub fn document(service: ServiceName, ops: &[Op]) -> Value {
    let mut paths = Map::new();
    for op in ops {
        let mut operation = json!({
            "operationId": operation_id(op.method, op.path),
            "summary": op.summary,
            "responses": {
                op.success.0.to_string(): {"description": op.success.1},
                "400": {"$ref": "#/components/responses/Error"},
                "401": {"$ref": "#/components/responses/Error"},
                "403": {"$ref": "#/components/responses/Error"},
            },
        });
        if let Some(perm) = op.permission {
            operation["security"] = json!([{"bearer": []}]);
            operation["x-mesh-permission"] = json!(perm.as_str());
        } else {
            operation["security"] = json!([]);
        }
        if let Some(schema) = &op.request {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": schema}},
            });
        }
        let params: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                // Ids are UUIDs; other segments (a tool's id or name, a topic) are text.
                let schema = if name == "id" || name.ends_with("Id") {
                    json!({"type": "string", "format": "uuid"})
                } else {
                    json!({"type": "string"})
                };
                json!({"name": name, "in": "path", "required": true, "schema": schema})
            })
            .collect();
        if !params.is_empty() {
            operation["parameters"] = Value::Array(params);
        }
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        entry[op.method] = operation;
    }
    for (path, summary) in [
        ("/healthz", "Liveness: the process is up."),
        (
            "/readyz",
            "Readiness: the service accepts work and its store answers.",
        ),
        ("/metrics", "Prometheus text metrics."),
        ("/openapi.json", "This document."),
    ] {
        paths.insert(
            path.to_string(),
            json!({"get": {"operationId": operation_id("get", path), "summary": summary,
                           "security": [], "responses": {"200": {"description": "OK"}}}}),
        );
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": format!("Agentic Mesh {}", service.as_str()),
            "description": service.purpose(),
            "version": env!("CARGO_PKG_VERSION"),
        },
        "servers": [{"url": format!("http://127.0.0.1:{}", service.default_port())}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {
                "description": "An error",
                "content": {"application/json": {"schema": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                            "field": {"type": ["string", "null"]},
                        },
                    }},
                }}},
            }},
        },
    })
}
