//! A compiled policy set and fast evaluation over it.
//!
//! regorus engines are not shareable between threads while evaluating, and preparing
//! one (analysis, scheduling, loop hoisting) is far dearer than an evaluation. So a
//! policy set is compiled and prepared once into a template, and evaluations borrow a
//! prepared clone from a small pool: no request ever pays for preparation.

use crate::PolicyError;
use crate::bundle::PolicySource;
use regorus::Engine;
use serde_json::Value;
use std::sync::Mutex;
use std::time::Instant;

/// Engines kept for reuse; more concurrent evaluations than this clone the template.
const POOL_LIMIT: usize = 64;

pub struct CompiledPolicies {
    template: Engine,
    pool: Mutex<Vec<Engine>>,
    /// The hot rules regorus's bytecode VM supports, compiled for it.
    fast: Vec<FastPath>,
    pub source: PolicySource,
    /// The `test_*` rules, as `data.<package>.<rule>` paths.
    pub tests: Vec<String>,
    /// Whether `data.system.log.mask` is defined, so decision logs must be masked.
    pub has_mask: bool,
}

/// A value and how long the evaluation took.
pub struct Evaluation {
    pub value: Option<Value>,
    pub eval_ns: u64,
}

impl CompiledPolicies {
    /// Parses and compiles every module and the data document. Errors name the file
    /// and line (regorus formats them as `file:line:col: message`).
    pub fn compile(source: PolicySource) -> Result<Self, PolicyError> {
        let mut engine = Engine::new();
        for module in &source.modules {
            engine
                .add_policy(module.path.clone(), module.source.clone())
                .map_err(|e| PolicyError::Compile(e.to_string()))?;
        }
        engine
            .add_data(regorus::Value::from(source.data.clone()))
            .map_err(|e| PolicyError::Load(format!("data: {e}")))?;
        // Analysis (recursion, unsafe variables) runs on the first evaluation, and
        // unknown functions surface only when called: evaluate every rule once, without
        // input, so a bad policy is refused at load rather than at a request. Tests are
        // left to `mesh policy test`: a failing test must not block a deployment.
        for rule in load_checked_rules(&source) {
            if let Err(e) = engine.eval_query(rule, false) {
                // Without input many rules cannot run; only a missing function is a
                // defect of the policy itself.
                let message = e.to_string();
                if message.contains("could not find function") {
                    return Err(PolicyError::Compile(message));
                }
            }
        }
        let tests = discover_tests(&source);
        let has_mask = source.modules.iter().any(|m| {
            package_of(&m.source).as_deref() == Some("system.log") && declares(&m.source, "mask")
        });
        let mut hot: Vec<&str> = Vec::new();
        if source.modules.iter().any(|m| {
            package_of(&m.source).as_deref() == Some("mesh") && declares(&m.source, "decision")
        }) {
            hot.push(crate::enforcer::DECISION_RULE);
        }
        if has_mask {
            hot.push(crate::enforcer::MASK_RULE);
        }
        let fast = hot
            .into_iter()
            .filter_map(|rule| FastPath::compile(&mut engine.clone(), rule, &source.data))
            .collect();
        Ok(Self {
            template: engine,
            pool: Mutex::new(Vec::new()),
            fast,
            source,
            tests,
            has_mask,
        })
    }

    pub fn revision(&self) -> &str {
        &self.source.revision
    }

    fn with_engine<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> R {
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        let mut engine = pooled.unwrap_or_else(|| self.template.clone());
        let out = f(&mut engine);
        if let Ok(mut pool) = self.pool.lock()
            && pool.len() < POOL_LIMIT
        {
            pool.push(engine);
        }
        out
    }

    /// Evaluates one rule (`data.pkg.rule`) against `input`: the enforcement points'
    /// fast path. Undefined is `None`.
    pub fn eval_rule(&self, rule: &str, input: regorus::Value) -> Result<Evaluation, PolicyError> {
        if let Some(fast) = self.fast.iter().find(|f| f.rule == rule) {
            return fast.eval(rule, input);
        }
        self.eval_rule_interpreted(rule, input)
    }

    /// [`CompiledPolicies::eval_rule`] on the tree-walking interpreter, bypassing the VM.
    pub fn eval_rule_interpreted(
        &self,
        rule: &str,
        input: regorus::Value,
    ) -> Result<Evaluation, PolicyError> {
        self.with_engine(|engine| {
            let started = Instant::now();
            engine.set_input(input);
            let value = engine
                .eval_rule(rule.to_string())
                .map_err(|e| PolicyError::Eval(e.to_string()));
            engine.set_input(regorus::Value::Undefined);
            let value = value?;
            Ok(Evaluation {
                value: defined(value)?,
                eval_ns: started.elapsed().as_nanos() as u64,
            })
        })
    }

