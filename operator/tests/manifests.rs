//! Every object built from every sample in `operator/examples/`, checked by
//! tools that know Kubernetes (see `check_manifests.py`): strict schema
//! validation against Kubernetes 1.33 and the newest version the validator
//! knows, the samples against the CRD schema, the bad samples rejected for
//! their stated reason, and the CRD's CEL rules evaluated on all of them.
//!
//! Needs `SLUICE_TEST_PYTHON` (set by `scripts/test.sh`); without it the
//! test prints a notice and passes.

use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_operator::crd::Ingester;
use sluice_operator::reconcile::build::build;
use sluice_operator::reconcile::validate::{ValidateOptions, validate};

#[path = "chart/tools.rs"]
mod tools;

use tools::root;

fn samples() -> Vec<PathBuf> {
    let dir = root().join("operator/examples");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .expect("read operator/examples")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    out.sort();
    out
}

fn parse(path: &Path) -> Ingester {
    let text = std::fs::read_to_string(path).expect("read sample");
    let value: serde_json::Value = yaml_serde::from_str(&text).expect("sample is YAML");
    let mut ing: Ingester = serde_json::from_value(value).expect("sample is an Ingester");
    // What the API server fills in.
    ing.metadata.uid = Some("00000000-0000-0000-0000-000000000001".into());
    ing.metadata
        .namespace
        .get_or_insert_with(|| "default".into());
    ing.metadata.generation = Some(1);
    ing
}

#[test]
fn every_sample_is_valid_and_builds() {
    let all = samples();
    assert!(all.len() >= 3, "samples: {all:?}");
    for path in all {
        let ing = parse(&path);
        let v = validate(&ing, &ValidateOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let r = build(&v, v.replicas);
        assert_eq!(
            r.statefulset.spec.as_ref().and_then(|s| s.replicas),
            Some(ing.spec.replicas)
        );
    }
}

#[test]
fn built_objects_and_samples_pass_kubernetes_tools() {
    let Some(python) = std::env::var_os("SLUICE_TEST_PYTHON") else {
        println!(
            "NOTICE: SLUICE_TEST_PYTHON is not set; skipping kubernetes-validate, jsonschema \
             and CEL checks (scripts/test.sh sets it)"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    for path in samples() {
        let ing = parse(&path);
        let v = validate(&ing, &ValidateOptions::default()).expect("valid sample");
        let stem = path.file_stem().expect("file name").to_string_lossy();
        // The objects as built now, and mid-scale-down (one more pod than
        // wanted while the last drains).
        for (suffix, replicas) in [("", v.replicas), ("-draining", v.replicas + 1)] {
            let yaml = build(&v, replicas).to_yaml().expect("serialise");
            std::fs::write(dir.path().join(format!("{stem}{suffix}.yaml")), yaml)
                .expect("write manifest");
        }
    }
    std::fs::copy(
        root().join("crds/ingester.yaml"),
        dir.path().join("crd.yaml"),
    )
    .expect("copy CRD");

    let out = Command::new(&python)
        .arg(root().join("operator/tests/check_manifests.py"))
        .arg("--crd")
        .arg(root().join("crds/ingester.yaml"))
        .arg("--examples")
        .arg(root().join("operator/examples"))
        .arg("--built")
        .arg(dir.path())
        .args(["--kube-version", "1.33"])
        .output()
        .expect("run check_manifests.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "check_manifests.py failed:\n{stdout}{stderr}"
    );
}
