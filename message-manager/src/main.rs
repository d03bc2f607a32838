use clap::Parser;
use common::grpc_client::{self, ChatClient};
use common::service::{BoxError, Process, Settings, Started};
use common::service_auth::{MESSAGE_MANAGER_CALLERS, ServiceName};
use message_manager::Topology;
use message_manager::config::{Cli, ServeConfig};
use pipeline::bus::{EventBus, Subscription};
use proto::message::v1::message_service_server::SERVICE_NAME;

const PROCESS: Process = Process {
    name: "message-manager",
    grpc_service: SERVICE_NAME,
    migrations: message_manager::db::MIGRATIONS,
    me: ServiceName::MessageManager,
    callers: MESSAGE_MANAGER_CALLERS,
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
            .endpoint("the relay publishes there, chat events come from there")?,
    )
    .with_subscribers(
        // webhook-manager's queue, unless it is not deployed.
        (!config.webhook_events_queue.is_empty())
            .then(|| {
                pipeline::topology::webhook_events_subscriber(
                    &config.chat_events_exchange,
                    &config.message_events_exchange,
                    &config.webhook_events_queue,
                )
            })
            .into_iter()
            .collect(),
    );
    let chat_url = config
        .chat_manager_url
        .as_deref()
        .ok_or("CHAT_MANAGER_URL is required")?;
    let chat = ChatClient::new(grpc_client::signed(
        grpc_client::remote(chat_url)?,
        started
            .key
            .credentials(ServiceName::MessageManager, ServiceName::ChatManager),
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
    let subscription: Option<Subscription> = match common::unless_stopped(
        &started.stop,
        subscribing,
    )
    .await
    {
        None => return started.stopped_early().await,
        Some(Ok(subscription)) => Some(subscription),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "RabbitMQ not reachable; serving, and subscribing to chat events in the background");
            None
        }
    };
    let (service, tasks) = message_manager::service(
        started.db.clone(),
        bus,
        topology,
        subscription,
        Some((chat, config.membership_max_age)),
        started.shutdown.clone(),
    );
    started.serve(service, tasks).await
}
