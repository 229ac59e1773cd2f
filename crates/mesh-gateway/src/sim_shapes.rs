//! What `sim` makes of a request's structure: a tool call when the request's tools and
//! `tool_choice` call for one, and JSON when `response_format` asks for it, with values
//! generated from the JSON Schema given. Clients that drive tools or parse structured
//! output run offline against `sim` the way they would against a real model; the values
//! are deterministic filler, valid for the schema's common keywords.

use crate::chat::ChatRequest;
use serde_json::{Map, Value, json};

/// How deep generated values nest before giving up on a (possibly recursive) schema.
const MAX_DEPTH: usize = 8;

/// Filler words, handed out in turn, for generated strings.
pub(crate) struct Filler<'a> {
    words: &'a [&'a str],
    next: usize,
}

impl<'a> Filler<'a> {
    pub(crate) fn new(words: &'a [&'a str]) -> Self {
        Self { words, next: 0 }
    }

    fn word(&mut self) -> &'a str {
        let word = self.words.get(self.next % self.words.len().max(1));
        self.next += 1;
        word.copied().unwrap_or("sim")
    }
}

/// The function `sim` calls, if any. `tool_choice` decides: `none` never calls, a named
/// function is always called, `required` calls the function the last user message names
/// (else the first). Left to the model (`auto`, or absent), `sim` calls a function only
/// when the last message is the user's and names it — a tool's result gets an answer.
pub(crate) fn chosen_tool(request: &ChatRequest) -> Option<&Map<String, Value>> {
    let functions: Vec<&Map<String, Value>> = request
        .extra
        .get("tools")?
        .as_array()?
        .iter()
        .filter(|t| t.get("type").and_then(Value::as_str).unwrap_or("function") == "function")
        .filter_map(|t| t.get("function")?.as_object())
        .filter(|f| f.get("name").is_some_and(Value::is_string))
        .collect();
    let name = |f: &Map<String, Value>| f["name"].as_str().unwrap_or_default().to_string();
    let last = request.messages.last()?;
    let named_in_prompt = || {
        let text = last.text().to_lowercase();
        (last.role == "user")
            .then(|| {
                functions.iter().copied().find(|f| {
                    let n = name(f).to_lowercase();
                    text.contains(&n) || text.contains(&n.replace('_', " "))
                })
            })
            .flatten()
    };
    match request.extra.get("tool_choice") {
        Some(Value::String(choice)) if choice == "none" => None,
        Some(Value::String(choice)) if choice == "required" => {
            named_in_prompt().or_else(|| functions.first().copied())
        }
        Some(Value::Object(choice)) => {
            let wanted = choice.get("function")?.get("name")?.as_str()?;
            functions.into_iter().find(|f| name(f) == wanted)
        }
        _ => named_in_prompt(),
    }
}

/// The arguments `sim` passes to `function`: a value for its `parameters` schema.
pub(crate) fn arguments(function: &Map<String, Value>, fill: &mut Filler) -> Value {
    match function.get("parameters") {
        Some(schema) if schema.is_object() => value_for(schema, schema, fill, 0),
        _ => json!({}),
    }
}

/// The JSON reply `response_format` asks for, if it asks for one: `json_object` gets
/// `{"answer": …}`, `json_schema` a value for its schema.
pub(crate) fn json_reply(request: &ChatRequest, fill: &mut Filler) -> Option<Value> {
    let format = request.extra.get("response_format")?;
    match format.get("type")?.as_str()? {
        "json_object" => {
            Some(json!({"answer": (0..6).map(|_| fill.word()).collect::<Vec<_>>().join(" ")}))
        }
        "json_schema" => Some(match format.pointer("/json_schema/schema") {
            Some(schema) if schema.is_object() => value_for(schema, schema, fill, 0),
            _ => json!({"answer": fill.word()}),
        }),
        _ => None,
    }
}

/// A value valid for `schema` (its common keywords: `$ref` into the root's `$defs`,
/// `const`, `enum`, `default`, `anyOf`/`oneOf`/`allOf`, `type`, `properties` and
/// `required`, `items` and `minItems`, string lengths and numeric bounds).
fn value_for(schema: &Value, root: &Value, fill: &mut Filler, depth: usize) -> Value {
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    if let Some(target) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|pointer| root.pointer(pointer))
    {
        return value_for(target, root, fill, depth + 1);
    }
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    if let Some(value) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return value.clone();
    }
    if let Some(value) = schema.get("default") {
        return value.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema
            .get(key)
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            return value_for(first, root, fill, depth + 1);
        }
    }
    match schema_type(schema) {
        "object" => {
            let empty = Map::new();
            let properties = schema
                .get("properties")
                .and_then(Value::as_object)
                .unwrap_or(&empty);
            let required: Vec<&str> = match schema.get("required").and_then(Value::as_array) {
                Some(names) => names.iter().filter_map(Value::as_str).collect(),
                None => properties.keys().map(String::as_str).collect(),
            };
            let mut out = Map::new();
            for name in required {
                let value = match properties.get(name) {
                    Some(property) => value_for(property, root, fill, depth + 1),
                    None => Value::String(fill.word().into()),
                };
                out.insert(name.to_string(), value);
            }
            Value::Object(out)
        }
        "array" => {
            let count = schema
                .get("minItems")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .min(16);
            let items = schema.get("items").cloned().unwrap_or(json!({}));
            Value::Array(
                (0..count)
                    .map(|_| value_for(&items, root, fill, depth + 1))
                    .collect(),
            )
        }
        "integer" => json!(bounded(schema, 1.0).ceil() as i64),
        "number" => json!(bounded(schema, 0.0)),
        "boolean" => Value::Bool(true),
        "null" => Value::Null,
        _ => {
            let mut text = fill.word().to_string();
            let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
            while text.len() < min {
                text.push(' ');
                text.push_str(fill.word());
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
                text.truncate(max as usize);
            }
            Value::String(text)
        }
    }
}

