use clap::Parser;
use common::service::{BoxError, Process, Settings, Started};
use common::service_auth::{ServiceName, WEBHOOK_MANAGER_CALLERS};
use pipeline::bus::EventBus;
use proto::webhook::v1::webhook_service_server::SERVICE_NAME;
use webhook_manager::config::{Cli, ServeConfig};

const PROCESS: Process = Process {
    name: "webhook-manager",
    grpc_service: SERVICE_NAME,
    migrations: webhook_manager::db::MIGRATIONS,
    me: ServiceName::WebhookManager,
    callers: WEBHOOK_MANAGER_CALLERS,
};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = &cli.serve;
    let settings = Settings {
        db: &config.db,
        database_schema: &config.database_schema,
        grpc: &config.grpc,
        listen_addr: config.listen_addr,
        metrics_addr: config.metrics_addr,
        log_format: config.log_format,
    };
    PROCESS.main(settings, cli.command, |started| {
        serve(config.clone(), started)
    })
}

async fn serve(config: ServeConfig, started: Started) -> Result<(), BoxError> {
    let bus = EventBus::amqp(
        config
            .amqp
            .endpoint("both services' events come from there")?,
    );
    let topology = config.topology();
    if config.webhook_allow_private_addresses {
        tracing::warn!(
            "WEBHOOK_ALLOW_PRIVATE_ADDRESSES: webhooks may reach loopback, private and link-local addresses"
        );
    }
    // One attempt before serving; with RabbitMQ unreachable it serves all the same and the
    // consumer keeps subscribing in the background, with backoff.
    let subscription = match common::unless_stopped(
        &started.stop,
        webhook_manager::subscribe(&bus, &topology),
    )
    .await
    {
        None => return started.stopped_early().await,
        Some(Ok(subscription)) => Some(subscription),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "RabbitMQ not reachable; serving, and subscribing to events in the background");
            None
        }
    };
    let settings = webhook_manager::ServiceSettings {
        topology,
        dispatch: config.dispatch(),
    };
    let (service, tasks) = webhook_manager::service(
        started.db.clone(),
        bus,
        settings,
        subscription,
        started.shutdown.clone(),
    )?;
    started.serve(service, tasks).await
}
