package mesh

import rego.v1

low_agent := {"kind": "agent", "name": "coder", "riskTier": "low", "roles": ["agent"]}

high_agent := object.union(low_agent, {"riskTier": "high"})

test_low_agent_cannot_call_high_tool if {
	decision.action == "deny" with input as {
		"action": "tool.call",
		"subject": low_agent,
		"resource": {"type": "tool", "attributes": {"name": "deploy", "riskTier": "high"}},
	}
}

test_high_agent_calls_high_tool if {
	decision.action == "allow" with input as {
		"action": "tool.call",
		"subject": high_agent,
		"resource": {"type": "tool", "attributes": {"name": "deploy", "riskTier": "high", "body": "ok"}},
	}
}

test_critical_tool_escalates if {
	d := decision with input as {
		"action": "tool.call",
		"subject": object.union(low_agent, {"riskTier": "critical"}),
		"resource": {"type": "tool", "attributes": {"name": "wire_money", "riskTier": "critical"}},
	}
	d.action == "escalate_to_human"
	d.escalationTarget == "security-oncall"
}

test_task_assign_respects_tiers if {
	decision.action == "deny" with input as {
		"action": "task.assign",
		"subject": low_agent,
		"resource": {"type": "task", "attributes": {"taskType": "deploy", "riskTier": "medium"}},
	}
}

test_critical_task_needs_approval if {
	decision.action == "escalate_to_human" with input as {
		"action": "task.submit",
		"subject": {"kind": "principal", "name": "alice", "roles": ["operator"]},
		"resource": {"type": "task", "attributes": {"taskType": "migrate_db", "riskTier": "critical"}},
	}
}

test_ordinary_task_is_allowed if {
	decision.action == "allow" with input as {
		"action": "task.submit",
		"subject": {"kind": "principal", "name": "alice", "roles": ["operator"]},
		"resource": {"type": "task", "attributes": {"taskType": "summarise", "riskTier": "low"}},
	}
}
