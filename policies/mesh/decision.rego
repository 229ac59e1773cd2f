# The one rule every enforcement point evaluates: data.mesh.decision.
#
# The other files of package `mesh` add to three sets: `deny` (reasons),
# `escalate` ({reason, target}) and `redact` ({path, pattern, strategy}). The
# strongest outcome wins: a deny, then an escalation to a human, then redactions,
# then a plain allow.
package mesh

import rego.v1

default decision := {"action": "allow", "reason": "allowed", "auditRequired": false}

decision := {
	"action": "deny",
	"reason": concat("; ", sort(deny)),
	"auditRequired": true,
} if {
	count(deny) > 0
} else := {
	"action": "escalate_to_human",
	"reason": concat("; ", sort([e.reason | some e in escalate])),
	"escalationTarget": min({e.target | some e in escalate}),
	"auditRequired": true,
} if {
	count(escalate) > 0
} else := {
	"action": "allow_with_redactions",
	"reason": "sensitive data redacted",
	"redactions": sort([r | some r in redact]),
	"auditRequired": true,
} if {
	count(redact) > 0
}

has_role(role) if role in input.subject.roles

tier_rank := {"low": 0, "medium": 1, "high": 2, "critical": 3}
