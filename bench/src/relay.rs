//! The bare relay: the ceiling Confab's overhead is measured against.
//!
//! Same transport (TCP + TLS 1.3, rustls, ALPN confab/1), same framing
//! (varint length-delimited frames), same task shape as `confabd` (a
//! reader and a batching writer per connection, a bounded queue between
//! them), and nothing else: no auth, no storage, no session machine.
//!
//! Frames (payload after the length):
//! - `0x01 topic…` (u64 LE each): subscribe; answered with ack 0.
//! - `0x02 topic token body`: publish; the relay forwards `0x03 body`
//!   (encoded once, the same bytes for every subscriber) to each subscriber
//!   of the topic, and acks `0x04 token` to the publisher.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use bytes::{BufMut, Bytes, BytesMut};
use confab_protocol::FrameDecoder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::daemon::Reading;
use crate::dm::{LoadParams, measured};
use crate::load::{AckMode, Cast, Checks, Link, LinkEvent, Outcome, Role, parse_body};
use crate::wire::{Connector, Wire};

const JOIN: u8 = 1;
const PUB: u8 = 2;
const FWD: u8 = 3;
const ACK: u8 = 4;
/// Largest frame the relay accepts.
const MAX_FRAME: u32 = 1 << 20;
/// Frames queued per connection (like confabd's outbound queue).
const QUEUE: usize = 4096;
/// Most bytes gathered into one write.
const MAX_WRITE_BATCH: usize = 256 * 1024;

/// Topic → its subscribers' queues. Copy-on-write: a join replaces the
/// list, a publish takes a cheap `Arc` of the current one.
type Subscribers = Arc<Mutex<HashMap<u64, Arc<Vec<mpsc::Sender<Bytes>>>>>>;

/// Appends `v` as a protobuf varint.
pub fn encode_varint(mut v: u64, out: &mut BytesMut) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn frame(kind: u8, parts: &[&[u8]]) -> Bytes {
    let len: usize = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut out = BytesMut::with_capacity(len + 5);
    encode_varint(len as u64, &mut out);
    out.put_u8(kind);
    for p in parts {
        out.put_slice(p);
    }
    out.freeze()
}

/// Serves the relay until killed: prints `relay: ADDR` and
/// `fingerprint: sha256:HEX` on stdout.
pub async fn serve(listen: SocketAddr, _dir: &std::path::Path) -> anyhow::Result<()> {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).context("certificate")?;
    let der = generated.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)?;
    config.alpn_protocols = vec![b"confab/1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("relay: {}", listener.local_addr()?);
    println!("fingerprint: sha256:{}", confab_client::tls::fingerprint(&der));
    let subscribers: Subscribers = Arc::default();
    loop {
        let (socket, _) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        let (acceptor, subscribers) = (acceptor.clone(), Arc::clone(&subscribers));
        tokio::spawn(async move {
            if let Ok(stream) = acceptor.accept(socket).await {
                let _ = connection(stream, subscribers).await;
            }
        });
    }
}

async fn connection<S>(stream: S, subscribers: Subscribers) -> anyhow::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
    let writer_task = tokio::spawn(async move {
        let mut out = BytesMut::with_capacity(64 * 1024);
        while let Some(first) = rx.recv().await {
            out.extend_from_slice(&first);
            while out.len() < MAX_WRITE_BATCH {
                match rx.try_recv() {
                    Ok(f) => out.extend_from_slice(&f),
                    Err(_) => break,
                }
            }
            if writer.write_all(&out).await.is_err() || writer.flush().await.is_err() {
                break;
            }
            out.clear();
        }
    });
    let decoder = FrameDecoder::new(MAX_FRAME);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    'read: loop {
        if reader.read_buf(&mut buf).await? == 0 {
            break;
        }
        while let Some(f) = decoder.next_frame(&mut buf)? {
            match f.first() {
                Some(&JOIN) => {
                    {
                        let mut subs = subscribers.lock().map_err(|_| anyhow!("poisoned"))?;
                        for topic in f[1..].chunks_exact(8) {
                            let topic = u64::from_le_bytes(topic.try_into()?);
                            let list = subs.entry(topic).or_default();
                            let mut next = Vec::clone(list);
                            next.push(tx.clone());
                            *list = Arc::new(next);
                        }
                    }
                    if tx.send(frame(ACK, &[&0u64.to_le_bytes()])).await.is_err() {
                        break 'read;
                    }
                }
                Some(&PUB) if f.len() >= 17 => {
                    let topic = u64::from_le_bytes(f[1..9].try_into()?);
                    let forward = frame(FWD, &[&f[17..]]);
                    let targets = subscribers.lock().map_err(|_| anyhow!("poisoned"))?.get(&topic).cloned();
                    for t in targets.iter().flat_map(|t| t.iter()) {
                        // A full queue pushes back on the publisher (the
                        // relay never drops or queues without bound).
                        if let Err(mpsc::error::TrySendError::Full(f)) = t.try_send(forward.clone()) {
                            let _ = t.send(f).await;
                        }
                    }
                    let ack = frame(ACK, &[&f[9..17]]);
                    if let Err(mpsc::error::TrySendError::Full(a)) = tx.try_send(ack)
                        && tx.send(a).await.is_err()
                    {
                        break 'read;
                    }
                }
                _ => bail!("bad relay frame"),
            }
        }
    }
    drop(tx);
    let _ = writer_task.await;
    Ok(())
}

/// A relay client session.
pub struct RelayLink {
    wire: Wire,
    topic: u64,
    token: u64,
    decoder: FrameDecoder,
}

