//! What every mesh service shares.
//!
//! Error bodies, JSON and path extraction with 400s that name the field, bearer-key
//! authentication and the permission guard (which records every denial in the
//! provenance log), Prometheus metrics, health and readiness, OpenAPI documents,
//! serving with graceful drain, and the HTTP client services use to reach each other in
//! split mode. Service crates build on this; it must never know about any one service's
//! domain.

pub mod auth;
pub mod buckets;
pub mod client;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod openapi;
pub mod secrets;
pub mod server;
pub mod services;

pub use auth::{Authenticator, Caller, RequirePermission};
pub use client::HttpClient;
pub use error::ApiError;
pub use extract::{IdPath, JsonBody, QueryParams};
pub use metrics::Metrics;
pub use secrets::SecretDir;
pub use server::{Readiness, ServiceContext};
pub use services::ServiceName;
