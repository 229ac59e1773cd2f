package mesh

import rego.v1

model_call(provider, classification) := {
	"action": "model.call",
	"subject": {"kind": "agent", "name": "researcher", "roles": ["agent"]},
	"resource": {"type": "model", "classification": classification, "attributes": {"provider": provider, "model": "m"}},
}

test_confidential_data_stays_off_unapproved_providers if {
	d := decision with input as model_call("openai", "confidential")
	d.action == "deny"
	contains(d.reason, "not approved for confidential")
}

test_restricted_data_may_use_the_local_provider if {
	decision.action == "allow" with input as model_call("local", "restricted")
}

test_internal_data_may_use_any_provider if {
	decision.action == "allow" with input as model_call("openai", "internal")
}

test_unknown_provider_is_refused_sensitive_data if {
	decision.action == "deny" with input as model_call("shady", "restricted")
}
