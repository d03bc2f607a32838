//! Load generator for the chat API (issue #7): sets up a fresh tenant and its chats through the
//! public API, then sends messages from N concurrent connections for a fixed time or count and
//! reports messages/s, latency percentiles, errors by kind, and the peak RSS and CPU of the
//! service processes it watches. `scripts/bench-send` runs it against the split deployment and
//! the embedded default next to a pgbench reference ceiling; see BENCHMARKS.md.

mod backlog;
mod procs;
mod report;
mod setup;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use common::grpc_client::{GrpcTransport, MessageClient};
use proto::message::v1 as pb;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::procs::Watched;
use crate::setup::{BoxError, Chat};
use crate::stats::{Recorder, Summary};

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Drives message sends against the chat API and reports throughput and latency",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prints Markdown tables from the JSON lines of runs (`--json` output, plus `pgbench`
    /// lines written by scripts/bench-send).
    Report {
        /// A file of JSON lines.
        file: PathBuf,
    },
    /// Waits until the services' event backlog is zero (see `--settle-metrics`).
    Settle {
        #[arg(long = "settle-metrics", value_name = "URL", required = true)]
        settle_metrics: Vec<String>,
        #[arg(long, default_value_t = 300.0)]
        settle_timeout: f64,
        /// Processes that must also be idle, `name=pid` (repeatable).
        #[arg(long = "watch", visible_alias = "watch-pid", value_name = "NAME=PID")]
        watch: Vec<Watched>,
    },
    /// Deletes a benchmark's RabbitMQ exchanges and queues (names that do not exist are fine).
    CleanupAmqp {
        #[arg(
            long,
            env = "AMQP_URL",
            default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
        )]
        amqp_url: String,
        #[arg(long)]
        exchange: Vec<String>,
        #[arg(long)]
        queue: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// `POST /v1.0/chatmessages` with a customer admin token, source = a participant.
    Chatmessages,
    /// `POST /v1.0/service_agents/chatroommessages`, each sender an agent in its own chatroom.
    Chatroommessages,
    /// message-manager's `CreateChatmessage` over gRPC, directly (no gateway): the request the
    /// gateway makes for `POST /chatmessages`, to measure what the gateway adds.
    Grpc,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Chatmessages => "chatmessages",
            Mode::Chatroommessages => "chatroommessages",
            Mode::Grpc => "grpc",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    /// The gateway's base URL (chats are always set up through it, in every mode).
    #[arg(
        long,
        env = "LOADGEN_URL",
        default_value = "http://127.0.0.1:8080/v1.0"
    )]
    url: String,
    /// The gateway's HS256 key (its JWT_SECRET).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// A file holding the key instead: the embedded default keeps it in DATA_DIR/jwt-secret.
    #[arg(long, conflicts_with = "jwt_secret")]
    jwt_secret_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Mode::Chatmessages)]
    mode: Mode,
    /// message-manager's gRPC URL, for `--mode grpc`.
    #[arg(
        long,
        env = "MESSAGE_MANAGER_URL",
        default_value = "http://127.0.0.1:9002"
    )]
    message_manager_url: String,
    /// In grpc mode, the services' internal key: calls carry the gateway's internal token,
    /// as the gateway's own do.
    #[arg(long, env = "INTERNAL_AUTH_SECRET", hide_env_values = true)]
    internal_auth_secret: Option<String>,
    /// In grpc mode, one HTTP/2 connection per sender instead of one shared by all (the
    /// gateway itself multiplexes every call over one connection).
    #[arg(long)]
    grpc_channel_per_sender: bool,
    /// Participants per chat (2 makes `normal` chats, more `group` chats).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(2..=1000))]
    participants: u16,
    /// Chats to spread the sends over (default: one per sender).
    #[arg(long)]
    chats: Option<usize>,
    /// Concurrent senders, each on its own connection, each sending its next message as soon
    /// as the previous one is answered (or, with `--rate`, at its next slot).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Paced load: the senders together start this many sends a second, each sender on its own
    /// evenly spaced slots, and each send's latency counts from its slot (a sender that falls
    /// behind counts its wait too). Without it the load is closed: as fast as answers come.
    /// To compare latencies at the same throughput (the gateway against gRPC directly).
    #[arg(long, value_parser = positive_rate)]
    rate: Option<f64>,
    /// Seconds to measure for (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Measure this many sends instead of a duration.
    #[arg(long)]
    count: Option<u64>,
    /// Seconds of sending before measuring starts (not counted).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// A process to watch, `name=pid` (repeatable): its peak RSS and CPU are reported.
    #[arg(long = "watch", visible_alias = "watch-pid", value_name = "NAME=PID")]
    watch: Vec<Watched>,
    /// A service's Prometheus metrics URL (repeatable): after the set-up, wait until its event
    /// backlog (`outbox_backlog_events`, `consumer_queue_depth`) is zero before sending, and
    /// report the backlog a run left behind.
    #[arg(long = "settle-metrics", value_name = "URL")]
    settle_metrics: Vec<String>,
    /// Give up waiting for the backlog after this many seconds (then measure anyway).
    #[arg(long, default_value_t = 300.0)]
    settle_timeout: f64,
    /// Characters of text per message.
    #[arg(long, default_value_t = 64)]
    text_len: usize,
    /// Send each request with a fresh `Idempotency-Key` (the service's keyed, transactional
    /// path) instead of none.
    #[arg(long)]
    idempotency: bool,
    /// The tenant to set up in (default: a new one per run).
    #[arg(long)]
    customer_id: Option<Uuid>,
    /// A label for the deployment measured (`split`, `embedded`), carried into the output.
    #[arg(long, default_value = "")]
    label: String,
    /// Write the chat ids, one a line (for the pgbench ceiling over the same chats).
    #[arg(long)]
    chats_out: Option<PathBuf>,
    /// Also print the result as one line of JSON (last line of the output).
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Report { file }) => report::print(&file),
        Some(Command::Settle {
            settle_metrics,
            settle_timeout,
            watch,
        }) => {
            let pids: Vec<u32> = watch.iter().map(|w| w.pid).collect();
            let (took, done) = backlog::settle(
                &settle_metrics,
                &pids,
                Duration::from_secs_f64(settle_timeout),
            )
            .await;
            eprintln!(
                "loadgen: event backlog {} after {:.1} s",
                if done { "drained" } else { "NOT drained" },
                took.as_secs_f64()
            );
            Ok(())
        }
        Some(Command::CleanupAmqp {
            amqp_url,
            exchange,
            queue,
        }) => cleanup_amqp(&amqp_url, &exchange, &queue).await,
        None => run(cli.run).await,
    };
    if let Err(e) = result {
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    }
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("{s:?}: give sends per second, a number above 0")),
    }
}

