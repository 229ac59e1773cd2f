# Confidential and restricted data only go to model providers approved for them.
package mesh

import rego.v1

deny contains msg if {
	input.action == "model.call"
	classification := object.get(input.resource, "classification", "internal")
	classification in {"confidential", "restricted"}
	provider := input.resource.attributes.provider
	not approved_for(provider, classification)
	msg := sprintf("provider %s is not approved for %s data", [provider, classification])
}

approved_for(provider, classification) if {
	classification in data.mesh_config.providers[provider].approvedFor
}
