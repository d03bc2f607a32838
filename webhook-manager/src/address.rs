//! The SSRF guard: where a webhook may point. A `uri` must be an absolute http or https URL;
//! unless the operator allows private addresses, every address its host resolves to must be a
//! public one (not loopback, private, link-local, shared, multicast or reserved). The check
//! runs when a webhook is created or changed and again at every attempt, and the attempt
//! connects only to addresses the guard's resolver passed (so a name that resolves to a public
//! address when checked and a private one when connecting is still refused).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;

/// Longest `uri` accepted.
pub const MAX_URI_LEN: usize = 2000;

/// Why a `uri` is refused (the message names the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("uri: {0}")]
    Malformed(String),
    #[error("uri: {host} resolves to {addr}, a loopback, private or link-local address")]
    Private { host: String, addr: IpAddr },
    #[error("uri: {host} does not resolve: {why}")]
    Unresolved { host: String, why: String },
}

/// Parses a webhook's `uri`: absolute, http or https, with a host, no credentials.
pub fn parse_uri(uri: &str) -> Result<Url, Refused> {
    let bad = |why: &str| Refused::Malformed(why.to_owned());
    if uri.len() > MAX_URI_LEN {
        return Err(bad(&format!("at most {MAX_URI_LEN} characters")));
    }
    let url = Url::parse(uri).map_err(|e| bad(&format!("not an absolute URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be an http or https URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry credentials"));
    }
    Ok(url)
}

/// Whether an address is one a webhook must not reach (unless the operator allows it).
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_v4(v4);
            }
            let s = v6.segments();
            let o = v6.octets();
            // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_private_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            // 6to4 (2002::/16) carries an IPv4 address in its bits 16 to 48.
            if s[0] == 0x2002 {
                return is_private_v4(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
            }
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local, fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local, fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated), fec0::/10
                || s[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible (deprecated), ::/96
                || s[..3] == [0x64, 0xff9b, 1] // local-use NAT64, 64:ff9b:1::/48
                || s[..2] == [0x2001, 0] // Teredo, 2001::/32
        }
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || a == 0
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || (a == 100 && (b & 0xc0) == 64) // shared (carrier-grade NAT), 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments, 192.0.0.0/24
        || (a == 198 && (b & 0xfe) == 18) // benchmarking, 198.18.0.0/15
        || a >= 240 // reserved, 240.0.0.0/4
}

/// The guard, as configured.
#[derive(Debug, Clone, Copy)]
pub struct AddressPolicy {
    pub allow_private: bool,
}

impl AddressPolicy {
    /// The addresses of `url`'s host, each checked; refused if any is private. Where private
    /// addresses are allowed there is nothing to check, and the name is not looked up (a
    /// name that does not resolve yet fails at delivery, where the attempt says so).
    pub async fn check(&self, url: &Url) -> Result<Vec<SocketAddr>, Refused> {
        if self.allow_private {
            return Ok(Vec::new());
        }
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs = resolve(&host, port).await?;
        if let Some(addr) = addrs.iter().find(|a| is_private(a.ip())) {
            return Err(Refused::Private {
                host,
                addr: addr.ip(),
            });
        }
        Ok(addrs)
    }

    /// A resolver for the HTTP client that applies the guard (None: the system's, as is).
    pub fn resolver(&self) -> Option<Arc<GuardedResolver>> {
        (!self.allow_private).then(|| Arc::new(GuardedResolver))
    }
}

/// The address `url` names literally, if it does (no lookup needed).
pub fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// Name lookups in progress at once. Each runs on a thread of its own (the system resolver
/// blocks): not on the runtime's blocking pool, which the database calls share, so a name
/// server that does not answer holds up only lookups.
const MAX_LOOKUPS: usize = 16;
/// How long a lookup may take.
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn lookup(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    static LOOKUPS: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
        std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(MAX_LOOKUPS)));
    let permit = LOOKUPS
        .clone()
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let name = host.to_owned();
    std::thread::Builder::new()
        .name("webhook-dns".into())
        .spawn(move || {
            let found = (name.as_str(), port)
                .to_socket_addrs()
                .map(|addrs| addrs.collect());
            let _ = tx.send(found);
            // Held until the lookup ends, even one that outlived its caller's wait.
            drop(permit);
        })?;
    match tokio::time::timeout(LOOKUP_TIMEOUT, rx).await {
        Ok(Ok(found)) => found,
        Ok(Err(_)) => Err(std::io::Error::other("the lookup ended without an answer")),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {LOOKUP_TIMEOUT:?}"),
        )),
    }
}

async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Refused> {
    // A literal address (IPv6 in brackets in a URL) needs no lookup.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let found: Vec<SocketAddr> = lookup(bare, port).await.map_err(|e| Refused::Unresolved {
        host: host.to_owned(),
        why: e.to_string(),
    })?;
    if found.is_empty() {
        return Err(Refused::Unresolved {
            host: host.to_owned(),
            why: "no addresses".into(),
        });
    }
    Ok(found)
}

/// Resolves names for the HTTP client, refusing any that resolve to a private address.
#[derive(Debug)]
pub struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = resolve(&host, 0).await?;
            if let Some(addr) = addrs.iter().find(|a| is_private(a.ip())) {
                return Err(Refused::Private {
                    host,
                    addr: addr.ip(),
                }
                .into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_and_link_local_addresses_are_refused_and_public_ones_pass() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "::7f00:1",
            "64:ff9b:1::1",
            "2002:a00:1::1",
            "2002:7f00:1::",
            "2001:0:4136:e378::1",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
            "2001:4860:4860::8888",
        ] {
            assert!(!is_private(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn a_uri_must_be_an_absolute_http_url_with_a_host_and_no_credentials() {
        assert!(parse_uri("https://example.com/hook?x=1").is_ok());
        assert!(parse_uri("http://127.0.0.1:8080/").is_ok());
        for bad in [
            "",
            "/relative",
            "example.com/hook",
            "ftp://example.com/",
            "file:///etc/passwd",
            "https://user:pw@example.com/",
            "http://",
        ] {
            let err = parse_uri(bad).unwrap_err();
            assert!(err.to_string().starts_with("uri: "), "{bad}: {err}");
        }
        assert!(parse_uri(&format!("https://e.com/{}", "a".repeat(MAX_URI_LEN))).is_err());
    }

    #[tokio::test]
    async fn the_check_resolves_names_and_refuses_private_results_unless_allowed() {
        let strict = AddressPolicy {
            allow_private: false,
        };
        let open = AddressPolicy {
            allow_private: true,
        };
        for uri in [
            "http://127.0.0.1:9/",
            "http://localhost:9/",
            "http://[::1]:9/",
        ] {
            let url = parse_uri(uri).unwrap();
            let err = strict.check(&url).await.unwrap_err();
            assert!(matches!(err, Refused::Private { .. }), "{uri}: {err}");
            assert!(open.check(&url).await.is_ok(), "{uri}");
        }
        let url = parse_uri("http://8.8.8.8/").unwrap();
        assert_eq!(
            strict.check(&url).await.unwrap(),
            ["8.8.8.8:80".parse().unwrap()]
        );
    }
}
