//! What a tool call costs by the tool's cost model: `perInvocation` plus
//! `perInputUnit` for each unit of the arguments sent.

use mesh_types::ToolCostModel;
use serde::Serialize;
use serde_json::Value;

/// The cost of one call, as recorded on its `tool_call` event and in the reply.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cost {
    pub amount: f64,
    pub currency: String,
    /// Input units counted (1 when the unit type is not one the mesh measures).
    pub units: u64,
}

/// The cost of sending `arguments` to a tool with `model`; nothing without a model.
pub fn cost_of(model: Option<&ToolCostModel>, arguments: &Value) -> Cost {
    let Some(model) = model else {
        return Cost {
            amount: 0.0,
            currency: "USD".to_string(),
            units: 0,
        };
    };
    let units = input_units(model.input_unit_type.as_deref(), arguments);
    let amount = model.per_invocation + model.per_input_unit * units as f64;
    Cost {
        // Rounded to a billionth so that 0.001 + 3 × 0.0001 reads 0.0013, not 0.0013000000000000002.
        amount: (amount * 1e9).round() / 1e9,
        currency: model.currency.clone(),
        units,
    }
}

/// `bytes`: the arguments' serialized size; `tokens`: whitespace-separated words of
/// their JSON text (a tokenizer-free stand-in); any other unit counts the call once.
fn input_units(unit: Option<&str>, arguments: &Value) -> u64 {
    let text = || serde_json::to_string(arguments).unwrap_or_default();
    match unit {
        Some("bytes") => text().len() as u64,
        Some("tokens") => text().split_whitespace().count() as u64,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model(unit: Option<&str>) -> ToolCostModel {
        ToolCostModel {
            per_invocation: 0.001,
            per_input_unit: 0.0001,
            input_unit_type: unit.map(str::to_string),
            currency: "EUR".to_string(),
        }
    }

    #[test]
    fn units_follow_the_unit_type() {
        let args = json!({"query": "three little words"});
        let text = serde_json::to_string(&args).unwrap();
        let bytes = cost_of(Some(&model(Some("bytes"))), &args);
        assert_eq!(bytes.units, text.len() as u64);
        assert!((bytes.amount - (0.001 + 0.0001 * text.len() as f64)).abs() < 1e-12);
        assert_eq!(bytes.currency, "EUR");
        let tokens = cost_of(Some(&model(Some("tokens"))), &args);
        assert_eq!(tokens.units, 3, "{text}");
        assert_eq!(tokens.amount, 0.0013);
        let rows = cost_of(Some(&model(Some("rows"))), &args);
        assert_eq!((rows.units, rows.amount), (1, 0.0011));
        let free = cost_of(None, &args);
        assert_eq!((free.amount, free.units), (0.0, 0));
    }
}
