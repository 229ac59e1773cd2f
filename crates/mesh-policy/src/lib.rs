//! policy-enforcer (port 5002): OPA-compatible policy evaluation at every choke point. This foundation serves the common endpoints only; the Rego engine, Data API and enforcement points arrive with the policy issue.

use axum::Router;
use mesh_service::openapi::document;
use mesh_service::{ServiceContext, ServiceName};

pub fn router(ctx: &ServiceContext) -> Router {
    mesh_service::server::finish_router(
        ctx,
        Router::new(),
        document(ServiceName::PolicyEnforcer, &[]),
    )
}
