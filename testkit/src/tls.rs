//! TLS in front of this machine's RabbitMQ and PostgreSQL, which listen in plaintext: a test
//! certificate authority made per run, and proxies that terminate TLS with a certificate it
//! signed for `localhost` and forward the plaintext. A client that verifies the certificate
//! (the CA, and the host name: `localhost` passes, `127.0.0.1` does not) then talks TLS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A certificate authority and a server certificate for `localhost` it signed. The CA's PEM
/// is also written to a file (removed on drop), for clients configured with a path.
pub struct TestCa {
    pub ca_pem: String,
    ca_file: PathBuf,
    server: Arc<rustls::ServerConfig>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "chat tests CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");

        let server_key = rcgen::KeyPair::generate().expect("server key");
        let server_params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("server");
        let server_cert = server_params
            .signed_by(&server_key, &ca, &ca_key)
            .expect("server certificate");

        // ring, as the services' AMQP client uses (rustls marks it deprecated for its lack of
        // post-quantum key exchange, which a loopback test does not need).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![server_cert.der().clone(), ca.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            )
            .expect("server config");
        let ca_pem = ca.pem();
        let ca_file = std::env::temp_dir().join(format!(
            "chat-test-ca-{}.pem",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&ca_file, &ca_pem).expect("write the CA file");
        TestCa {
            ca_pem,
            ca_file,
            server: Arc::new(server),
        }
    }

    /// The CA certificate's PEM file.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

/// How a client starts TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// At once (AMQPS).
    Direct,
    /// PostgreSQL's way: an SSLRequest in plaintext, answered `S`, then the handshake.
    PostgresRequest,
}

/// A loopback port serving TLS and forwarding the plaintext to `target`; stops when dropped.
pub struct TlsProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TlsProxy {
    /// For protocols that start with the TLS handshake (amqps://).
    pub async fn start(ca: &TestCa, target: SocketAddr) -> TlsProxy {
        Self::serve(ca, target, Start::Direct).await
    }

    /// For PostgreSQL clients (libpq's `sslmode=require` and stricter).
    pub async fn postgres(ca: &TestCa, target: SocketAddr) -> TlsProxy {
        Self::serve(ca, target, Start::PostgresRequest).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    async fn serve(ca: &TestCa, target: SocketAddr, start: Start) -> TlsProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = relay(client, target, acceptor, start).await;
                });
            }
        });
        TlsProxy { addr, task }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// PostgreSQL's request codes: SSLRequest and GSSENCRequest.
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

async fn relay(
    mut client: TcpStream,
    target: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    start: Start,
) -> std::io::Result<()> {
    if start == Start::PostgresRequest {
        loop {
            let mut request = [0u8; 8];
            client.read_exact(&mut request).await?;
            let code = u32::from_be_bytes([request[4], request[5], request[6], request[7]]);
            match code {
                SSL_REQUEST => {
                    client.write_all(b"S").await?;
                    break;
                }
                // Not offered: the client goes on with an SSLRequest.
                GSSENC_REQUEST => client.write_all(b"N").await?,
                _ => {
                    return Err(std::io::Error::other(
                        "a plaintext PostgreSQL client: this proxy serves TLS only",
                    ));
                }
            }
        }
    }
    let mut tls = acceptor.accept(client).await?;
    let mut upstream = TcpStream::connect(target).await?;
    tokio::io::copy_bidirectional(&mut tls, &mut upstream).await?;
    Ok(())
}
