//! The code in `src/generated/` is what the .proto files in `proto/` compile to (protox, a
//! pure-Rust proto compiler, and tonic-prost-build): this test compiles them afresh into a
//! scratch folder and compares. With `UPDATE_GENERATED=1` it writes the fresh files into
//! `src/generated/` instead; commit them with the .proto change.

use std::path::Path;

use prost::Message;

const FILES: [&str; 4] = [
    "chat.v1.rs",
    "message.v1.rs",
    "webhook.v1.rs",
    "file_descriptor_set.bin",
];

#[test]
fn the_generated_code_matches_the_proto_files() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fresh = std::env::temp_dir().join(format!("proto-generated-{}", std::process::id()));
    std::fs::create_dir_all(&fresh).unwrap();
    let descriptors = protox::compile(
        [
            "chat/v1/chat.proto",
            "message/v1/message.proto",
            "webhook/v1/webhook.proto",
        ],
        [crate_dir.join("proto")],
    )
    .expect("the .proto files compile");
    std::fs::write(
        fresh.join("file_descriptor_set.bin"),
        descriptors.encode_to_vec(),
    )
    .unwrap();
    tonic_prost_build::configure()
        .out_dir(&fresh)
        .compile_fds(descriptors)
        .expect("code generation");

    let kept = crate_dir.join("src/generated");
    let update = std::env::var_os("UPDATE_GENERATED").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for file in FILES {
        let new = std::fs::read(fresh.join(file)).unwrap();
        if std::fs::read(kept.join(file)).ok().as_deref() != Some(new.as_slice()) {
            if update {
                std::fs::write(kept.join(file), &new).unwrap();
            }
            stale.push(file);
        }
    }
    let _ = std::fs::remove_dir_all(&fresh);
    assert!(
        update || stale.is_empty(),
        "src/generated/{stale:?} differ from what proto/ compiles to: run \
         `UPDATE_GENERATED=1 cargo test -p proto --test generated` and commit the result"
    );
}