fn secret(args: &RunArgs) -> Result<Vec<u8>, BoxError> {
    match (&args.jwt_secret, &args.jwt_secret_file) {
        (Some(s), _) => Ok(s.as_bytes().to_vec()),
        (None, Some(path)) => {
            let s = std::fs::read_to_string(path)
                .map_err(|e| format!("--jwt-secret-file {}: {e}", path.display()))?;
            // The gateway trims the stored key the same way.
            Ok(s.trim().as_bytes().to_vec())
        }
        (None, None) => Err("give --jwt-secret (or JWT_SECRET) or --jwt-secret-file".into()),
    }
}

/// What one sender sends, again and again.
enum Target {
    Http {
        client: reqwest::Client,
        url: String,
        token: String,
        body: Vec<u8>,
        idempotency: bool,
    },
    Grpc {
        client: MessageClient,
        request: Box<pb::CreateChatmessageRequest>,
        idempotency: bool,
    },
}

/// A failed send: its kind (the row of the error table) and what was said.
type Failure = (String, String);

fn traceparent() -> String {
    let trace = Uuid::new_v4().simple().to_string();
    let span = &Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

impl Target {
    async fn send(&mut self) -> Result<(), Failure> {
        match self {
            Target::Http {
                client,
                url,
                token,
                body,
                idempotency,
            } => {
                let mut req = client
                    .post(url.as_str())
                    .bearer_auth(token.as_str())
                    .header("content-type", "application/json")
                    .body(body.clone());
                if *idempotency {
                    req = req.header("idempotency-key", Uuid::new_v4().to_string());
                }
                let res = req
                    .send()
                    .await
                    .map_err(|e| (transport_kind(&e), truncate(&format!("{e:?}"))))?;
                let status = res.status();
                // The whole answer is read: a send is done when its response is.
                let text = res
                    .text()
                    .await
                    .map_err(|e| (transport_kind(&e), truncate(&e.to_string())))?;
                if status.is_success() {
                    return Ok(());
                }
                let code = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                Err((format!("HTTP {} {code}", status.as_u16()), truncate(&text)))
            }
            Target::Grpc {
                client,
                request,
                idempotency,
            } => {
                // The metadata the gateway sends along: a request id and a trace context.
                let mut req = tonic::Request::new(pb::CreateChatmessageRequest::clone(request));
                let md = req.metadata_mut();
                if let Ok(v) = Uuid::new_v4().to_string().parse() {
                    md.insert("x-request-id", v);
                }
                if let Ok(v) = traceparent().parse() {
                    md.insert("traceparent", v);
                }
                if *idempotency {
                    if let Ok(v) = Uuid::new_v4().to_string().parse() {
                        md.insert("idempotency-key", v);
                    }
                    if let Ok(v) = format!("customer:{}", request.customer_id).parse() {
                        md.insert("idempotency-scope", v);
                    }
                }
                client
                    .create_chatmessage(req)
                    .await
                    .map(|_| ())
                    .map_err(|s| (format!("gRPC {:?}", s.code()), truncate(s.message())))
            }
        }
    }
}

fn transport_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

/// When to stop: at an instant, or after so many measured sends.
#[derive(Debug)]
enum Stop {
    At(Instant),
    Count(u64, std::sync::atomic::AtomicU64),
}

struct Plan {
    measure_from: Instant,
    stop: Stop,
}

/// When a paced sender starts its sends: at `next`, then every `every`.
#[derive(Debug, Clone, Copy)]
struct Pace {
    next: Instant,
    every: Duration,
}

impl Pace {
    /// Sender `w` of `senders` sharing `rate` sends a second: its slots are `senders / rate`
    /// apart, and the senders' slots interleave evenly.
    fn of_sender(begin: Instant, rate: f64, w: usize, senders: usize) -> Pace {
        let every = Duration::from_secs_f64(senders as f64 / rate);
        Pace {
            next: begin + every.mul_f64(w as f64 / senders as f64),
            every,
        }
    }

    /// The next slot, moving on to the one after.
    fn take(&mut self) -> Instant {
        let slot = self.next;
        self.next += self.every;
        slot
    }
}

/// One sender: sends until the plan says stop, recording the latency (or error) of each send
/// started in the measured window, and counting the sends completed in it. Returns the
/// recorder and when its last measured send finished. Paced, it waits for each slot, and a
/// send's latency counts from its slot.
async fn sender(
    mut target: Target,
    plan: Arc<Plan>,
    mut pace: Option<Pace>,
) -> (Recorder, Option<Instant>) {
    use std::sync::atomic::Ordering;
    let mut rec = Recorder::default();
    let mut last = None;
    loop {
        let started = match &mut pace {
            Some(pace) => {
                let slot = pace.take();
                tokio::time::sleep_until(slot.into()).await;
                slot
            }
            None => Instant::now(),
        };
        let measuring = started >= plan.measure_from;
        match &plan.stop {
            Stop::At(at) if started >= *at => break,
            Stop::Count(n, taken) if measuring && taken.fetch_add(1, Ordering::Relaxed) >= *n => {
                break;
            }
            _ => {}
        }
        let result = target.send().await;
        let done = Instant::now();
        let in_window = done >= plan.measure_from
            && match plan.stop {
                Stop::At(at) => done <= at,
                Stop::Count(..) => true,
            };
        if in_window && result.is_ok() {
            rec.completed_in_window += 1;
        }
        if measuring {
            last = Some(done);
            match &result {
                Ok(()) => rec.ok(done - started),
                Err((kind, example)) => rec.error(kind.clone(), example.clone()),
            }
        }
        if result.is_err() && pace.is_none() {
            // Do not spin on a failing service (a paced sender waits for its slot anyway).
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    (rec, last)
}

/// Samples the watched processes' VmRSS until told to stop; returns the max per process.
fn sample_rss(
    watched: Vec<Watched>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let mut max = vec![0u64; watched.len()];
        loop {
            for (i, w) in watched.iter().enumerate() {
                if let Some((rss, _)) = procs::memory(w.pid) {
                    max[i] = max[i].max(rss);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = stop.changed() => break,
            }
        }
        max
    })
}

fn http_client() -> Result<reqwest::Client, BoxError> {
    // One connection per sender: no idle pool beyond the one connection it reuses.
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// The gateway's own client (`common::grpc_client::remote`, with its internal token): what
/// the gateway adds is then measured against the same calls over the same client.
fn grpc_channel(args: &RunArgs) -> Result<GrpcTransport, BoxError> {
    use common::service_auth::{InternalKey, ServiceName};
    let key = InternalKey::from_config(args.internal_auth_secret.as_deref())?;
    Ok(common::grpc_client::signed(
        common::grpc_client::remote(&args.message_manager_url)?,
        key.credentials(ServiceName::ApiGateway, ServiceName::MessageManager),
    ))
}

async fn create_chats(args: &RunArgs, admin: &str, chats: usize) -> Result<Vec<Chat>, BoxError> {
    let client = http_client()?;
    // A few at a time: a 1,000-participant chat is a big write.
    let gate = Arc::new(Semaphore::new(4));
    let mut tasks = Vec::new();
    for n in 0..chats {
        let (client, base, admin, gate) = (
            client.clone(),
            args.url.clone(),
            admin.to_owned(),
            gate.clone(),
        );
        let participants = usize::from(args.participants);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            setup::create_chat(&client, &base, &admin, participants, n).await
        }));
    }
    let mut out = Vec::with_capacity(chats);
    for task in tasks {
        out.push(task.await??);
    }
    Ok(out)
}

