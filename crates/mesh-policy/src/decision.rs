//! The policy context an enforcement point hands to the policy, the decision it gets
//! back, and the transformations decisions ask for: redaction of the payload and
//! masking of decision logs.

use mesh_types::PolicyAction;
use mesh_types::time::{Timestamp, rfc3339_micros};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// What is being attempted, by whom, on what: the policy's `input`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyContext {
    /// The enforcement point, e.g. `tool.call`.
    pub action: String,
    #[serde(default)]
    pub subject: Value,
    #[serde(default)]
    pub resource: Resource,
    #[serde(default)]
    pub environment: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resource {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    #[serde(default)]
    pub attributes: Value,
}

/// How one redaction changes the value it targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Replace with `****`.
    Mask,
    /// Drop the field (or, with a pattern, the matched text).
    Remove,
    /// Replace with `sha256:<hex>`, so equal values stay joinable without being readable.
    Hash,
}

/// A redaction a policy asks for: `path` is a JSON pointer into the policy input
/// (`/resource/attributes/body`); with `pattern`, only matching text inside the strings
/// under `path` changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Redaction {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    pub strategy: Strategy,
}

/// What the enforcement point must do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub action: PolicyAction,
    pub reason: String,
    pub redactions: Vec<Redaction>,
    pub escalation_target: Option<String>,
    pub audit_required: bool,
    pub decision_id: Uuid,
    #[serde(with = "rfc3339_micros")]
    pub evaluated_at: Timestamp,
}

/// Reason given when evaluation itself failed and the point failed closed.
pub const POLICY_ERROR: &str = "policy_error";

/// The fields a policy's decision document may carry.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PolicyVerdict {
    action: PolicyAction,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    redactions: Vec<Redaction>,
    #[serde(default)]
    escalation_target: Option<String>,
    #[serde(default)]
    audit_required: bool,
}

impl Decision {
    pub fn new(action: PolicyAction, reason: impl Into<String>) -> Self {
        Self {
            action,
            reason: reason.into(),
            redactions: Vec::new(),
            escalation_target: None,
            audit_required: true,
            decision_id: Uuid::now_v7(),
            evaluated_at: mesh_types::time::now(),
        }
    }

    /// Fail closed: evaluation broke, so the answer is no.
    pub fn policy_error(detail: &str) -> Self {
        let mut d = Self::new(PolicyAction::Deny, POLICY_ERROR);
        d.escalation_target = None;
        tracing::warn!(detail, "policy evaluation failed; denying");
        d
    }

    /// Reads the policy's decision document. Undefined, or a document that is not a
    /// decision, is a policy error (deny): a point never guesses.
    pub fn from_policy(value: Option<Value>) -> Result<Self, String> {
        let value = value.ok_or("the decision rule is undefined for this input")?;
        let v: PolicyVerdict = serde_json::from_value(value)
            .map_err(|e| format!("the decision is not {{action, reason, …}}: {e}"))?;
        for r in &v.redactions {
            if let Some(p) = &r.pattern {
                compiled_pattern(p).map_err(|e| format!("redaction pattern {p:?}: {e}"))?;
            }
        }
        let mut d = Self::new(
            v.action,
            v.reason.unwrap_or_else(|| v.action.as_str().into()),
        );
        d.redactions = v.redactions;
        d.escalation_target = v.escalation_target;
        d.audit_required = v.audit_required;
        Ok(d)
    }

    pub fn permits(&self) -> bool {
        matches!(
            self.action,
            PolicyAction::Allow | PolicyAction::AllowWithRedactions
        )
    }
}

const MASK: &str = "****";

/// Patterns seen most recently, compiled once: policies return the same few patterns
/// for every decision, and compiling a regex costs far more than a decision.
fn compiled_pattern(pattern: &str) -> Result<std::sync::Arc<regex::Regex>, regex::Error> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    const LIMIT: usize = 256;
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<regex::Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(re) = cache.lock().ok().and_then(|c| c.get(pattern).cloned()) {
        return Ok(re);
    }
    let re = Arc::new(regex::Regex::new(pattern)?);
    if let Ok(mut c) = cache.lock() {
        if c.len() >= LIMIT {
            c.clear();
        }
        c.insert(pattern.to_string(), re.clone());
    }
    Ok(re)
}

/// Applies redactions to `doc` in order. A path that does not exist is skipped: the
/// policy may name optional fields.
pub fn redact(doc: &mut Value, redactions: &[Redaction]) -> Result<(), String> {
    for r in redactions {
        match &r.pattern {
            None => redact_value(doc, &r.path, r.strategy),
            Some(pattern) => {
                let re = compiled_pattern(pattern).map_err(|e| format!("{pattern:?}: {e}"))?;
                if let Some(target) = doc.pointer_mut(&r.path) {
                    redact_matches(target, &re, r.strategy);
                }
            }
        }
    }
    Ok(())
}

fn redact_value(doc: &mut Value, path: &str, strategy: Strategy) {
    match strategy {
        Strategy::Remove => {
            remove_pointer(doc, path);
        }
        Strategy::Mask | Strategy::Hash => {
            if let Some(target) = doc.pointer_mut(path) {
                *target = match strategy {
                    Strategy::Mask => json!(MASK),
                    _ => json!(hash_of(&target.to_string())),
                };
            }
        }
    }
}

fn redact_matches(value: &mut Value, re: &regex::Regex, strategy: Strategy) {
    match value {
        Value::String(s) => {
            let replaced = re.replace_all(s, |caps: &regex::Captures| match strategy {
                Strategy::Mask => MASK.to_string(),
                Strategy::Remove => String::new(),
                Strategy::Hash => hash_of(&caps[0]),
            });
            *s = replaced.into_owned();
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| redact_matches(v, re, strategy)),
        Value::Object(map) => map
            .values_mut()
            .for_each(|v| redact_matches(v, re, strategy)),
        _ => {}
    }
}

