//! events-bus (port 5006): pub/sub for agent communication. This foundation serves the common endpoints only; topics, backends and SSE arrive with the queue and bus issue.

use axum::Router;
use mesh_service::openapi::document;
use mesh_service::{ServiceContext, ServiceName};

pub fn router(ctx: &ServiceContext) -> Router {
    mesh_service::server::finish_router(ctx, Router::new(), document(ServiceName::EventsBus, &[]))
}
