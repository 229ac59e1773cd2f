package system.log

import rego.v1

test_credentials_are_masked_at_any_depth if {
	m := mask with input as {"input": {"resource": {"attributes": {"name": "n", "input": {"Password": "p", "items": [{"token": "t"}]}}}}}
	"/input/resource/attributes/input/Password" in m
	"/input/resource/attributes/input/items/0/token" in m
	count(m) == 2
}
