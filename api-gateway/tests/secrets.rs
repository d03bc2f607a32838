//! The gateway binary and its signing key: a weak or example key is refused at start-up and by
//! `api-gateway token`, naming the variable; the embedded default keeps a strong generated key
//! and writes its admin token to a private file rather than into a log; `api-gateway token`
//! never makes a key of its own.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_api-gateway");

/// Runs the binary with exactly `env` (and PATH), waiting at most 20 s.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start api-gateway");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("api-gateway {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Free loopback addresses for the gateway and its metrics.
fn addrs() -> (String, String) {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string()
    };
    (free(), free())
}

/// Before: `JWT_SECRET=""` started the gateway, and a token signed with the empty key was an
/// admin of any tenant. Now every weak or published key stops it before it listens, in the
/// embedded default and in the split deployment, and the token command refuses it too.
#[test]
fn weak_and_example_secrets_are_refused_at_start_naming_the_variable() {
    let dir = temp_data_dir();
    let data_dir = dir.to_string_lossy().into_owned();
    for (secret, needle) in [
        ("", "JWT_SECRET is empty"),
        ("short-secret", "JWT_SECRET has 12 bytes"),
        ("change-me", "example value"),
        ("change-me-dev-secret", "example value"),
        ("FAKE-example-jwt-secret-replace-me", "example value"),
        ("integration-test-secret", "example value"),
        (&"a".repeat(40), "too few characters"),
    ] {
        let (listen, metrics) = addrs();
        let base = [
            ("JWT_SECRET", secret),
            ("DATA_DIR", data_dir.as_str()),
            ("LISTEN_ADDR", listen.as_str()),
            ("METRICS_ADDR", metrics.as_str()),
        ];
        let embedded = run(&[], &base);
        assert!(!embedded.status.success(), "{secret:?} started the gateway");
        assert!(
            stderr(&embedded).contains(needle),
            "{secret:?}: {}",
            stderr(&embedded)
        );
        assert!(
            std::net::TcpStream::connect(&listen).is_err(),
            "nothing listens"
        );

        let split = run(
            &[],
            &[
                base[0],
                base[2],
                base[3],
                ("CHAT_MANAGER_URL", "http://127.0.0.1:9"),
                ("MESSAGE_MANAGER_URL", "http://127.0.0.1:9"),
                ("INTERNAL_AUTH_SECRET", testkit::INTERNAL_AUTH_SECRET),
                ("AMQP_URL", "amqp://127.0.0.1:9/%2f"),
            ],
        );
        assert!(
            !split.status.success(),
            "split: {secret:?} started the gateway"
        );
        assert!(stderr(&split).contains(needle), "{}", stderr(&split));

        let token = run(&["token"], &[base[0], base[1]]);
        assert!(!token.status.success(), "token: {secret:?} minted");
        assert!(stderr(&token).contains(needle), "{}", stderr(&token));
        assert!(token.stdout.is_empty(), "no token printed");
    }
    assert!(!dir.exists(), "no key file was made along the way");
}

