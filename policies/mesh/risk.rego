# Risk tiers: an agent only uses tools, and takes tasks, its own tier covers;
# critical-tier tools and critical-risk tasks wait for a human.
package mesh

import rego.v1

deny contains msg if {
	input.action in {"tool.call", "task.assign"}
	agent_tier := object.get(input.subject, "riskTier", "low")
	needed := object.get(input.resource.attributes, "riskTier", "low")
	tier_rank[agent_tier] < tier_rank[needed]
	msg := sprintf("agent risk tier %s does not cover the %s's risk tier %s", [agent_tier, input.resource.type, needed])
}

escalate contains {
	"reason": sprintf("tool %s is critical-tier", [input.resource.attributes.name]),
	"target": data.mesh_config.approvers.critical_tools,
} if {
	input.action == "tool.call"
	input.resource.attributes.riskTier == "critical"
	not input.environment.approved
}

escalate contains {
	"reason": sprintf("critical-risk %s task", [input.resource.attributes.taskType]),
	"target": data.mesh_config.approvers.critical_tasks,
} if {
	input.action in {"task.submit", "agent.spawn"}
	input.resource.attributes.riskTier == "critical"
}