impl RelayLink {
    async fn connect(connector: &Connector, addr: SocketAddr, topic: u64, join: &[u64]) -> anyhow::Result<RelayLink> {
        let wire = connector.tcp(addr).await?;
        let mut link = RelayLink { wire, topic, token: 1, decoder: FrameDecoder::new(MAX_FRAME) };
        if !join.is_empty() {
            let topics: Vec<u8> = join.iter().flat_map(|t| t.to_le_bytes()).collect();
            link.wire.out.extend_from_slice(&frame(JOIN, &[&topics]));
            loop {
                link.wire.pump(None).await?;
                if let Some(f) = link.decoder.next_frame(&mut link.wire.inbuf)? {
                    if f.first() == Some(&ACK) {
                        break;
                    }
                    bail!("relay: unexpected frame before the join ack");
                }
            }
        }
        Ok(link)
    }
}

impl Link for RelayLink {
    fn send(&mut self, text: String) -> anyhow::Result<u64> {
        let token = self.token;
        self.token += 1;
        let f = frame(PUB, &[&self.topic.to_le_bytes(), &token.to_le_bytes(), text.as_bytes()]);
        self.wire.out.extend_from_slice(&f);
        Ok(token)
    }

    fn backlog(&self) -> usize {
        self.wire.out.len()
    }

    async fn pump(&mut self, deadline: Option<Instant>) -> anyhow::Result<()> {
        self.wire.pump(deadline).await.map(|_| ())
    }

    fn poll(&mut self, out: &mut Vec<LinkEvent>) {
        while let Ok(Some(f)) = self.decoder.next_frame(&mut self.wire.inbuf) {
            match f.first() {
                Some(&ACK) if f.len() >= 9 => {
                    let token = u64::from_le_bytes(f[1..9].try_into().unwrap_or_default());
                    out.push(LinkEvent::Ack(token));
                }
                Some(&FWD) => {
                    if let Some((stamp, sender)) = parse_body(&f[1..]) {
                        out.push(LinkEvent::Msg(stamp, sender));
                    }
                }
                _ => {}
            }
        }
    }

    fn checks(&self) -> Checks {
        Checks::default()
    }

    fn reads(&self) -> u64 {
        self.wire.reads
    }
}

/// The relay as a child process.
struct Relay {
    child: tokio::process::Child,
    pid: u32,
    addr: SocketAddr,
    fingerprint: String,
}

impl Relay {
    async fn start(pin: bool) -> anyhow::Result<Relay> {
        let exe = std::env::current_exe()?;
        let mut cmd = crate::daemon::pinned(exe, pin);
        cmd.args(["relay", "--listen", "127.0.0.1:0", "--dir", "/tmp"]);
        let (child, banner) = crate::daemon::spawn_with_banner(cmd, &["relay", "fingerprint"]).await?;
        let pid = child.id().ok_or_else(|| anyhow!("relay exited"))?;
        let addr = banner.get("relay").ok_or_else(|| anyhow!("no relay address"))?.parse()?;
        let fingerprint = banner
            .get("fingerprint")
            .and_then(|f| f.strip_prefix("sha256:"))
            .ok_or_else(|| anyhow!("no fingerprint"))?
            .to_string();
        Ok(Relay { child, pid, addr, fingerprint })
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// dm through the relay: P pairs, each receiver subscribed to its pair's
/// topic.
pub async fn dm(pin: bool, pairs: usize, params: &LoadParams) -> anyhow::Result<(Outcome, Reading)> {
    let relay = Relay::start(pin).await?;
    let result = async {
        let connector = Connector::confab(&relay.fingerprint, 16 * 1024)?;
        let mut cast = Vec::new();
        for i in 0..pairs {
            let topic = i as u64 + 1;
            let (sid, rid) = (2 * i as u32, 2 * i as u32 + 1);
            let rx = RelayLink::connect(&connector, relay.addr, 0, &[topic]).await?;
            let tx = RelayLink::connect(&connector, relay.addr, topic, &[]).await?;
            cast.push(Cast {
                link: tx,
                role: Role {
                    id: sid,
                    send: Some((params.shape, AckMode::Response)),
                    count: false,
                    feeds: None,
                    remote: vec![],
                },
                sources: vec![],
            });
            cast.push(Cast {
                link: rx,
                role: Role { id: rid, send: None, count: true, feeds: None, remote: vec![] },
                sources: vec![sid],
            });
        }
        let (o, r, _) = measured(cast, params, &[relay.pid]).await?;
        anyhow::Ok((o, r))
    }
    .await;
    relay.stop().await;
    result
}

/// Groups through the relay: 100 members, each subscribed to all G
/// topics; member g publishes to topic g (and gets its own copy).
pub async fn group(pin: bool, groups: usize, params: &LoadParams) -> anyhow::Result<(Outcome, Reading)> {
    let relay = Relay::start(pin).await?;
    let result = async {
        let connector = Connector::confab(&relay.fingerprint, 16 * 1024)?;
        let topics: Vec<u64> = (1..=groups as u64).collect();
        let senders: Vec<u32> = (0..groups as u32).collect();
        let mut cast = Vec::new();
        for i in 0..crate::dm::GROUP_SIZE {
            let topic = if i < groups { i as u64 + 1 } else { 0 };
            let link = RelayLink::connect(&connector, relay.addr, topic, &topics).await?;
            cast.push(Cast {
                link,
                role: Role {
                    id: i as u32,
                    send: (i < groups).then_some((params.shape, AckMode::Response)),
                    count: true,
                    feeds: None,
                    remote: vec![],
                },
                sources: senders.clone(),
            });
        }
        let (o, r, _) = measured(cast, params, &[relay.pid]).await?;
        anyhow::Ok((o, r))
    }
    .await;
    relay.stop().await;
    result
}