    /// Evaluates any document under `data` (a package, a rule, a data value, or all
    /// of it), as OPA's Data API does. A path naming nothing is undefined, not an error.
    pub fn eval_path(
        &self,
        path: &[String],
        input: Option<Value>,
    ) -> Result<Evaluation, PolicyError> {
        let query = data_ref(path);
        let chars = query.chars().count();
        if chars > MAX_QUERY_CHARS {
            return Err(PolicyError::Path(format!(
                "path: names a document {chars} characters long as a query; at most {MAX_QUERY_CHARS}"
            )));
        }
        if let Some(fast) = self.fast.iter().find(|f| f.rule == query) {
            let input = input
                .map(regorus::Value::from)
                .unwrap_or(regorus::Value::Undefined);
            return fast.eval(&query, input);
        }
        self.with_engine(|engine| {
            let started = Instant::now();
            engine.set_input(
                input
                    .map(regorus::Value::from)
                    .unwrap_or(regorus::Value::Undefined),
            );
            let results = engine
                .eval_query(query, false)
                .map_err(|e| PolicyError::Eval(e.to_string()));
            engine.set_input(regorus::Value::Undefined);
            let value = match results?.result.into_iter().next() {
                Some(result) => match result.expressions.into_iter().next() {
                    Some(expr) => defined(expr.value)?,
                    None => None,
                },
                None => None,
            };
            Ok(Evaluation {
                value,
                eval_ns: started.elapsed().as_nanos() as u64,
            })
        })
    }
}

impl CompiledPolicies {
    /// Any Rego query, answered as `opa eval` answers it (`{"result": [...]}`, empty
    /// when undefined): what `mesh policy eval` prints.
    pub fn query(&self, query: &str, input: Option<Value>) -> Result<Value, PolicyError> {
        self.with_engine(|engine| {
            engine.set_input(
                input
                    .map(regorus::Value::from)
                    .unwrap_or(regorus::Value::Undefined),
            );
            let results = engine
                .eval_query(query.to_string(), false)
                .map_err(|e| PolicyError::Eval(e.to_string()));
            engine.set_input(regorus::Value::Undefined);
            serde_json::to_value(results?).map_err(|e| PolicyError::Eval(e.to_string()))
        })
    }
}

/// A hot rule compiled to regorus's register VM (RVM), several times faster than the
/// interpreter. Each evaluation borrows a VM with the program and data loaded.
struct FastPath {
    rule: String,
    program: std::sync::Arc<regorus::rvm::Program>,
    policy: regorus::CompiledPolicy,
    data: regorus::Value,
    vms: Mutex<Vec<regorus::rvm::RegoVM>>,
}

impl FastPath {
    /// `None` when the VM's compiler does not support something the rule needs (it
    /// has no `walk`, for one): the interpreter then serves it. The VM is an
    /// optimisation, never a requirement.
    fn compile(engine: &mut Engine, rule: &str, data: &Value) -> Option<Self> {
        let policy = engine.compile_with_entrypoint(&rule.into()).ok()?;
        let program =
            regorus::languages::rego::compiler::Compiler::compile_from_policy(&policy, &[rule])
                .map_err(
                    |e| tracing::info!(rule, error = %e, "policy VM unavailable; interpreting"),
                )
                .ok()?;
        let fast = Self {
            rule: rule.to_string(),
            program,
            policy,
            data: regorus::Value::from(data.clone()),
            vms: Mutex::new(Vec::new()),
        };
        // A VM that cannot even load the data is no use.
        let vm = fast.new_vm().ok()?;
        fast.give_back(vm);
        Some(fast)
    }

    fn new_vm(&self) -> Result<regorus::rvm::RegoVM, PolicyError> {
        let mut vm = regorus::rvm::RegoVM::new_with_policy(self.policy.clone());
        vm.load_program(self.program.clone());
        vm.set_data(self.data.clone())
            .map_err(|e| PolicyError::Eval(e.to_string()))?;
        Ok(vm)
    }

    fn give_back(&self, vm: regorus::rvm::RegoVM) {
        if let Ok(mut vms) = self.vms.lock()
            && vms.len() < POOL_LIMIT
        {
            vms.push(vm);
        }
    }

