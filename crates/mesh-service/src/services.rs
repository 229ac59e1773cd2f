//! The eight services of the seed, with their names and ports.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceName {
    Orchestrator,
    RoutingGateway,
    PolicyEnforcer,
    Provenance,
    AgentRegistry,
    ToolRegistry,
    EventsBus,
    TaskQueue,
}

impl ServiceName {
    pub const ALL: [ServiceName; 8] = [
        ServiceName::Orchestrator,
        ServiceName::RoutingGateway,
        ServiceName::PolicyEnforcer,
        ServiceName::Provenance,
        ServiceName::AgentRegistry,
        ServiceName::ToolRegistry,
        ServiceName::EventsBus,
        ServiceName::TaskQueue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Orchestrator => "mesh-orchestrator",
            ServiceName::RoutingGateway => "routing-gateway",
            ServiceName::PolicyEnforcer => "policy-enforcer",
            ServiceName::Provenance => "provenance-service",
            ServiceName::AgentRegistry => "agent-registry",
            ServiceName::ToolRegistry => "tool-registry",
            ServiceName::EventsBus => "events-bus",
            ServiceName::TaskQueue => "task-queue",
        }
    }

    /// The seed's port for the service.
    pub fn default_port(self) -> u16 {
        match self {
            ServiceName::Orchestrator => 5000,
            ServiceName::RoutingGateway => 5001,
            ServiceName::PolicyEnforcer => 5002,
            ServiceName::Provenance => 5003,
            ServiceName::AgentRegistry => 5004,
            ServiceName::ToolRegistry => 5005,
            ServiceName::EventsBus => 5006,
            ServiceName::TaskQueue => 5007,
        }
    }

    pub fn purpose(self) -> &'static str {
        match self {
            ServiceName::Orchestrator => "Top-level task coordination, flow execution",
            ServiceName::RoutingGateway => "Model/agent selection based on policy, cost, latency",
            ServiceName::PolicyEnforcer => "OPA-style policy evaluation for all operations",
            ServiceName::Provenance => "Audit trail, decision lineage, explainability",
            ServiceName::AgentRegistry => "Agent discovery, capability matching, health checks",
            ServiceName::ToolRegistry => "Tool discovery, invocation proxying, rate limiting",
            ServiceName::EventsBus => "Pub/sub for async agent communication",
            ServiceName::TaskQueue => "Durable task scheduling and retry",
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServiceName::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = ServiceName::ALL.iter().map(|n| n.as_str()).collect();
                format!(
                    "unknown service `{s}`, expected one of: {}",
                    names.join(", ")
                )
            })
    }
}