async fn targets(
    args: &RunArgs,
    secret: &[u8],
    customer: Uuid,
    chats: &[Chat],
    text: &str,
) -> Result<Vec<Target>, BoxError> {
    let shared_channel = match args.mode {
        Mode::Grpc if !args.grpc_channel_per_sender => Some(grpc_channel(args)?),
        _ => None,
    };
    let mut out = Vec::with_capacity(args.concurrency);
    for w in 0..args.concurrency {
        // Sender w posts into chat w % chats, as its participant (w / chats) % participants:
        // with as many chats as senders, each sender has a chat of its own.
        let chat = &chats[w % chats.len()];
        let agent = chat.participants[(w / chats.len()) % chat.participants.len()];
        let source = json!({"type": "agent", "target": agent});
        let target = match args.mode {
            Mode::Chatmessages => Target::Http {
                client: http_client()?,
                url: format!("{}/chatmessages", args.url),
                token: setup::customer_token(secret, customer)?,
                body: serde_json::to_vec(&json!({
                    "chat_id": chat.id,
                    "source": source,
                    "type": "normal",
                    "text": text,
                }))?,
                idempotency: args.idempotency,
            },
            Mode::Chatroommessages => {
                let client = http_client()?;
                let token = setup::agent_token(secret, customer, agent, &format!("agent {w}"))?;
                let room = setup::chatroom_of(&client, &args.url, &token, &chat.id).await?;
                Target::Http {
                    client,
                    url: format!("{}/service_agents/chatroommessages", args.url),
                    token,
                    body: serde_json::to_vec(&json!({"chatroom_id": room, "text": text}))?,
                    idempotency: args.idempotency,
                }
            }
            Mode::Grpc => {
                let channel = match &shared_channel {
                    Some(c) => c.clone(),
                    None => grpc_channel(args)?,
                };
                // Field for field what the gateway's POST /chatmessages route sends.
                Target::Grpc {
                    client: MessageClient::new(channel),
                    request: Box::new(pb::CreateChatmessageRequest {
                        customer_id: customer.to_string(),
                        chat_id: chat.id.clone(),
                        source: Some(pb::Address {
                            r#type: "agent".into(),
                            target: agent.to_string(),
                            ..Default::default()
                        }),
                        r#type: pb::MessageType::Normal as i32,
                        text: text.to_owned(),
                        medias: Vec::new(),
                    }),
                    idempotency: args.idempotency,
                }
            }
        };
        out.push(target);
    }
    Ok(out)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

async fn run(args: RunArgs) -> Result<(), BoxError> {
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let secret = secret(&args)?;
    let customer = args.customer_id.unwrap_or_else(Uuid::new_v4);
    let admin = setup::customer_token(&secret, customer)?;
    let chat_count = args.chats.unwrap_or(args.concurrency).max(1);

    let t = Instant::now();
    let chats = create_chats(&args, &admin, chat_count).await?;
    eprintln!(
        "loadgen: tenant {customer}: {chat_count} chats of {} participants created in {:.1} s",
        args.participants,
        t.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.chats_out {
        let ids: Vec<&str> = chats.iter().map(|c| c.id.as_str()).collect();
        std::fs::write(path, ids.join("\n") + "\n")?;
    }
    let watched_pids: Vec<u32> = args.watch.iter().map(|w| w.pid).collect();
    let (settle, settled) = backlog::settle(
        &args.settle_metrics,
        &watched_pids,
        Duration::from_secs_f64(args.settle_timeout),
    )
    .await;
    if !args.settle_metrics.is_empty() {
        eprintln!(
            "loadgen: event backlog {} after {:.1} s",
            if settled { "drained" } else { "NOT drained" },
            settle.as_secs_f64()
        );
    }
    let metrics_client = reqwest::Client::new();
    let refreshes_before =
        backlog::membership_refreshes(&metrics_client, &args.settle_metrics).await;

    let text: String = "load test message "
        .chars()
        .cycle()
        .take(args.text_len)
        .collect();
    let targets = targets(&args, &secret, customer, &chats, &text).await?;
    // A sender of its own for the probe after the run (events and bytes per send).
    let one = RunArgs {
        concurrency: 1,
        ..args.clone()
    };
    let mut probe = self::targets(&one, &secret, customer, &chats, &text)
        .await?
        .pop()
        .ok_or("no sender")?;

    let begin = Instant::now();
    let measure_from = begin + Duration::from_secs_f64(args.warmup);
    let stop = match args.count {
        Some(n) => Stop::Count(n, Default::default()),
        None => Stop::At(measure_from + Duration::from_secs_f64(args.duration)),
    };
    let plan = Arc::new(Plan { measure_from, stop });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sampler = sample_rss(args.watch.clone(), stop_rx);
    let senders: Vec<_> = targets
        .into_iter()
        .enumerate()
        .map(|(w, t)| {
            let pace = args
                .rate
                .map(|rate| Pace::of_sender(begin, rate, w, args.concurrency));
            tokio::spawn(sender(t, plan.clone(), pace))
        })
        .collect();

    tokio::time::sleep_until(measure_from.into()).await;
    let (sampling_tx, sampling_rx) = tokio::sync::watch::channel(false);
    let backlog_readings = backlog::sample(
        args.settle_metrics.clone(),
        Duration::from_secs(1),
        sampling_rx,
    );
    let cpu_pids: Vec<String> = args
        .watch
        .iter()
        .map(|w| w.pid.to_string())
        .chain(["self".to_owned()])
        .collect();
    let cpu_start: Vec<Option<Duration>> = cpu_pids.iter().map(|p| procs::cpu(p)).collect();
    let programs_start = procs::all_programs_cpu();
    let machine_start = procs::machine_cpu();
    let load_start = procs::load_average();

    // A timed run's window is exactly its duration (CPU is read at its end); a counted run's
    // lasts until its last send is answered.
    let mut cpu_end = None;
    if let Stop::At(at) = plan.stop {
        tokio::time::sleep_until(at.into()).await;
        cpu_end = Some((
            cpu_pids.iter().map(|p| procs::cpu(p)).collect::<Vec<_>>(),
            procs::machine_cpu(),
            procs::all_programs_cpu(),
        ));
    }
    let mut rec = Recorder::default();
    let mut last = measure_from;
    for task in senders {
        let (r, l) = task.await?;
        rec.merge(r);
        last = last.max(l.unwrap_or(measure_from));
    }
    let sending_ended = Instant::now();
    let _ = sampling_tx.send(true);
    let backlog_readings = backlog_readings.await?;
    // From the last send's answer until every event is published and applied.
    let drained_after = if args.settle_metrics.is_empty() {
        None
    } else {
        backlog::drain_time(
            &args.settle_metrics,
            Duration::from_secs_f64(args.settle_timeout),
        )
        .await
        .map(|_| sending_ended.elapsed())
    };
    let (window, completed) = match plan.stop {
        Stop::At(at) => (at - measure_from, rec.completed_in_window),
        Stop::Count(..) => (last - measure_from, rec.latencies_us.len() as u64),
    };
    let (cpu_end, machine_end, programs_end) = cpu_end.unwrap_or_else(|| {
        (
            cpu_pids.iter().map(|p| procs::cpu(p)).collect(),
            procs::machine_cpu(),
            procs::all_programs_cpu(),
        )
    });
    let programs = procs::cpu_by_program(&programs_start, &programs_end);
    let programs_total: Duration = programs.iter().map(|(_, cpu)| *cpu).sum();
    let machine_busy = match (machine_start, machine_end) {
        (Some(a), Some(b)) => procs::busy_percent(a, b),
        _ => None,
    };
    let _ = stop_tx.send(true);
    let max_rss = sampler.await?;
    let cpu_percent: Vec<Option<f64>> = cpu_start
        .iter()
        .zip(&cpu_end)
        .map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) if !window.is_zero() => {
                Some(100.0 * b.saturating_sub(*a).as_secs_f64() / window.as_secs_f64())
            }
            _ => None,
        })
        .collect();
    let (backlog_end, refreshes) = if args.settle_metrics.is_empty() {
        (None, None)
    } else {
        let after = backlog::membership_refreshes(&metrics_client, &args.settle_metrics).await;
        (
            backlog::backlog(&metrics_client, &args.settle_metrics).await,
            after
                .zip(refreshes_before)
                .map(|(a, b)| a.saturating_sub(b)),
        )
    };

    // Events and bytes on the broker per send: a few sends more, one after another, once the
    // run's events are out, and what the relays published for them.
    let per_send = if args.settle_metrics.is_empty() {
        None
    } else {
        probe_events_per_send(&mut probe, &args, &metrics_client).await
    };

    let summary = stats::summarize(&rec, completed, window);
    print_result(&args, chat_count, &summary, &rec, window);

    let mut processes = Vec::new();
    if !args.watch.is_empty() {
        println!();
        println!(
            "{:<16} {:>8} {:>18} {:>18} {:>14}",
            "process", "pid", "peak RSS (VmHWM)", "max RSS in run", "CPU in window"
        );
    }
    for (i, w) in args.watch.iter().enumerate() {
        let peak = procs::memory(w.pid).map(|(_, hwm)| hwm);
        let cpu = cpu_percent[i];
        println!(
            "{:<16} {:>8} {:>18} {:>18} {:>14}",
            w.name,
            w.pid,
            peak.map_or("gone".into(), |b| format!("{:.1} MiB", mib(b))),
            format!("{:.1} MiB", mib(max_rss[i])),
            cpu.map_or("-".into(), |c| format!("{c:.0}% of a core")),
        );
        processes.push(json!({
            "name": w.name,
            "pid": w.pid,
            "peak_rss_bytes": peak,
            "max_rss_bytes": max_rss[i],
            "cpu_percent": cpu,
        }));
    }
    let self_cpu = cpu_percent.last().copied().flatten();
    if let Some(c) = self_cpu {
        println!("loadgen itself used {c:.0}% of a core during the window");
    }
    if let Some(busy) = machine_busy {
        println!(
            "machine: {} CPUs, {busy:.0}% busy during the window (load average {} at its start)",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            load_start.map_or("-".into(), |l| format!("{l:.2}"))
        );
    }
    print_cpu_by_program(&programs, completed);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    // The machine's busy time per send (what scripts/bench-send measures for pgbench too):
    // beyond the processes' own time, the kernel's interrupt work, and processes that came or
    // went during the window.
    let machine_us_per_send = machine_busy
        .and_then(|busy| per_send_us(window.mul_f64(busy / 100.0 * cpus as f64), completed));
    if let Some(us) = machine_us_per_send {
        println!("the machine's CPU per send (all CPUs' busy time): {us:.0} µs");
    }
    if let Some(n) = refreshes {
        println!(
            "membership view refreshed from chat-manager (GetChatMembers) during the run: {n} times"
        );
    }
    if let Some(b) = backlog_end {
        println!("events committed but not yet published or applied at the end: {b}");
    }
    if !backlog_readings.is_empty() {
        println!(
            "event backlog each second of the window: {}",
            backlog_readings
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    match drained_after {
        Some(d) => println!(
            "event backlog drained {:.2} s after the last send",
            d.as_secs_f64()
        ),
        None if !args.settle_metrics.is_empty() => {
            println!("event backlog NOT drained within {} s", args.settle_timeout)
        }
        None => {}
    }
    if let Some((events, bytes)) = per_send {
        println!("on the broker per send: {events:.1} messages, {bytes:.0} bytes of bodies");
    }
    if args.json {
        let line = json!({
            "kind": "loadgen",
            "deployment": args.label,
            "mode": args.mode.name(),
            "participants": args.participants,
            "chats": chat_count,
            "concurrency": args.concurrency,
            "rate": args.rate,
            "idempotency": args.idempotency,
            "window_s": window.as_secs_f64(),
            "sent": summary.ok,
            "errors": summary.errors,
            "errors_by_kind": rec.errors,
            "msgs_per_s": summary.per_second,
            "p50_ms": summary.p50_ms,
            "p90_ms": summary.p90_ms,
            "p99_ms": summary.p99_ms,
            "max_ms": summary.max_ms,
            "mean_ms": summary.mean_ms,
            "processes": processes,
            "loadgen_cpu_percent": self_cpu,
            "machine_cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "machine_busy_percent": machine_busy,
            "cpu_us_per_send_all_programs": per_send_us(programs_total, completed),
            "machine_cpu_us_per_send": machine_us_per_send,
            "cpu_us_per_send_by_program": programs
                .iter()
                .take(PROGRAMS_SHOWN)
                .map(|(name, cpu)| json!({"program": name, "us": per_send_us(*cpu, completed)}))
                .collect::<Vec<_>>(),
            "load_average_at_start": load_start,
            "settle_s": settle.as_secs_f64(),
            "backlog_end": backlog_end,
            "membership_refreshes": refreshes,
            "backlog_each_second": backlog_readings,
            "backlog_max": backlog_readings.iter().max(),
            "drained_after_s": drained_after.map(|d| d.as_secs_f64()),
            "broker_messages_per_send": per_send.map(|p| p.0),
            "broker_bytes_per_send": per_send.map(|p| p.1),
        });
        println!("{line}");
    }
    Ok(())
}

/// Sends this many messages one after another to count what a send puts on the broker.
const PROBE_SENDS: u32 = 20;

/// The relays' published events and bytes per send, over `PROBE_SENDS` sends after the
/// backlog drained (None if the metrics cannot be read or a send failed).
async fn probe_events_per_send(
    target: &mut Target,
    args: &RunArgs,
    client: &reqwest::Client,
) -> Option<(f64, f64)> {
    let timeout = Duration::from_secs_f64(args.settle_timeout);
    backlog::drain_time(&args.settle_metrics, timeout).await?;
    let before = backlog::published(client, &args.settle_metrics).await?;
    for _ in 0..PROBE_SENDS {
        target.send().await.ok()?;
    }
    // The relays mark events published once confirmed: wait for the counters to settle.
    backlog::drain_time(&args.settle_metrics, timeout).await?;
    let mut after = backlog::published(client, &args.settle_metrics).await?;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = backlog::published(client, &args.settle_metrics).await?;
        if now == after {
            break;
        }
        after = now;
    }
    let n = f64::from(PROBE_SENDS);
    Some(((after.0 - before.0) / n, (after.1 - before.1) / n))
}

