//! Runs one proxy worker per imported A2A agent, so remote agents take work like
//! local ones. The registry is rescanned periodically: an agent imported at runtime
//! gets a worker within one rescan, a retired one loses it, a draining one's worker
//! finishes its leases and stops by itself (and is not restarted). On shutdown every
//! worker finishes what it holds; imported agents stay registered.

use crate::a2a_remote::A2aRemoteAgent;
use crate::client::MeshClient;
use crate::worker::{Worker, WorkerOptions};
use mesh_registry::AgentListQuery;
use mesh_service::SecretDir;
use mesh_types::{Agent, AgentStatus};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Proxy leases held at once per agent that declares no concurrency.
const DEFAULT_CONCURRENCY: usize = 4;
/// Upper bound on one proxy's concurrent leases, whatever the agent declares.
const MAX_CONCURRENCY: usize = 64;

struct Proxy {
    stop: oneshot::Sender<()>,
    done: JoinHandle<()>,
}

/// Supervises proxies every `rescan` until `shutdown` fires, then stops them and waits
/// for their in-flight tasks.
/// `secrets` is where agents' `secret://` tokens are read, when a proxy starts.
pub fn spawn_a2a_supervisor(
    client: MeshClient,
    rescan: Duration,
    secrets: Option<SecretDir>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Redirects are not followed: the import's egress decision judged the host.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let mut proxies: HashMap<Uuid, Proxy> = HashMap::new();
        let mut tick = tokio::time::interval(rescan);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            match imported_agents(&client).await {
                Ok(agents) => reconcile(&client, &http, secrets.as_ref(), &mut proxies, agents),
                Err(err) => tracing::warn!(error = %err, "could not list imported A2A agents"),
            }
        }
        let stopping: Vec<JoinHandle<()>> = proxies
            .into_values()
            .map(|p| {
                let _ = p.stop.send(());
                p.done
            })
            .collect();
        for done in stopping {
            let _ = done.await;
        }
    })
}

/// Every imported agent that is not retired.
async fn imported_agents(client: &MeshClient) -> Result<Vec<Agent>, mesh_service::ApiError> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let query = AgentListQuery {
            a2a: Some(true),
            limit: Some(500),
            cursor,
            ..AgentListQuery::default()
        };
        let page = client.agents.list(&client.caller, query).await?;
        all.extend(
            page.items
                .into_iter()
                .filter(|a| a.status != AgentStatus::Retired),
        );
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(all),
        }
    }
}

/// Starts proxies for agents without one and stops those of agents gone or retired.
fn reconcile(
    client: &MeshClient,
    http: &reqwest::Client,
    secrets: Option<&SecretDir>,
    proxies: &mut HashMap<Uuid, Proxy>,
    agents: Vec<Agent>,
) {
    // A proxy that ended (drained, or failed to start) is forgotten; it is started
    // again below only if its agent can still take work.
    proxies.retain(|_, p| !p.done.is_finished());
    let wanted: HashMap<Uuid, Agent> = agents
        .into_iter()
        .filter(|a| a.draining_since.is_none())
        .map(|a| (a.id, a))
        .collect();
    let gone: Vec<Uuid> = proxies
        .keys()
        .filter(|id| !wanted.contains_key(id))
        .copied()
        .collect();
    for id in gone {
        if let Some(p) = proxies.remove(&id) {
            tracing::info!(agent = %id, "stopping the A2A proxy of an agent no longer imported");
            let _ = p.stop.send(());
        }
    }
    for (id, agent) in wanted {
        if proxies.contains_key(&id) {
            continue;
        }
        let name = agent.name.clone();
        let concurrency = agent
            .max_concurrency
            .map_or(DEFAULT_CONCURRENCY, |n| n as usize)
            .clamp(1, MAX_CONCURRENCY);
        let remote = match A2aRemoteAgent::new(agent, http.clone(), secrets) {
            Ok(remote) => remote,
            Err(err) => {
                tracing::warn!(agent = %name, error = %err, "cannot proxy this A2A agent");
                continue;
            }
        };
        let options = WorkerOptions {
            concurrency,
            heartbeats: false,
            attach_to: Some(id),
            ..WorkerOptions::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let worker = Worker::new(remote, client.clone(), options);
        let done = tokio::spawn(async move {
            let stopped = async {
                let _ = stopped.await;
            };
            match worker.run(stopped).await {
                Ok(report) => {
                    tracing::info!(agent = %name, completed = report.completed, failed = report.failed, "A2A proxy stopped")
                }
                Err(err) => tracing::warn!(agent = %name, error = %err, "A2A proxy ended"),
            }
        });
        tracing::info!(agent = %id, "A2A proxy started");
        proxies.insert(id, Proxy { stop, done });
    }
}
