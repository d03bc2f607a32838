//! The embedded default: chat-manager, message-manager and webhook-manager in this process,
//! each over its own SQLite file in the data directory, talking through an in-process event
//! bus. Only the storage and the bus differ from the split deployment; the domain code is the
//! same. (Webhooks may point at private addresses here: this is for local development.)

use std::path::{Path, PathBuf};

use common::db::{Db, DbOptions, DbTarget};
use pipeline::bus::EventBus;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use common::grpc_client::{self, ChatClient, GrpcTransport};
use common::grpc_server::ObserveLayer;
use common::service_auth::{
    CHAT_MANAGER_CALLERS, InternalKey, MESSAGE_MANAGER_CALLERS, ServiceName,
    WEBHOOK_MANAGER_CALLERS,
};
use tower::Layer;

/// The services in this process. Their clients carry internal tokens and the services check
/// them, as in the split deployment, with a key made for this run.
pub struct Embedded {
    pub chat: GrpcTransport,
    pub message: GrpcTransport,
    pub webhook: GrpcTransport,
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
    start_with(data_dir, webhook_settings(), shutdown).await
}

/// How the embedded default delivers webhooks: as the contract has it, to any address.
pub fn webhook_settings() -> webhook_manager::dispatch::DispatchSettings {
    webhook_manager::dispatch::DispatchSettings {
        address: webhook_manager::address::AddressPolicy {
            allow_private: true,
        },
        ..Default::default()
    }
}

/// The embedded default, its webhooks delivered with `webhooks`.
pub async fn start_with(
    data_dir: &Path,
    webhooks: webhook_manager::dispatch::DispatchSettings,
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

    let webhook_db = open(
        data_dir,
        "webhook-manager.db",
        webhook_manager::db::MIGRATIONS,
    )
    .await?;

    // message-manager and webhook-manager subscribe before the relays can publish: the
    // in-process bus keeps nothing for late subscribers.
    let webhook_topology = webhook_manager::Topology::default();
    let webhook_subscription = webhook_manager::subscribe(&bus, &webhook_topology).await?;
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
    // The same per-call spans, metrics and checks of the caller as over a socket.
    let key = InternalKey::generate();
    let chat = grpc_client::in_process(
        ObserveLayer.layer(
            key.guard(ServiceName::ChatManager, CHAT_MANAGER_CALLERS)
                .layer(chat_server),
        ),
    );
    let signed = |transport: &GrpcTransport, me, audience| {
        grpc_client::signed(transport.clone(), key.credentials(me, audience))
    };
    let (message_server, mut tasks) = message_manager::service(
        message_db,
        bus.clone(),
        topology,
        subscription,
        Some((
            ChatClient::new(signed(
                &chat,
                ServiceName::MessageManager,
                ServiceName::ChatManager,
            )),
            message_manager::membership::MAX_AGE,
        )),
        shutdown.clone(),
    );
    tasks.push(chat_relay);
    let (webhook_server, webhook_tasks) = webhook_manager::service(
        webhook_db,
        bus.clone(),
        webhook_manager::ServiceSettings {
            topology: webhook_topology,
            dispatch: webhooks,
        },
        webhook_subscription,
        shutdown,
    )?;
    tasks.extend(webhook_tasks);
    let webhook = grpc_client::in_process(
        ObserveLayer.layer(
            key.guard(ServiceName::WebhookManager, WEBHOOK_MANAGER_CALLERS)
                .layer(webhook_server),
        ),
    );
    let message = grpc_client::in_process(
        ObserveLayer.layer(
            key.guard(ServiceName::MessageManager, MESSAGE_MANAGER_CALLERS)
                .layer(message_server),
        ),
    );
    Ok(Embedded {
        chat: signed(&chat, ServiceName::ApiGateway, ServiceName::ChatManager),
        message: signed(
            &message,
            ServiceName::ApiGateway,
            ServiceName::MessageManager,
        ),
        webhook: signed(
            &webhook,
            ServiceName::ApiGateway,
            ServiceName::WebhookManager,
        ),
        bus,
        tasks,
    })
}

/// Where the signing key came from (the token command says which it used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `JWT_SECRET`.
    Environment,
    /// The embedded default's key file.
    File(PathBuf),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Environment => f.write_str("JWT_SECRET"),
            KeySource::File(path) => write!(f, "the key in {}", path.display()),
        }
    }
}

/// Why there is no usable signing key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Weak(common::secrets::WeakSecret),
    #[error(
        "JWT_SECRET is required when CHAT_MANAGER_URL is set (the split deployment keeps no key on disk)"
    )]
    SplitNeedsSecret,
    #[error(
        "no signing key at {}: the embedded default creates it when it first starts. Run this \
         in the folder where `cargo run -p api-gateway` runs (or pass --data-dir of the running \
         gateway), or set JWT_SECRET",
        .0.display()
    )]
    NoEmbeddedKey(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The file of the embedded default's key in `data_dir`.
pub fn key_file(data_dir: &Path) -> PathBuf {
    data_dir.join("jwt-secret")
}

/// The tokens' signing key: `JWT_SECRET` when set (refused when weak); otherwise, outside the
/// split deployment, the embedded default's key in `data_dir`, made (random) when `create` and
/// missing. The token command passes `create: false`: a key it made would sign tokens no
/// running gateway accepts.
pub fn signing_key(
    configured: Option<&str>,
    data_dir: &Path,
    split: bool,
    create: bool,
) -> Result<(Vec<u8>, KeySource), KeyError> {
    if let Some(secret) = configured {
        common::secrets::check("JWT_SECRET", secret).map_err(KeyError::Weak)?;
        return Ok((secret.as_bytes().to_vec(), KeySource::Environment));
    }
    if split {
        return Err(KeyError::SplitNeedsSecret);
    }
    let path = key_file(data_dir);
    let shown = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let key = text.trim();
            common::secrets::check(&format!("the key in {}", shown.display()), key)
                .map_err(KeyError::Weak)?;
            Ok((key.as_bytes().to_vec(), KeySource::File(shown)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            std::fs::create_dir_all(data_dir).map_err(|e| KeyError::Io {
                path: shown.clone(),
                source: e,
            })?;
            let key = common::secrets::generate();
            write_private(&path, &key).map_err(|e| KeyError::Io {
                path: shown.clone(),
                source: e,
            })?;
            Ok((key.into_bytes(), KeySource::File(shown)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(KeyError::NoEmbeddedKey(shown)),
        Err(e) => Err(KeyError::Io {
            path: shown,
            source: e,
        }),
    }
}

/// Writes `contents` to `path`, readable by this user only (mode 0600 on Unix).
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    // `mode` applies only when the file is created: an older file keeps its mode otherwise.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents.as_bytes())
}
