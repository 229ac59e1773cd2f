//! `mesh demo`: the mesh doing its job, end to end, in one command. It starts every
//! service in this process (on free ports, so a running `mesh up` is not disturbed) on
//! the configured store — by default the same embedded store `mesh up` uses, so the
//! record stays inspectable afterwards — submits the seed's `code_refactor` example
//! over the HTTP API, narrates the flow from the provenance log as it happens, then
//! prints the timeline, the graph and the chain verification.

use super::{load_config, open_store};
use crate::cli::{DemoArgs, GlobalArgs};
use crate::compose;
use crate::config::Overrides;
use anyhow::{Context, Result, bail};
use mesh_service::ServiceName;
use mesh_service::auth::NewKey;
use mesh_types::Role;
use mesh_types::time::Timestamp;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The relationships of the seed's graph model a finished code flow shows.
const SEED_EDGES: &[&str] = &[
    "SPAWNED",
    "ASSIGNED_TO",
    "INVOKED",
    "CALLED",
    "SUBJECT_TO",
    "PRODUCED",
    "REVIEWED_BY",
];

pub async fn run(g: &GlobalArgs, args: DemoArgs) -> Result<ExitCode> {
    let any_port = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let flags = Overrides {
        listen: ServiceName::ALL.iter().map(|s| (*s, any_port)).collect(),
        ..Default::default()
    };
    let config = load_config(g, flags)?;
    let store = open_store(&config).await?;
    place_target(&config)?;
    let mut running = compose::start(&store, &ServiceName::ALL, &config).await?;
    let url = |s: ServiceName| {
        running
            .endpoints
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, addr)| format!("http://{addr}"))
            .unwrap_or_default()
    };
    let api = Api {
        http: reqwest::Client::new(),
        orchestrator: url(ServiceName::Orchestrator),
        provenance: url(ServiceName::Provenance),
        key: String::new(),
    };
    let new = NewKey {
        name: "mesh demo".into(),
        roles: vec![Role::Admin],
        tenant: mesh_service::auth::default_tenant(),
    };
    let (key, record) = mesh_service::auth::create_key(&store, "mesh demo", new).await?;
    let api = Api { key, ..api };
    let models = crate::agents::default_model(&config);
    println!(
        "Agentic Mesh demo: store {}, model {models}",
        store.display_url
    );
    // Narrate from here on: events before the demo are not its story.
    let after = store.provenance.head().await?.count;
    let outcome = narrate(&api, after, args.timeout_secs).await;
    running.drain(config.drain_grace).await;
    mesh_service::auth::revoke_key(&store, "mesh demo", record.id).await?;
    outcome
}

/// The file the demo task refactors, put where the `file_read` tool may read it (the
/// first of `[tools] allowed_paths`) unless one is already there.
fn place_target(config: &crate::config::Config) -> Result<()> {
    let Some(root) = config.tools.allowed_paths.first() else {
        return Ok(());
    };
    let target = root.join("src/foo.ts");
    if !target.exists() {
        std::fs::create_dir_all(root.join("src"))
            .with_context(|| format!("cannot create {}", root.join("src").display()))?;
        std::fs::write(&target, include_str!("../../../../fixtures/demo/foo.ts"))
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    Ok(())
}

struct Api {
    http: reqwest::Client,
    orchestrator: String,
    provenance: String,
    key: String,
}

impl Api {
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value> {
        let resp = req.bearer_auth(&self.key).send().await?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("HTTP {status}: {}", body["error"]["message"]);
        }
        Ok(body)
    }

    async fn get(&self, url: String) -> Result<Value> {
        self.send(self.http.get(url)).await
    }
}

