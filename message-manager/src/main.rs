use std::time::Duration;

use clap::Parser;
use common::bus::EventBus;
use common::db::{Db, DbOptions, DbTarget};
use common::grpc_client::{self, ChatClient};
use message_manager::Topology;
use message_manager::config::Config;
use tokio::sync::watch;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::telemetry::init();
    let config = Config::parse();

    let target = DbTarget::parse(&config.database_url, &config.database_schema);
    let options = DbOptions {
        pool_size: config.database_pool_size,
        ..DbOptions::default()
    };
    let db = Db::connect_with_retry(target, message_manager::db::MIGRATIONS, options).await;
    let bus = EventBus::amqp(config.amqp_url.clone());
    let subscription = loop {
        match message_manager::subscribe_chat_events(
            &bus,
            &config.chat_events_exchange,
            &config.chat_events_queue,
        )
        .await
        {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, "RabbitMQ not ready; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    let chat = ChatClient::new(grpc_client::remote(&config.chat_manager_url)?);

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let topology = Topology {
        exchange: config.events_exchange.clone(),
        chat_exchange: config.chat_events_exchange.clone(),
        chat_events_queue: config.chat_events_queue.clone(),
    };
    let (service, tasks) =
        message_manager::service(db, bus, topology, subscription, Some(chat), shutdown_rx);

    tracing::info!(addr = %config.listen_addr, "message-manager listening");
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_shutdown(config.listen_addr, common::shutdown_signal())
        .await?;
    let _ = shutdown_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}
