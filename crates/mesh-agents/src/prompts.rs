//! The built-in agents' prompt templates: `prompts/*.md` in the repository, compiled in;
//! a directory holding files of the same names overrides them one by one.
//!
//! A template's `{{name}}` placeholders are filled from the task; an unknown name is
//! left empty.

use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct Prompts {
    pub planner: String,
    pub coder: String,
    pub critic: String,
}

impl Default for Prompts {
    fn default() -> Self {
        Prompts {
            planner: include_str!("../../../prompts/planner.md").to_string(),
            coder: include_str!("../../../prompts/coder.md").to_string(),
            critic: include_str!("../../../prompts/critic.md").to_string(),
        }
    }
}

impl Prompts {
    /// The embedded prompts, with any of `planner.md`, `coder.md`, `critic.md` found in
    /// `dir` in their place. A directory that does not exist is an error: a typo must
    /// not silently fall back to the defaults.
    pub fn load(dir: Option<&Path>) -> Result<Self, String> {
        let mut prompts = Prompts::default();
        let Some(dir) = dir else {
            return Ok(prompts);
        };
        if !dir.is_dir() {
            return Err(format!(
                "prompts directory {} does not exist",
                dir.display()
            ));
        }
        for (file, slot) in [
            ("planner.md", &mut prompts.planner),
            ("coder.md", &mut prompts.coder),
            ("critic.md", &mut prompts.critic),
        ] {
            let path = dir.join(file);
            if path.exists() {
                *slot = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            }
        }
        Ok(prompts)
    }
}

/// Fills `{{name}}` placeholders.
pub fn render(template: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let name = after[..end].trim();
                if let Some(value) = vars.get(name) {
                    out.push_str(value);
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                return out;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_unknown_ones_emptied() {
        let vars = BTreeMap::from([("spec", "rename x".to_string())]);
        assert_eq!(
            render("Spec: {{spec}}; {{ nope }}; {{open", &vars),
            "Spec: rename x; ; {{open"
        );
    }

    #[test]
    fn a_directory_overrides_files_it_has() {
        let dir = std::env::temp_dir().join(format!("mesh-prompts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("critic.md"), "be harsh").unwrap();
        let p = Prompts::load(Some(&dir)).unwrap();
        assert_eq!(p.critic, "be harsh");
        assert_eq!(p.planner, Prompts::default().planner);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            Prompts::load(Some(&dir))
                .unwrap_err()
                .contains("does not exist")
        );
    }
}
