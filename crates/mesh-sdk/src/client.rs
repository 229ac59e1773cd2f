use mesh_queue::{TaskQueue, TaskQueueClient};
use mesh_registry::{AgentRegistry, AgentRegistryClient};
use mesh_service::{ApiError, Caller, HttpClient, ServiceName};
use mesh_types::Principal;
use std::sync::Arc;

/// The agent's view of the mesh: the task queue and the agent registry, reached
/// in-process or over HTTP, and the identity it acts under.
#[derive(Clone)]
pub struct MeshClient {
    pub(crate) caller: Caller,
    pub(crate) queue: TaskQueueClient,
    pub(crate) agents: AgentRegistryClient,
    /// Reports completions that finish together in one call.
    pub(crate) completions: crate::completions::Completions,
}

impl MeshClient {
    /// A remote mesh: the task queue's and agent registry's base URLs and an API key
    /// with the `agent` role (or more).
    pub fn http(queue_url: &str, registry_url: &str, api_key: &str) -> Result<Self, ApiError> {
        Ok(Self {
            caller: Caller {
                // The services resolve the real principal from the key.
                principal: Principal {
                    key_id: uuid::Uuid::nil(),
                    name: "remote-agent".into(),
                    roles: vec![],
                    tenant: "default".into(),
                },
                token: api_key.to_string(),
            },
            queue: TaskQueueClient::Http(HttpClient::new(ServiceName::TaskQueue, queue_url)?),
            agents: AgentRegistryClient::Http(HttpClient::new(
                ServiceName::AgentRegistry,
                registry_url,
            )?),
            completions: Default::default(),
        })
    }

    /// The cores of this process, acting as `principal`.
    pub fn in_process(
        queue: Arc<TaskQueue>,
        agents: Arc<AgentRegistry>,
        principal: Principal,
    ) -> Self {
        Self {
            caller: Caller {
                principal,
                token: String::new(),
            },
            queue: TaskQueueClient::InProcess(queue),
            agents: AgentRegistryClient::InProcess(agents),
            completions: Default::default(),
        }
    }
}