fn hash_of(text: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

/// Removes the value at a JSON pointer; the root cannot be removed.
pub fn remove_pointer(doc: &mut Value, path: &str) -> bool {
    let Some((parent, last)) = path.rsplit_once('/') else {
        return false;
    };
    let key = last.replace("~1", "/").replace("~0", "~");
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(&key).is_some(),
        Some(Value::Array(items)) => match key.parse::<usize>() {
            Ok(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// Field names whose values decision logs never keep, compared case-insensitively.
const CREDENTIAL_FIELDS: &[&str] = &[
    "password",
    "passwd",
    "apikey",
    "api_key",
    "token",
    "access_token",
    "secret",
    "client_secret",
    "authorization",
];

/// Removes credential-named fields at any depth. Decision logs run this on every input
/// before the policy's own mask, so a policy author cannot forget it. Says whether it
/// removed any.
pub fn strip_credentials(value: &mut Value) -> bool {
    let mut removed = false;
    match value {
        Value::Object(map) => {
            let before = map.len();
            map.retain(|k, _| {
                let k = k.to_ascii_lowercase();
                !CREDENTIAL_FIELDS.contains(&k.as_str())
            });
            removed = map.len() != before;
            for v in map.values_mut() {
                removed |= strip_credentials(v);
            }
        }
        Value::Array(items) => {
            for v in items {
                removed |= strip_credentials(v);
            }
        }
        _ => {}
    }
    removed
}

/// Applies OPA's `data.system.log.mask` output to a decision-log event: strings are
/// JSON pointers to remove; objects are `{"op": "remove"|"upsert", "path", "value"}`.
pub fn apply_mask(event: &mut Value, mask: &Value) {
    let ops: Vec<&Value> = match mask {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    for op in ops {
        match op {
            Value::String(path) => {
                remove_pointer(event, path);
            }
            Value::Object(o) => {
                let path = o.get("path").and_then(Value::as_str).unwrap_or_default();
                match o.get("op").and_then(Value::as_str) {
                    Some("upsert") => {
                        upsert_pointer(event, path, o.get("value").cloned().unwrap_or(Value::Null))
                    }
                    _ => {
                        remove_pointer(event, path);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Sets the value at a pointer, creating objects on the way (OPA's upsert).
fn upsert_pointer(doc: &mut Value, path: &str, value: Value) {
    let mut node = doc;
    let segments: Vec<String> = path
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    for segment in parents {
        if !node.is_object() {
            return;
        }
        node = match node {
            Value::Object(map) => map
                .entry(segment.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            _ => return,
        };
    }
    if let Value::Object(map) = node {
        map.insert(last.clone(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redactions_mask_remove_and_hash() {
        let mut doc = json!({"resource": {"attributes": {
            "email": "a@b.io", "token": "t", "note": "mail a@b.io or c@d.io", "id": 7
        }}});
        redact(
            &mut doc,
            &[
                Redaction {
                    path: "/resource/attributes/email".into(),
                    pattern: None,
                    strategy: Strategy::Hash,
                },
                Redaction {
                    path: "/resource/attributes/token".into(),
                    pattern: None,
                    strategy: Strategy::Remove,
                },
                Redaction {
                    path: "/resource/attributes".into(),
                    pattern: Some(r"[\w.]+@[\w.]+".into()),
                    strategy: Strategy::Mask,
                },
                Redaction {
                    path: "/resource/missing".into(),
                    pattern: None,
                    strategy: Strategy::Mask,
                },
            ],
        )
        .unwrap();
        let attrs = &doc["resource"]["attributes"];
        assert!(attrs["email"].as_str().unwrap().starts_with("sha256:"));
        assert!(attrs.get("token").is_none());
        assert_eq!(attrs["note"], "mail **** or ****");
        assert_eq!(attrs["id"], 7);
    }

    #[test]
    fn a_decision_must_be_well_formed() {
        assert!(Decision::from_policy(None).is_err());
        assert!(Decision::from_policy(Some(json!({"action": "maybe"}))).is_err());
        assert!(
            Decision::from_policy(Some(json!({"action": "allow_with_redactions",
            "redactions": [{"path": "/x", "pattern": "(", "strategy": "mask"}]})))
            .is_err()
        );
        let d = Decision::from_policy(Some(json!({"action": "escalate_to_human",
            "reason": "critical tool", "escalationTarget": "security"})))
        .unwrap();
        assert_eq!(d.action, PolicyAction::EscalateToHuman);
        assert_eq!(d.escalation_target.as_deref(), Some("security"));
        assert!(!d.permits());
    }

    #[test]
    fn credentials_are_stripped_at_any_depth() {
        let mut v = json!({"user": "u", "Password": "p", "nested": [{"apiKey": "k", "keep": 1}]});
        assert!(strip_credentials(&mut v));
        assert_eq!(v, json!({"user": "u", "nested": [{"keep": 1}]}));
        assert!(!strip_credentials(&mut v), "nothing left to strip");
    }

    #[test]
    fn masks_remove_and_upsert() {
        let mut event = json!({"input": {"password": "p", "user": "u"}, "result": true});
        apply_mask(
            &mut event,
            &json!(["/input/password", {"op": "upsert", "path": "/input/user", "value": "x"}]),
        );
        assert_eq!(event, json!({"input": {"user": "x"}, "result": true}));
    }
}
