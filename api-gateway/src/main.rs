use std::time::Duration;

use api_gateway::app::AppState;
use api_gateway::auth::{TokenRequest, TokenVerifier, mint_token};
use api_gateway::config::{Cli, Command, SEED_CUSTOMER_ID, ServeConfig, TokenArgs};
use api_gateway::embedded;
use api_gateway::health::{self, Readiness};
use api_gateway::rate_limit::RateLimit;
use api_gateway::ws::WsSettings;
use api_gateway::ws::hub::EventHub;
use clap::Parser;
use common::bus::EventBus;
use common::grpc_client;
use tokio::sync::watch;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let cli = Cli::parse();
    let telemetry = common::telemetry::init(cli.serve.log_format, "api-gateway");
    let result = match cli.command {
        Some(Command::Healthcheck) => match health::check_ready(cli.serve.listen_addr) {
            Ok(()) => {
                println!("ready");
                Ok(())
            }
            Err(why) => {
                eprintln!("not ready: {why}");
                std::process::exit(1);
            }
        },
        Some(Command::Token(args)) => {
            let secret = signing_key(&cli.serve)?;
            println!("{}", mint(&secret, &args)?);
            Ok(())
        }
        None => serve(cli.serve).await,
    };
    telemetry.shutdown().await;
    result
}

fn signing_key(config: &ServeConfig) -> Result<Vec<u8>, BoxError> {
    if config.chat_manager_url.is_some() && config.jwt_secret.is_none() {
        return Err("JWT_SECRET is required when CHAT_MANAGER_URL is set".into());
    }
    Ok(embedded::jwt_secret(
        config.jwt_secret.as_deref(),
        &config.data_dir,
    )?)
}

fn mint(secret: &[u8], args: &TokenArgs) -> Result<String, BoxError> {
    Ok(mint_token(
        secret,
        &TokenRequest {
            customer_id: args.customer_id,
            agent_id: args.agent_id,
            agent_name: args.name.clone(),
            permission: args.permission,
            ttl: Duration::from_secs(args.ttl_hours * 3600),
        },
    )?)
}

async fn serve(config: ServeConfig) -> Result<(), BoxError> {
    // Installed first: a SIGTERM during start-up then stops the service cleanly.
    let shutdown = common::shutdown_signal();
    let secret = signing_key(&config)?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let (_, metrics_server) =
        common::metrics::spawn_server(config.metrics_addr, shutdown_rx.clone()).await?;
    tasks.push(metrics_server);

    let (chat, message, bus) = match (&config.chat_manager_url, &config.message_manager_url) {
        (Some(chat), Some(message)) => {
            let amqp = config
                .amqp_url
                .as_deref()
                .ok_or("AMQP_URL is required with CHAT_MANAGER_URL (the WebSocket's events)")?;
            (
                grpc_client::remote(chat)?,
                grpc_client::remote(message)?,
                EventBus::amqp(amqp),
            )
        }
        (None, None) => {
            let embedded = embedded::start(&config.data_dir, shutdown_rx.clone()).await?;
            tasks.extend(embedded.tasks);
            (embedded.chat, embedded.message, embedded.bus)
        }
        _ => {
            return Err(
                "set both CHAT_MANAGER_URL and MESSAGE_MANAGER_URL, or neither (embedded)".into(),
            );
        }
    };
    let ws = WsSettings::default();
    let hub_bus = bus.clone();
    let (hub, hub_task) = EventHub::start(
        bus,
        &config.chat_events_exchange,
        &config.message_events_exchange,
        &ws,
        shutdown_rx.clone(),
    );
    tasks.push(hub_task);
    let readiness = match &config.chat_manager_url {
        Some(_) => Readiness::upstreams(chat.clone(), message.clone(), Some(hub_bus)),
        None => Readiness::InProcess,
    };
    let state = AppState::new(chat, message, TokenVerifier::new(&secret))
        .with_hub(hub, ws)
        .with_readiness(readiness)
        .with_rate_limit(RateLimit {
            per_second: config.rate_limit_per_second,
            burst: config.rate_limit_burst,
        });
    let listener = tokio::net::TcpListener::bind(config.listen_addr).await?;
    let addr = listener.local_addr()?;

    if config.chat_manager_url.is_none() {
        let token = mint(
            &secret,
            &TokenArgs {
                customer_id: SEED_CUSTOMER_ID.parse()?,
                agent_id: None,
                name: String::new(),
                permission: api_gateway::auth::permission::CUSTOMER_ADMIN,
                ttl_hours: 24,
            },
        )?;
        println!(
            "Chat API (embedded, data in {}) ready at http://{addr}/v1.0",
            config.data_dir.display()
        );
        println!("Admin token for customer {SEED_CUSTOMER_ID}, valid 24 h:\n{token}");
        println!("Example: curl 'http://{addr}/v1.0/chats?token={token}'");
    } else {
        tracing::info!(%addr, "api-gateway listening");
    }

    let http = api_gateway::HttpSettings {
        header_timeout: Duration::from_secs(config.http_header_timeout_secs),
    };
    api_gateway::serve(listener, state, http, shutdown).await?;
    let _ = shutdown_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}
