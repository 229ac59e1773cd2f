//! The default bundle, `policies/` in the repository, compiled into the binary so
//! `mesh up` enforces it from any directory. A test keeps this list equal to the folder.

pub const FILES: &[(&str, &str)] = &[
    ("data.json", include_str!("../../../policies/data.json")),
    (
        "mesh/admin.rego",
        include_str!("../../../policies/mesh/admin.rego"),
    ),
    (
        "mesh/admin_test.rego",
        include_str!("../../../policies/mesh/admin_test.rego"),
    ),
    (
        "mesh/data_handling.rego",
        include_str!("../../../policies/mesh/data_handling.rego"),
    ),
    (
        "mesh/data_handling_test.rego",
        include_str!("../../../policies/mesh/data_handling_test.rego"),
    ),
    (
        "mesh/decision.rego",
        include_str!("../../../policies/mesh/decision.rego"),
    ),
    (
        "mesh/egress.rego",
        include_str!("../../../policies/mesh/egress.rego"),
    ),
    (
        "mesh/egress_test.rego",
        include_str!("../../../policies/mesh/egress_test.rego"),
    ),
    (
        "mesh/risk.rego",
        include_str!("../../../policies/mesh/risk.rego"),
    ),
    (
        "mesh/risk_test.rego",
        include_str!("../../../policies/mesh/risk_test.rego"),
    ),
    (
        "system/log.rego",
        include_str!("../../../policies/system/log.rego"),
    ),
    (
        "system/log_test.rego",
        include_str!("../../../policies/system/log_test.rego"),
    ),
];

#[cfg(test)]
mod tests {
    use super::FILES;
    use std::path::Path;

    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/"),
                );
            }
        }
    }

    #[test]
    fn every_file_of_the_policies_folder_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
        let mut on_disk = Vec::new();
        walk(&root, &root, &mut on_disk);
        on_disk.sort();
        let embedded: Vec<String> = FILES.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(
            embedded, on_disk,
            "update crates/mesh-policy/src/embedded.rs"
        );
    }
}
