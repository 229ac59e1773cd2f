//! routing-gateway (port 5001): model routing, providers, resilience and budgets. This foundation serves the common endpoints only; providers, routing and the OpenAI/Anthropic ingress arrive with the gateway issue.

use axum::Router;
use mesh_service::openapi::document;
use mesh_service::{ServiceContext, ServiceName};

pub fn router(ctx: &ServiceContext) -> Router {
    mesh_service::server::finish_router(
        ctx,
        Router::new(),
        document(ServiceName::RoutingGateway, &[]),
    )
}