    fn eval(&self, rule: &str, input: regorus::Value) -> Result<Evaluation, PolicyError> {
        let pooled = self.vms.lock().ok().and_then(|mut v| v.pop());
        let mut vm = match pooled {
            Some(vm) => vm,
            None => self.new_vm()?,
        };
        let started = Instant::now();
        vm.set_input(input);
        let value = vm
            .execute_entry_point_by_name(rule)
            .map_err(|e| PolicyError::Eval(e.to_string()));
        vm.set_input(regorus::Value::Undefined);
        let eval_ns = started.elapsed().as_nanos() as u64;
        self.give_back(vm);
        Ok(Evaluation {
            value: defined(value?)?,
            eval_ns,
        })
    }
}

fn defined(value: regorus::Value) -> Result<Option<Value>, PolicyError> {
    if value == regorus::Value::Undefined {
        return Ok(None);
    }
    serde_json::to_value(&value)
        .map(Some)
        .map_err(|e| PolicyError::Eval(format!("result is not JSON: {e}")))
}

/// The longest path query the engine parses: it refuses a line of regorus's column
/// limit (1,024) or more.
const MAX_QUERY_CHARS: usize = 1023;

/// `["a", "b-c"]` → `data.a["b-c"]`; segments that are not identifiers are quoted so
/// a path can never inject Rego.
pub fn data_ref(path: &[String]) -> String {
    let mut out = String::from("data");
    for segment in path.iter().filter(|s| !s.is_empty()) {
        let ident = segment
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ident {
            out.push('.');
            out.push_str(segment);
        } else {
            out.push('[');
            out.push_str(&Value::String(segment.clone()).to_string());
            out.push(']');
        }
    }
    out
}

/// The module's package, from its `package` line.
pub fn package_of(source: &str) -> Option<String> {
    source.lines().find_map(|line| {
        line.trim()
            .strip_prefix("package ")
            .map(|p| p.trim().to_string())
    })
}

/// Whether a rule named `name` starts a line (how Rego rule heads are written).
fn declares(source: &str, name: &str) -> bool {
    source.lines().any(|line| rule_name(line) == Some(name))
}

fn rule_name(line: &str) -> Option<&str> {
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(line.len());
    (end > 0).then(|| &line[..end])
}

/// Every non-test, non-function rule as a `data.<package>.<rule>` query.
fn load_checked_rules(source: &PolicySource) -> Vec<String> {
    let mut rules = Vec::new();
    for module in &source.modules {
        let Some(package) = package_of(&module.source) else {
            continue;
        };
        for line in module.source.lines() {
            let Some(name) = rule_name(line) else {
                continue;
            };
            let is_function = line[name.len()..].starts_with('(');
            let keyword = matches!(name, "package" | "import" | "default");
            if !name.starts_with("test_") && !is_function && !keyword {
                let query = format!("data.{package}.{name}");
                if !rules.contains(&query) {
                    rules.push(query);
                }
            }
        }
    }
    rules
}

