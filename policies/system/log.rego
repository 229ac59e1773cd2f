# Decision logs never keep credentials: any field named like one, at any depth of
# the logged input, is removed before the decision is written to provenance.
package system.log

import rego.v1

secret_fields := {"password", "apikey", "api_key", "token", "secret", "authorization"}

mask contains pointer if {
	walk(input.input, [path, value])
	count(path) > 0
	key := path[count(path) - 1]
	is_string(key)
	value != null
	lower(key) in secret_fields
	pointer := concat("/", array.concat(["", "input"], [sprintf("%v", [p]) | some p in path]))
}
