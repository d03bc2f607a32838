//! The gRPC contract of the chat services, generated from `proto/` at build time.

pub mod chat {
    pub mod v1 {
        tonic::include_proto!("chat.v1");
    }
}

pub mod message {
    pub mod v1 {
        tonic::include_proto!("message.v1");
    }
}

/// Both services' descriptors (encoded `FileDescriptorSet`), for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));
