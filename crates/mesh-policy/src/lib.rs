//! policy-enforcer (port 5002): an embedded Rego engine (regorus) with OPA's Data API,
//! the mesh's decision API, enforcement points every service calls, and decision logs
//! kept as `policy_decision` events in the provenance log.
//!
//! - [`bundle`]: where policies come from (embedded default, directory, OPA bundle).
//! - [`engine`]: a compiled policy set and pooled, prepared evaluation.
//! - [`decision`]: the policy context, the decision, redaction and log masking.
//! - [`enforcer`]: what services hold; decisions, audit events, hot reload.
//! - [`decision_log`]: batched logging of API decisions and OPA's decision-log shape.
//! - [`testing`]: `mesh policy test`, OPA's `test_*` convention.

pub mod bundle;
pub mod decision;
pub mod decision_log;
pub mod embedded;
pub mod enforcer;
pub mod engine;
pub mod inputs;
mod routes;
mod spans;
pub mod testing;

pub use bundle::PolicyLocation;
pub use decision::{Decision, PolicyContext, Resource};
pub use decision_log::DecisionLogger;
pub use enforcer::{Actor, Enforcer, Verdict, spawn_reloader};
pub use routes::{PolicyService, router};

/// Why a policy set could not be loaded or evaluated.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot load policies: {0}")]
    Load(String),
    #[error("policy does not compile: {0}")]
    Compile(String),
    #[error("policy evaluation failed: {0}")]
    Eval(String),
    /// The caller named a document the engine cannot be asked about.
    #[error("{0}")]
    Path(String),
}

/// The choke points where the mesh asks the policy before acting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    TaskSubmit,
    TaskAssign,
    AgentRegister,
    AgentSpawn,
    ToolRegister,
    ToolCall,
    ModelCall,
    SecretRead,
    Egress,
    DataExport,
}

impl Point {
    pub const ALL: &'static [Point] = &[
        Point::TaskSubmit,
        Point::TaskAssign,
        Point::AgentRegister,
        Point::AgentSpawn,
        Point::ToolRegister,
        Point::ToolCall,
        Point::ModelCall,
        Point::SecretRead,
        Point::Egress,
        Point::DataExport,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Point::TaskSubmit => "task.submit",
            Point::TaskAssign => "task.assign",
            Point::AgentRegister => "agent.register",
            Point::AgentSpawn => "agent.spawn",
            Point::ToolRegister => "tool.register",
            Point::ToolCall => "tool.call",
            Point::ModelCall => "model.call",
            Point::SecretRead => "secret.read",
            Point::Egress => "egress",
            Point::DataExport => "data.export",
        }
    }
}
