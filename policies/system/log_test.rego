package system.log

import rego.v1

test_egress_bodies_are_not_logged if {
	m := mask with input as {"input": {"action": "egress", "resource": {"attributes": {"host": "h", "body": "mail ann@example.com"}}}}
	m == {"/input/resource/attributes/body"}
}

test_other_decisions_are_logged_whole if {
	m := mask with input as {"input": {"action": "task.submit", "resource": {"attributes": {"body": "x"}}}}
	count(m) == 0
}
