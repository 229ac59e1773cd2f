//! The `secret.read` decision on a caller naming a secret for something the registry
//! will connect to (an MCP server's headers or environment, an A2A agent's token):
//! whoever names a secret must be allowed to read it, or naming it would leak it.

use mesh_policy::{Enforcer, Point};
use mesh_service::{ApiError, ServiceName};
use mesh_types::{EventDraft, Principal};
use serde_json::Value;

/// Admits `caller` using `secret` for `used_by` (what will use it, for the policy and
/// the log); the decision's audit event, or the refusal.
pub(crate) async fn admit(
    policy: &Enforcer,
    service: &ServiceName,
    caller: &Principal,
    secret: &str,
    used_by: Value,
) -> Result<EventDraft, ApiError> {
    let resource = mesh_policy::Resource {
        kind: Some("secret".into()),
        id: Some(secret.to_string()),
        classification: Some("restricted".into()),
        attributes: serde_json::json!({ "usedBy": used_by }),
    };
    let ctx = mesh_policy::inputs::context(
        mesh_policy::inputs::principal(caller),
        resource,
        service.as_str(),
    );
    let verdict = policy
        .admit(
            Point::SecretRead,
            ctx,
            &mesh_policy::inputs::principal_actor(caller),
        )
        .await?;
    Ok(verdict.audit)
}
