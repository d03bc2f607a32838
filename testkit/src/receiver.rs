//! A webhook receiver on loopback: an HTTP server that records every request and answers as
//! the test scripts it (a status, with `Retry-After`, or no answer at all).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::{Notify, watch};

/// How the receiver answers a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Status(u16),
    /// A status with a `Retry-After` header.
    RetryAfter(u16, String),
    /// Never answers (until the receiver is dropped).
    Hang,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names in lowercase.
    pub headers: HashMap<String, String>,
    pub body: String,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct State {
    received: Mutex<Vec<Received>>,
    answers: Mutex<(VecDeque<Answer>, Option<Answer>)>,
    arrived: Notify,
}

pub struct WebhookReceiver {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: watch::Sender<bool>,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl WebhookReceiver {
    /// A receiver answering 200 to everything.
    pub async fn start() -> WebhookReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let (stop, stopped) = watch::channel(false);
        let (serving, mut stopping) = (state.clone(), stopped.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stopping.changed() => return,
                };
                let Ok((stream, _)) = accepted else { continue };
                let (state, stopped) = (serving.clone(), stopped.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        answer(state.clone(), stopped.clone(), req)
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    let _ = conn.await;
                });
            }
        });
        WebhookReceiver { addr, state, stop }
    }

    /// Where to point a webhook.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers the next requests with `script`, in order, then every one with `then`.
    pub fn answer_with(&self, script: Vec<Answer>, then: Answer) {
        *self.state.answers.lock().unwrap() = (script.into(), Some(then));
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// The requests received once there are at least `n`; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.state.arrived.notified();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let got = self.received();
                assert!(
                    got.len() >= n,
                    "{} of {n} requests within {timeout:?}: {:?}",
                    got.len(),
                    got.iter().map(|r| &r.body).collect::<Vec<_>>()
                );
                return got;
            }
        }
    }
}

async fn answer(
    state: Arc<State>,
    mut stopped: watch::Receiver<bool>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let received = Received {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    };
    let answer = {
        let mut answers = state.answers.lock().unwrap();
        answers
            .0
            .pop_front()
            .or_else(|| answers.1.clone())
            .unwrap_or(Answer::Status(200))
    };
    state.received.lock().unwrap().push(received);
    state.arrived.notify_waiters();
    let (status, retry_after) = match answer {
        Answer::Status(s) => (s, None),
        Answer::RetryAfter(s, after) => (s, Some(after)),
        Answer::Hang => {
            let _ = stopped.wait_for(|s| *s).await;
            (503, None)
        }
    };
    let mut res = Response::builder().status(status);
    if let Some(after) = retry_after {
        res = res.header("retry-after", after);
    }
    Ok(res.body(Full::new(Bytes::from_static(b"ok"))).unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_requests_and_answers_as_scripted() {
        let receiver = WebhookReceiver::start().await;
        receiver.answer_with(
            vec![Answer::Status(500), Answer::RetryAfter(429, "3".into())],
            Answer::Status(204),
        );
        let http = reqwest_free_post(receiver.addr).await;
        assert_eq!(http, [500, 429, 204]);
        let got = receiver.wait_for(3, Duration::from_secs(1)).await;
        assert_eq!(got[0].method, "POST");
        assert_eq!(got[0].path, "/hook");
        assert_eq!(got[2].body, "hello");
    }

    /// Three POSTs over one connection with hyper's client side, the statuses answered.
    async fn reqwest_free_post(addr: SocketAddr) -> Vec<u16> {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let req = Request::post("/hook")
                .header("host", addr.to_string())
                .body(Full::new(Bytes::from_static(b"hello")))
                .unwrap();
            let res = sender.send_request(req).await.unwrap();
            statuses.push(res.status().as_u16());
            let _ = res.into_body().collect().await;
        }
        statuses
    }
}
