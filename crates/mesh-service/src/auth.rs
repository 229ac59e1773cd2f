//! Bearer API keys: generation, hashing, lookup, and the per-route permission guard.
//!
//! Keys are 256-bit random strings shown once; the store keeps only their SHA-256
//! (a fast hash is right here: the keys carry full entropy, so there is nothing to
//! brute-force). Every 401 and 403 is appended to the provenance log.

use crate::{ApiError, ServiceName};
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header::AUTHORIZATION};
use axum::response::{IntoResponse, Response};
use mesh_store::{ApiKeyRecord, Store, StoreError};
use mesh_types::{EventDraft, Permission, Principal, Role};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a verified key is trusted without asking the store again. Bounds how long a
/// revocation made by another process takes to bite.
const CACHE_TTL: Duration = Duration::from_secs(5);
const KEY_PREFIX: &str = "mesh_";

/// An authenticated request's principal and the key it presented (forwarded when a
/// service calls another on the caller's behalf).
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub token: String,
}

impl Caller {
    /// The name recorded as the actor of provenance events.
    pub fn actor(&self) -> &str {
        &self.principal.name
    }
}

pub struct Authenticator {
    store: Store,
    service: ServiceName,
    cache: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl Authenticator {
    pub fn new(store: Store, service: ServiceName) -> Self {
        Self {
            store,
            service,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// A layer that lets a request through only with a key whose roles grant `permission`.
    pub fn require(self: &Arc<Self>, permission: Permission) -> RequirePermission {
        RequirePermission {
            auth: self.clone(),
            permission,
        }
    }

    /// Forgets cached keys, e.g. after a revocation in this process.
    pub fn clear_cache(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }

    async fn principal_for(&self, token: &str) -> Result<Option<Principal>, StoreError> {
        let hash = hash_key(token);
        if let Ok(cache) = self.cache.lock()
            && let Some((principal, at)) = cache.get(&hash)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(Some(principal.clone()));
        }
        let Some(record) = self.store.keys.find_key(&hash).await? else {
            return Ok(None);
        };
        let principal = principal_of(&record);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(hash, (principal.clone(), Instant::now()));
        }
        Ok(Some(principal))
    }

    /// Authenticates and authorises one request, recording a denial if there is one.
    pub async fn check(
        &self,
        method: &str,
        path: &str,
        headers: &HeaderMap,
        permission: Permission,
    ) -> Result<Caller, ApiError> {
        let token = match bearer_token(headers) {
            Ok(token) => token,
            Err(reason) => {
                return Err(self.deny(method, path, None, permission, 401, reason).await);
            }
        };
        let principal = match self.principal_for(token).await {
            Ok(Some(principal)) => principal,
            Ok(None) => {
                return Err(self
                    .deny(
                        method,
                        path,
                        None,
                        permission,
                        401,
                        "unknown or revoked API key",
                    )
                    .await);
            }
            Err(err) => return Err(err.into()),
        };
        if !principal.may(permission) {
            return Err(self
                .deny(
                    method,
                    path,
                    Some(&principal),
                    permission,
                    403,
                    "the key's roles do not grant this permission",
                )
                .await);
        }
        Ok(Caller {
            principal,
            token: token.to_string(),
        })
    }

    async fn deny(
        &self,
        method: &str,
        path: &str,
        principal: Option<&Principal>,
        permission: Permission,
        status: u16,
        reason: &str,
    ) -> ApiError {
        let actor = principal.map(|p| p.name.as_str()).unwrap_or("anonymous");
        let event = EventDraft::new(
            "auth_denied",
            actor,
            "request",
            Some(format!("{method} {path}")),
        )
        .payload(json!({
            "status": status,
            "reason": reason,
            "permission": permission.as_str(),
            "service": self.service.as_str(),
            "keyId": principal.map(|p| p.key_id),
            "roles": principal.map(|p| p.roles.clone()),
        }));
        if let Err(err) = self.store.provenance.append(vec![event]).await {
            tracing::error!(error = %err, "could not record an authorisation denial");
        }
        if status == 401 {
            ApiError::unauthorized(format!(
                "{reason}; send `Authorization: Bearer <key>` or `x-api-key: <key>` (create one with `mesh keys create`)"
            ))
        } else {
            ApiError::forbidden(format!(
                "{reason}: `{}` requires permission {}",
                principal.map(|p| p.name.as_str()).unwrap_or(actor),
                permission.as_str()
            ))
        }
    }
}

/// The key from `Authorization: Bearer <key>`, or from `x-api-key: <key>` as
/// Anthropic's clients send it.
fn bearer_token(headers: &HeaderMap) -> Result<&str, &'static str> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        let key = headers
            .get("x-api-key")
            .ok_or("missing API key")?
            .to_str()
            .map_err(|_| "malformed x-api-key header")?
            .trim();
        return if key.is_empty() {
            Err("malformed x-api-key header")
        } else {
            Ok(key)
        };
    };
    let value = value
        .to_str()
        .map_err(|_| "malformed Authorization header")?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or("malformed Authorization header")?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err("malformed Authorization header");
    }
    Ok(token.trim())
}

