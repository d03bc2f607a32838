//! Helpers for the operability tests: free ports, a plain HTTP GET, Prometheus samples, gRPC
//! server reflection, and child processes that are killed when the test ends.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A loopback address with a port nobody listens on (free when this returns).
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr")
}

/// `GET path` over HTTP/1.0: the status and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await?;
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_owned()))
}

/// The value of one series (`name{labels}` exactly as exposed) in a Prometheus text page.
pub fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The services a gRPC server lists through server reflection (v1, or v1alpha), asked with
/// `authorization` (an internal token's `Bearer ...`) when given.
pub async fn reflected_services(
    addr: SocketAddr,
    v1alpha: bool,
    authorization: Option<&str>,
) -> Result<Vec<String>, String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> =
        authorization.map(|a| a.parse().expect("an ASCII header value"));
    let with_auth = move |mut req: tonic::Request<()>| {
        if let Some(a) = &authorization {
            req.metadata_mut().insert("authorization", a.clone());
        }
        Ok(req)
    };
    if v1alpha {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies = ServerReflectionClient::with_interceptor(channel, with_auth)
            .server_reflection_info(futures_util::stream::iter([request]))
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        match replies
            .message()
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        {
            Some(reply) => match reply.message_response {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    Ok(list.service.into_iter().map(|s| s.name).collect())
                }
                other => Err(format!("unexpected reply {other:?}")),
            },
            None => Err("no reply".into()),
        }
    } else {
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies = ServerReflectionClient::with_interceptor(channel, with_auth)
            .server_reflection_info(futures_util::stream::iter([request]))
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        match replies
            .message()
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        {
            Some(reply) => match reply.message_response {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    Ok(list.service.into_iter().map(|s| s.name).collect())
                }
                other => Err(format!("unexpected reply {other:?}")),
            },
            None => Err("no reply".into()),
        }
    }
}

/// Starts `bin` with `args` and exactly `envs` on top of this process's environment (RUST_LOG
/// set to info, and the tests' INTERNAL_AUTH_SECRET unless `envs` sets it), its stderr (the
/// log) written to `log`.
pub fn spawn(bin: &str, args: &[&str], envs: &[(&str, String)], log: &Path) -> ChildGuard {
    let log = std::fs::File::create(log).expect("create the log file");
    let child = std::process::Command::new(bin)
        .args(args)
        .env("RUST_LOG", "info")
        .env("INTERNAL_AUTH_SECRET", crate::INTERNAL_AUTH_SECRET)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| panic!("start {bin}: {e}"));
    ChildGuard(child)
}

/// Runs `bin healthcheck` (with `envs`) until it exits 0 or `within` passes; its last output.
pub async fn until_healthy(
    bin: &str,
    envs: &[(&str, String)],
    within: Duration,
) -> Result<String, String> {
    let deadline = Instant::now() + within;
    loop {
        let out = tokio::process::Command::new(bin)
            .arg("healthcheck")
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .await
            .unwrap_or_else(|e| panic!("run {bin} healthcheck: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            return Ok(text);
        }
        if Instant::now() > deadline {
            return Err(text);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A child process, killed (if still running) when this drops.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Sends SIGTERM and waits up to `wait` for the exit; the exit code, or None if it did not
    /// stop in time (it is then killed).
    pub fn terminate(&mut self, wait: Duration) -> Option<i32> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_exact_series() {
        let page = "# TYPE x counter\nx_total{a=\"1\"} 3\nx_total{a=\"10\"} 7\ny 1.5\n";
        assert_eq!(sample(page, "x_total{a=\"1\"}"), Some(3.0));
        assert_eq!(sample(page, "x_total{a=\"10\"}"), Some(7.0));
        assert_eq!(sample(page, "y"), Some(1.5));
        assert_eq!(sample(page, "x_total"), None);
    }
}
