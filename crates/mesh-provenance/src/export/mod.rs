//! Exports of one task's provenance for tools outside the mesh: W3C PROV-JSON, openCypher
//! statements that rebuild the seed's graph model, and the raw events as JSON lines.

pub mod cypher;
mod prov_json;

pub use prov_json::document as prov_json;

use crate::TaskProvenance;
use mesh_types::ProvenanceEvent;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// The W3C PROV-JSON member submission's document shape.
    ProvJson,
    /// openCypher `MERGE` statements, one per line.
    Cypher,
    /// The task tree's provenance events, one JSON object per line.
    Jsonl,
}

impl ExportFormat {
    pub const NAMES: &'static str = "prov-json, cypher or jsonl";

    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::ProvJson => "prov-json",
            ExportFormat::Cypher => "cypher",
            ExportFormat::Jsonl => "jsonl",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::ProvJson => "application/json",
            ExportFormat::Cypher => "text/plain; charset=utf-8",
            ExportFormat::Jsonl => "application/x-ndjson",
        }
    }
}

impl FromStr for ExportFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "prov-json" => Ok(ExportFormat::ProvJson),
            "cypher" => Ok(ExportFormat::Cypher),
            "jsonl" => Ok(ExportFormat::Jsonl),
            other => Err(format!(
                "unknown export format `{other}`: expected {}",
                Self::NAMES
            )),
        }
    }
}

/// Renders a task's provenance (`p`, projected from `events`) in `format`.
pub fn render(
    format: ExportFormat,
    p: &TaskProvenance,
    events: &[ProvenanceEvent],
) -> Result<String, serde_json::Error> {
    Ok(match format {
        ExportFormat::ProvJson => {
            let mut text = serde_json::to_string_pretty(&prov_json(p))?;
            text.push('\n');
            text
        }
        ExportFormat::Cypher => {
            let mut text = String::new();
            for statement in cypher::statements(&p.graph) {
                text.push_str(&statement);
                text.push_str(";\n");
            }
            text
        }
        ExportFormat::Jsonl => {
            let mut text = String::new();
            for event in events {
                text.push_str(&serde_json::to_string(event)?);
                text.push('\n');
            }
            text
        }
    })
}
