# What decision logs leave out. Credential-named fields (password, token, apiKey, …)
# are always removed by the mesh itself before a decision is logged; this rule adds
# what is policy-specific, as OPA's `data.system.log.mask` does: bodies sent to other
# hosts may carry personal data, so egress decisions are logged without them.
package system.log

import rego.v1

mask contains "/input/resource/attributes/body" if {
	input.input.action in {"egress", "tool.call", "model.call"}
	input.input.resource.attributes.body
}
