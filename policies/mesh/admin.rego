# Who may do what with the mesh's own administrative surfaces.
package mesh

import rego.v1

deny contains msg if {
	input.action in {"agent.register", "tool.register"}
	input.resource.attributes.riskTier == "critical"
	not has_role("admin")
	msg := sprintf("registering a critical-tier %s needs the admin role", [input.resource.type])
}

deny contains "exporting provenance needs the admin or auditor role" if {
	input.action == "data.export"
	not has_role("admin")
	not has_role("auditor")
}

deny contains msg if {
	input.action == "secret.read"
	not secret_in_scope
	msg := sprintf("secret %s is outside the scope of %s", [input.resource.id, input.subject.name])
}

secret_in_scope if has_role("admin")

secret_in_scope if input.resource.id in data.mesh_config.secret_scopes[input.subject.name]
