package mesh

import rego.v1

egress(host, body) := {
	"action": "egress",
	"subject": {"kind": "agent", "name": "fetcher", "roles": ["agent"]},
	"resource": {"type": "url", "attributes": {"host": host, "url": sprintf("https://%s/", [host]), "body": body}},
}

test_metadata_endpoint_is_blocked if {
	d := decision with input as egress("169.254.169.254", "")
	d.action == "deny"
	contains(d.reason, "blocked")
}

test_blocked_beats_allowlisted_wildcard if {
	decision.action == "deny" with input as egress("metadata.google.internal", "")
}

test_unlisted_host_is_refused if {
	d := decision with input as egress("example.com", "")
	contains(d.reason, "not on the egress allowlist")
}

test_allowlisted_host_passes if {
	decision.action == "allow" with input as egress("billing.internal", "hello")
}

test_emails_and_keys_are_masked_on_egress if {
	d := decision with input as egress("billing.internal", {"to": "ann@example.com", "key": "sk-abcdefghijklmnopqrstuv"})
	d.action == "allow_with_redactions"
	count(d.redactions) == 2
	every r in d.redactions {
		r.path == "/resource/attributes/body"
		r.strategy == "mask"
	}
}

test_github_tokens_are_masked if {
	d := decision with input as egress("billing.internal", {"token": "ghp_0123456789abcdefghij"})
	d.action == "allow_with_redactions"
	count(d.redactions) == 1
}

test_text_with_an_at_sign_but_no_address_is_left_alone if {
	decision.action == "allow" with input as egress("billing.internal", "meet @ noon, task-list_ready")
}