pub fn principal_of(record: &ApiKeyRecord) -> Principal {
    Principal {
        key_id: record.id,
        name: record.name.clone(),
        roles: record.roles.clone(),
        tenant: record.tenant.clone(),
    }
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A fresh key: `mesh_` and 64 hex digits from the OS's random source.
pub fn generate_key() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::internal(format!("no randomness for a key: {e}")))?;
    Ok(format!("{KEY_PREFIX}{}", hex::encode(bytes)))
}

/// What a new key is for.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    pub roles: Vec<Role>,
    #[serde(default = "default_tenant")]
    pub tenant: String,
}

pub fn default_tenant() -> String {
    "default".to_string()
}

impl NewKey {
    fn validate(&self) -> Result<(), ApiError> {
        mesh_types::validate::text("name", &self.name, 128)?;
        mesh_types::validate::text("tenant", &self.tenant, 128)?;
        if self.roles.is_empty() {
            return Err(ApiError::invalid(
                "roles",
                "roles: at least one role is required",
            ));
        }
        Ok(())
    }

    fn record(&self, key: &str) -> ApiKeyRecord {
        ApiKeyRecord {
            id: Uuid::now_v7(),
            name: self.name.clone(),
            key_hash: hash_key(key),
            roles: self.roles.clone(),
            tenant: self.tenant.clone(),
            created_at: mesh_types::time::now(),
            revoked: false,
        }
    }
}

fn key_created(actor: &str, record: &ApiKeyRecord) -> EventDraft {
    EventDraft::new("key_created", actor, "api_key", Some(record.id.to_string())).payload(json!({
        "name": record.name,
        "roles": record.roles,
        "tenant": record.tenant,
    }))
}

/// Creates a key; returns the key itself (shown once) and its record.
pub async fn create_key(
    store: &Store,
    actor: &str,
    new: NewKey,
) -> Result<(String, ApiKeyRecord), ApiError> {
    new.validate()?;
    let key = generate_key()?;
    let record = new.record(&key);
    store
        .keys
        .insert_key(&record, vec![key_created(actor, &record)])
        .await?;
    Ok((key, record))
}

/// Creates an admin key if the store has no key at all; returns it if it did.
pub async fn bootstrap_admin_key(store: &Store) -> Result<Option<String>, ApiError> {
    let new = NewKey {
        name: "bootstrap-admin".to_string(),
        roles: vec![Role::Admin],
        tenant: default_tenant(),
    };
    let key = generate_key()?;
    let record = new.record(&key);
    let created = store
        .keys
        .insert_first_key(&record, vec![key_created("system", &record)])
        .await?;
    Ok(created.then_some(key))
}

pub async fn revoke_key(store: &Store, actor: &str, id: Uuid) -> Result<ApiKeyRecord, ApiError> {
    let event = EventDraft::new("key_revoked", actor, "api_key", Some(id.to_string()));
    Ok(store.keys.revoke_key(id, vec![event]).await?)
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::internal("route is missing its permission guard"))
    }
}

/// Tower layer guarding one route with one permission.
#[derive(Clone)]
pub struct RequirePermission {
    auth: Arc<Authenticator>,
    permission: Permission,
}

impl<S> tower::Layer<S> for RequirePermission {
    type Service = Guarded<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            inner,
            auth: self.auth.clone(),
            permission: self.permission,
        }
    }
}

#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    auth: Arc<Authenticator>,
    permission: Permission,
}

impl<S> tower::Service<Request> for Guarded<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        // Take the service that was polled ready; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        let permission = self.permission;
        Box::pin(async move {
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            match auth.check(&method, &path, req.headers(), permission).await {
                Ok(caller) => {
                    req.extensions_mut().insert(caller);
                    inner.call(req).await
                }
                Err(err) => Ok(err.into_response()),
            }
        })
    }
}
