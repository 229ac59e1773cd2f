//! Agent Cards: the discovery document an A2A server publishes at
//! `/.well-known/agent-card.json`, and the checks an imported card must pass.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

pub const WELL_KNOWN_CARD_PATH: &str = ".well-known/agent-card.json";
/// The protocol binding the mesh speaks.
pub const JSONRPC_BINDING: &str = "JSONRPC";
/// The protocol version the mesh serves and expects (any 1.x interface is accepted).
pub const PROTOCOL_VERSION: &str = "1.0";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCard {
    pub name: String,
    pub description: String,
    /// In order of preference.
    pub supported_interfaces: Vec<AgentInterface>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<AgentProvider>,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documentation_url: Option<String>,
    pub capabilities: AgentCapabilities,
    /// Kept as given: the mesh reads no security scheme, it only serves its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_schemes: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_requirements: Vec<Value>,
    pub default_input_modes: Vec<String>,
    pub default_output_modes: Vec<String>,
    pub skills: Vec<AgentSkill>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentInterface {
    pub url: String,
    /// `JSONRPC`, `GRPC`, `HTTP+JSON`, or another binding's name.
    pub protocol_binding: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub protocol_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentProvider {
    pub url: String,
    pub organization: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCapabilities {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_notifications: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_agent_card: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSkill {
    pub id: String,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_modes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_modes: Vec<String>,
}

/// Why a card was refused: the field (a JSON path such as `skills[0].tags`) and what
/// is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardError {
    pub field: String,
    pub message: String,
}

impl CardError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for CardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for CardError {}

/// Parses and checks an Agent Card. Required fields must be present and non-empty
/// (the specification: a required array holds at least one element); unknown fields
/// are ignored, as the specification asks.
pub fn parse_card(bytes: &[u8]) -> Result<AgentCard, CardError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| CardError::new("", format!("the Agent Card is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(CardError::new("", "the Agent Card is not a JSON object"));
    }
    let card: AgentCard = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        CardError::new(field, e.into_inner().to_string())
    })?;
    card.validate()?;
    Ok(card)
}

fn required(field: &str, value: &str) -> Result<(), CardError> {
    if value.trim().is_empty() {
        return Err(CardError::new(field, "is required and must not be empty"));
    }
    Ok(())
}

fn non_empty<T>(field: &str, items: &[T]) -> Result<(), CardError> {
    if items.is_empty() {
        return Err(CardError::new(field, "must list at least one entry"));
    }
    Ok(())
}

impl AgentCard {
    fn validate(&self) -> Result<(), CardError> {
        required("name", &self.name)?;
        required("description", &self.description)?;
        required("version", &self.version)?;
        non_empty("supportedInterfaces", &self.supported_interfaces)?;
        for (i, iface) in self.supported_interfaces.iter().enumerate() {
            let at = |f: &str| format!("supportedInterfaces[{i}].{f}");
            required(&at("url"), &iface.url)?;
            required(&at("protocolBinding"), &iface.protocol_binding)?;
            required(&at("protocolVersion"), &iface.protocol_version)?;
            let url = reqwest::Url::parse(&iface.url)
                .map_err(|e| CardError::new(at("url"), format!("is not an absolute URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(CardError::new(at("url"), "must be an http or https URL"));
            }
        }
        non_empty("defaultInputModes", &self.default_input_modes)?;
        non_empty("defaultOutputModes", &self.default_output_modes)?;
        non_empty("skills", &self.skills)?;
        for (i, skill) in self.skills.iter().enumerate() {
            let at = |f: &str| format!("skills[{i}].{f}");
            required(&at("id"), &skill.id)?;
            required(&at("name"), &skill.name)?;
            required(&at("description"), &skill.description)?;
            non_empty(&at("tags"), &skill.tags)?;
        }
        Ok(())
    }

    /// The interface the mesh talks to: the first (most preferred) JSON-RPC interface
    /// of protocol version 1.x.
    pub fn jsonrpc_interface(&self) -> Result<&AgentInterface, CardError> {
        self.supported_interfaces
            .iter()
            .find(|i| {
                i.protocol_binding.eq_ignore_ascii_case(JSONRPC_BINDING)
                    && (i.protocol_version == "1" || i.protocol_version.starts_with("1."))
            })
            .ok_or_else(|| {
                let offered: Vec<String> = self
                    .supported_interfaces
                    .iter()
                    .map(|i| format!("{} {}", i.protocol_binding, i.protocol_version))
                    .collect();
                CardError::new(
                    "supportedInterfaces",
                    format!(
                        "no JSONRPC interface of protocol version 1.x (the card offers {})",
                        offered.join(", ")
                    ),
                )
            })
    }
}

/// Where the card of the agent at `url` is: `url` itself when it names a `.json`
/// document, else `.well-known/agent-card.json` under it (under its path, so agents
/// served below a path prefix, as the mesh serves its own, resolve too).
pub fn card_url(url: &str) -> Result<reqwest::Url, CardError> {
    let mut parsed = reqwest::Url::parse(url.trim())
        .map_err(|e| CardError::new("url", format!("is not an absolute URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(CardError::new("url", "must be an http or https URL"));
    }
    if parsed.path().ends_with(".json") {
        return Ok(parsed);
    }
    let path = format!(
        "{}/{WELL_KNOWN_CARD_PATH}",
        parsed.path().trim_end_matches('/')
    );
    parsed.set_path(&path);
    parsed.set_query(None);
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "name": "GeoSpatial Route Planner Agent",
            "description": "Plans routes.",
            "supportedInterfaces": [
                {"url": "https://geo.example.com/a2a/grpc", "protocolBinding": "GRPC", "protocolVersion": "1.0"},
                {"url": "https://geo.example.com/a2a/v1", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
            ],
            "provider": {"organization": "Example Geo Services Inc.", "url": "https://www.example.com"},
            "version": "1.2.0",
            "capabilities": {"streaming": true, "pushNotifications": true, "stateTransitionHistory": false},
            "securitySchemes": {"google": {"openIdConnectSecurityScheme": {"openIdConnectUrl": "https://accounts.google.com/.well-known/openid-configuration"}}},
            "defaultInputModes": ["application/json", "text/plain"],
            "defaultOutputModes": ["application/json"],
            "skills": [{
                "id": "route-optimizer-traffic", "name": "Route optimizer",
                "description": "Calculates routes.", "tags": ["maps", "routing"],
                "examples": ["Plan a route"], "inputModes": ["application/json"]
            }],
            "iconUrl": "https://geo.example.com/icon.png"
        })
    }

    fn parse(value: &Value) -> Result<AgentCard, CardError> {
        parse_card(value.to_string().as_bytes())
    }

    #[test]
    fn the_specifications_sample_parses_and_picks_the_jsonrpc_interface() {
        let card = parse(&sample()).unwrap();
        assert_eq!(card.skills[0].tags, ["maps", "routing"]);
        assert_eq!(card.capabilities.streaming, Some(true));
        let rpc = card.jsonrpc_interface().unwrap();
        assert_eq!(rpc.url, "https://geo.example.com/a2a/v1");
        let again: AgentCard =
            serde_json::from_value(serde_json::to_value(&card).unwrap()).unwrap();
        assert_eq!(again, card);
    }

    #[test]
    fn missing_or_empty_required_fields_are_named() {
        let cases = [
            (
                "/supportedInterfaces",
                "",
                "missing field `supportedInterfaces`",
            ),
            ("/skills/0/tags", "skills[0]", "missing field `tags`"),
            ("/version", "", "missing field `version`"),
        ];
        for (pointer, field, message) in cases {
            let mut card = sample();
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            card.pointer_mut(parent)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .remove(key);
            let err = parse(&card).unwrap_err();
            assert_eq!((err.field.as_str(), err.message.as_str()), (field, message));
        }
        let mut empty = sample();
        empty["skills"] = json!([]);
        assert_eq!(
            parse(&empty).unwrap_err().to_string(),
            "skills: must list at least one entry"
        );
        let mut blank = sample();
        blank["skills"][0]["tags"] = json!([]);
        assert_eq!(parse(&blank).unwrap_err().field, "skills[0].tags");
        let mut nameless = sample();
        nameless["name"] = json!(" ");
        assert_eq!(parse(&nameless).unwrap_err().field, "name");
        let mut wrong_type = sample();
        wrong_type["skills"][0]["tags"] = json!("maps");
        let err = parse(&wrong_type).unwrap_err();
        assert_eq!(err.field, "skills[0].tags");
        assert!(err.message.contains("invalid type"), "{err}");
        let mut relative = sample();
        relative["supportedInterfaces"][1]["url"] = json!("/a2a/v1");
        assert_eq!(
            parse(&relative).unwrap_err().field,
            "supportedInterfaces[1].url"
        );
    }

    #[test]
    fn what_is_not_a_card_says_so() {
        let err = parse_card(b"<html>not found</html>").unwrap_err();
        assert!(
            err.message.starts_with("the Agent Card is not JSON"),
            "{err}"
        );
        let err = parse_card(b"[1, 2]").unwrap_err();
        assert_eq!(err.message, "the Agent Card is not a JSON object");
    }

    #[test]
    fn a_card_without_a_jsonrpc_1x_interface_is_refused_by_name() {
        let mut card = sample();
        card["supportedInterfaces"] = json!([
            {"url": "https://x.example.com/rpc", "protocolBinding": "JSONRPC", "protocolVersion": "0.3"},
            {"url": "https://x.example.com/grpc", "protocolBinding": "GRPC", "protocolVersion": "1.0"}
        ]);
        let err = parse(&card).unwrap().jsonrpc_interface().unwrap_err();
        assert!(err.message.contains("JSONRPC 0.3, GRPC 1.0"), "{err}");
    }

    #[test]
    fn card_urls_resolve_from_a_base_or_stay_as_given() {
        let cases = [
            (
                "http://127.0.0.1:9000",
                "http://127.0.0.1:9000/.well-known/agent-card.json",
            ),
            (
                "http://h/a2a/agents/7/",
                "http://h/a2a/agents/7/.well-known/agent-card.json",
            ),
            ("http://h/cards/x.json", "http://h/cards/x.json"),
        ];
        for (given, resolved) in cases {
            assert_eq!(card_url(given).unwrap().as_str(), resolved);
        }
        assert_eq!(card_url("ftp://h/x").unwrap_err().field, "url");
        assert_eq!(card_url("not a url").unwrap_err().field, "url");
    }
}
