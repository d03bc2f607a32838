//! Compiles the .proto files with protox (pure Rust), so no system `protoc` is needed, and
//! keeps the encoded descriptor set for gRPC server reflection.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = protox::compile(
        ["chat/v1/chat.proto", "message/v1/message.proto"],
        ["proto"],
    )?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("file_descriptor_set.bin"),
        files.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(files)?;
    Ok(())
}
