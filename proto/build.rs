//! Generates the Rust code for `sluice/ingester/v1/*.proto`.
//!
//! `protoc` comes from `protoc-bin-vendored` so a fresh machine needs nothing
//! installed; set `PROTOC` to use another one.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "sluice/ingester/v1/write.proto",
        "sluice/ingester/v1/query.proto",
        "sluice/ingester/v1/catalog.proto",
        "sluice/ingester/v1/control.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .bytes(".")
        .file_descriptor_set_path(out.join("sluice_descriptor.bin"))
        .compile_protos(&protos, &["."])?;
    Ok(())
}
