use chat_manager::config::{Cli, ServeConfig};
use clap::Parser;
use common::service::{BoxError, Process, Settings, Started};
use common::service_auth::{CHAT_MANAGER_CALLERS, ServiceName};
use pipeline::bus::EventBus;
use proto::chat::v1::chat_service_server::SERVICE_NAME;

const PROCESS: Process = Process {
    name: "chat-manager",
    grpc_service: SERVICE_NAME,
    migrations: chat_manager::db::MIGRATIONS,
    me: ServiceName::ChatManager,
    callers: CHAT_MANAGER_CALLERS,
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

/// webhook-manager's queue, unless it is not deployed.
fn webhook_queue(config: &ServeConfig) -> Option<pipeline::bus::SubscriptionSpec> {
    (!config.webhook_events_queue.is_empty()).then(|| {
        pipeline::topology::webhook_events_subscriber(
            &config.chat_events_exchange,
            &config.message_events_exchange,
            &config.webhook_events_queue,
        )
    })
}

async fn serve(config: ServeConfig, started: Started) -> Result<(), BoxError> {
    let bus = EventBus::amqp(config.amqp.endpoint("the outbox relay publishes there")?)
        .with_subscribers(
            std::iter::once(pipeline::topology::chat_events_subscriber(
                &config.chat_events_exchange,
                &config.chat_events_queue,
            ))
            .chain(webhook_queue(&config))
            .collect(),
        );
    let (service, relay) = chat_manager::service(
        started.db.clone(),
        bus,
        &config.chat_events_exchange,
        started.shutdown.clone(),
    );
    started.serve(service, vec![relay]).await
}