/// The split deployment needs both keys; the token command there never reads or makes a key
/// file.
#[test]
fn the_split_deployment_needs_its_secrets_and_the_token_command_makes_no_key() {
    let dir = temp_data_dir();
    let data_dir = dir.to_string_lossy().into_owned();
    let (listen, metrics) = addrs();
    let split = [
        ("CHAT_MANAGER_URL", "http://127.0.0.1:9"),
        ("MESSAGE_MANAGER_URL", "http://127.0.0.1:9"),
        ("AMQP_URL", "amqp://127.0.0.1:9/%2f"),
        ("DATA_DIR", data_dir.as_str()),
        ("LISTEN_ADDR", listen.as_str()),
        ("METRICS_ADDR", metrics.as_str()),
    ];
    let out = run(&[], &split);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("JWT_SECRET is required"),
        "{}",
        stderr(&out)
    );

    let secret = String::from_utf8(SECRET.to_vec()).unwrap();
    let mut with_jwt = split.to_vec();
    with_jwt.push(("JWT_SECRET", secret.as_str()));
    let out = run(&[], &with_jwt);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("INTERNAL_AUTH_SECRET is required"),
        "{}",
        stderr(&out)
    );
    with_jwt.push(("INTERNAL_AUTH_SECRET", "too-short"));
    let out = run(&[], &with_jwt);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("INTERNAL_AUTH_SECRET has 9 bytes"),
        "{}",
        stderr(&out)
    );

    let out = run(
        &["token"],
        &[
            ("CHAT_MANAGER_URL", "http://127.0.0.1:9"),
            ("DATA_DIR", &data_dir),
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("JWT_SECRET is required"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.exists(), "no key file made");
}

/// Run from a folder where the embedded default never ran, the token command refuses (saying
/// where it looked) instead of making a key no gateway uses; beside the running gateway it
/// signs with that gateway's key and says which file it read.
#[tokio::test]
async fn the_token_command_uses_the_running_embedded_key_or_refuses() {
    let elsewhere = temp_data_dir();
    let out = run(
        &["token"],
        &[("DATA_DIR", elsewhere.to_string_lossy().as_ref())],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("no signing key at"), "{err}");
    assert!(
        err.contains("jwt-secret") && err.contains("--data-dir"),
        "{err}"
    );
    assert!(!elsewhere.exists(), "nothing created");

    let dir = temp_data_dir();
    let (listen, metrics) = addrs();
    let mut gateway = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATA_DIR", &dir)
        .env("LISTEN_ADDR", &listen)
        .env("METRICS_ADDR", &metrics)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let admin_file = dir.join("admin-token");
    let printed = read_stdout_until(&mut gateway, "ready at");
    wait_for(&admin_file).await;

    // Its output is not a terminal here (as in a container's log): no token in it, the file
    // named instead, readable by its owner only.
    let printed = format!("{printed}{}", read_stdout_until(&mut gateway, "Example"));
    assert!(!printed.contains("eyJ"), "a token was printed: {printed}");
    assert!(
        printed.contains(
            &std::path::absolute(&admin_file)
                .unwrap()
                .display()
                .to_string()
        ),
        "{printed}"
    );
    assert_eq!(mode(&admin_file), 0o600);
    assert_eq!(mode(&dir.join("jwt-secret")), 0o600);
    let admin = std::fs::read_to_string(&admin_file)
        .unwrap()
        .trim()
        .to_owned();

    let http = reqwest::Client::new();
    let status = |token: String| {
        let (http, listen) = (http.clone(), listen.clone());
        async move {
            http.get(format!("http://{listen}/v1.0/chats"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status(admin).await, 200);

    let out = run(
        &["token", "--agent-id", AGENT_1, "--permission", "manager"],
        &[("DATA_DIR", dir.to_string_lossy().as_ref())],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "signed with the key in {}",
            std::path::absolute(dir.join("jwt-secret"))
                .unwrap()
                .display()
        )),
        "{}",
        stderr(&out)
    );
    let minted = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(status(minted).await, 200);

    // A token signed with another key gets a 401 that says what to do.
    let foreign = mint(b"another-gateways-key-0123456789abcdef0123");
    let res = http
        .get(format!("http://{listen}/v1.0/chats"))
        .bearer_auth(foreign)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("another key") && message.contains("api-gateway token"),
        "{message}"
    );

    let _ = gateway.kill();
    let _ = gateway.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// On a terminal (outside a container), the embedded default prints its admin token.
#[tokio::test]
async fn on_a_terminal_the_admin_token_is_printed() {
    if !testkit::require_tool(
        "secrets::on_a_terminal_the_admin_token_is_printed",
        "script",
    ) {
        return;
    }
    let dir = temp_data_dir();
    let (listen, metrics) = addrs();
    // util-linux `script` runs the command on a pseudo-terminal and copies what it prints.
    let command = format!(
        "DATA_DIR={} LISTEN_ADDR={listen} METRICS_ADDR={metrics} {BIN}",
        dir.display()
    );
    let mut child = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let printed = read_stdout_until(&mut child, "Example");
    let _ = child.kill();
    let _ = child.wait();
    let token = std::fs::read_to_string(dir.join("admin-token")).unwrap();
    if Path::new("/.dockerenv").exists() || Path::new("/run/.containerenv").exists() {
        assert!(!printed.contains(token.trim()), "in a container: {printed}");
    } else {
        assert!(printed.contains(token.trim()), "{printed}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn mint(secret: &[u8]) -> String {
    api_gateway::auth::mint_token(
        secret,
        &api_gateway::auth::TokenRequest {
            customer_id: SEED_CUSTOMER.parse().unwrap(),
            agent_id: None,
            agent_name: String::new(),
            permission: api_gateway::auth::permission::CUSTOMER_ADMIN,
            ttl: Duration::from_secs(600),
            issuer: None,
            audience: None,
        },
    )
    .unwrap()
}

/// What the child printed on stdout up to and including the first line containing `needle`
/// (within 30 s).
fn read_stdout_until(child: &mut std::process::Child, needle: &str) -> String {
    use std::io::Read;
    let stdout = child.stdout.as_mut().expect("piped stdout");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut text = Vec::new();
    let mut byte = [0u8; 1];
    while std::time::Instant::now() < deadline {
        match stdout.read(&mut byte) {
            Ok(1) => {
                text.push(byte[0]);
                if byte[0] == b'\n' && String::from_utf8_lossy(&text).contains(needle) {
                    break;
                }
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

async fn wait_for(path: &Path) {
    for _ in 0..300 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", path.display());
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}
