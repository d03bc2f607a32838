use chat_manager::config::{Cli, Command, ServeConfig};
use clap::Parser;
use common::bus::EventBus;
use common::db::Db;
use common::service_auth::{CHAT_MANAGER_CALLERS, ServiceName};
use proto::chat::v1::chat_service_server::SERVICE_NAME;
use tokio::sync::watch;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = common::service_runtime(cli.serve.db.database_pool_size)
        .map_err(BoxError::from)
        .and_then(|runtime| runtime.block_on(run(cli)));
    common::exit_code("chat-manager", result)
}

async fn run(cli: Cli) -> Result<(), BoxError> {
    let telemetry = common::telemetry::init(cli.serve.log_format, "chat-manager");
    let result = match cli.command {
        Some(Command::Healthcheck) => {
            common::grpc_server::healthcheck_command(cli.serve.listen_addr, SERVICE_NAME).await;
            Ok(())
        }
        Some(Command::Migrate) => {
            let target = cli.serve.db.target(&cli.serve.database_schema)?;
            Db::migrate_only(
                target,
                chat_manager::db::MIGRATIONS,
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
    let security = config
        .grpc
        .security(ServiceName::ChatManager, CHAT_MANAGER_CALLERS)?;
    // Installed first: a SIGTERM during start-up (still waiting for PostgreSQL) stops the
    // service at once and cleanly.
    let stop = common::shutdown_watch();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (_, metrics_server) =
        common::metrics::spawn_server(config.metrics_addr, shutdown_rx.clone()).await?;

    let target = config.db.target(&config.database_schema)?;
    let connecting =
        Db::connect_with_retry(target, chat_manager::db::MIGRATIONS, config.db.options());
    let Some(db) = common::unless_stopped(&stop, connecting).await else {
        tracing::info!("stopped during start-up");
        let _ = shutdown_tx.send(true);
        let _ = metrics_server.await;
        return Ok(());
    };
    let bus = EventBus::amqp(config.amqp.endpoint("the outbox relay publishes there")?)
        .with_subscribers(vec![common::topology::chat_events_subscriber(
            &config.chat_events_exchange,
            &config.chat_events_queue,
        )]);
    let (service, relay) =
        chat_manager::service(db.clone(), bus, &config.chat_events_exchange, shutdown_rx);

    let listener = tokio::net::TcpListener::bind(config.listen_addr).await?;
    tracing::info!(addr = %config.listen_addr, "chat-manager listening");
    common::grpc_server::serve(listener, service, Some(db), security, common::stopped(stop))
        .await?;
    let _ = shutdown_tx.send(true);
    let _ = relay.await;
    let _ = metrics_server.await;
    Ok(())
}
