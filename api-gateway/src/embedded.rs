//! The embedded default: chat-manager and message-manager in this process, each over its own
//! SQLite file in the data directory, talking through an in-process event bus. Only the
//! storage and the bus differ from the split deployment; the domain code is the same.

use std::path::{Path, PathBuf};

use common::bus::EventBus;
use common::db::{Db, DbOptions, DbTarget};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use common::grpc_client::{self, ChatClient, GrpcTransport};
use common::grpc_server::ObserveLayer;
use tower::Layer;

pub struct Embedded {
    pub chat: GrpcTransport,
    pub message: GrpcTransport,
    pub bus: EventBus,
    pub tasks: Vec<JoinHandle<()>>,
}

async fn open(
    data_dir: &Path,
    file: &str,
    migrations: common::db::Migrations,
) -> Result<Db, Box<dyn std::error::Error + Send + Sync>> {
    let target = DbTarget::parse(&data_dir.join(file).to_string_lossy(), "");
    Ok(
        tokio::task::spawn_blocking(move || Db::connect(target, migrations, &DbOptions::default()))
            .await??,
    )
}

pub async fn start(
    data_dir: &Path,
    shutdown: watch::Receiver<bool>,
) -> Result<Embedded, Box<dyn std::error::Error + Send + Sync>> {
    std::fs::create_dir_all(data_dir)?;
    let bus = EventBus::in_process();
    let chat_db = open(data_dir, "chat-manager.db", chat_manager::db::MIGRATIONS).await?;
    let message_db = open(
        data_dir,
        "message-manager.db",
        message_manager::db::MIGRATIONS,
    )
    .await?;

    // message-manager subscribes before chat-manager's relay can publish: the in-process bus
    // keeps nothing for late subscribers.
    let topology = message_manager::Topology::default();
    let subscription = message_manager::subscribe_chat_events(
        &bus,
        &topology.chat_exchange,
        &topology.chat_events_queue,
    )
    .await?;
    let (chat_server, chat_relay) = chat_manager::service(
        chat_db,
        bus.clone(),
        chat_manager::DEFAULT_EXCHANGE,
        shutdown.clone(),
    );
    // The same per-call spans and metrics as over a socket.
    let chat = grpc_client::in_process(ObserveLayer.layer(chat_server));
    let (message_server, mut tasks) = message_manager::service(
        message_db,
        bus.clone(),
        topology,
        subscription,
        Some(ChatClient::new(chat.clone())),
        shutdown,
    );
    tasks.push(chat_relay);
    Ok(Embedded {
        chat,
        message: grpc_client::in_process(ObserveLayer.layer(message_server)),
        bus,
        tasks,
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
