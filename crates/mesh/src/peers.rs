//! `/readyz` detail `checks.peers`: whether the services this process calls over HTTP
//! answer their `/healthz`. Reported, not gating readiness: every replica of a service
//! shares its peers, so turning them all unready when a peer is down would only turn
//! clear errors naming the peer into "no healthy upstream" at the load balancer.

use mesh_service::ServiceName;
use mesh_service::server::Readiness;
use serde_json::{Map, Value, json};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How often peers are probed, and how long one probe may take.
const EVERY: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(2);

/// The services a process calls over HTTP: the orchestrator's queue and registry
/// clients, and what the agents it runs call (the gateway for models, the tool
/// registry for tools), less the services the process runs itself.
pub fn needed(
    local: &[ServiceName],
    runs_agents: bool,
    urls: &crate::agents::Endpoints,
) -> Vec<(ServiceName, String)> {
    if !local.contains(&ServiceName::Orchestrator) {
        return Vec::new();
    }
    let mut wanted = vec![ServiceName::TaskQueue, ServiceName::AgentRegistry];
    if runs_agents {
        wanted.extend([ServiceName::RoutingGateway, ServiceName::ToolRegistry]);
    }
    wanted
        .into_iter()
        .filter(|s| !local.contains(s))
        .filter_map(|s| urls.get(&s).map(|url| (s, url.clone())))
        .collect()
}

/// Probes `peers` now and every few seconds until `stop`, publishing what it finds.
pub fn spawn_probes(
    peers: Vec<(ServiceName, String)>,
    readiness: Readiness,
    mut stop: watch::Receiver<bool>,
) {
    if peers.is_empty() {
        return;
    }
    let client = match reqwest::Client::builder().timeout(TIMEOUT).build() {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(error = %e, "peer probes are off");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            let detail = probe_all(&client, &peers).await;
            readiness.set_detail("peers", detail);
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    });
}

async fn probe_all(client: &reqwest::Client, peers: &[(ServiceName, String)]) -> Value {
    let mut probes = JoinSet::new();
    for (service, url) in peers {
        let (client, service, url) = (client.clone(), *service, url.clone());
        probes.spawn(async move {
            let answer = client
                .get(format!("{}/healthz", url.trim_end_matches('/')))
                .send()
                .await;
            let verdict = match answer {
                Ok(r) if r.status().is_success() => json!({"url": url, "ok": true}),
                Ok(r) => json!({"url": url, "ok": false, "error": format!("/healthz answered {}", r.status())}),
                Err(e) => json!({"url": url, "ok": false, "error": describe(&e)}),
            };
            (service, verdict)
        });
    }
    let mut detail = Map::new();
    while let Some(Ok((service, verdict))) = probes.join_next().await {
        detail.insert(service.as_str().to_string(), verdict);
    }
    Value::Object(detail)
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("no answer within {} s", TIMEOUT.as_secs())
    } else if e.is_connect() {
        "connection refused or unreachable".to_string()
    } else {
        e.to_string()
    }
}
