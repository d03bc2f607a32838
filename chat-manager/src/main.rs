use chat_manager::config::Config;
use clap::Parser;
use common::bus::EventBus;
use common::db::{Db, DbOptions, DbTarget};
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
    let db = Db::connect_with_retry(target, chat_manager::db::MIGRATIONS, options).await;
    let bus = EventBus::amqp(config.amqp_url.clone());

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (service, relay) = chat_manager::service(db, bus, &config.events_exchange, shutdown_rx);

    tracing::info!(addr = %config.listen_addr, "chat-manager listening");
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_shutdown(config.listen_addr, common::shutdown_signal())
        .await?;
    let _ = shutdown_tx.send(true);
    let _ = relay.await;
    Ok(())
}
