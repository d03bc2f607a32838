//! The example receivers of the README ("Receiving a webhook"), run as written: each takes a
//! real delivery from the embedded system and answers 204, prints `<webhook-id> <type>` once
//! per webhook-id, and answers 401 to a request whose body, either signature or timestamp is
//! wrong. Needs `python3` and `node` (skipped, and listed, without them; a failure with
//! `CI=true`).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use tokio::io::AsyncBufReadExt as _;
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(20);
const START: &str = "<!-- webhook-receivers:start -->";
const END: &str = "<!-- webhook-receivers:end -->";

#[tokio::test]
async fn the_readme_python_receiver_verifies_both_signatures_and_deduplicates() {
    let test =
        "webhook_receivers::the_readme_python_receiver_verifies_both_signatures_and_deduplicates";
    if testkit::require_tool(test, "python3") {
        receiver_works(&Example {
            fence: "```python",
            file: "receiver.py",
            program: "python3",
        })
        .await;
    }
}

#[tokio::test]
async fn the_readme_node_receiver_verifies_both_signatures_and_deduplicates() {
    let test =
        "webhook_receivers::the_readme_node_receiver_verifies_both_signatures_and_deduplicates";
    if testkit::require_tool(test, "node") {
        receiver_works(&Example {
            fence: "```js",
            file: "receiver.js",
            program: "node",
        })
        .await;
    }
}

/// One of the README's receivers: its code block's opening fence, the file it is saved as and
/// the program that runs it.
struct Example {
    fence: &'static str,
    file: &'static str,
    program: &'static str,
}

