//! The agent console at `/`: served from the binary with a policy that lets it load nothing
//! from elsewhere, and driven in a real browser by two agents (console/test/two_agents.mjs:
//! typing, the unread badge, reading, "seen", edits, older messages on scroll).
//!
//! The browser test needs Node.js, Debian's chromium and playwright-core installed from
//! console/test's lock file (`scripts/test` installs it into `target/console-test`); without
//! them it is skipped and listed (with CI=true, it fails).

#[macro_use]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use support::*;

const HISTORY: usize = 45;

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_a_self_only_policy() {
    let s = Stack::embedded().await;
    let http = reqwest::Client::new();
    let root = s.base.trim_end_matches("/v1.0").to_owned();
    for (path, kind, contains) in [
        ("/", "text/html", "<script src=\"/console.js\"></script>"),
        ("/console.js", "text/javascript", "chatroom_read_updated"),
        ("/console.css", "text/css", "#room-list"),
    ] {
        let res = http.get(format!("{root}{path}")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let policy = header("content-security-policy");
        assert!(policy.contains("default-src 'none'"), "{policy}");
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        let body = res.text().await.unwrap();
        assert!(body.contains(contains), "{path}");
        // Nothing from another origin.
        assert!(!body.contains("https://"), "{path} loads from elsewhere");
    }
    s.stop().await;
}

/// Where the browser test's packages are: `CONSOLE_TEST_MODULES`, else
/// `<target>/console-test/node_modules`.
fn node_modules() -> PathBuf {
    std::env::var_os("CONSOLE_TEST_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
            target.join("console-test/node_modules")
        })
}

#[tokio::test]
async fn two_agents_type_send_read_and_see_it_seen_in_a_real_browser() {
    let test = "console::two_agents_type_send_read_and_see_it_seen_in_a_real_browser";
    let chromium = std::env::var_os("CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    let playwright = node_modules().join("playwright-core");
    if !testkit::require_tool(test, "node")
        || !testkit::require_path(test, &chromium, "apt-get install chromium")
        || !testkit::require_path(
            test,
            &playwright,
            "npm ci in a copy of api-gateway/console/test, as scripts/test does",
        )
    {
        return;
    }

    let s = Stack::embedded().await;
    let customer = new_id();
    let admin = customer_token(&customer);
    let (a, b) = (new_id(), new_id());
    let (_, rooms) = group(&s, &admin, &[&a, &b]).await;
    let (ta, tb) = (
        named_agent_token(&customer, &a, "Alice"),
        named_agent_token(&customer, &b, "Bob"),
    );
    for n in 0..HISTORY {
        let body = json!({"chatroom_id": rooms[1], "text": format!("history {n}")});
        s.post("/service_agents/chatroommessages", &tb, &body.to_string())
            .await
            .ok();
    }
    // CONSOLE_SCREENSHOT keeps the picture (the README's is made so); else a scratch file.
    let kept = std::env::var_os("CONSOLE_SCREENSHOT").map(PathBuf::from);
    let screenshot = kept.clone().unwrap_or_else(|| {
        node_modules()
            .parent()
            .unwrap()
            .join(format!("two-agents-{}.png", std::process::id()))
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("console/test/two_agents.mjs");
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .env("BASE_URL", s.base.trim_end_matches("/v1.0"))
        .env("TOKEN_A", &ta)
        .env("TOKEN_B", &tb)
        .env("ROOM_A", &rooms[0])
        .env("ROOM_B", &rooms[1])
        .env("HISTORY", HISTORY.to_string())
        .env("SCREENSHOT", &screenshot)
        .env("PLAYWRIGHT_CORE", &playwright)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser test finishes within 3 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("A sees \"Seen\""), "{stdout}");
    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    // What the page did is what the API holds: both rooms read to the end.
    for (token, room) in [(&ta, &rooms[0]), (&tb, &rooms[1])] {
        let read = s
            .get(&format!("/service_agents/chatrooms/{room}/read"), token)
            .await
            .ok()
            .clone();
        assert_eq!(read["unread_count"], 0, "{read}");
    }
    let copies = s
        .get(
            &format!(
                "/service_agents/chatroommessages?chatroom_id={}&page_size=2",
                rooms[1]
            ),
            &tb,
        )
        .await
        .ok()
        .clone();
    assert_eq!(copies["result"][0]["text"], "On it");
    assert_eq!(
        copies["result"][1]["text"],
        "Hello B, can you take this one, please?"
    );
    if kept.is_none() {
        let _ = std::fs::remove_file(&screenshot);
    }
    s.stop().await;
}
