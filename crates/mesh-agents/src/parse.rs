//! Reading the models' replies. Models are asked for JSON but do not always comply
//! (small local models least of all), so each reader falls back to the plain-text shape
//! a human would recognise.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Most steps a plan may have; more would fan out beyond what a review can follow.
pub const MAX_STEPS: usize = 8;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanStep {
    pub title: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub steps: Vec<PlanStep>,
}

/// Most steps the planner is asked for (its prompt says so too).
const ASKED_STEPS: usize = 5;

/// The `response_format` the planner asks for: the plan's JSON Schema.
pub fn plan_format() -> Value {
    let step = json!({
        "type": "object", "additionalProperties": false,
        "required": ["title", "description"],
        "properties": {"title": {"type": "string"}, "description": {"type": "string"}},
    });
    schema_format(
        "plan",
        json!({
            "type": "object", "additionalProperties": false, "required": ["steps"],
            "properties": {"steps": {"type": "array", "items": step,
                                     "minItems": 1, "maxItems": ASKED_STEPS}},
        }),
    )
}

/// The `response_format` the critic asks for: the verdict's JSON Schema.
pub fn verdict_format() -> Value {
    schema_format(
        "verdict",
        json!({
            "type": "object", "additionalProperties": false, "required": ["verdict", "notes"],
            "properties": {"verdict": {"type": "string", "enum": ["approve", "reject"]},
                           "notes": {"type": "string"}},
        }),
    )
}

fn schema_format(name: &str, schema: Value) -> Value {
    json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema}})
}

/// A plan from `{"steps": [{title, description}]}` anywhere in the reply, else from its
/// numbered or bulleted lines; `None` if neither yields a step.
pub fn parse_plan(reply: &str) -> Option<Plan> {
    if let Some(value) = first_json_object(reply)
        && let Some(steps) = value.get("steps").and_then(Value::as_array)
    {
        let steps: Vec<PlanStep> = steps
            .iter()
            .filter_map(|s| match s {
                Value::String(t) => Some(PlanStep {
                    title: t.trim().to_string(),
                    description: String::new(),
                }),
                _ => serde_json::from_value::<PlanStep>(s.clone()).ok(),
            })
            .filter(|s| !s.title.trim().is_empty())
            .take(MAX_STEPS)
            .collect();
        if !steps.is_empty() {
            return Some(Plan { steps });
        }
    }
    let steps: Vec<PlanStep> = reply
        .lines()
        .filter_map(list_item)
        .take(MAX_STEPS)
        .map(|title| PlanStep {
            title,
            description: String::new(),
        })
        .collect();
    (!steps.is_empty()).then_some(Plan { steps })
}

/// `1. text`, `2) text`, `- text`, `* text` → `text`.
fn list_item(line: &str) -> Option<String> {
    let line = line.trim();
    let rest = if let Some(rest) = line.strip_prefix("- ").or_else(|| line.strip_prefix("* ")) {
        rest
    } else {
        let digits = line.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        line[digits..]
            .strip_prefix(". ")
            .or_else(|| line[digits..].strip_prefix(") "))?
    };
    let text = rest.trim().trim_matches('*').trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// A critic's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub approved: bool,
    pub notes: String,
}

/// `{"verdict": "approve"|"reject", "notes"}`, else the first of the words approve /
/// reject in the text. A reply that says neither is `None`: the review is re-asked
/// rather than guessed.
pub fn parse_verdict(reply: &str) -> Option<Verdict> {
    if let Some(value) = first_json_object(reply)
        && let Some(verdict) = value.get("verdict").and_then(Value::as_str)
    {
        let notes = value
            .get("notes")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match verdict.to_ascii_lowercase().as_str() {
            "approve" | "approved" | "accept" => {
                return Some(Verdict {
                    approved: true,
                    notes,
                });
            }
            "reject" | "rejected" => {
                return Some(Verdict {
                    approved: false,
                    notes,
                });
            }
            _ => {}
        }
    }
    let lower = reply.to_ascii_lowercase();
    let approve = lower.find("approve");
    let reject = lower.find("reject");
    let approved = match (approve, reject) {
        (Some(a), Some(r)) => a < r,
        (Some(_), None) => true,
        (None, Some(_)) => false,
        (None, None) => return None,
    };
    Some(Verdict {
        approved,
        notes: reply.trim().to_string(),
    })
}

/// The first balanced `{…}` in `text` that parses as JSON (a reply may wrap its JSON
/// in prose or a code fence).
fn first_json_object(text: &str) -> Option<Value> {
    let bytes = text.as_bytes();
    let mut start = 0;
    while let Some(offset) = text[start..].find('{') {
        let open = start + offset;
        let (mut depth, mut in_string, mut escaped) = (0i32, false, false);
        for (i, &b) in bytes.iter().enumerate().skip(open) {
            if in_string {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        if let Ok(v) = serde_json::from_str::<Value>(&text[open..=i]) {
                            return Some(v);
                        }
                        break;
                    }
                }
                _ => {}
            }
        }
        start = open + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the prompt, a model that keeps to the requested schema (here `sim`,
    /// which generates a value for it) answers in a shape the readers take.
    #[test]
    fn replies_in_the_requested_schemas_parse() {
        let ask = |format: Value| {
            let request: mesh_gateway::ChatRequest = serde_json::from_value(json!({
                "model": "sim-small", "response_format": format,
                "messages": [{"role": "user", "content": "an unscripted prompt"}],
            }))
            .unwrap();
            mesh_gateway::sim::complete(&request, &Default::default()).content
        };
        let plan = parse_plan(&ask(plan_format())).expect("a plan");
        assert!((1..=ASKED_STEPS).contains(&plan.steps.len()));
        let verdict = parse_verdict(&ask(verdict_format())).expect("a verdict");
        assert!(verdict.approved, "the schema's first verdict is approve");
    }

    #[test]
    fn plans_come_from_json_or_lists() {
        let p = parse_plan("Sure!\n```json\n{\"steps\": [{\"title\": \"a\", \"description\": \"x {y}\"}, \"b\"]}\n```").unwrap();
        assert_eq!(p.steps.len(), 2);
        assert_eq!(p.steps[0].description, "x {y}");
        assert_eq!(p.steps[1].title, "b");
        let p = parse_plan("Plan:\n1. Read the file\n2) **Split it**\n- test it\nthanks").unwrap();
        let titles: Vec<_> = p.steps.iter().map(|s| s.title.as_str()).collect();
        assert_eq!(titles, ["Read the file", "Split it", "test it"]);
        assert!(parse_plan("I cannot help with that.").is_none());
        assert!(parse_plan("{\"steps\": []}").is_none());
    }

    #[test]
    fn verdicts_come_from_json_or_words() {
        let v = parse_verdict("{\"verdict\": \"reject\", \"notes\": \"add tests\"}").unwrap();
        assert!(!v.approved);
        assert_eq!(v.notes, "add tests");
        assert!(parse_verdict("Looks good, I approve.").unwrap().approved);
        assert!(
            !parse_verdict("I reject this; approve after fixes")
                .unwrap()
                .approved
        );
        assert!(parse_verdict("hmm").is_none());
    }
}
