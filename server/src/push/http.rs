//! The HTTP client that delivers notifications: HTTP/1.1 with pooled
//! connections (hyper-util's client) over our own connector, which
//! resolves the host, refuses private and loopback addresses unless the
//! operator allows them (a device chooses the URL, so it must not be able
//! to aim the server at the operator's internal network), and speaks TLS
//! with rustls (ring) against the web PKI roots plus any roots the operator
//! adds. Every request has one deadline covering connect, TLS, the request
//! and the response.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderMap, RETRY_AFTER};
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::PushConfig;
use crate::setup::SetupError;

/// Most response body bytes read (so the connection can be reused).
const MAX_RESPONSE_BODY: usize = 16 * 1024;

/// What a receiver answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// Its `Retry-After`, if any.
    pub retry_after: Option<Duration>,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Nothing within the deadline.
    #[error("timed out")]
    Timeout,
    /// The destination is not allowed (scheme, private address).
    #[error("destination refused: {0}")]
    Blocked(&'static str),
    /// The host name did not resolve.
    #[error("cannot resolve the host: {0}")]
    Dns(String),
    /// No address accepted a connection.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The TLS handshake failed (e.g. an untrusted certificate).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The exchange broke (bad response, connection reset).
    #[error("HTTP exchange failed: {0}")]
    Http(String),
}

impl SendError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            SendError::Timeout => "timeout",
            SendError::Blocked(_) => "blocked",
            SendError::Dns(_) => "dns",
            SendError::Connect(_) => "connect",
            SendError::Tls(_) => "tls",
            SendError::Http(_) => "http",
        }
    }
}

/// The push HTTP client. Cheap to share.
pub struct PushHttp {
    client: Client<Connector, Full<Bytes>>,
    timeout: Duration,
}

impl PushHttp {
    /// A client with the operator's settings.
    pub fn new(config: &PushConfig) -> Result<PushHttp, SetupError> {
        let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        if let Some(path) = &config.ca_file {
            let invalid = |what: &str, e: &dyn std::fmt::Display| {
                SetupError::Invalid(format!("{what} push.ca_file {}: {e}", path.display()))
            };
            let mut added = 0;
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| invalid("reading", &e))? {
                let cert = cert.map_err(|e| invalid("parsing", &e))?;
                roots.add(cert).map_err(|e| invalid("adding a root from", &e))?;
                added += 1;
            }
            if added == 0 {
                return Err(SetupError::Invalid(format!("no certificate in push.ca_file {}", path.display())));
            }
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| SetupError::Invalid(format!("TLS versions with ring: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let timeout = Duration::from_millis(config.timeout_ms);
        let connector = Connector {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            allow_http: config.allow_http,
            allow_private: config.allow_private_addresses,
            timeout,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(4)
            .build(connector);
        Ok(PushHttp { client, timeout })
    }

    /// POSTs `body` with `headers` to `uri` and reads the answer.
    pub async fn post(&self, uri: Uri, headers: HeaderMap, body: Bytes) -> Result<Answer, SendError> {
        let mut request = Request::post(uri).body(Full::new(body)).map_err(|e| SendError::Http(e.to_string()))?;
        *request.headers_mut() = headers;
        let exchange = async {
            let response = self.client.request(request).await.map_err(classify)?;
            let status = response.status().as_u16();
            let retry_after = retry_after(response.headers(), SystemTime::now());
            // Drain (a bounded amount of) the body so the connection can be
            // reused; its content does not matter.
            let _ = Limited::new(response.into_body(), MAX_RESPONSE_BODY).collect().await;
            Ok(Answer { status, retry_after })
        };
        tokio::time::timeout(self.timeout, exchange).await.map_err(|_| SendError::Timeout)?
    }
}

fn classify(e: hyper_util::client::legacy::Error) -> SendError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(c) = s.downcast_ref::<ConnectError>() {
            return c.0.clone_kind();
        }
        source = s.source();
    }
    if e.is_connect() { SendError::Connect(e.to_string()) } else { SendError::Http(format!("{e:?}")) }
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// Whether `ip` is on the public internet (not loopback, private,
/// link-local, shared, documentation, multicast or otherwise special).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            // 6to4 (2002::/16) carries an IPv4 address: judged by it.
            None if v6.segments()[0] == 0x2002 => {
                let [_, _, a, b, c, d, ..] = v6.octets();
                is_public(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)))
            }
            None => {
                let first = v6.segments()[0];
                // ::/96, the deprecated IPv4-compatible addresses
                // (`::7f00:1` is 127.0.0.1 to some stacks): never public.
                let compatible = v6.segments()[..6].iter().all(|s| *s == 0);
                !(compatible
                    || v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || v6.is_unique_local()
                    || v6.is_unicast_link_local()
                    || first == 0x2001 && v6.segments()[1] == 0x0db8
                    || first == 0x0064 && v6.segments()[1] == 0xff9b)
            }
        },
    }
}

