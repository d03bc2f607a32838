//! What a service process does around its gRPC service, the same for chat-manager and
//! message-manager: the runtime and telemetry, the `healthcheck` and `migrate` commands, and
//! serving (the stop signal, metrics, the database, gRPC, an orderly shutdown). Each `main.rs`
//! says what is its own: the service, and what it needs besides the database.

use std::future::Future;
use std::net::SocketAddr;

use clap::Subcommand;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::db::{Db, DbArgs, Migrations};
use crate::grpc_server::GrpcArgs;
use crate::service_auth::ServiceName;
use crate::telemetry::LogFormat;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum Command {
    /// Exit 0 when the service at LISTEN_ADDR answers SERVING (grpc.health.v1), else 1 with
    /// the reason.
    Healthcheck,
    /// Apply the pending database migrations (creating the schema) and exit.
    Migrate,
}

/// A service process: its name, its gRPC service, its database migrations, and who may call it.
#[derive(Clone, Copy)]
pub struct Process {
    pub name: &'static str,
    /// The gRPC service name its health check asks about.
    pub grpc_service: &'static str,
    pub migrations: Migrations,
    pub me: ServiceName,
    pub callers: &'static [ServiceName],
}

/// The settings of a process that every service has (each with defaults of its own).
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    pub db: &'a DbArgs,
    pub database_schema: &'a str,
    pub grpc: &'a GrpcArgs,
    pub listen_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub log_format: LogFormat,
}

impl Process {
    /// Runs `command`, or without one serves: `serve` is given the started process and makes
    /// the service. Returns the process's exit code.
    pub fn main<F, Fut>(
        &self,
        settings: Settings<'_>,
        command: Option<Command>,
        serve: F,
    ) -> std::process::ExitCode
    where
        F: FnOnce(Started) -> Fut,
        Fut: Future<Output = Result<(), BoxError>>,
    {
        let result = crate::service_runtime(settings.db.database_pool_size)
            .map_err(BoxError::from)
            .and_then(|runtime| runtime.block_on(self.run(settings, command, serve)));
        crate::exit_code(self.name, result)
    }

    async fn run<F, Fut>(
        &self,
        settings: Settings<'_>,
        command: Option<Command>,
        serve: F,
    ) -> Result<(), BoxError>
    where
        F: FnOnce(Started) -> Fut,
        Fut: Future<Output = Result<(), BoxError>>,
    {
        let telemetry = crate::telemetry::init(settings.log_format, self.name);
        let result = match command {
            Some(Command::Healthcheck) => {
                crate::grpc_server::healthcheck_command(settings.listen_addr, self.grpc_service)
                    .await;
                Ok(())
            }
            Some(Command::Migrate) => {
                let target = settings.db.target(settings.database_schema)?;
                Db::migrate_only(target, self.migrations, settings.db.timeouts()).await?;
                tracing::info!("migrations up to date");
                Ok(())
            }
            None => match self.start(&settings).await? {
                Some(started) => serve(started).await,
                None => Ok(()),
            },
        };
        telemetry.shutdown().await;
        result
    }

    /// Everything before the service: the internal key checked (refused before anything
    /// starts), the stop signal, metrics, and the database (waited for). `None` if stopped
    /// while waiting.
    async fn start(&self, settings: &Settings<'_>) -> Result<Option<Started>, BoxError> {
        let security = settings.grpc.security(self.me, self.callers)?;
        let key = settings.grpc.key()?;
        // Installed first: a SIGTERM during start-up (still waiting for PostgreSQL) stops the
        // service at once and cleanly.
        let stop = crate::shutdown_watch();
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (_, metrics_server) =
            crate::metrics::spawn_server(settings.metrics_addr, shutdown.clone()).await?;
        let target = settings.db.target(settings.database_schema)?;
        let connecting = Db::connect_with_retry(target, self.migrations, settings.db.options());
        let Some(db) = crate::unless_stopped(&stop, connecting).await else {
            tracing::info!("stopped during start-up");
            let _ = shutdown_tx.send(true);
            let _ = metrics_server.await;
            return Ok(None);
        };
        Ok(Some(Started {
            name: self.name,
            db,
            key,
            security,
            listen_addr: settings.listen_addr,
            stop,
            shutdown,
            shutdown_tx,
            metrics_server,
        }))
    }
}

/// A process started up to its service: the database, its internal key, and the signals.
pub struct Started {
    name: &'static str,
    pub db: Db,
    /// The internal key, to sign this service's own calls.
    pub key: crate::service_auth::InternalKey,
    security: crate::grpc_server::ServerSecurity,
    listen_addr: SocketAddr,
    /// Turns true on SIGINT or SIGTERM.
    pub stop: watch::Receiver<bool>,
    /// Turns true once serving has stopped: the service's tasks (its relay, its consumer)
    /// finish on it.
    pub shutdown: watch::Receiver<bool>,
    shutdown_tx: watch::Sender<bool>,
    metrics_server: JoinHandle<()>,
}

impl Started {
    /// Stopped during start-up, after the database: what `start` would have done.
    pub async fn stopped_early(self) -> Result<(), BoxError> {
        tracing::info!("stopped during start-up");
        let _ = self.shutdown_tx.send(true);
        let _ = self.metrics_server.await;
        Ok(())
    }

    /// Serves `service` until SIGINT or SIGTERM, then stops its `tasks` and metrics in order.
    pub async fn serve<S>(self, service: S, tasks: Vec<JoinHandle<()>>) -> Result<(), BoxError>
    where
        S: tonic::server::NamedService
            + tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind(self.listen_addr).await?;
        tracing::info!(addr = %self.listen_addr, "{} listening", self.name);
        crate::grpc_server::serve(
            listener,
            service,
            Some(self.db),
            self.security,
            crate::stopped(self.stop),
        )
        .await?;
        let _ = self.shutdown_tx.send(true);
        for task in tasks {
            let _ = task.await;
        }
        let _ = self.metrics_server.await;
        Ok(())
    }
}
