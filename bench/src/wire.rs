//! Byte transports for the load generator (TCP+TLS, the QUIC session
//! stream, plain TCP for the XMPP and NATS baselines) and one pump that
//! writes pending output *while* reading, so generator and server can never
//! deadlock with both send buffers full.
//!
//! Every driver (Confab, the bare relay, NATS, XMPP) owns a [`Wire`]: it
//! appends encoded bytes to [`Wire::out`], calls [`Wire::pump`], and parses
//! what arrived in [`Wire::inbuf`]. `pump` is cancel-safe: every branch
//! either completed or consumed nothing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// Connections per client source address before the next 127.0.0.x is
/// used (the ephemeral port range holds about 28,000, and confabd caps
/// connections per address).
const PER_SOURCE_IP: usize = 5_000;
/// Connections per client QUIC endpoint (one UDP socket each).
const PER_QUIC_ENDPOINT: usize = 2_000;

/// Which Confab transport to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// TCP + TLS 1.3.
    Tcp,
    /// QUIC session stream.
    Quic,
    /// WebSocket over TLS (`wss://…/v1/ws`).
    Ws,
}

impl Transport {
    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
            Transport::Ws => "ws",
        }
    }
}

/// One connection's byte stream, with its buffers.
pub struct Wire {
    reader: Reader,
    writer: Writer,
    /// Bytes received and not yet consumed by the driver.
    pub inbuf: BytesMut,
    /// Bytes queued and not yet written.
    pub out: BytesMut,
    unflushed: bool,
    quic: Option<quinn::Connection>,
    /// Reads that returned data (for "frames per read").
    pub reads: u64,
}

impl Drop for Wire {
    fn drop(&mut self) {
        if let Some(conn) = self.quic.take() {
            conn.close(0u32.into(), b"bye");
        }
    }
}

impl Wire {
    fn new(reader: Reader, writer: Writer, read_capacity: usize, quic: Option<quinn::Connection>) -> Wire {
        Wire {
            reader,
            writer,
            inbuf: BytesMut::with_capacity(read_capacity),
            out: BytesMut::new(),
            unflushed: false,
            quic,
            reads: 0,
        }
    }

    /// Plain TCP (the XMPP baseline).
    pub async fn plain(addr: SocketAddr, read_capacity: usize) -> anyhow::Result<Wire> {
        let tcp = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        let (r, w) = tcp.into_split();
        Ok(Wire::new(Box::new(r), Box::new(w), read_capacity, None))
    }

    /// Writes what is queued (while reading), then waits for input until
    /// `deadline`. Returns the bytes read; 0 means the deadline passed.
    pub async fn pump(&mut self, deadline: Option<Instant>) -> anyhow::Result<usize> {
        loop {
            let want_write = !self.out.is_empty();
            tokio::select! {
                biased;
                r = write_or_flush(&mut self.writer, &self.out), if want_write || self.unflushed => {
                    self.wrote(r)?;
                }
                r = self.reader.read_buf(&mut self.inbuf) => {
                    let n = r.context("read")?;
                    if n == 0 {
                        bail!("the peer closed the connection");
                    }
                    self.reads += 1;
                    return Ok(n);
                }
                _ = sleep_until(deadline) => return Ok(0),
            }
        }
    }

    /// Writes everything queued (reading into `inbuf` meanwhile).
    pub async fn flush_all(&mut self) -> anyhow::Result<()> {
        while !self.out.is_empty() || self.unflushed {
            tokio::select! {
                biased;
                r = write_or_flush(&mut self.writer, &self.out) => self.wrote(r)?,
                r = self.reader.read_buf(&mut self.inbuf) => {
                    if r.context("read")? == 0 {
                        bail!("the peer closed the connection");
                    }
                }
            }
        }
        Ok(())
    }

    /// Accounts for one write (`Some(n)`) or flush (`None`).
    fn wrote(&mut self, r: std::io::Result<Option<usize>>) -> anyhow::Result<()> {
        match r.context("write")? {
            Some(0) => bail!("the peer closed the connection"),
            Some(n) => {
                self.out.advance(n);
                self.unflushed = true;
            }
            None => self.unflushed = false,
        }
        Ok(())
    }

