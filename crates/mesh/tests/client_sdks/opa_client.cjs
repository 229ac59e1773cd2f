// OPA's own TypeScript SDK (@open-policy-agent/opa) against the policy enforcer's
// Data API. Usage: node opa_client.cjs URL API_KEY. Exits non-zero on the first mismatch.
const assert = require("node:assert/strict");
const { OPAClient } = require("@open-policy-agent/opa");

const [url, key] = process.argv.slice(2);

async function main() {
  const opa = new OPAClient(url, { headers: { authorization: "Bearer " + key } });
  const egress = (host) => ({
    action: "egress",
    subject: { roles: ["agent"] },
    resource: { attributes: { host } },
  });

  const decision = await opa.evaluate("mesh/decision", egress("169.254.169.254"));
  assert.equal(decision.action, "deny");
  assert.match(decision.reason, /169\.254\.169\.254 is blocked/);

  // A path into the document, as OPA serves every rule's value.
  assert.equal(await opa.evaluate("mesh/decision/action", egress("169.254.169.254")), "deny");

  // Batches: the SDK asks EOPA's batch API and falls back to one query per input on OPA.
  const batch = await opa.evaluateBatch(
    "mesh/decision/action",
    { metadata: egress("169.254.169.254"), private: egress("10.0.0.8") },
    { fallback: true },
  );
  assert.deepEqual(Object.keys(batch).sort(), ["metadata", "private"]);
  assert.equal(batch.metadata, "deny");

  // An undefined document is no result, as OPA answers it.
  assert.equal(await opa.evaluate("mesh/no_such_rule", {}), undefined);

  await assert.rejects(
    new OPAClient(url, { headers: { authorization: "Bearer mesh_wrong" } }).evaluate(
      "mesh/decision",
      egress("example.com"),
    ),
    (e) => e.constructor.name === "SDKError" && /401/.test(String(e)),
  );
}

main().then(
  () => console.log("ok"),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
