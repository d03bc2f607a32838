use clap::Parser;
use common::bus::{EventBus, Subscription};
use common::db::Db;
use common::grpc_client::{self, ChatClient};
use common::service_auth::{MESSAGE_MANAGER_CALLERS, ServiceName};
use message_manager::Topology;
use message_manager::config::{Cli, Command, ServeConfig};
use proto::message::v1::message_service_server::SERVICE_NAME;
use tokio::sync::watch;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = common::service_runtime(cli.serve.db.database_pool_size)
        .map_err(BoxError::from)
        .and_then(|runtime| runtime.block_on(run(cli)));
    common::exit_code("message-manager", result)
}

async fn run(cli: Cli) -> Result<(), BoxError> {
    let telemetry = common::telemetry::init(cli.serve.log_format, "message-manager");
    let result = match cli.command {
        Some(Command::Healthcheck) => {
            common::grpc_server::healthcheck_command(cli.serve.listen_addr, SERVICE_NAME).await;
            Ok(())
        }
        Some(Command::Migrate) => {
            let target = cli.serve.db.target(&cli.serve.database_schema)?;
            Db::migrate_only(
                target,
                message_manager::db::MIGRATIONS,
                cli.serve.db.timeouts(),
            )
            .await?;
            tracing::info!("migrations up to date");
            Ok(())
        }
        None => serve(cli.serve).await,
    };
    telemetry.shutdown().await;
    result
}

async fn serve(config: ServeConfig) -> Result<(), BoxError> {
    // Refused before anything starts: no key, or a weak one.
    let key = config.grpc.key()?;
    let security = config
        .grpc
        .security(ServiceName::MessageManager, MESSAGE_MANAGER_CALLERS)?;
    // Installed first: a SIGTERM during start-up (still waiting for PostgreSQL) stops the
    // service at once and cleanly.
    let stop = common::shutdown_watch();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (_, metrics_server) =
        common::metrics::spawn_server(config.metrics_addr, shutdown_rx.clone()).await?;

    let target = config.db.target(&config.database_schema)?;
    let connecting =
        Db::connect_with_retry(target, message_manager::db::MIGRATIONS, config.db.options());
    let Some(db) = common::unless_stopped(&stop, connecting).await else {
        tracing::info!("stopped during start-up");
        let _ = shutdown_tx.send(true);
        let _ = metrics_server.await;
        return Ok(());
    };
    let bus = EventBus::amqp(
        config
            .amqp
            .endpoint("the relay publishes there, chat events come from there")?,
    );
    let chat_url = config
        .chat_manager_url
        .as_deref()
        .ok_or("CHAT_MANAGER_URL is required")?;
    let chat = ChatClient::new(grpc_client::signed(
        grpc_client::remote(chat_url)?,
        key.credentials(ServiceName::MessageManager, ServiceName::ChatManager),
    ));

    let topology = Topology {
        exchange: config.message_events_exchange.clone(),
        chat_exchange: config.chat_events_exchange.clone(),
        chat_events_queue: config.chat_events_queue.clone(),
    };
    // One attempt before serving, so that once ready the service's queue exists and takes
    // chat events; with RabbitMQ unreachable (within the bus's timeouts) it serves all the
    // same and the consumer keeps subscribing in the background, with backoff.
    let subscribing = message_manager::subscribe_chat_events(
        &bus,
        &config.chat_events_exchange,
        &config.chat_events_queue,
    );
    let subscription: Option<Subscription> = match common::unless_stopped(&stop, subscribing).await
    {
        None => {
            tracing::info!("stopped during start-up");
            let _ = shutdown_tx.send(true);
            let _ = metrics_server.await;
            return Ok(());
        }
        Some(Ok(subscription)) => Some(subscription),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "RabbitMQ not reachable; serving, and subscribing to chat events in the background");
            None
        }
    };
    let (service, tasks) = message_manager::service(
        db.clone(),
        bus,
        topology,
        subscription,
        Some((chat, config.membership_max_age)),
        shutdown_rx,
    );

    let listener = tokio::net::TcpListener::bind(config.listen_addr).await?;
    tracing::info!(addr = %config.listen_addr, "message-manager listening");
    common::grpc_server::serve(listener, service, Some(db), security, common::stopped(stop))
        .await?;
    let _ = shutdown_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let _ = metrics_server.await;
    Ok(())
}