    /// Shrinks the read buffer of an idle connection (keeps its memory low).
    pub fn shrink(&mut self) {
        if self.inbuf.is_empty() {
            self.inbuf = BytesMut::new();
        }
    }
}

/// Writes some of `out`, or flushes when it is empty. Cancel-safe: a
/// write that has not completed consumed nothing.
async fn write_or_flush(writer: &mut Writer, out: &[u8]) -> std::io::Result<Option<usize>> {
    if out.is_empty() { writer.flush().await.map(|_| None) } else { writer.write(out).await.map(Some) }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Opens TLS connections (TCP or QUIC) to a server with a pinned or any
/// certificate, spreading source addresses and QUIC endpoints so that
/// tens of thousands of connections fit.
pub struct Connector {
    tls: Arc<rustls::ClientConfig>,
    ws_tls: Arc<rustls::ClientConfig>,
    quic_config: quinn::ClientConfig,
    endpoints: std::sync::Mutex<Vec<quinn::Endpoint>>,
    count: AtomicUsize,
    quic_count: AtomicUsize,
    /// Initial read buffer of each new wire.
    pub read_capacity: usize,
}

impl Connector {
    /// A connector with `tls` (ALPN and trust already set).
    pub fn new(tls: Arc<rustls::ClientConfig>, read_capacity: usize) -> anyhow::Result<Connector> {
        let crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(Arc::clone(&tls)).context("QUIC TLS settings")?;
        let mut quic_config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        // Long enough for the Confab heartbeat to be what decides liveness.
        transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(120_000))));
        quic_config.transport_config(Arc::new(transport));
        let mut ws_tls = (*tls).clone();
        ws_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Connector {
            ws_tls: Arc::new(ws_tls),
            tls,
            quic_config,
            endpoints: std::sync::Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            quic_count: AtomicUsize::new(0),
            read_capacity,
        })
    }

    /// A Confab connector: TLS 1.3, ALPN confab/1, pinned fingerprint.
    pub fn confab(fingerprint: &str, read_capacity: usize) -> anyhow::Result<Connector> {
        let tls = confab_client::tls::rustls_config(confab_client::tls::Trust::Fingerprint(fingerprint.to_string()))
            .context("TLS settings")?;
        Connector::new(tls, read_capacity)
    }

    /// The same connector with TLS session resumption off, so every
    /// connection does a full handshake.
    pub fn without_resumption(&self) -> anyhow::Result<Connector> {
        let mut tls = (*self.tls).clone();
        tls.resumption = rustls::client::Resumption::disabled();
        Connector::new(Arc::new(tls), self.read_capacity)
    }

    /// The next client source address (127.0.0.1, then .2 … once a source
    /// has used `PER_SOURCE_IP` ports).
    fn source(&self) -> IpAddr {
        let n = self.count.fetch_add(1, Ordering::Relaxed) / PER_SOURCE_IP;
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, (1 + n % 250) as u8))
    }

    /// TCP, then TLS.
    pub async fn tcp(&self, addr: SocketAddr) -> anyhow::Result<Wire> {
        self.tls_over_tcp(addr, &self.tls).await
    }

    /// TCP, TLS (ALPN http/1.1), then the WebSocket upgrade.
    pub async fn ws(&self, addr: SocketAddr) -> anyhow::Result<Wire> {
        let mut wire = self.tls_over_tcp(addr, &self.ws_tls).await?;
        wire.out.extend_from_slice(crate::ws::upgrade_request(&addr.to_string()).as_bytes());
        while !crate::ws::take_upgrade_response(&mut wire.inbuf)? {
            wire.pump(None).await.context("WebSocket upgrade")?;
        }
        Ok(wire)
    }

    /// `GET path` over TLS (ALPN http/1.1); the body of a 200 response
    /// with a Content-Length (confabd's `/metrics`).
    pub async fn https_get(&self, addr: SocketAddr, path: &str) -> anyhow::Result<String> {
        let mut wire = self.tls_over_tcp(addr, &self.ws_tls).await?;
        wire.out
            .extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes());
        loop {
            if let Some(end) = wire.inbuf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&wire.inbuf[..end]).context("HTTP response head")?;
                let status = head.split_whitespace().nth(1).unwrap_or_default();
                if status != "200" {
                    bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
                }
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
                    })
                    .ok_or_else(|| anyhow!("GET {path}: no Content-Length"))?;
                if wire.inbuf.len() >= end + 4 + length {
                    let body = &wire.inbuf[end + 4..end + 4 + length];
                    return Ok(String::from_utf8_lossy(body).into_owned());
                }
            }
            wire.pump(None).await.with_context(|| format!("GET {path}"))?;
        }
    }

    /// TCP, then TLS, from the local address `source` (a 127.0.0.x for a
    /// loopback server: the abuse scenarios put attacker and victim on
    /// different addresses).
    pub async fn tcp_from(&self, addr: SocketAddr, source: IpAddr) -> anyhow::Result<Wire> {
        self.tls_over_tcp_from(addr, &self.tls, Some(source)).await
    }

    async fn tls_over_tcp(&self, addr: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> anyhow::Result<Wire> {
        let source = addr.ip().is_loopback().then(|| self.source());
        self.tls_over_tcp_from(addr, tls, source).await
    }

    async fn tls_over_tcp_from(
        &self,
        addr: SocketAddr,
        tls: &Arc<rustls::ClientConfig>,
        source: Option<IpAddr>,
    ) -> anyhow::Result<Wire> {
        let socket = tokio::net::TcpSocket::new_v4().context("socket")?;
        if let Some(source) = source {
            socket.bind(SocketAddr::new(source, 0)).context("bind")?;
        }
        let tcp = socket.connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from("localhost").context("server name")?;
        let stream =
            tokio_rustls::TlsConnector::from(Arc::clone(tls)).connect(name, tcp).await.context("TLS handshake")?;
        let (r, w) = tokio::io::split(stream);
        Ok(Wire::new(Box::new(r), Box::new(w), self.read_capacity, None))
    }

    fn endpoint(&self) -> anyhow::Result<quinn::Endpoint> {
        let n = self.quic_count.fetch_add(1, Ordering::Relaxed) / PER_QUIC_ENDPOINT;
        let mut endpoints = self.endpoints.lock().map_err(|_| anyhow!("endpoint lock poisoned"))?;
        while endpoints.len() <= n {
            // A receive buffer as large as the server's (see confabd's
            // transport/quic.rs): with the default one, the generator's own
            // sockets drop server handshake packets under bursts, and the
            // connect figures measure the generator's losses.
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").context("QUIC socket")?;
            socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20).context("QUIC socket buffer")?;
            let mut e =
                quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, Arc::new(quinn::TokioRuntime))
                    .context("QUIC endpoint")?;
            e.set_default_client_config(self.quic_config.clone());
            endpoints.push(e);
        }
        endpoints.get(n).cloned().ok_or_else(|| anyhow!("no endpoint"))
    }

    /// QUIC, then the session stream (stream 0).
    pub async fn quic(&self, addr: SocketAddr) -> anyhow::Result<Wire> {
        let endpoint = self.endpoint()?;
        let conn = endpoint.connect(addr, "localhost")?.await.with_context(|| format!("QUIC to {addr}"))?;
        let (send, recv) = conn.open_bi().await.context("opening the session stream")?;
        Ok(Wire::new(Box::new(recv), Box::new(send), self.read_capacity, Some(conn)))
    }

    /// Either.
    pub async fn connect(&self, transport: Transport, addr: SocketAddr) -> anyhow::Result<Wire> {
        match transport {
            Transport::Tcp => self.tcp(addr).await,
            Transport::Quic => self.quic(addr).await,
            Transport::Ws => self.ws(addr).await,
        }
    }
}
