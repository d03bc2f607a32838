//! `api-gateway watch`: a WebSocket client of a running gateway that subscribes to topics and
//! prints every frame it receives as one JSON line, to see the events flow without a tool of
//! one's own.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::config::WatchArgs;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connects, subscribes, and prints frames until the socket closes, `count` events have
/// arrived, or the process is stopped.
pub async fn run(args: &WatchArgs) -> Result<(), BoxError> {
    let token = match &args.token {
        Some(token) => token.trim().to_owned(),
        None => {
            let file = args.data_dir.join("admin-token");
            std::fs::read_to_string(&file)
                .map_err(|e| {
                    format!(
                        "{}: {e} (pass --token, or run this where the embedded default runs)",
                        file.display()
                    )
                })?
                .trim()
                .to_owned()
        }
    };
    let base = match &args.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!(
            "http://{}/v1.0",
            common::grpc_server::loopback_if_unspecified(args.listen_addr)
        ),
    };
    let ws = match base.split_once("://") {
        Some(("http", rest)) => format!("ws://{rest}/ws"),
        Some(("https", _)) => {
            return Err("--url: https:// needs a TLS client; watch speaks plain ws:// only".into());
        }
        _ => return Err(format!("--url {base:?}: expected http://host:port/v1.0").into()),
    };
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            ws.as_str(),
        )?;
    request.headers_mut().insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse()?,
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| format!("{ws}: {e}"))?;
    let subscribe = serde_json::json!({"type": "subscribe", "topics": args.topics()});
    socket
        .send(Message::Text(subscribe.to_string().into()))
        .await?;
    let mut events = 0usize;
    while let Some(frame) = socket.next().await {
        match frame? {
            Message::Text(text) => {
                println!("{text}");
                let is_event = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["type"].as_str().map(str::to_owned))
                    .is_some_and(|t| !matches!(t.as_str(), "subscribed" | "error" | "resync"));
                if is_event {
                    events += 1;
                    if args.count.is_some_and(|n| events >= n) {
                        let _ = socket.close(None).await;
                        return Ok(());
                    }
                }
            }
            Message::Close(frame) => {
                if let Some(frame) = frame {
                    eprintln!("closed: {} {}", u16::from(frame.code), frame.reason);
                }
                return Ok(());
            }
            _ => {}
        }
    }
    Ok(())
}