/// How many programs the CPU breakdown names (the rest are the machine's idle daemons).
const PROGRAMS_SHOWN: usize = 8;

fn per_send_us(cpu: Duration, sends: u64) -> Option<f64> {
    (sends > 0).then(|| cpu.as_secs_f64() * 1e6 / sends as f64)
}

/// The machine's CPU in the window by program, per send: what the whole path costs beside the
/// database (PostgreSQL's backends are `postgres`, RabbitMQ is `beam.smp`).
fn print_cpu_by_program(programs: &[(String, Duration)], sends: u64) {
    if programs.is_empty() || sends == 0 {
        return;
    }
    let total: Duration = programs.iter().map(|(_, cpu)| *cpu).sum();
    let shown: Vec<String> = programs
        .iter()
        .take(PROGRAMS_SHOWN)
        .map(|(name, cpu)| format!("{name} {:.0}", per_send_us(*cpu, sends).unwrap_or(0.0)))
        .collect();
    println!(
        "CPU per send by program (µs): {}; all programs {:.0}",
        shown.join(", "),
        per_send_us(total, sends).unwrap_or(0.0)
    );
}

fn print_result(args: &RunArgs, chats: usize, s: &Summary, rec: &Recorder, window: Duration) {
    println!(
        "{:<17} {:>5} {:>5} {:>5} {:>8} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "mode",
        "parts",
        "chats",
        "conc",
        "sent",
        "errors",
        "msgs/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms"
    );
    println!(
        "{:<17} {:>5} {:>5} {:>5} {:>8} {:>7} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        args.mode.name(),
        args.participants,
        chats,
        args.concurrency,
        s.ok,
        s.errors,
        s.per_second,
        s.p50_ms,
        s.p90_ms,
        s.p99_ms,
        s.max_ms,
    );
    println!(
        "(measured over {:.2} s after {:.1} s of warm-up; latencies of successful sends; mean {:.2} ms)",
        window.as_secs_f64(),
        args.warmup,
        s.mean_ms
    );
    if let Some(rate) = args.rate {
        println!("(paced: {rate} sends/s started in all, latencies from each send's slot)");
    }
    for (kind, n) in &rec.errors {
        println!(
            "  error {kind}: {n} (e.g. {})",
            rec.error_examples.get(kind).map_or("", String::as_str)
        );
    }
}