/// The schema's type: the first non-null one it names, else what its keywords imply.
fn schema_type(schema: &Value) -> &str {
    match schema.get("type") {
        Some(Value::String(t)) => t,
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ if schema.get("items").is_some() => "array",
        _ => "string",
    }
}

/// `preferred` moved inside the schema's `minimum`/`maximum` (exclusive bounds too).
fn bounded(schema: &Value, preferred: f64) -> f64 {
    let get = |k: &str| schema.get(k).and_then(Value::as_f64);
    let mut value = preferred;
    if let Some(min) = get("minimum") {
        value = value.max(min);
    }
    if let Some(min) = get("exclusiveMinimum") {
        value = value.max(min + 1.0);
    }
    if let Some(max) = get("maximum") {
        value = value.min(max);
    }
    if let Some(max) = get("exclusiveMaximum") {
        value = value.min(max - 1.0);
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Message;

    fn request(messages: &[(&str, &str)], extra: Value) -> ChatRequest {
        ChatRequest {
            model: "sim-small".into(),
            messages: messages
                .iter()
                .map(|(role, text)| Message {
                    role: (*role).into(),
                    content: json!(text),
                    extra: Default::default(),
                })
                .collect(),
            max_tokens: None,
            stream: None,
            extra: extra.as_object().cloned().unwrap_or_default(),
        }
    }

    fn tools() -> Value {
        json!([
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "send_email", "parameters": {"type": "object"}}},
        ])
    }

    fn chosen(req: &ChatRequest) -> Option<&str> {
        chosen_tool(req).and_then(|f| f["name"].as_str())
    }

    #[test]
    fn tool_choice_decides_which_function_is_called() {
        let auto = request(
            &[("user", "Please get weather for Oslo")],
            json!({"tools": tools()}),
        );
        assert_eq!(chosen(&auto), Some("get_weather"), "named in the prompt");
        let unnamed = request(&[("user", "hello")], json!({"tools": tools()}));
        assert_eq!(
            chosen(&unnamed),
            None,
            "auto calls only what the user names"
        );
        let answered = request(
            &[("user", "get_weather please"), ("tool", "3°C")],
            json!({"tools": tools()}),
        );
        assert_eq!(chosen(&answered), None, "a tool's result gets an answer");
        let required = request(
            &[("user", "hello")],
            json!({"tools": tools(), "tool_choice": "required"}),
        );
        assert_eq!(chosen(&required), Some("get_weather"));
        let named = request(
            &[("user", "weather")],
            json!({"tools": tools(), "tool_choice": {"type": "function", "function": {"name": "send_email"}}}),
        );
        assert_eq!(chosen(&named), Some("send_email"));
        let none = request(
            &[("user", "get_weather")],
            json!({"tools": tools(), "tool_choice": "none"}),
        );
        assert_eq!(chosen(&none), None);
    }

    #[test]
    fn generated_values_satisfy_their_schema() {
        let schema = json!({
            "type": "object",
            "required": ["city", "days", "unit", "tags", "when"],
            "properties": {
                "city": {"type": "string", "minLength": 12},
                "days": {"type": "integer", "minimum": 3, "maximum": 10},
                "unit": {"enum": ["celsius", "fahrenheit"]},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                "when": {"$ref": "#/$defs/When"},
                "optional": {"type": "boolean"}
            },
            "$defs": {"When": {"type": ["null", "object"], "properties": {"hour": {"type": "number", "exclusiveMaximum": 0}}}}
        });
        let words = ["alpha", "beta"];
        let value = value_for(&schema, &schema, &mut Filler::new(&words), 0);
        assert!(value["city"].as_str().unwrap().len() >= 12, "{value}");
        assert_eq!(value["days"], json!(3));
        assert_eq!(value["unit"], json!("celsius"));
        assert_eq!(value["tags"].as_array().unwrap().len(), 2);
        assert_eq!(value["when"]["hour"], json!(-1.0));
        assert!(value.get("optional").is_none(), "only required properties");
    }

    #[test]
    fn response_format_asks_for_json() {
        let words = ["alpha"];
        let object = request(
            &[("user", "x")],
            json!({"response_format": {"type": "json_object"}}),
        );
        assert!(json_reply(&object, &mut Filler::new(&words)).unwrap()["answer"].is_string());
        let schema = request(
            &[("user", "x")],
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}}}}}),
        );
        assert_eq!(
            json_reply(&schema, &mut Filler::new(&words)),
            Some(json!({"ok": true}))
        );
        let text = request(
            &[("user", "x")],
            json!({"response_format": {"type": "text"}}),
        );
        assert_eq!(json_reply(&text, &mut Filler::new(&words)), None);
    }
}
