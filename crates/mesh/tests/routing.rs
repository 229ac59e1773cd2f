//! The routing gateway's choices: strategies, rules, budgets, degradation, ensembles and
//! agent selection, against the fake upstream in `common::upstream`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::upstream::upstream;
use common::{Api, MeshProcess};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_weighs_cost_quality_and_policy() {
    let (base, seen) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.toml"),
        format!(
            r#"
[[gateway.providers]]
name = "cheap"
kind = "openai"
base_url = "{base}/good"
models = ["cheap-model"]
input_per_1k = 0.05
output_per_1k = 0.05
quality = 0.3

[[gateway.providers]]
name = "premium"
kind = "openai"
base_url = "{base}/good"
models = ["premium-model"]
input_per_1k = 1.0
output_per_1k = 1.0
quality = 0.9

[[gateway.routes]]
name = "restricted-code-stays-on-sim"
when = {{ task_type = "code_*", data_classification = ["restricted"] }}
candidates = ["sim-large"]
"#
        ),
    )
    .unwrap();
    let process = MeshProcess::up(dir.path(), &["--config", "mesh.toml"]);
    let admin = process.admin_key.clone().unwrap();
    let api = Api::new();
    let gw = process.url("routing-gateway");
    let route = |body: Value| {
        let (api, url, admin) = (
            api.clone(),
            format!("{gw}/api/v1/route/model"),
            admin.clone(),
        );
        async move { api.post(&url, &admin, &body.to_string()).await }
    };

    let r = route(json!({"strategy": "max_quality"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["selectedModel"], "premium-model");
    assert!(r.body["reasons"].as_array().unwrap().len() >= 2);
    assert!(r.body["confidence"].as_f64().unwrap() > 0.0);
    let r = route(
        json!({"strategy": "cheapest_meeting_slo", "candidates": ["cheap-model", "premium-model"]}),
    )
    .await;
    assert_eq!(r.body["selectedModel"], "cheap-model", "{}", r.body);
    assert_eq!(r.body["alternatives"][0]["model"], "premium-model");

    // Confidential data: the default bundle approves neither provider for it, so only
    // the local sim models are eligible, and the refusals are among the reasons.
    let r = route(json!({"strategy": "max_quality", "dataClassification": "confidential"})).await;
    assert!(
        r.body["selectedModel"]
            .as_str()
            .unwrap()
            .starts_with("sim-"),
        "{}",
        r.body
    );
    let excluded: Vec<&Value> = r.body["alternatives"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["excluded"].is_string())
        .collect();
    assert_eq!(excluded.len(), 2, "{}", r.body);
    assert!(
        excluded[0]["excluded"]
            .as_str()
            .unwrap()
            .contains("not approved for confidential")
    );
    let r = route(json!({"strategy": "max_quality", "dataClassification": "confidential", "candidates": ["premium-model"]})).await;
    assert_eq!(r.status, 503, "{}", r.body);
    let bad = route(json!({"strategy": "luckiest"})).await;
    assert_eq!(bad.status, 400);
    // A routing rule narrows the candidates when its conditions hold.
    let r = route(json!({"taskType": "code_fix", "dataClassification": "restricted"})).await;
    assert_eq!(r.body["selectedModel"], "sim-large", "{}", r.body);
    let reasons = r.body["reasons"].to_string();
    assert!(
        reasons.contains("restricted-code-stays-on-sim"),
        "{reasons}"
    );
    let r = route(json!({"taskType": "docs", "dataClassification": "restricted"})).await;
    assert!(
        !r.body["reasons"].to_string().contains("restricted-code"),
        "{}",
        r.body
    );

    // model "auto": the gateway chooses, calls, and records the decision with the call.
    let resp = api
        .http
        .post(format!("{gw}/v1/chat/completions"))
        .bearer_auth(&admin)
        .header("x-mesh-route-strategy", "max_quality")
        .body(json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let reply: Value = resp.json().await.unwrap();
    assert_eq!(reply["model"], "premium-model");
    assert_eq!(
        seen.lock().unwrap().last().unwrap().1["model"],
        "premium-model"
    );
    let events = Value::Array(
        common::events_when(&api, &process, &admin, |e| {
            common::count(e, "model_call") > 0
        })
        .await,
    );
    let events = events.as_array().unwrap();
    assert!(
        events.iter().any(|e| e["action"] == "routing_decision"
            && e["payload"]["selectedModel"] == "premium-model")
    );
    let call = events.iter().find(|e| e["action"] == "model_call").unwrap();
    assert_eq!(call["payload"]["requestedModel"], "auto");
    assert_eq!(call["payload"]["model"], "premium-model");
    assert_eq!(call["payload"]["failover"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_refuse_with_402_and_auto_degrades() {
    let (base, _seen) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.toml"),
        format!(
            r#"
[[gateway.providers]]
name = "priced"
kind = "openai"
base_url = "{base}/good"
models = ["priced-model"]
input_per_1k = 1.0
output_per_1k = 1.0
quality = 0.9

[gateway.budgets]
per_task_tokens = 100
per_task_cost = 0.06
"#
        ),
    )
    .unwrap();
    let process = MeshProcess::up(dir.path(), &["--config", "mesh.toml"]);
    let admin = process.admin_key.clone().unwrap();
    let api = Api::new();
    let gw = process.url("routing-gateway");
    let task = uuid::Uuid::now_v7().to_string();
    let call = |model: &str, max_tokens: u32, strategy: Option<&str>| {
        let mut req = api
            .http
            .post(format!("{gw}/v1/chat/completions"))
            .bearer_auth(&admin)
            .header("x-mesh-task-id", task.clone())
            .body(
                json!({"model": model, "max_tokens": max_tokens,
                       "messages": [{"role": "user", "content": "hi"}]})
                .to_string(),
            );
        if let Some(s) = strategy {
            req = req.header("x-mesh-route-strategy", s);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    // Each call reserves ~21 tokens (prompt + max_tokens 20) and uses 15 (the upstream's
    // usage): 0.021 reserved, 0.015 spent each at 1.0 per 1K, so a 0.06 cost budget
    // covers three and refuses the fourth (0.045 + 0.021).
    for _ in 0..3 {
        let (status, body) = call("priced-model", 20, None).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = call("priced-model", 20, None).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"]["code"], "budget_exceeded");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("task:{task}"))
    );
    let usage = api
        .get(&format!("{gw}/api/v1/budgets/task:{task}"), &admin)
        .await;
    assert_eq!(usage.body["used"]["tokens"], 45, "{}", usage.body);
    assert!((usage.body["used"]["cost"].as_f64().unwrap() - 0.045).abs() < 1e-9);
    assert_eq!(usage.body["reserved"]["tokens"], 0, "nothing left reserved");
    let malformed = api.get(&format!("{gw}/api/v1/budgets/xyz"), &admin).await;
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    assert_eq!(malformed.body["error"]["field"], "scope");

    // Choosing by quality picks the priced model, which the budget cannot cover: the
    // gateway degrades to an eligible model that costs nothing, and says so.
    let (status, body) = call("auto", 20, Some("max_quality")).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["model"].as_str().unwrap().starts_with("sim-"),
        "{body}"
    );
    let auto_recorded = |e: &[Value]| {
        e.iter()
            .any(|e| e["action"] == "model_call" && e["payload"]["requestedModel"] == "auto")
    };
    let events = Value::Array(common::events_when(&api, &process, &admin, auto_recorded).await);
    let auto = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "model_call" && e["payload"]["requestedModel"] == "auto")
        .unwrap();
    assert_eq!(auto["payload"]["degradedForBudget"], true, "{auto}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_task_picks_an_eligible_agent() {
    let dir = tempfile::tempdir().unwrap();
    let process = MeshProcess::up(dir.path(), &[]);
    let admin = process.admin_key.clone().unwrap();
    let api = Api::new();
    let agents = format!("{}/api/v1/agents", process.url("agent-registry"));
    let register = |name: &str, tier: &str, caps: &str, cost: f64| {
        let mut agent: Value = serde_json::from_str(common::SEED_AGENT).unwrap();
        agent["name"] = json!(name);
        agent["riskTier"] = json!(tier);
        agent["capabilities"] = serde_json::from_str(caps).unwrap();
        agent["costProfile"] = json!({"inputCostPer1kTokens": cost, "outputCostPer1kTokens": cost, "maxBudgetPerTask": 1.0});
        let (api, agents, admin) = (api.clone(), agents.clone(), admin.clone());
        async move {
            let r = api.post(&agents, &admin, &agent.to_string()).await;
            assert_eq!(r.status, 201, "{}", r.body);
            r.body["id"].as_str().unwrap().to_string()
        }
    };
    let pricey = register("pricey", "high", r#"["deploy"]"#, 0.9).await;
    let thrifty = register("thrifty", "high", r#"["deploy"]"#, 0.1).await;
    let junior = register("junior", "low", r#"["deploy"]"#, 0.0).await;
    register("other", "high", r#"["review"]"#, 0.0).await;
    let url = format!("{}/api/v1/route/task", process.url("routing-gateway"));
    let r = api
        .post(
            &url,
            &admin,
            r#"{"taskType": "deploy", "riskTier": "medium"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["selectedAgent"]["agentId"],
        thrifty.as_str(),
        "{}",
        r.body
    );
    let alternatives = r.body["alternatives"].as_array().unwrap();
    assert_eq!(alternatives[0]["agentId"], pricey.as_str());
    let low = alternatives
        .iter()
        .find(|a| a["agentId"] == junior.as_str())
        .unwrap();
    assert!(
        low["excluded"].as_str().unwrap().contains("does not cover"),
        "{low}"
    );
    let none = api
        .post(
            &url,
            &admin,
            r#"{"taskType": "deploy", "riskTier": "critical"}"#,
        )
        .await;
    assert_eq!(none.status, 503, "{}", none.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensembles_race_and_vote() {
    let (base, _seen) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.toml"),
        format!(
            r#"
[[gateway.providers]]
name = "up-a"
kind = "openai"
base_url = "{base}/good"
models = ["a-model"]
input_per_1k = 0.1

[[gateway.providers]]
name = "up-b"
kind = "openai"
base_url = "{base}/good"
models = ["b-model"]
input_per_1k = 0.2

[[gateway.providers]]
name = "slow-sim"
kind = "sim"
models = ["slow-model"]
latency_ms = 5000

[[gateway.routes]]
name = "race"
when = {{ task_type = "race" }}
candidates = ["slow-model", "b-model"]

[[gateway.routes]]
name = "vote"
when = {{ task_type = "vote" }}
candidates = ["sim-small", "a-model", "b-model"]
"#
        ),
    )
    .unwrap();
    let process = MeshProcess::up(dir.path(), &["--config", "mesh.toml"]);
    let admin = process.admin_key.clone().unwrap();
    let api = Api::new();
    let gw = process.url("routing-gateway");
    let call = |task: &str, strategy: &str| {
        let req = api
            .http
            .post(format!("{gw}/v1/chat/completions"))
            .bearer_auth(&admin)
            .header("x-mesh-task-type", task)
            .header("x-mesh-route-strategy", strategy)
            .body(json!({"model": "auto", "messages": [{"role": "user", "content": "capital of France?"}]}).to_string());
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()
        }
    };
    // The slow sim ranks first (it is free) but the upstream answers first.
    let raced = call("race", "defensive_multi_model").await;
    assert_eq!(raced["model"], "b-model", "{raced}");
    // Two of three agree (both upstreams say the same); sim, ranked first as the
    // cheapest, is outvoted.
    let voted = call("vote", "consensus").await;
    assert_eq!(
        voted["choices"][0]["message"]["content"], "hello from upstream",
        "{voted}"
    );
    let events = Value::Array(
        common::events_when(&api, &process, &admin, |e| {
            common::count(e, "model_call") == 2
        })
        .await,
    );
    let ensembles: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "model_call")
        .map(|e| &e["payload"]["ensemble"])
        .collect();
    assert_eq!(ensembles[0]["strategy"], "defensive_multi_model");
    assert_eq!(ensembles[0]["asked"], json!(["slow-model", "b-model"]));
    assert_eq!(ensembles[1]["strategy"], "consensus");
    assert_eq!(ensembles[1]["agreeing"], 2);
    assert_eq!(ensembles[1]["answered"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_calls_degrade_under_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.toml"),
        r#"
[[gateway.providers]]
name = "best"
kind = "sim"
models = ["best-model"]
quality = 0.9

[[gateway.providers]]
name = "next"
kind = "sim"
models = ["next-model"]
quality = 0.5

[[gateway.routes]]
name = "pair"
when = { task_type = "t" }
candidates = ["best-model", "next-model"]

[gateway.limits]
per_model_rps = 0.001
burst_secs = 1000
"#,
    )
    .unwrap();
    let process = MeshProcess::up(dir.path(), &["--config", "mesh.toml"]);
    let admin = process.admin_key.clone().unwrap();
    let api = Api::new();
    let gw = process.url("routing-gateway");
    let call = || {
        let req = api
            .http
            .post(format!("{gw}/v1/chat/completions"))
            .bearer_auth(&admin)
            .header("x-mesh-task-type", "t")
            .header("x-mesh-route-strategy", "max_quality")
            .body(
                json!({"model": "auto", "messages": [{"role": "user", "content": "x"}]})
                    .to_string(),
            );
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let (status, first) = call().await;
    assert_eq!(
        (status, first["model"].as_str()),
        (200, Some("best-model")),
        "{first}"
    );
    let (status, second) = call().await;
    assert_eq!(
        (status, second["model"].as_str()),
        (200, Some("next-model")),
        "{second}"
    );
    let (status, third) = call().await;
    assert_eq!(status, 429, "{third}");
    let events = Value::Array(
        common::events_when(&api, &process, &admin, |e| {
            common::count(e, "model_call") == 2
        })
        .await,
    );
    let degraded = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "model_call" && e["payload"]["model"] == "next-model")
        .unwrap();
    assert_eq!(degraded["payload"]["degradedForLoad"], true);
}

/// The text of a streamed reply: OpenAI chunks' deltas or Anthropic `text_delta`s; and
/// whether it ended as its protocol ends (`[DONE]`, `message_stop`).
fn streamed_text(body: &str) -> (String, bool) {
    let mut text = String::new();
    let mut ended = false;
    for data in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            ended = true;
            continue;
        }
        let frame: Value = serde_json::from_str(data).unwrap();
        ended |= frame["type"] == "message_stop";
        let piece = frame
            .pointer("/choices/0/delta/content")
            .or_else(|| frame.pointer("/delta/text"));
        text.push_str(piece.and_then(Value::as_str).unwrap_or_default());
    }
    (text, ended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_ensembles_race_and_vote() {
    let (base, _seen) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.toml"),
        format!(
            r#"
[[gateway.providers]]
name = "up-good"
kind = "openai"
base_url = "{base}/good"
models = ["good-model"]
input_per_1k = 0.2

[[gateway.providers]]
name = "up-good-too"
kind = "openai"
base_url = "{base}/good"
models = ["good-too-model"]
input_per_1k = 0.3

[[gateway.providers]]
name = "up-garbage"
kind = "openai"
base_url = "{base}/garbage"
models = ["garbage-model"]
input_per_1k = 0.1

[[gateway.providers]]
name = "up-late"
kind = "openai"
base_url = "{base}/late"
models = ["late-model"]
input_per_1k = 0.2

[[gateway.providers]]
name = "slow-sim"
kind = "sim"
models = ["slow-model"]
latency_ms = 5000

[[gateway.providers]]
name = "failing-sim"
kind = "sim"
models = ["failing-model"]
failure = "5xx"

[[gateway.routes]]
name = "race"
when = {{ task_type = "race" }}
candidates = ["slow-model", "good-model"]

[[gateway.routes]]
name = "race-failing"
when = {{ task_type = "race-failing" }}
candidates = ["failing-model", "late-model"]

[[gateway.routes]]
name = "race-garbage"
when = {{ task_type = "race-garbage" }}
candidates = ["garbage-model", "late-model"]

[[gateway.routes]]
name = "vote"
when = {{ task_type = "vote" }}
candidates = ["sim-small", "good-model", "good-too-model"]
"#
        ),
    )
    .unwrap();
    let process = MeshProcess::up(dir.path(), &["--config", "mesh.toml"]);
    let admin = process.admin_key.clone().unwrap();
    let api = Api::new();
    let gw = process.url("routing-gateway");
    let stream = |path: &str, task: &str, strategy: &str| {
        let body = json!({"model": "auto", "stream": true, "max_tokens": 64,
                          "messages": [{"role": "user", "content": "capital of France?"}]});
        let req = api
            .http
            .post(format!("{gw}{path}"))
            .bearer_auth(&admin)
            .header("x-mesh-task-type", task)
            .header("x-mesh-route-strategy", strategy)
            .body(body.to_string());
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let text = resp.text().await.unwrap();
            let (said, ended) = streamed_text(&text);
            assert!(ended, "{text}");
            said
        }
    };
    let chat = "/v1/chat/completions";
    // Both are asked at once: the upstream's stream is relayed while the sim, ranked
    // first (it is free), still sleeps; one after the other would take 5 s.
    let started = std::time::Instant::now();
    assert_eq!(stream(chat, "race", "defensive_multi_model").await, "hello");
    assert!(
        started.elapsed().as_millis() < 4000,
        "{:?}",
        started.elapsed()
    );
    // The first-ranked fails before its first byte (sim 503; an upstream whose 200
    // stream is HTML): the other's stream is the answer.
    let failing = stream(chat, "race-failing", "defensive_multi_model").await;
    assert_eq!(failing, "hello");
    let garbage = stream(chat, "race-garbage", "defensive_multi_model").await;
    assert_eq!(garbage, "hello");
    // The vote needs the whole replies (the upstream's whole reply is "hello from
    // upstream"; its stream would say "hello"), then streams the winner, in either
    // protocol; the sim, ranked first, is outvoted.
    let voted = stream(chat, "vote", "consensus").await;
    assert_eq!(voted, "hello from upstream");
    let voted = stream("/v1/messages", "vote", "consensus").await;
    assert_eq!(voted, "hello from upstream");

    let events = common::events_when(&api, &process, &admin, |e| {
        common::count(e, "model_call") == 5
    })
    .await;
    let calls: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "model_call")
        .map(|e| &e["payload"])
        .collect();
    assert!(calls.iter().all(|c| c["stream"] == true), "{calls:?}");
    let asked: Vec<(&Value, &Value, &Value)> = calls
        .iter()
        .map(|c| {
            let e = &c["ensemble"];
            (&e["strategy"], &e["asked"], &c["model"])
        })
        .collect();
    let race = json!("defensive_multi_model");
    let (good, late) = (json!("good-model"), json!("late-model"));
    assert_eq!(
        asked[..3],
        [
            (&race, &json!(["slow-model", "good-model"]), &good),
            (&race, &json!(["failing-model", "late-model"]), &late),
            (&race, &json!(["garbage-model", "late-model"]), &late),
        ],
        "{calls:?}"
    );
    // The failures before the first byte are on the record (the winner answers 300 ms
    // late, so they always come first).
    let failed = |c: &Value| c["failedAttempts"][0]["model"].clone();
    assert_eq!(failed(calls[1]), "failing-model", "{}", calls[1]);
    assert_eq!(failed(calls[2]), "garbage-model", "{}", calls[2]);
    for vote in &calls[3..] {
        assert_eq!(vote["ensemble"]["strategy"], "consensus");
        assert_eq!(
            vote["ensemble"]["asked"],
            json!(["sim-small", "good-model", "good-too-model"])
        );
        assert_eq!(
            (&vote["ensemble"]["agreeing"], &vote["ensemble"]["answered"]),
            (&json!(2), &json!(3))
        );
    }
    let strategies: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "routing_decision")
        .map(|e| &e["payload"]["strategy"])
        .collect();
    let vote = json!("consensus");
    assert_eq!(
        strategies,
        [&race, &race, &race, &vote, &vote],
        "{events:?}"
    );
}