/// A connector failure, carried through hyper's error to [`classify`].
#[derive(Debug)]
struct ConnectError(SendError);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ConnectError {}

impl SendError {
    fn clone_kind(&self) -> SendError {
        match self {
            SendError::Timeout => SendError::Timeout,
            SendError::Blocked(w) => SendError::Blocked(w),
            SendError::Dns(m) => SendError::Dns(m.clone()),
            SendError::Connect(m) => SendError::Connect(m.clone()),
            SendError::Tls(m) => SendError::Tls(m.clone()),
            SendError::Http(m) => SendError::Http(m.clone()),
        }
    }
}

#[derive(Clone)]
struct Connector {
    tls: tokio_rustls::TlsConnector,
    allow_http: bool,
    allow_private: bool,
    timeout: Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        // The client may keep connecting after a request gave up, to pool
        // the connection: bound that too.
        Box::pin(async move {
            match tokio::time::timeout(this.timeout, this.connect(uri)).await {
                Ok(r) => r.map_err(ConnectError),
                Err(_) => Err(ConnectError(SendError::Timeout)),
            }
        })
    }
}

impl Connector {
    async fn connect(&self, uri: Uri) -> Result<TokioIo<Stream>, SendError> {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") if self.allow_http => false,
            _ => return Err(SendError::Blocked("scheme not allowed")),
        };
        let host = uri.host().ok_or(SendError::Blocked("no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let addrs: Vec<SocketAddr> =
            tokio::net::lookup_host((host, port)).await.map_err(|e| SendError::Dns(e.to_string()))?.collect();
        if addrs.is_empty() {
            return Err(SendError::Dns("no addresses".into()));
        }
        let allowed: Vec<SocketAddr> = addrs.into_iter().filter(|a| self.allow_private || is_public(a.ip())).collect();
        if allowed.is_empty() {
            return Err(SendError::Blocked("the host resolves to private or loopback addresses only"));
        }
        let mut last = None;
        let mut tcp = None;
        for addr in allowed {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(tcp) = tcp else {
            return Err(SendError::Connect(last.map(|e| e.to_string()).unwrap_or_default()));
        };
        let _ = tcp.set_nodelay(true);
        if !https {
            return Ok(TokioIo::new(Stream::Plain(tcp)));
        }
        let name = ServerName::try_from(host.to_string()).map_err(|_| SendError::Tls("bad server name".into()))?;
        let tls = self.tls.connect(name, tcp).await.map_err(|e| SendError::Tls(e.to_string()))?;
        Ok(TokioIo::new(Stream::Tls(Box::new(tls))))
    }
}

/// A connection to a receiver: plain TCP (only where allowed) or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_not_public() {
        for ip in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0"] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in
            ["::1", "fe80::1", "fd00::1", "::ffff:10.0.0.1", "::", "::7f00:1", "::a00:1", "::808:808", "2002:7f00:1::1"]
        {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, "120".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(120)));
        h.insert(RETRY_AFTER, "Thu, 01 Jan 2026 00:00:30 GMT".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
    }

    #[tokio::test]
    async fn refuses_loopback_unless_allowed() {
        let mut config = PushConfig { timeout_ms: 500, allow_http: true, ..PushConfig::default() };
        let http = PushHttp::new(&config).unwrap();
        let err = http.post("http://127.0.0.1:9/x".parse().unwrap(), HeaderMap::new(), Bytes::new()).await;
        assert!(matches!(err, Err(SendError::Blocked(_))), "{err:?}");
        config.allow_http = false;
        config.allow_private_addresses = true;
        let http = PushHttp::new(&config).unwrap();
        let err = http.post("http://127.0.0.1:9/x".parse().unwrap(), HeaderMap::new(), Bytes::new()).await;
        assert!(matches!(err, Err(SendError::Blocked(_))), "{err:?}");
    }
}