async fn narrate(api: &Api, mut after: i64, timeout_secs: u64) -> Result<ExitCode> {
    let body = json!({
        "type": "code_refactor",
        "input": {
            "spec": "Split the request parser into small functions and remove the duplicated branches",
            "target": "src/foo.ts",
        },
        "priority": 1,
        "metadata": {"requester": "user@example.com"},
    });
    println!("POST /api/v1/tasks {body}");
    let reply = api
        .send(
            api.http
                .post(format!("{}/api/v1/tasks", api.orchestrator))
                .json(&body),
        )
        .await
        .context("submitting the demo task")?;
    let root: Uuid = serde_json::from_value(reply["taskId"].clone())?;
    println!("→ {reply}\n");

    let started = Instant::now();
    let mut story = Story::new(root);
    let deadline = started + Duration::from_secs(timeout_secs);
    let mut finished_at: Option<Instant> = None;
    loop {
        let events = api
            .get(format!(
                "{}/api/v1/provenance/events?after={after}&limit=500",
                api.provenance
            ))
            .await?;
        for e in events.as_array().into_iter().flatten() {
            after = e["seq"].as_i64().unwrap_or(after);
            story.tell(e);
        }
        story.print_settled();
        match (story.outcome.as_deref(), finished_at) {
            // Model calls are written in batches: read on briefly after the end.
            (Some(_), None) => finished_at = Some(Instant::now()),
            (Some(_), Some(at)) if at.elapsed() > Duration::from_millis(600) => break,
            _ => {}
        }
        if Instant::now() > deadline {
            story.print_all();
            println!("\nThe task did not finish within {timeout_secs} s (--timeout-secs).");
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    story.print_all();

    let record = api
        .get(format!("{}/api/v1/provenance/task/{root}", api.provenance))
        .await?;
    print_timeline(&record);
    let edges_ok = print_graph(&record);
    let verify = api
        .get(format!("{}/api/v1/provenance/verify", api.provenance))
        .await?;
    let intact = verify["ok"] == true;
    println!(
        "\nProvenance chain: {} ({} events, head {})",
        if intact { "verified" } else { "BROKEN" },
        verify["events"],
        verify["head"]["last_hash"]
            .as_str()
            .or(verify["head"]["lastHash"].as_str())
            .unwrap_or("?")
    );
    let completed = story.outcome.as_deref() == Some("completed");
    println!(
        "\nTask {root} {}. Look again any time:\n  mesh task get {root}\n  mesh provenance show {root}",
        story.outcome.as_deref().unwrap_or("unfinished")
    );
    Ok(if completed && intact && edges_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Turns provenance events of the demo's task tree into one line each.
struct Story {
    root: Uuid,
    tree: HashSet<String>,
    types: HashMap<String, String>,
    outcome: Option<String>,
    /// When the root task was created; lines show time since then, from the events'
    /// own timestamps (events are read in batches).
    origin: Option<Timestamp>,
    /// Whether the flow runner has taken the root task before (later takes resume it).
    resumed: bool,
    /// Lines not printed yet, with their seconds since the origin: model calls reach
    /// the log in batches, after events that happened later, so lines are printed in
    /// the order of the events' timestamps once nothing earlier can still arrive.
    unprinted: Vec<(f64, String)>,
    /// The latest event time seen, in seconds since the origin.
    newest: f64,
}

/// How far behind the newest event a line must be before it is printed.
const SETTLE_SECS: f64 = 0.5;

impl Story {
    fn new(root: Uuid) -> Self {
        Story {
            root,
            tree: HashSet::from([root.to_string()]),
            types: HashMap::new(),
            outcome: None,
            origin: None,
            resumed: false,
            unprinted: Vec::new(),
            newest: 0.0,
        }
    }

    /// Prints, in time order, the lines nothing earlier can still come before.
    fn print_settled(&mut self) {
        self.print_until(self.newest - SETTLE_SECS);
    }

    fn print_all(&mut self) {
        self.print_until(f64::INFINITY);
    }

    fn print_until(&mut self, until: f64) {
        // Stable: lines with equal times keep the log's order.
        self.unprinted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let ready = self.unprinted.partition_point(|(at, _)| *at <= until);
        for (_, line) in self.unprinted.drain(..ready) {
            println!("{line}");
        }
    }

    fn tell(&mut self, e: &Value) {
        let Some(task) = e["taskId"].as_str().map(str::to_string) else {
            return;
        };
        if !self.tree.contains(&task) {
            return;
        }
        let p = &e["payload"];
        let s = |v: &Value| v.as_str().unwrap_or("?").to_string();
        let kind = self.types.get(&task).cloned().unwrap_or_default();
        let is_root = task == self.root.to_string();
        let parse = |v: &Value| {
            v.as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc))
        };
        // A model call is placed when it ended, not when its batch reached the log.
        let ended = parse(&p["startedAt"])
            .zip(p["latencyMs"].as_i64())
            .map(|(start, ms)| start + chrono::Duration::milliseconds(ms));
        let at = ended.or_else(|| parse(&e["timestamp"]));
        let origin = *self
            .origin
            .get_or_insert(at.unwrap_or_else(mesh_types::time::now));
        let since = at.map(|t| (t - origin).num_microseconds().unwrap_or(0) as f64 / 1e6);
        let line = match e["action"].as_str().unwrap_or_default() {
            "task_created" => {
                self.types.insert(task.clone(), s(&p["type"]));
                return;
            }
            "subtask_created" => {
                let child = s(&p["subtaskId"]);
                self.tree.insert(child.clone());
                self.types.insert(child.clone(), s(&p["type"]));
                format!("queued {} ({})", s(&p["type"]), short(&child))
            }
            "task_assigned" if is_root && self.resumed => format!("resumes {kind}"),
            "task_assigned" => {
                self.resumed |= is_root;
                format!("took {kind} ({})", short(&task))
            }
            "model_call" => format!(
                "asked {} — {} tokens in, {} out, {} ms",
                s(&p["model"]),
                p["tokensIn"],
                p["tokensOut"],
                p["latencyMs"]
            ),
            "task_waiting" => format!("{kind} waits for its subtasks"),
            "task_completed" if is_root => {
                self.outcome = Some("completed".into());
                "the task is complete".into()
            }
            "task_completed" => format!("finished {kind} ({})", short(&task)),
            "task_failed" if is_root => {
                self.outcome = Some("failed".into());
                format!("the task failed: {}", s(&p["reason"]))
            }
            "task_retry_scheduled" | "task_failed" => {
                format!("{kind} attempt failed: {}", s(&p["reason"]))
            }
            "task_cancelled" if is_root => {
                self.outcome = Some("cancelled".into());
                "the task was cancelled".into()
            }
            "tool_call" => format!(
                "called {} ({}, {} ms)",
                s(&p["toolName"]),
                if p["success"] == true { "ok" } else { "failed" },
                p["latencyMs"]
            ),
            "task_reviewed" => format!(
                "review round {}: {} — {}",
                p["round"],
                s(&p["verdict"]),
                s(&p["notes"])
            ),
            "output_invalid" => format!("{kind} output fails its schema; sent to the critic"),
            "task_needs_approval" => format!("waits for a human: {}", s(&p["reason"])),
            _ => return,
        };
        let actor = e["actor"].as_str().unwrap_or("?");
        let since = since.unwrap_or(self.newest);
        self.newest = self.newest.max(since);
        self.unprinted
            .push((since, format!("  {since:>7.3}s  {actor:<22} {line}")));
    }
}

fn short(id: &str) -> String {
    id.chars()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

fn print_timeline(record: &Value) {
    let timeline = record["timeline"].as_array().cloned().unwrap_or_default();
    println!(
        "\nTimeline of the task and its subtasks ({} events):",
        timeline.len()
    );
    let mut by_action: BTreeMap<String, usize> = BTreeMap::new();
    for entry in &timeline {
        *by_action
            .entry(entry["action"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    for (action, n) in by_action {
        println!("  {n:>4}  {action}");
    }
}

/// Prints node and edge counts; true if every relationship the seed names is present.
fn print_graph(record: &Value) -> bool {
    let count = |items: &Value, key: &str| {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for item in items.as_array().into_iter().flatten() {
            *counts
                .entry(item[key].as_str().unwrap_or("?").to_string())
                .or_default() += 1;
        }
        counts
    };
    let nodes = count(&record["graph"]["nodes"], "label");
    let edges = count(&record["graph"]["edges"], "type");
    let list = |m: &BTreeMap<String, usize>| {
        m.iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("\nProvenance graph:");
    println!("  nodes: {}", list(&nodes));
    println!("  edges: {}", list(&edges));
    let missing: Vec<&str> = SEED_EDGES
        .iter()
        .copied()
        .filter(|k| !edges.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        println!("  missing relationships: {}", missing.join(", "));
    }
    missing.is_empty()
}
