//! The nats-server baseline: a tuned broker that stores nothing, on one
//! core (`GOMAXPROCS=1`, pinned like confabd), driven over its text
//! protocol on plain TCP (`CONNECT`, `SUB`, `PUB`, `MSG`, `PING`/`PONG`).
//!
//! dm: each receiver subscribes to `d.<pair>`; NATS does not acknowledge a
//! publish, so a sender's message leaves its window when its receiver got
//! it. group: every member subscribes to every `g.<group>` subject and
//! member g publishes to `g.<g>`; NATS echoes a publish to the publisher's
//! own subscription, and that copy is its ack.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use bytes::{Buf, Bytes};

use crate::daemon::Reading;
use crate::dm::{GROUP_SIZE, LoadParams, measured};
use crate::load::{AckMode, Cast, Link, LinkEvent, Outcome, Progress, Role, parse_body};
use crate::wire::Wire;

/// The nats-server binary, if installed.
pub fn installed() -> Option<PathBuf> {
    ["/usr/bin/nats-server", "/usr/sbin/nats-server", "/usr/local/bin/nats-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// One parsed server operation.
#[derive(Debug, PartialEq, Eq)]
pub enum Op {
    /// `MSG subject sid [reply] len` + payload.
    Msg(Bytes),
    /// `PING`: must be answered with PONG.
    Ping,
    /// `PONG`.
    Pong,
    /// `INFO {...}`.
    Info,
    /// `+OK`.
    Ok,
    /// `-ERR '...'`.
    Err(String),
}

/// Takes one complete operation off the front of `buf`, if there is one.
pub fn parse(buf: &mut bytes::BytesMut) -> anyhow::Result<Option<Op>> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
    let line = &buf[..eol];
    if line.starts_with(b"MSG ") {
        let text = std::str::from_utf8(line).context("MSG line")?;
        let len: usize =
            text.rsplit(' ').next().and_then(|n| n.parse().ok()).ok_or_else(|| anyhow!("bad MSG: {text}"))?;
        let need = eol + 2 + len + 2;
        if buf.len() < need {
            return Ok(None);
        }
        buf.advance(eol + 2);
        let payload = buf.split_to(len).freeze();
        buf.advance(2);
        return Ok(Some(Op::Msg(payload)));
    }
    let op = if line == b"PING" {
        Op::Ping
    } else if line == b"PONG" {
        Op::Pong
    } else if line.starts_with(b"INFO") {
        Op::Info
    } else if line == b"+OK" {
        Op::Ok
    } else if line.starts_with(b"-ERR") {
        Op::Err(String::from_utf8_lossy(line).into_owned())
    } else {
        bail!("unexpected NATS line: {}", String::from_utf8_lossy(line));
    };
    buf.advance(eol + 2);
    Ok(Some(op))
}

/// One NATS client connection.
pub struct NatsLink {
    wire: Wire,
    subject: String,
    errors: Vec<String>,
}

impl NatsLink {
    async fn connect(addr: SocketAddr, subject: String, subscribe: &[String]) -> anyhow::Result<NatsLink> {
        let wire = Wire::plain(addr, 16 * 1024).await?;
        let mut link = NatsLink { wire, subject, errors: Vec::new() };
        link.wire.out.extend_from_slice(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":true,\"protocol\":1,\"name\":\"confab-bench\"}\r\n",
        );
        for (sid, s) in subscribe.iter().enumerate() {
            link.wire.out.extend_from_slice(format!("SUB {s} {}\r\n", sid + 1).as_bytes());
        }
        // The PONG proves CONNECT and every SUB were processed.
        link.wire.out.extend_from_slice(b"PING\r\n");
        loop {
            link.wire.pump(None).await?;
            while let Some(op) = parse(&mut link.wire.inbuf)? {
                match op {
                    Op::Pong => return Ok(link),
                    Op::Ping => link.wire.out.extend_from_slice(b"PONG\r\n"),
                    Op::Err(e) => bail!("nats: {e}"),
                    _ => {}
                }
            }
        }
    }
}

impl Link for NatsLink {
    fn send(&mut self, text: String) -> anyhow::Result<u64> {
        self.wire.out.extend_from_slice(format!("PUB {} {}\r\n", self.subject, text.len()).as_bytes());
        self.wire.out.extend_from_slice(text.as_bytes());
        self.wire.out.extend_from_slice(b"\r\n");
        Ok(0)
    }

    fn backlog(&self) -> usize {
        self.wire.out.len()
    }

    async fn pump(&mut self, deadline: Option<Instant>) -> anyhow::Result<()> {
        self.wire.pump(deadline).await.map(|_| ())
    }

    fn poll(&mut self, out: &mut Vec<LinkEvent>) {
        loop {
            match parse(&mut self.wire.inbuf) {
                Ok(Some(Op::Msg(payload))) => {
                    if let Some((stamp, sender)) = parse_body(&payload) {
                        out.push(LinkEvent::Msg(stamp, sender));
                    }
                }
                Ok(Some(Op::Ping)) => self.wire.out.extend_from_slice(b"PONG\r\n"),
                Ok(Some(Op::Err(e))) => {
                    self.errors.push(e.clone());
                    out.push(LinkEvent::Failed(0, e));
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    out.push(LinkEvent::Failed(0, e.to_string()));
                    self.wire.inbuf.clear();
                    break;
                }
            }
        }
    }

    fn reads(&self) -> u64 {
        self.wire.reads
    }
}

/// nats-server as a child process.
struct Server {
    child: tokio::process::Child,
    pid: u32,
    addr: SocketAddr,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Server {
    async fn start(bin: &PathBuf, pin: bool) -> anyhow::Result<Server> {
        let port = free_port()?;
        let mut cmd = crate::daemon::pinned(bin, pin);
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]).env("GOMAXPROCS", "1");
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).kill_on_drop(true);
        let child = cmd.spawn().context("starting nats-server")?;
        let pid = child.id().ok_or_else(|| anyhow!("nats-server exited"))?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if Instant::now() > deadline {
                bail!("nats-server did not listen on {addr}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // prlimit and taskset exec, so the pid is nats-server's own.
        Ok(Server { child, pid, addr })
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// dm through NATS.
pub async fn dm(bin: &PathBuf, pin: bool, pairs: usize, params: &LoadParams) -> anyhow::Result<(Outcome, Reading)> {
    let server = Server::start(bin, pin).await?;
    let result = async {
        let mut cast = Vec::new();
        for i in 0..pairs {
            let subject = format!("d.{i}");
            let (sid, rid) = (2 * i as u32, 2 * i as u32 + 1);
            let progress = Arc::new(Progress::default());
            let rx = NatsLink::connect(server.addr, String::new(), std::slice::from_ref(&subject)).await?;
            let tx = NatsLink::connect(server.addr, subject, &[]).await?;
            cast.push(Cast {
                link: tx,
                role: Role {
                    id: sid,
                    send: Some((params.shape, AckMode::Peer(Arc::clone(&progress)))),
                    count: false,
                    feeds: None,
                    remote: vec![],
                },
                sources: vec![],
            });
            cast.push(Cast {
                link: rx,
                role: Role { id: rid, send: None, count: true, feeds: Some(progress), remote: vec![] },
                sources: vec![sid],
            });
        }
        let (o, r, _) = measured(cast, params, &[server.pid]).await?;
        anyhow::Ok((o, r))
    }
    .await;
    server.stop().await;
    result
}

/// 1→100 fan-out through NATS, G subjects.
pub async fn group(bin: &PathBuf, pin: bool, groups: usize, params: &LoadParams) -> anyhow::Result<(Outcome, Reading)> {
    let server = Server::start(bin, pin).await?;
    let result = async {
        let subjects: Vec<String> = (0..groups).map(|g| format!("g.{g}")).collect();
        let senders: Vec<u32> = (0..groups as u32).collect();
        let mut cast = Vec::new();
        for i in 0..GROUP_SIZE {
            let subject = subjects.get(i).cloned().unwrap_or_default();
            let link = NatsLink::connect(server.addr, subject, &subjects).await?;
            cast.push(Cast {
                link,
                role: Role {
                    id: i as u32,
                    send: (i < groups).then_some((params.shape, AckMode::Echo)),
                    count: true,
                    feeds: None,
                    remote: vec![],
                },
                sources: senders.clone(),
            });
        }
        let (o, r, _) = measured(cast, params, &[server.pid]).await?;
        anyhow::Ok((o, r))
    }
    .await;
    server.stop().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operations_and_waits_for_whole_payloads() {
        let mut b = bytes::BytesMut::from(&b"INFO {\"x\":1}\r\nPING\r\nMSG d.1 1 5\r\nhel"[..]);
        assert_eq!(parse(&mut b).unwrap(), Some(Op::Info));
        assert_eq!(parse(&mut b).unwrap(), Some(Op::Ping));
        assert_eq!(parse(&mut b).unwrap(), None);
        b.extend_from_slice(b"lo\r\nMSG g.0 2 reply.x 2\r\nab\r\n+OK\r\n-ERR 'Slow Consumer'\r\n");
        assert_eq!(parse(&mut b).unwrap(), Some(Op::Msg(Bytes::from_static(b"hello"))));
        assert_eq!(parse(&mut b).unwrap(), Some(Op::Msg(Bytes::from_static(b"ab"))));
        assert_eq!(parse(&mut b).unwrap(), Some(Op::Ok));
        assert!(matches!(parse(&mut b).unwrap(), Some(Op::Err(e)) if e.contains("Slow")));
        assert!(b.is_empty());
    }
}