async fn cleanup_amqp(url: &str, exchanges: &[String], queues: &[String]) -> Result<(), BoxError> {
    use lapin::{Connection, ConnectionProperties};
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    .map_err(|_| format!("connect {url}: timed out"))??;
    for name in queues {
        // A channel per operation: a failed one closes its channel.
        let channel = conn.create_channel().await?;
        match channel
            .queue_delete(name.as_str().into(), Default::default())
            .await
        {
            Ok(_) => eprintln!("loadgen: deleted queue {name}"),
            Err(e) => eprintln!("loadgen: queue {name}: {e}"),
        }
    }
    for name in exchanges {
        let channel = conn.create_channel().await?;
        match channel
            .exchange_delete(name.as_str().into(), Default::default())
            .await
        {
            Ok(()) => eprintln!("loadgen: deleted exchange {name}"),
            Err(e) => eprintln!("loadgen: exchange {name}: {e}"),
        }
    }
    let _ = conn.close(200, "OK".into()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 4 senders sharing 100 sends/s: each every 40 ms, their first slots 10 ms apart, so the
    /// sends start evenly every 10 ms.
    #[test]
    fn paced_senders_share_the_rate_on_interleaved_slots() {
        let begin = Instant::now();
        let paces: Vec<Pace> = (0..4)
            .map(|w| Pace::of_sender(begin, 100.0, w, 4))
            .collect();
        for (w, mut p) in paces.into_iter().enumerate() {
            assert_eq!(p.every, Duration::from_millis(40));
            let offset = p.take() - begin;
            assert_eq!(p.take() - begin, offset + Duration::from_millis(40));
            assert!(
                offset.abs_diff(Duration::from_millis(10 * w as u64)) < Duration::from_micros(1),
                "sender {w} starts at {offset:?}"
            );
        }
        assert!(positive_rate("0").is_err() && positive_rate("-3").is_err());
        assert!(positive_rate("inf").is_err() && positive_rate("x").is_err());
        assert_eq!(positive_rate("700"), Ok(700.0));
    }
}
