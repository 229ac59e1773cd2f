//! Principals, roles and the permission table that every route is checked against.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// Who is calling: the owner of an API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Principal {
    /// Id of the API key the caller presented.
    pub key_id: Uuid,
    pub name: String,
    pub roles: Vec<Role>,
    pub tenant: String,
}

impl Principal {
    pub fn may(&self, permission: Permission) -> bool {
        self.roles.iter().any(|role| role.grants(permission))
    }

    /// Admins see every tenant; everyone else sees their own.
    pub fn tenant_scope(&self) -> Option<String> {
        if self.roles.contains(&Role::Admin) {
            None
        } else {
            Some(self.tenant.clone())
        }
    }
}

/// A role bundles permissions; a key has one or more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including key management.
    Admin,
    /// Runs the mesh: tasks, agents, tools, reading provenance.
    Operator,
    /// A worker: submits (sub)tasks, registers, heartbeats and retires itself, claims
    /// work. Keys are not yet bound to one agent, so an agent key can act for any.
    Agent,
    /// Reads and verifies provenance and state; changes nothing.
    Auditor,
}

impl Role {
    pub const ALL: &'static [Role] = &[Role::Admin, Role::Operator, Role::Agent, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Agent => "agent",
            Role::Auditor => "auditor",
        }
    }

    /// The permission table. Every route names the one permission it needs.
    pub fn grants(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Operator => !matches!(permission, KeysManage),
            Role::Agent => matches!(
                permission,
                TaskSubmit
                    | TaskRead
                    | TaskClaim
                    | AgentRegister
                    | AgentHeartbeat
                    | AgentRetire
                    | AgentRead
                    | ToolRead
                    | ToolInvoke
                    | SecretRead
                    | ModelCall
                    | EventsPublish
                    | EventsRead
                    | PolicyEvaluate
            ),
            Role::Auditor => matches!(
                permission,
                TaskRead
                    | AgentRead
                    | ToolRead
                    | ProvenanceRead
                    | ProvenanceVerify
                    | EventsRead
                    | PolicyEvaluate
                    | PolicyRead
            ),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role `{s}`, expected one of: admin, operator, agent, auditor")
            })
    }
}

/// One right a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    TaskSubmit,
    TaskRead,
    TaskCancel,
    /// Lease tasks and report their outcome, as a worker does.
    TaskClaim,
    /// Put dead-lettered tasks back in the queue.
    TaskRequeue,
    AgentRegister,
    AgentHeartbeat,
    AgentRetire,
    AgentRead,
    ToolRegister,
    ToolRetire,
    ToolRead,
    /// Have the tool registry call a tool on an agent's behalf.
    ToolInvoke,
    /// Read a secret for an agent (the `secret.read` policy decides which).
    SecretRead,
    /// Call a model through the routing gateway.
    ModelCall,
    ProvenanceRead,
    ProvenanceVerify,
    /// Publish to a topic of the events bus.
    EventsPublish,
    /// Read, stream and consume topics of the events bus.
    EventsRead,
    KeysManage,
    /// Ask the policy enforcer for a decision (OPA Data API, `/api/v1/evaluate`).
    PolicyEvaluate,
    /// Read the policy set in force and the decision log.
    PolicyRead,
    /// Approve or reject work a policy escalated to a human.
    ApprovalDecide,
}

impl Permission {
    pub const ALL: &'static [Permission] = &[
        Permission::TaskSubmit,
        Permission::TaskRead,
        Permission::TaskCancel,
        Permission::TaskClaim,
        Permission::TaskRequeue,
        Permission::AgentRegister,
        Permission::AgentHeartbeat,
        Permission::AgentRetire,
        Permission::AgentRead,
        Permission::ToolRegister,
        Permission::ToolRetire,
        Permission::ToolRead,
        Permission::ToolInvoke,
        Permission::SecretRead,
        Permission::ModelCall,
        Permission::ProvenanceRead,
        Permission::ProvenanceVerify,
        Permission::EventsPublish,
        Permission::EventsRead,
        Permission::KeysManage,
        Permission::PolicyEvaluate,
        Permission::PolicyRead,
        Permission::ApprovalDecide,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::TaskSubmit => "task.submit",
            Permission::TaskRead => "task.read",
            Permission::TaskCancel => "task.cancel",
            Permission::TaskClaim => "task.claim",
            Permission::TaskRequeue => "task.requeue",
            Permission::AgentRegister => "agent.register",
            Permission::AgentHeartbeat => "agent.heartbeat",
            Permission::AgentRetire => "agent.retire",
            Permission::AgentRead => "agent.read",
            Permission::ToolRegister => "tool.register",
            Permission::ToolRetire => "tool.retire",
            Permission::ToolRead => "tool.read",
            Permission::ToolInvoke => "tool.invoke",
            Permission::SecretRead => "secret.read",
            Permission::ModelCall => "model.call",
            Permission::ProvenanceRead => "provenance.read",
            Permission::ProvenanceVerify => "provenance.verify",
            Permission::EventsPublish => "events.publish",
            Permission::EventsRead => "events.read",
            Permission::KeysManage => "keys.manage",
            Permission::PolicyEvaluate => "policy.evaluate",
            Permission::PolicyRead => "policy.read",
            Permission::ApprovalDecide => "approval.decide",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_permission_table() {
        use Permission::*;
        for p in Permission::ALL {
            assert!(Role::Admin.grants(*p));
        }
        assert!(!Role::Operator.grants(KeysManage));
        assert!(Role::Operator.grants(TaskCancel));
        assert!(Role::Agent.grants(TaskSubmit));
        assert!(!Role::Agent.grants(ToolRegister));
        assert!(!Role::Agent.grants(ProvenanceRead));
        assert!(Role::Auditor.grants(ProvenanceVerify));
        assert!(!Role::Auditor.grants(TaskSubmit));
        assert!("superuser".parse::<Role>().is_err());
    }
}
