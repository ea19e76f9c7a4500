//! Compiles `proto/` with the vendored protoc (no system protoc is needed on any machine) and
//! writes the encoded `FileDescriptorSet` that the gateway and gRPC reflection read.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "transactions/auth/v1/auth.proto",
        "transactions/accounts/v1/accounts.proto",
        "transactions/transfers/v1/transfers.proto",
        "transactions/webhooks/v1/webhooks.proto",
    ];
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("descriptor.bin"))
        // unimplemented RPCs answer UNIMPLEMENTED instead of failing to compile
        .generate_default_stubs(true)
        .compile_protos(&files.map(|f| root.join(f)), &[root.clone(), include])?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
