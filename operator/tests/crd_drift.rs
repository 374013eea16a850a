//! `crds/ingester.yaml` must be exactly what `sluice-operator crd` prints:
//! the committed file is what users and the Helm chart install.

use std::path::Path;

#[test]
fn committed_crd_matches_the_rust_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/ingester.yaml");
    let want = sluice_operator::crd::crd_yaml().expect("CRD serialises");
    if std::env::var_os("SLUICE_UPDATE_CRD").is_some() {
        std::fs::write(&path, &want).expect("write crds/ingester.yaml");
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have != want {
        let line = have
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| have.lines().count().min(want.lines().count()))
            + 1;
        panic!(
            "crds/ingester.yaml differs from the generated CRD (first at line {line}); \
             regenerate it with `cargo run -p sluice-operator -- crd > crds/ingester.yaml` \
             or `SLUICE_UPDATE_CRD=1 cargo test -p sluice-operator --test crd_drift`"
        );
    }
}
