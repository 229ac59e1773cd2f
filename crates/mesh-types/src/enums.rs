//! The closed vocabularies of the seed. Each enum serialises as the seed's snake_case
//! string and rejects anything else, so an unknown value is a clear parse error.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Error for a string that names no member of a seed enum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVariant {
    pub kind: &'static str,
    pub value: String,
    pub expected: &'static [&'static str],
}

impl fmt::Display for UnknownVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown {} `{}`, expected one of: {}",
            self.kind,
            self.value,
            self.expected.join(", ")
        )
    }
}

impl std::error::Error for UnknownVariant {}

/// Declares a string enum with one canonical spelling per variant, used by serde,
/// `Display`, `FromStr` and the database columns alike.
macro_rules! seed_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownVariant { kind: $kind, value: other.to_string(), expected: Self::NAMES }),
                }
            }
        }
    };
}

seed_enum!(
    /// How much damage an agent or tool can do; higher tiers need more scrutiny.
    RiskTier, "risk tier" {
        Low => "low",
        Medium => "medium",
        High => "high",
        Critical => "critical",
    }
);

seed_enum!(
    /// Lifecycle of a task.
    TaskStatus, "task status" {
        Pending => "pending",
        Queued => "queued",
        Running => "running",
        NeedsApproval => "needs_approval",
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

impl TaskStatus {
    /// A terminal task never changes status again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

seed_enum!(
    /// Lifecycle of a registered agent.
    AgentStatus, "agent status" {
        Active => "active",
        Busy => "busy",
        Unhealthy => "unhealthy",
        Retired => "retired",
    }
);

seed_enum!(
    /// Lifecycle of a registered MCP server (whether it is reachable is not stored:
    /// each tool-registry process keeps its own connection).
    McpServerStatus, "MCP server status" {
        Active => "active",
        Retired => "retired",
    }
);

seed_enum!(
    /// Lifecycle of a registered tool. `unhealthy`: its MCP server cannot be reached,
    /// and calls answer 503 until it is back.
    ToolStatus, "tool status" {
        Active => "active",
        Unhealthy => "unhealthy",
        Retired => "retired",
    }
);

seed_enum!(
    /// The part an agent plays in a flow.
    AgentRole, "agent role" {
        Planner => "planner",
        Coder => "coder",
        Researcher => "researcher",
        Critic => "critic",
        RedTeamer => "red_teamer",
        PolicyGuardian => "policy_guardian",
        ProvenanceAuditor => "provenance_auditor",
        Judge => "judge",
        HumanBridge => "human_bridge",
        OpsEngineer => "ops_engineer",
        DataEngineer => "data_engineer",
        ProductStrategist => "product_strategist",
        Custom => "custom",
    }
);

seed_enum!(
    /// What a policy decision tells the enforcement point to do.
    PolicyAction, "policy action" {
        Allow => "allow",
        Deny => "deny",
        AllowWithRedactions => "allow_with_redactions",
        EscalateToHuman => "escalate_to_human",
    }
);

seed_enum!(
    /// Sensitivity of the data a task carries.
    DataClassification, "data classification" {
        Public => "public",
        Internal => "internal",
        Confidential => "confidential",
        Restricted => "restricted",
    }
);

// Written out because `seed_enum!` owns the derive list.
#[allow(clippy::derivable_impls)]
impl Default for RiskTier {
    fn default() -> Self {
        RiskTier::Low
    }
}

#[allow(clippy::derivable_impls)]
impl Default for DataClassification {
    fn default() -> Self {
        DataClassification::Internal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_round_trips_through_json_and_text() {
        for tier in RiskTier::ALL {
            let json = serde_json::to_string(tier).unwrap();
            assert_eq!(json, format!("\"{}\"", tier.as_str()));
            assert_eq!(serde_json::from_str::<RiskTier>(&json).unwrap(), *tier);
            assert_eq!(tier.as_str().parse::<RiskTier>().unwrap(), *tier);
        }
        for role in AgentRole::ALL {
            assert_eq!(role.as_str().parse::<AgentRole>().unwrap(), *role);
        }
        assert_eq!(
            serde_json::to_string(&TaskStatus::NeedsApproval).unwrap(),
            "\"needs_approval\""
        );
        assert_eq!(
            serde_json::to_string(&PolicyAction::AllowWithRedactions).unwrap(),
            "\"allow_with_redactions\""
        );
    }

    #[test]
    fn unknown_values_are_rejected_with_the_expected_list() {
        let err = serde_json::from_str::<RiskTier>("\"extreme\"").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("extreme"), "{text}");
        assert!(text.contains("critical"), "{text}");
        let err = "Coder".parse::<AgentRole>().unwrap_err();
        assert_eq!(err.kind, "agent role");
        assert!(err.to_string().contains("red_teamer"));
        assert!("archived".parse::<AgentStatus>().is_err());
        assert!("secret".parse::<DataClassification>().is_err());
        assert!("maybe".parse::<PolicyAction>().is_err());
        assert!("done".parse::<TaskStatus>().is_err());
    }

    #[test]
    fn terminal_statuses() {
        assert!(TaskStatus::Cancelled.is_terminal());
        assert!(!TaskStatus::Queued.is_terminal());
        assert!(!TaskStatus::NeedsApproval.is_terminal());
    }
}
