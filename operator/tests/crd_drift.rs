//! `crds/ingester.yaml` must be exactly what `sluice-operator crd` prints:
//! the committed file is what users and the Helm chart install.

#[path = "chart/tools.rs"]
mod tools;

#[test]
fn committed_crd_matches_the_rust_types() {
    let want = sluice_operator::crd::crd_yaml().expect("CRD serialises");
    tools::assert_generated(
        &tools::root().join("crds/ingester.yaml"),
        &want,
        "SLUICE_UPDATE_CRD",
        "regenerate it with `cargo run -p sluice-operator -- crd > crds/ingester.yaml` \
         or `SLUICE_UPDATE_CRD=1 cargo test -p sluice-operator --test crd_drift`",
    );
}
