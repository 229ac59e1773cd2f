# Outbound HTTP by tools: blocked hosts never, otherwise only allowlisted hosts;
# personal data and credentials in what leaves are masked.
package mesh

import rego.v1

deny contains msg if {
	input.action == "egress"
	host := lower(input.resource.attributes.host)
	host_matches(host, data.mesh_config.egress.blocked)
	msg := sprintf("host %s is blocked", [host])
}

deny contains msg if {
	input.action == "egress"
	host := lower(input.resource.attributes.host)
	not host_matches(host, data.mesh_config.egress.blocked)
	not host_matches(host, data.mesh_config.egress.allowed)
	msg := sprintf("host %s is not on the egress allowlist", [host])
}

host_matches(host, patterns) if {
	some pattern in patterns
	glob.match(pattern, ["."], host)
}

# Email addresses and strings shaped like API keys.
pii_patterns := {
	`[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}`,
	`\b(sk|pk|rk|ghp|xox[abp])[-_][A-Za-z0-9_-]{16,}`,
}

# What leaves, as text: marshalled once per decision, not once per pattern.
outbound_text := json.marshal(input.resource.attributes.body) if {
	input.action in {"egress", "tool.call", "model.call"}
}

redact contains {"path": "/resource/attributes/body", "pattern": pattern, "strategy": "mask"} if {
	some pattern in pii_patterns
	regex.match(pattern, outbound_text)
}
