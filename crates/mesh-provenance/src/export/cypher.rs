//! openCypher for the seed's graph model. Every statement is a `MERGE`, so running the
//! same statements twice (an export loaded again, a projection replaying a batch after a
//! crash) leaves the graph as it was. Values are inlined as escaped literals rather than
//! parameters because FalkorDB and Bolt servers take parameters differently, and an
//! exported file must run as it is in `cypher-shell` or `redis-cli GRAPH.QUERY`.

use crate::{Edge, Graph, Node};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write;

/// The statements that build `graph`: nodes first (merged by `id`, their properties
/// set), then relationships (their ends merged by label and `id` again, so each
/// statement stands alone).
pub fn statements(graph: &Graph) -> Vec<String> {
    let labels: HashMap<&str, &'static str> = graph
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.label))
        .collect();
    let mut out: Vec<String> = graph.nodes.iter().map(node_statement).collect();
    for edge in &graph.edges {
        // The projection registers both ends of every edge; an edge whose end is not
        // among the nodes could only come from a hand-built graph and has no label to
        // merge its end by.
        if let (Some(from), Some(to)) =
            (labels.get(edge.from.as_str()), labels.get(edge.to.as_str()))
        {
            out.push(edge_statement(edge, from, to));
        }
    }
    out
}

/// `MERGE (n:Label {id: '…'}) SET n.key = value, …` (null properties are left alone).
pub fn node_statement(node: &Node) -> String {
    let mut s = format!(
        "MERGE (n:{} {{id: {}}})",
        node.label,
        string_literal(&node.id)
    );
    let mut first = true;
    if let Value::Object(props) = &node.properties {
        for (key, value) in props {
            if key == "id" {
                continue;
            }
            let Some(literal) = value_literal(value) else {
                continue;
            };
            s.push_str(if first { " SET " } else { ", " });
            first = false;
            let _ = write!(s, "n.{} = {literal}", identifier(key));
        }
    }
    s
}

/// `MERGE (a:From {id: …}) MERGE (b:To {id: …}) MERGE (a)-[:KIND]->(b)`.
pub fn edge_statement(edge: &Edge, from_label: &str, to_label: &str) -> String {
    format!(
        "MERGE (a:{from_label} {{id: {}}}) MERGE (b:{to_label} {{id: {}}}) MERGE (a)-[:{}]->(b)",
        string_literal(&edge.from),
        string_literal(&edge.to),
        edge.kind
    )
}

/// A single-quoted Cypher string literal: backslash, quote and control characters
/// escaped, so no input can end the literal early.
pub fn string_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A literal for a property value; `None` for null. Lists and maps are stored as their
/// JSON text: graph properties hold only scalars and lists of scalars.
fn value_literal(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(string_literal(s)),
        other => Some(string_literal(&other.to_string())),
    }
}

/// A property key, back-quoted unless it is a plain identifier.
fn identifier(key: &str) -> String {
    let plain = key
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    if plain && !key.is_empty() {
        key.to_string()
    } else {
        format!("`{}`", key.replace('`', "``"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn literals_cannot_escape_their_quotes() {
        assert_eq!(string_literal("it's"), r"'it\'s'");
        assert_eq!(string_literal(r"a\'b"), r"'a\\\'b'");
        assert_eq!(string_literal("x\ny\u{1}"), r"'x\ny\u0001'");
        assert_eq!(identifier("tokens_in"), "tokens_in");
        assert_eq!(identifier("a b`c"), "`a b``c`");
        assert_eq!(identifier("1x"), "`1x`");
    }

    #[test]
    fn nodes_and_edges_become_merges() {
        let graph = Graph {
            nodes: vec![
                Node {
                    id: "t1".into(),
                    label: "Task",
                    properties: json!({"id": "t1", "status": "queued", "type": null, "n": 2, "ok": true, "l": [1]}),
                },
                Node {
                    id: "a'1".into(),
                    label: "Agent",
                    properties: json!({"id": "a'1"}),
                },
            ],
            edges: vec![
                Edge {
                    from: "t1".into(),
                    to: "a'1".into(),
                    kind: "ASSIGNED_TO",
                },
                Edge {
                    from: "t1".into(),
                    to: "missing".into(),
                    kind: "SPAWNED",
                },
            ],
        };
        let s = statements(&graph);
        assert_eq!(
            s,
            vec![
                "MERGE (n:Task {id: 't1'}) SET n.l = '[1]', n.n = 2, n.ok = true, n.status = 'queued'",
                r"MERGE (n:Agent {id: 'a\'1'})",
                r"MERGE (a:Task {id: 't1'}) MERGE (b:Agent {id: 'a\'1'}) MERGE (a)-[:ASSIGNED_TO]->(b)",
            ]
        );
    }
}
