package mesh

import rego.v1

register(kind, tier, roles) := {
	"action": sprintf("%s.register", [kind]),
	"subject": {"kind": "principal", "name": "p", "roles": roles},
	"resource": {"type": kind, "attributes": {"name": "x", "riskTier": tier}},
}

test_critical_tool_registration_needs_admin if {
	decision.action == "deny" with input as register("tool", "critical", ["operator"])
	decision.action == "allow" with input as register("tool", "critical", ["admin"])
	decision.action == "allow" with input as register("tool", "high", ["operator"])
}

test_critical_agent_registration_needs_admin if {
	decision.action == "deny" with input as register("agent", "critical", ["agent"])
}

test_export_needs_admin_or_auditor if {
	decision.action == "deny" with input as {"action": "data.export", "subject": {"roles": ["operator"]}}
	decision.action == "allow" with input as {"action": "data.export", "subject": {"roles": ["auditor"]}}
}

test_secrets_are_scoped_per_agent if {
	scoped := {"mesh_config": object.union(data.mesh_config, {"secret_scopes": {"coder": ["github_token"]}})}
	decision.action == "allow" with input as {"action": "secret.read", "subject": {"name": "coder", "roles": ["agent"]}, "resource": {"type": "secret", "id": "github_token"}} with data.mesh_config as scoped.mesh_config
	decision.action == "deny" with input as {"action": "secret.read", "subject": {"name": "coder", "roles": ["agent"]}, "resource": {"type": "secret", "id": "prod_db"}} with data.mesh_config as scoped.mesh_config
}
