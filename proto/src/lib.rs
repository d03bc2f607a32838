//! The gRPC contract of the chat services. The code is generated from `proto/` by
//! `tests/generated.rs` and kept in `src/generated/`, so building the services needs no proto
//! compiler at all (compiling one took a quarter of a first build's time); that test fails
//! when the .proto files and the generated code disagree, and
//! `UPDATE_GENERATED=1 cargo test -p proto --test generated` writes them anew.

pub mod chat {
    pub mod v1 {
        include!("generated/chat.v1.rs");
    }
}

pub mod message {
    pub mod v1 {
        include!("generated/message.v1.rs");
    }
}

pub mod webhook {
    pub mod v1 {
        include!("generated/webhook.v1.rs");
    }
}

/// The services' descriptors (encoded `FileDescriptorSet`), for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("generated/file_descriptor_set.bin");