/// `test_*` rules, found as `opa test` finds them: by name, at the start of a line.
fn discover_tests(source: &PolicySource) -> Vec<String> {
    let mut tests = Vec::new();
    for module in &source.modules {
        let Some(package) = package_of(&module.source) else {
            continue;
        };
        for line in module.source.lines() {
            if let Some(name) = rule_name(line).filter(|n| n.starts_with("test_")) {
                let path = format!("data.{package}.{name}");
                if !tests.contains(&path) {
                    tests.push(path);
                }
            }
        }
    }
    tests
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Module;
    use serde_json::json;

    fn source(rego: &str) -> PolicySource {
        PolicySource {
            modules: vec![Module {
                path: "p.rego".into(),
                source: rego.into(),
            }],
            data: json!({"limits": {"max": 3}}),
            revision: "r1".into(),
            origin: "test".into(),
        }
    }

    #[test]
    fn evaluates_rules_and_paths_with_input() {
        let compiled = CompiledPolicies::compile(source(
            "package demo\nallow if input.n <= data.limits.max\nname := \"x\"\ntest_ok if allow with input as {\"n\": 1}\n",
        ))
        .unwrap();
        let yes = compiled
            .eval_rule("data.demo.allow", json!({"n": 2}).into())
            .unwrap();
        assert_eq!(yes.value, Some(json!(true)));
        let no = compiled
            .eval_rule("data.demo.allow", json!({"n": 9}).into())
            .unwrap();
        assert_eq!(no.value, None);
        let pkg = compiled
            .eval_path(&["demo".into()], Some(json!({"n": 1})))
            .unwrap();
        assert_eq!(pkg.value.unwrap()["name"], "x");
        let missing = compiled
            .eval_path(&["nope".into(), "x".into()], None)
            .unwrap();
        assert_eq!(missing.value, None);
        let data = compiled
            .eval_path(&["limits".into(), "max".into()], None)
            .unwrap();
        assert_eq!(data.value, Some(json!(3)));
        assert_eq!(compiled.tests, vec!["data.demo.test_ok".to_string()]);
        // A path too long for the engine's one-line query is the caller's error.
        let long = compiled.eval_path(&["x".repeat(2000)], None);
        assert!(matches!(long, Err(PolicyError::Path(_))));
        // The limit is the engine's own: the longest query it takes is still taken.
        let at = |chars: usize| compiled.eval_path(&["x".repeat(chars - "data.".len())], None);
        assert_eq!(at(MAX_QUERY_CHARS).unwrap().value, None);
        assert!(matches!(at(MAX_QUERY_CHARS + 1), Err(PolicyError::Path(_))));
    }

    #[test]
    fn compile_errors_name_file_and_line() {
        let err =
            CompiledPolicies::compile(source("package demo\n\nallow if {\n  input.x ==\n}\n"))
                .err()
                .unwrap()
                .to_string();
        assert!(err.contains("p.rego:"), "{err}");
        let unknown = CompiledPolicies::compile(source("package demo\nallow if no_such_fn(1)\n"))
            .err()
            .unwrap()
            .to_string();
        assert!(unknown.contains("p.rego"), "{unknown}");
    }

    /// The VM must agree with the interpreter on the default bundle, input by input.
    #[test]
    fn the_vm_and_the_interpreter_agree() {
        let compiled =
            CompiledPolicies::compile(crate::bundle::PolicyLocation::Embedded.load().unwrap())
                .unwrap();
        let on_vm: Vec<&str> = compiled.fast.iter().map(|f| f.rule.as_str()).collect();
        assert_eq!(
            on_vm,
            [crate::enforcer::DECISION_RULE, crate::enforcer::MASK_RULE],
            "the default bundle's hot rules should run on the VM"
        );
        let tiers = ["low", "medium", "high", "critical"];
        let hosts = [
            "billing.internal",
            "example.com",
            "169.254.169.254",
            "metadata.google.internal",
        ];
        let actions = [
            "tool.call",
            "task.assign",
            "task.submit",
            "agent.spawn",
            "egress",
            "model.call",
            "data.export",
            "secret.read",
            "agent.register",
            "tool.register",
        ];
        let roles = ["agent", "operator", "admin", "auditor"];
        let classes = ["public", "internal", "confidential", "restricted"];
        let providers = ["openai", "local", "shady"];
        for i in 0..400usize {
            let (role, class, provider) = (roles[i % 4], classes[(i / 3) % 4], providers[i % 3]);
            let input = json!({
                "action": actions[i % actions.len()],
                "subject": {"kind": "agent", "name": format!("a{}", i % 7), "riskTier": tiers[i % 4],
                            "roles": [role],
                            "password": "hunter2"},
                "resource": {"type": "tool", "id": format!("s{}", i % 3),
                             "classification": class,
                             "attributes": {"name": "t", "riskTier": tiers[(i / 4) % 4],
                                            "taskType": "x", "host": hosts[i % hosts.len()],
                                            "provider": provider,
                                            "body": if i % 2 == 0 { json!({"to": "ann@example.com", "token": "x"}) } else { json!("plain") }}},
            });
            let logged = json!({"input": input, "result": {"action": "allow"}});
            for (rule, doc) in [
                (crate::enforcer::DECISION_RULE, &input),
                (crate::enforcer::MASK_RULE, &logged),
            ] {
                let vm = compiled.eval_rule(rule, doc.clone().into()).unwrap().value;
                let tree = compiled
                    .eval_rule_interpreted(rule, doc.clone().into())
                    .unwrap()
                    .value;
                assert_eq!(vm, tree, "{rule} on {doc}");
            }
        }
    }

    #[test]
    fn paths_are_quoted_not_spliced() {
        assert_eq!(data_ref(&["a".into(), "b_1".into()]), "data.a.b_1");
        assert_eq!(data_ref(&["x; true".into()]), "data[\"x; true\"]");
    }
}
