//! Bad input is the caller's error on every route: each operation every service lists
//! in its `/openapi.json` gets malformed bodies, path parameters and query strings,
//! and must answer with a 4xx carrying a JSON error — never a 5xx, a dropped
//! connection or a hang. Routes added later are covered without editing this test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{MeshProcess, SERVICES};
use serde_json::Value;
use std::time::Duration;

/// Bodies no handler can take as they stand.
fn bad_bodies() -> Vec<Vec<u8>> {
    let nested = format!("{}{}", "[".repeat(300), "]".repeat(300));
    vec![
        b"{".to_vec(),
        b"[]".to_vec(),
        b"{}".to_vec(),
        b"null".to_vec(),
        b"1e999".to_vec(),
        br#"{"name": 5, "type": [], "input": "x", "url": 7, "id": {}, "messages": 3}"#.to_vec(),
        nested.into_bytes(),
        vec![0xff, 0xfe, 0x00],
        format!(r#"{{"a":"{}"}}"#, "x".repeat(300_000)).into_bytes(),
    ]
}

/// Values for `{param}` segments: an id that names nothing, one that is not an id,
/// a traversal attempt and a segment longer than any name.
fn bad_params() -> Vec<String> {
    vec![
        uuid::Uuid::now_v7().to_string(),
        "not-a-uuid".into(),
        "..%2F..%2Fetc%2Fpasswd".into(),
        "x".repeat(3000),
    ]
}

const BAD_QUERIES: [&str; 5] = [
    "?limit=-1",
    "?limit=abc",
    "?cursor=zzz&status=bogus",
    "?offset=-5&limit=99999999999999999999",
    "?input=%7Bnot-json",
];

/// Fills every `{name}` in an OpenAPI path template with `value`.
fn fill(template: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}').map(|e| start + e + 1).unwrap();
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_bad_input_with_a_client_error() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = MeshProcess::up(dir.path(), &[]);
    let key = mesh.admin_key.clone().unwrap();
    // A fresh connection per request: a server that answers before reading a large
    // body closes that connection, and a pooled client may already be sending the
    // next request on it (a client-side race, not an answer of the server's).
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let bodies = bad_bodies();
    let mut failures = Vec::new();
    let mut requests = 0;
    for service in SERVICES {
        let base = mesh.url(service);
        let spec: Value = http
            .get(format!("{base}/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for (template, ops) in spec["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                // A stream answers by staying open; its parameters are checked elsewhere.
                if method == "get" && template.contains("stream") {
                    continue;
                }
                let paths = if template.contains('{') {
                    bad_params().iter().map(|p| fill(template, p)).collect()
                } else {
                    vec![template.clone()]
                };
                for path in paths {
                    let mut attempts: Vec<(String, Option<Vec<u8>>)> = Vec::new();
                    match method.as_str() {
                        "post" | "put" | "patch" => {
                            for body in &bodies {
                                attempts.push((path.clone(), Some(body.clone())));
                            }
                        }
                        _ => {
                            attempts.push((path.clone(), None));
                            for q in BAD_QUERIES {
                                attempts.push((format!("{path}{q}"), None));
                            }
                        }
                    }
                    for (path, body) in attempts {
                        requests += 1;
                        let m =
                            reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                        let mut req = http
                            .request(m, format!("{base}{path}"))
                            .bearer_auth(&key)
                            .header("content-type", "application/json");
                        let shown_body = body
                            .as_ref()
                            .map(|b| String::from_utf8_lossy(&b[..b.len().min(40)]).into_owned());
                        if let Some(body) = body {
                            req = req.body(body);
                        }
                        let what = format!(
                            "{service} {} {}{}",
                            method.to_uppercase(),
                            &path[..path.len().min(100)],
                            shown_body
                                .map(|b| format!(" body {b:?}"))
                                .unwrap_or_default()
                        );
                        let reply = match req.send().await {
                            Ok(reply) => reply,
                            Err(e) => {
                                failures.push(format!("{what}: no answer ({e})"));
                                continue;
                            }
                        };
                        let status = reply.status();
                        let text = reply.bytes().await.unwrap_or_default();
                        if status.is_server_error() {
                            failures.push(format!(
                                "{what}: {status} {}",
                                String::from_utf8_lossy(&text[..text.len().min(200)])
                            ));
                        } else if status.is_client_error()
                            && serde_json::from_slice::<Value>(&text).is_err()
                        {
                            failures.push(format!("{what}: {status} without a JSON error"));
                        }
                    }
                }
            }
        }
    }
    assert!(
        requests > 1000,
        "only {requests} requests: did the specs load?"
    );
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
