//! The embedded default: chat-manager in this process over a SQLite file in the data
//! directory, publishing to an in-process event bus. Only the storage and the bus differ from
//! the split deployment; the domain code is the same.

use std::path::{Path, PathBuf};

use common::bus::EventBus;
use common::db::{Db, DbOptions, DbTarget};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use common::grpc_client::{self, GrpcTransport};

pub struct Embedded {
    pub chat: GrpcTransport,
    pub bus: EventBus,
    pub tasks: Vec<JoinHandle<()>>,
}

pub async fn start(
    data_dir: &Path,
    shutdown: watch::Receiver<bool>,
) -> Result<Embedded, Box<dyn std::error::Error + Send + Sync>> {
    std::fs::create_dir_all(data_dir)?;
    let bus = EventBus::in_process();
    let path = data_dir.join("chat-manager.db");
    let target = DbTarget::parse(&path.to_string_lossy(), "chat_manager");
    let db = tokio::task::spawn_blocking(move || {
        Db::connect(target, chat_manager::db::MIGRATIONS, &DbOptions::default())
    })
    .await??;
    let (server, relay) =
        chat_manager::service(db, bus.clone(), chat_manager::DEFAULT_EXCHANGE, shutdown);
    Ok(Embedded {
        chat: grpc_client::in_process(server),
        bus,
        tasks: vec![relay],
    })
}

/// The signing key of the embedded default: `JWT_SECRET` when set, else a random key kept in
/// the data directory, so tokens stay valid across restarts.
pub fn jwt_secret(configured: Option<&str>, data_dir: &Path) -> std::io::Result<Vec<u8>> {
    if let Some(secret) = configured {
        return Ok(secret.as_bytes().to_vec());
    }
    let path: PathBuf = data_dir.join("jwt-secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().as_bytes().to_vec()),
        _ => {
            std::fs::create_dir_all(data_dir)?;
            let secret = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            write_private(&path, &secret)?;
            Ok(secret.into_bytes())
        }
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents.as_bytes())
}
