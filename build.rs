//! Compiles tollgate's own gRPC API (`proto/`) into Rust, without a system `protoc`: `protox`, a
//! protobuf compiler written in Rust, parses the files into a `FileDescriptorSet`, and
//! tonic-prost-build generates the messages, client and server from it. The encoded set is also
//! written to `OUT_DIR` for gRPC server reflection.

use std::path::PathBuf;

/// Relative to the include directory `proto`, so the file is named as its package says.
const PROTO: &str = "tollgate/admin/v1/admin.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut compiler = protox::Compiler::new(["proto"])?;
    // Source info carries the proto comments into the generated doc comments.
    compiler.include_source_info(true).open_file(PROTO)?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("admin_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