/// The first code block opened by `fence` between the README's markers.
fn readme_block(fence: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let start = readme.find(START).expect("the start marker") + START.len();
    let end = start + readme[start..].find(END).expect("the end marker");
    let section = &readme[start..end];
    let open = format!("{fence}\n");
    let code = &section[section
        .find(&open)
        .unwrap_or_else(|| panic!("no {fence} block"))
        + open.len()..];
    let close = code.find("\n```").expect("the block's closing fence");
    code[..=close].to_owned()
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A receiver running as a child process (killed when dropped) and the lines of its stdout.
struct Running {
    _child: Child,
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Running {
    async fn start(example: &Example, dir: &Path, secret: &str, addr: SocketAddr) -> Running {
        let file = dir.join(example.file);
        std::fs::write(&file, readme_block(example.fence)).unwrap();
        let mut child = Command::new(example.program)
            .arg(&file)
            .env("WEBHOOK_SECRET", secret)
            .env("PORT", addr.port().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", example.program));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let sink = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{} {} exited: {status}", example.program, file.display());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never listened on {addr}",
                example.program
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Running {
            _child: child,
            addr,
            lines,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until it has printed `n` lines, and returns them.
    async fn wait_for_lines(&self, n: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let lines = self.lines();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "printed only {lines:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a request as webhook-manager would, with these headers; the status.
    async fn send(&self, headers: &[(&str, String)], body: &str) -> u16 {
        let mut request = reqwest::Client::new()
            .post(format!("http://{}/", self.addr))
            .header("Content-Type", "application/json")
            .body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request
            .send()
            .await
            .expect("the receiver answers")
            .status()
            .as_u16()
    }
}

/// A request's headers.
type Headers = Vec<(&'static str, String)>;

/// The headers that sign `body` as delivery `id` at `timestamp` with `secret`.
fn signed(secret: &str, id: &str, timestamp: i64, body: &str) -> Headers {
    let s = webhook_manager::signature::sign(secret, id, timestamp, body.as_bytes());
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", s.standard),
        ("X-VoIPBIN-Signature", s.voipbin),
    ]
}

/// The value of header `name`.
fn value(headers: &Headers, name: &str) -> String {
    headers.iter().find(|(n, _)| *n == name).unwrap().1.clone()
}

/// `headers` with header `name` set to `value`.
fn with(mut headers: Headers, name: &str, value: String) -> Headers {
    headers.iter_mut().find(|(n, _)| *n == name).unwrap().1 = value;
    headers
}

/// `headers` without header `name`.
fn without(mut headers: Headers, name: &str) -> Headers {
    headers.retain(|(n, _)| *n != name);
    headers
}

/// Waits until the webhook's deliveries satisfy `done`.
async fn deliveries_until(
    s: &Stack,
    token: &str,
    webhook: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found = s
            .list_all(token, &format!("/webhooks/{webhook}/deliveries?x=1"))
            .await;
        if done(&found) {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries never got there: {found:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn receiver_works(example: &Example) {
    let s = Stack::embedded_with_webhooks(quick(true)).await;
    let token = customer_token(&new_id());
    let addr = testkit::ops::free_addr();
    let body = json!({
        "name": "readme",
        "uri": format!("http://127.0.0.1:{}/", addr.port()),
        "event_types": ["chat_created"],
    });
    let webhook = s
        .post("/webhooks", &token, &body.to_string())
        .await
        .ok()
        .clone();
    let (hook, secret) = (
        webhook["id"].as_str().unwrap(),
        webhook["secret"].as_str().unwrap(),
    );
    let dir = TempDir(temp_data_dir());
    std::fs::create_dir_all(&dir.0).unwrap();
    let receiver = Running::start(example, &dir.0, secret, addr).await;

    // A real delivery: taken with 204, and printed.
    let agents = [new_id(), new_id()];
    let chat = chat_body("group", &agents[0], &[&agents[0], &agents[1]], "team");
    s.post("/chats", &token, &chat).await.ok();
    let done = deliveries_until(&s, &token, hook, |d| {
        d.len() == 1 && d[0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(done[0]["last_status_code"], 204, "{}", done[0]);
    let delivery = done[0]["id"].as_str().unwrap();
    assert_eq!(
        receiver.wait_for_lines(1).await,
        [format!("{delivery} chat_created")]
    );

    // Sent again (same webhook-id, a new timestamp and signatures): taken, not printed twice.
    s.post(
        &format!("/webhooks/{hook}/deliveries/{delivery}/retry"),
        &token,
        "",
    )
    .await
    .ok();
    let again = deliveries_until(&s, &token, hook, |d| {
        d[0]["status"] == "succeeded" && d[0]["attempts"] == 2
    })
    .await;
    assert_eq!(again[0]["last_status_code"], 204, "{}", again[0]);

    // Requests sent directly: a valid one is taken (so each refusal below is for its one
    // fault), also when its webhook-signature holds several signatures of which one matches.
    let now = chrono::Utc::now().timestamp();
    let frame = r#"{"type": "chat_updated", "data": {"id": "x"}}"#;
    let valid = signed(secret, "direct-1", now, frame);
    assert_eq!(receiver.send(&valid, frame).await, 204);
    let other_secret = webhook_manager::signature::generate_secret();
    let mine = signed(secret, "direct-2", now, frame);
    let several = format!(
        "{} v1a,xyz {}",
        value(
            &signed(&other_secret, "direct-2", now, frame),
            "webhook-signature"
        ),
        value(&mine, "webhook-signature"),
    );
    let several = with(mine, "webhook-signature", several);
    assert_eq!(receiver.send(&several, frame).await, 204);
    assert_eq!(
        receiver.wait_for_lines(3).await[1..],
        ["direct-1 chat_updated", "direct-2 chat_updated"]
    );

    // Each of these has one fault, and is refused: both signatures are checked, each alone.
    let tampered = frame.replace("\"x\"", "\"y\"");
    let voipbin_of_tampered = value(
        &signed(secret, "bad-2", now, &tampered),
        "X-VoIPBIN-Signature",
    );
    let standard_of_another_time = value(
        &signed(secret, "bad-4", now + 1, frame),
        "webhook-signature",
    );
    let standard_of_another_secret = value(
        &signed(&other_secret, "bad-5", now, frame),
        "webhook-signature",
    );
    let refused: [(&str, Headers, &str); 9] = [
        (
            "a changed body",
            signed(secret, "bad-1", now, frame),
            &tampered,
        ),
        (
            "a wrong X-VoIPBIN-Signature",
            with(
                signed(secret, "bad-2", now, frame),
                "X-VoIPBIN-Signature",
                voipbin_of_tampered,
            ),
            frame,
        ),
        (
            "no X-VoIPBIN-Signature",
            without(signed(secret, "bad-3", now, frame), "X-VoIPBIN-Signature"),
            frame,
        ),
        (
            "a wrong webhook-signature",
            with(
                signed(secret, "bad-4", now, frame),
                "webhook-signature",
                standard_of_another_time,
            ),
            frame,
        ),
        (
            "another secret's webhook-signature",
            with(
                signed(secret, "bad-5", now, frame),
                "webhook-signature",
                standard_of_another_secret,
            ),
            frame,
        ),
        (
            "no webhook-signature",
            without(signed(secret, "bad-6", now, frame), "webhook-signature"),
            frame,
        ),
        (
            "a timestamp 6 minutes old",
            signed(secret, "bad-7", now - 6 * 60, frame),
            frame,
        ),
        (
            "a timestamp 6 minutes ahead",
            signed(secret, "bad-8", now + 6 * 60, frame),
            frame,
        ),
        (
            "no webhook-timestamp",
            without(signed(secret, "bad-9", now, frame), "webhook-timestamp"),
            frame,
        ),
    ];
    for (fault, headers, body) in &refused {
        assert_eq!(
            receiver.send(headers, body).await,
            401,
            "{} took a request with {fault}",
            example.program
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.lines().len(),
        3,
        "printed once per webhook-id, nothing refused: {:?}",
        receiver.lines()
    );
}
