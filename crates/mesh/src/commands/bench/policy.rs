//! `mesh bench policy`: decisions of the default bundle.
//!
//! In-process: from the typed agent and tool a service holds, through the policy
//! input, evaluation, the decision (redactions applied) and its decision-log event —
//! what an enforcement point does — over distinct inputs, no decision cache, on every
//! core. Over HTTP: OPA's `POST /v1/data/mesh/decision`, JSON both ways, at a paced
//! rate against the policy-enforcer started in this process.

use super::quantile_ms;
use crate::cli::GlobalArgs;
use crate::commands::{load_config, open_store};
use crate::compose;
use crate::config::Overrides;
use crate::output;
use anyhow::{Context, Result, bail};
use mesh_policy::{Actor, Enforcer, Point, PolicyContext, inputs};
use mesh_service::ServiceName;
use mesh_types::{Agent, AgentRole, AgentStatus, RiskTier};
use serde_json::{Value, json};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TIERS: [RiskTier; 4] = [
    RiskTier::Low,
    RiskTier::Medium,
    RiskTier::High,
    RiskTier::Critical,
];
const HOSTS: [&str; 5] = [
    "billing.internal",
    "api.openai.com",
    "example.com",
    "169.254.169.254",
    "search.internal",
];

/// The `i`th distinct tool call: an agent, a tool and a request body, varied so no two
/// inputs are the same and every rule of the bundle is exercised.
fn tool_call(i: usize) -> (Agent, PolicyContext) {
    let agent = Agent {
        id: uuid::Uuid::from_u128(i as u128 + 1),
        name: format!("agent-{}", i % 997),
        version: "1.0.0".into(),
        role: AgentRole::Coder,
        risk_tier: TIERS[i % 4],
        capabilities: vec!["code".into(), format!("cap-{}", i % 13)],
        model_preference: None,
        cost_profile: None,
        status: AgentStatus::Active,
        registered_at: mesh_types::time::now(),
        last_heartbeat: None,
        max_concurrency: None,
        draining_since: None,
        a2a: None,
    };
    let body = if i.is_multiple_of(5) {
        json!({"query": format!("mail ann{i}@example.com the report"), "page": i})
    } else {
        json!({"query": format!("summarise document {i}"), "page": i % 50})
    };
    let resource = mesh_policy::Resource {
        kind: Some("tool".into()),
        id: Some(format!("tool-{}", i % 211)),
        classification: Some("internal".into()),
        attributes: json!({
            "name": format!("http_fetch_{}", i % 211),
            "riskTier": TIERS[(i / 4) % 3],
            "host": HOSTS[i % HOSTS.len()],
            "body": body,
        }),
    };
    let ctx = inputs::context(inputs::agent(&agent), resource, "tool-registry");
    (agent, ctx)
}

