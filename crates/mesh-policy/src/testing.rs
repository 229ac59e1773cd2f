//! `mesh policy test`: OPA's convention. Every rule named `test_*` is a test; it passes
//! when it evaluates to `true`, fails when it is undefined or false, and errors when
//! evaluation fails.

use crate::engine::CompiledPolicies;
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    pub name: String,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_us: u64,
}

pub fn run_tests(policies: &CompiledPolicies) -> Vec<TestResult> {
    policies
        .tests
        .iter()
        .map(|name| {
            let started = Instant::now();
            let (outcome, error) = match policies.eval_rule(name, regorus::Value::Undefined) {
                Ok(eval) if eval.value == Some(serde_json::Value::Bool(true)) => {
                    (Outcome::Pass, None)
                }
                Ok(_) => (Outcome::Fail, None),
                Err(e) => (Outcome::Error, Some(e.to_string())),
            };
            TestResult {
                name: name.clone(),
                outcome,
                error,
                duration_us: started.elapsed().as_micros() as u64,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::PolicyLocation;

    #[test]
    fn the_default_bundle_passes_its_own_tests() {
        let compiled = CompiledPolicies::compile(PolicyLocation::Embedded.load().unwrap()).unwrap();
        let results = run_tests(&compiled);
        assert!(results.len() >= 20, "only {} tests found", results.len());
        let failed: Vec<_> = results
            .iter()
            .filter(|r| r.outcome != Outcome::Pass)
            .collect();
        assert!(failed.is_empty(), "{failed:#?}");
    }

    #[test]
    fn failing_and_erroring_tests_are_reported() {
        let source = crate::bundle::PolicySource {
            modules: vec![crate::bundle::Module {
                path: "t.rego".into(),
                source: "package t\ntest_true if true\ntest_false if false\ntest_div if 1 / 0\n"
                    .into(),
            }],
            data: serde_json::json!({}),
            revision: "r".into(),
            origin: "t".into(),
        };
        let compiled = CompiledPolicies::compile(source).unwrap();
        let outcomes: Vec<_> = run_tests(&compiled)
            .into_iter()
            .map(|r| (r.name, r.outcome))
            .collect();
        assert_eq!(outcomes[0], ("data.t.test_true".into(), Outcome::Pass));
        assert_eq!(outcomes[1], ("data.t.test_false".into(), Outcome::Fail));
        assert_ne!(outcomes[2].1, Outcome::Pass);
    }
}