pub async fn run(g: &GlobalArgs, n_inputs: usize, requests: usize, rate: u64) -> Result<ExitCode> {
    if n_inputs == 0 || requests == 0 || rate == 0 {
        bail!("--inputs, --requests and --rate must be at least 1");
    }
    let scratch = super::tempdir()?;
    let mut flags = Overrides {
        listen: vec![(ServiceName::PolicyEnforcer, "127.0.0.1:0".parse()?)],
        ..Default::default()
    };
    if g.store.is_none() && g.data_dir.is_none() {
        flags.data_dir = Some(scratch.clone());
    }
    let mut config = load_config(g, flags.clone())?;
    if let Some(dir) = flags.data_dir {
        config.data_dir = dir;
    }
    let store = open_store(&config).await?;
    let enforcer = Enforcer::start(
        config.policy.location.clone(),
        store.clone(),
        mesh_service::Readiness::default(),
    )?;

    let cases: Arc<Vec<(Agent, PolicyContext)>> = Arc::new((0..n_inputs).map(tool_call).collect());
    let in_process = in_process(&enforcer, &cases)?;

    let (key, _) = mesh_service::auth::create_key(
        &store,
        "bench",
        mesh_service::auth::NewKey {
            name: "bench".into(),
            roles: vec![mesh_types::Role::Agent],
            tenant: "bench".into(),
        },
    )
    .await?;
    let mut running = compose::start(&store, &[ServiceName::PolicyEnforcer], &config).await?;
    let addr = running
        .endpoints
        .first()
        .map(|(_, a)| *a)
        .context("policy-enforcer did not start")?;
    let bodies: Vec<String> = cases
        .iter()
        .map(|(_, ctx)| {
            let mut input = serde_json::to_value(ctx).unwrap_or(Value::Null);
            input["action"] = json!("tool.call");
            json!({ "input": input }).to_string()
        })
        .collect();
    let http = over_http(
        &format!("http://{addr}/v1/data/mesh/decision"),
        &key,
        bodies,
        requests,
        rate,
    )
    .await?;
    running.drain(Duration::from_secs(10)).await;
    let _ = std::fs::remove_dir_all(&scratch);

    let mut report = in_process;
    report["bench"] = json!("policy");
    report["inputs"] = json!(n_inputs);
    for (k, v) in http.as_object().into_iter().flatten() {
        report[k] = v.clone();
    }
    if g.json {
        output::json(&report)?;
    } else {
        let f = |k: &str| report[k].as_f64().unwrap_or(0.0);
        println!(
            "in-process, {} distinct tool calls on {} threads: {:.0} decisions/s, p50 {:.1} µs, p99 {:.1} µs (Rego evaluation alone p50 {:.1} µs, p99 {:.1} µs)",
            n_inputs,
            report["threads"],
            f("decisionsPerSec"),
            f("p50Us"),
            f("p99Us"),
            f("evalP50Us"),
            f("evalP99Us"),
        );
        println!(
            "  with the decision-log event drafted: {:.0} decisions/s, p50 {:.1} µs, p99 {:.1} µs",
            f("withLogPerSec"),
            f("withLogP50Us"),
            f("withLogP99Us"),
        );
        println!(
            "POST /v1/data: {} requests at {:.0}/s offered, {:.0}/s served: p50 {:.2} ms, p99 {:.2} ms",
            report["httpRequests"],
            f("httpOfferedPerSec"),
            f("httpPerSec"),
            f("httpP50Ms"),
            f("httpP99Ms"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

type Decide = fn(&Enforcer, &Agent, PolicyContext) -> (u64, bool);

/// Every case once per thread, each thread starting at a different offset; decisions
/// alone, then decisions with their log events.
fn in_process(enforcer: &Arc<Enforcer>, cases: &Arc<Vec<(Agent, PolicyContext)>>) -> Result<Value> {
    let mut report = run_threads(enforcer, cases, decide)?;
    let logged = run_threads(enforcer, cases, decide_and_log)?;
    report["withLogPerSec"] = logged["decisionsPerSec"].clone();
    report["withLogP50Us"] = logged["p50Us"].clone();
    report["withLogP99Us"] = logged["p99Us"].clone();
    Ok(report)
}

fn run_threads(
    enforcer: &Arc<Enforcer>,
    cases: &Arc<Vec<(Agent, PolicyContext)>>,
    decide: Decide,
) -> Result<Value> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    // Warm every pooled engine once so the measurement sees steady state.
    for (agent, ctx) in cases.iter().take(64) {
        let _ = decide(enforcer, agent, ctx.clone());
    }
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (enforcer, cases) = (enforcer.clone(), cases.clone());
            std::thread::spawn(move || {
                let mut total = Vec::with_capacity(cases.len());
                let mut eval = Vec::with_capacity(cases.len());
                let offset = t * cases.len() / threads.max(1);
                for k in 0..cases.len() {
                    let (agent, ctx) = &cases[(k + offset) % cases.len()];
                    let t0 = Instant::now();
                    let (eval_ns, permits) = decide(&enforcer, agent, ctx.clone());
                    total.push(t0.elapsed());
                    eval.push(Duration::from_nanos(eval_ns));
                    std::hint::black_box(permits);
                }
                (total, eval)
            })
        })
        .collect();
    let mut total = Vec::new();
    let mut eval = Vec::new();
    for h in handles {
        let (t, e) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a benchmark thread panicked"))?;
        total.extend(t);
        eval.extend(e);
    }
    let elapsed = started.elapsed();
    total.sort();
    eval.sort();
    let us = |d: &[Duration], p: f64| quantile_ms(d, p) * 1000.0;
    Ok(json!({
        "threads": threads,
        "decisions": total.len(),
        "decisionsPerSec": total.len() as f64 / elapsed.as_secs_f64(),
        "p50Us": us(&total, 0.50),
        "p99Us": us(&total, 0.99),
        "evalP50Us": us(&eval, 0.50),
        "evalP99Us": us(&eval, 0.99),
    }))
}

/// What a `tool.call` point acts on: the policy input built from the typed agent and
/// tool, evaluated, the decision read and its redactions applied.
fn decide(enforcer: &Enforcer, _agent: &Agent, ctx: PolicyContext) -> (u64, bool) {
    let judgement = enforcer.judge(Point::ToolCall, ctx);
    (judgement.eval_ns, judgement.decision.permits())
}

/// The same plus the decision-log event (credentials stripped, the policy's mask
/// applied), as points write it with the change they allow.
fn decide_and_log(enforcer: &Enforcer, agent: &Agent, ctx: PolicyContext) -> (u64, bool) {
    let actor = Actor {
        name: agent.name.clone(),
        agent: Some((agent.id, agent.name.clone())),
        task: None,
    };
    let verdict = enforcer.enforce(Point::ToolCall, ctx, &actor);
    (0, verdict.permits())
}

/// Paced load: `requests` POSTs at `rate` per second from enough concurrent clients
/// that a slow reply does not hold back the schedule.
async fn over_http(
    url: &str,
    key: &str,
    bodies: Vec<String>,
    requests: usize,
    rate: u64,
) -> Result<Value> {
    const CLIENTS: usize = 32;
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let bodies = Arc::new(bodies);
    let interval = Duration::from_secs_f64(CLIENTS as f64 / rate as f64);
    let per_client = requests.div_ceil(CLIENTS);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, url, key, bodies) = (
            client.clone(),
            url.to_string(),
            key.to_string(),
            bodies.clone(),
        );
        let count = per_client.min(requests.saturating_sub(c * per_client));
        tasks.push(tokio::spawn(async move {
            // Stagger the clients across one interval so the offered load is even.
            tokio::time::sleep(interval.mul_f64(c as f64 / CLIENTS as f64)).await;
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut latencies = Vec::with_capacity(count);
            for i in 0..count {
                ticker.tick().await;
                let body = bodies[(c * per_client + i) % bodies.len()].clone();
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .bearer_auth(&key)
                    .body(body)
                    .send()
                    .await?;
                if !resp.status().is_success() {
                    bail!(
                        "POST /v1/data failed: {} {}",
                        resp.status(),
                        resp.text().await.unwrap_or_default()
                    );
                }
                let reply: Value = resp.json().await?;
                if reply.get("result").is_none() {
                    bail!("POST /v1/data returned no result: {reply}");
                }
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(requests);
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Ok(json!({
        "httpRequests": latencies.len(),
        "httpOfferedPerSec": rate,
        "httpPerSec": latencies.len() as f64 / elapsed.as_secs_f64(),
        "httpP50Ms": quantile_ms(&latencies, 0.50),
        "httpP99Ms": quantile_ms(&latencies, 0.99),
        "httpMaxMs": quantile_ms(&latencies, 1.0),
    }))
}
