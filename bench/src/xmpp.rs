//! The ejabberd baseline: the chat server most people would run instead,
//! driven by a small XMPP client written for the bench (raw XML over TCP:
//! stream, in-band registration, SASL PLAIN, bind, `<message/>`, a MUC
//! room of 100 for groups). ejabberd runs on one core (pinned like
//! confabd, one Erlang scheduler) with its own config in a temp dir: see
//! [`config`] for what was turned off or raised so the comparison is fair
//! to it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::{Bytes, BytesMut};

use crate::daemon::{Reading, status_kib};
use crate::dm::{GROUP_SIZE, LoadParams, measured, setup_all};
use crate::load::{AckMode, Cast, Link, LinkEvent, Outcome, Progress, Role, parse_body};
use crate::pipe::run_tag;
use crate::report::Row;
use crate::wire::Wire;

/// The XMPP domain.
const HOST: &str = "localhost";
/// The MUC service.
const MUC: &str = "conference.localhost";

/// Whether ejabberd is installed.
pub fn installed() -> bool {
    Path::new("/usr/sbin/ejabberdctl").exists()
}

// ----- the stanza splitter ---------------------------------------------------

/// What the splitter found.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// The `<stream:stream …>` header.
    StreamStart,
    /// `</stream:stream>`.
    StreamEnd,
    /// One complete top-level element.
    Stanza(Bytes),
}

/// Splits an XMPP stream into top-level stanzas without building a tree:
/// it tracks element depth, skipping quoted attribute values, comments,
/// processing instructions and text.
#[derive(Debug, Default)]
pub struct Splitter {
    depth: usize,
    scan: usize,
}

impl Splitter {
    /// The next complete piece at the front of `buf`, if any.
    pub fn next(&mut self, buf: &mut BytesMut) -> anyhow::Result<Option<Piece>> {
        loop {
            let Some(rel) = buf[self.scan..].iter().position(|&b| b == b'<') else {
                if self.depth == 0 {
                    // Whitespace between stanzas.
                    let _ = buf.split_to(buf.len());
                    self.scan = 0;
                } else {
                    self.scan = buf.len();
                }
                return Ok(None);
            };
            let lt = self.scan + rel;
            if self.depth == 0 && lt > 0 {
                let _ = buf.split_to(lt);
                self.scan = 0;
                continue;
            }
            let Some(gt) = tag_end(&buf[lt..]) else { return Ok(None) };
            let tag = &buf[lt..lt + gt + 1];
            let end = lt + gt + 1;
            if tag.starts_with(b"<?") || tag.starts_with(b"<!") {
                if self.depth == 0 {
                    let _ = buf.split_to(end);
                    self.scan = 0;
                } else {
                    self.scan = end;
                }
                continue;
            }
            if tag.starts_with(b"<stream:stream") {
                let _ = buf.split_to(end);
                self.scan = 0;
                return Ok(Some(Piece::StreamStart));
            }
            if tag.starts_with(b"</stream:stream") {
                let _ = buf.split_to(end);
                self.scan = 0;
                return Ok(Some(Piece::StreamEnd));
            }
            if tag.starts_with(b"</") {
                self.depth = self.depth.checked_sub(1).ok_or_else(|| anyhow!("unbalanced XML"))?;
            } else if !tag.ends_with(b"/>") {
                self.depth += 1;
            }
            self.scan = end;
            if self.depth == 0 {
                let stanza = buf.split_to(end).freeze();
                self.scan = 0;
                return Ok(Some(Piece::Stanza(stanza)));
            }
        }
    }
}

/// Index of the `>` closing the tag at the start of `b`, skipping quoted
/// attribute values (and the whole of a comment).
fn tag_end(b: &[u8]) -> Option<usize> {
    if b.starts_with(b"<!--") {
        return b.windows(3).position(|w| w == b"-->").map(|i| i + 2);
    }
    let mut quote = None;
    for (i, &c) in b.iter().enumerate().skip(1) {
        match (quote, c) {
            (None, b'"' | b'\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, b'>') => return Some(i),
            _ => {}
        }
    }
    None
}

/// The text of the first `<name>…</name>` child, if any.
pub fn child_text<'a>(stanza: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = find(stanza, open.as_bytes())? + open.len();
    let len = find(&stanza[start..], close.as_bytes())?;
    Some(&stanza[start..start + len])
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ----- the client -------------------------------------------------------------

/// One XMPP client session.
pub struct XmppLink {
    wire: Wire,
    splitter: Splitter,
    /// Where sends go (a full JID, or a room for groupchat).
    to: String,
    groupchat: bool,
}

fn stream_header() -> String {
    format!(
        "<?xml version='1.0'?><stream:stream to='{HOST}' xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    )
}

impl XmppLink {
    async fn next(&mut self) -> anyhow::Result<Piece> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(p) = self.splitter.next(&mut self.wire.inbuf)? {
                return Ok(p);
            }
            if self.wire.pump(Some(deadline)).await? == 0 {
                bail!("no answer from ejabberd within 30 s");
            }
        }
    }

    /// The next stanza, skipping stream headers and features.
    async fn stanza(&mut self) -> anyhow::Result<Bytes> {
        loop {
            match self.next().await? {
                Piece::Stanza(s) if s.starts_with(b"<stream:features") => {}
                Piece::Stanza(s) => return Ok(s),
                Piece::StreamStart => {}
                Piece::StreamEnd => bail!("the server closed the stream"),
            }
        }
    }

    /// Waits for the stanza whose start tag has `marker`.
    async fn expect(&mut self, marker: &str, what: &str) -> anyhow::Result<Bytes> {
        loop {
            let s = self.stanza().await?;
            let head_end = s.iter().position(|&b| b == b'>').unwrap_or(s.len());
            if find(&s[..head_end], marker.as_bytes()).is_some() {
                if find(&s[..head_end], b"type='error'").is_some() || find(&s[..head_end], b"type=\"error\"").is_some()
                {
                    bail!("{what}: {}", String::from_utf8_lossy(&s));
                }
                return Ok(s);
            }
            if s.starts_with(b"<failure") {
                bail!("{what}: {}", String::from_utf8_lossy(&s));
            }
        }
    }

    async fn waitfor_features(&mut self) -> anyhow::Result<()> {
        loop {
            match self.next().await? {
                Piece::Stanza(s) if s.starts_with(b"<stream:features") => return Ok(()),
                Piece::StreamEnd => bail!("the server closed the stream"),
                _ => {}
            }
        }
    }

    /// Connects, optionally registers (in-band), authenticates (SASL
    /// PLAIN), binds `resource` and, when `available`, sends initial
    /// presence. (Idle sessions of one user stay unavailable: each
    /// available one would get every other's presence.)
    async fn login(
        addr: SocketAddr,
        user: &str,
        resource: &str,
        register: bool,
        available: bool,
    ) -> anyhow::Result<XmppLink> {
        let wire = Wire::plain(addr, 4 * 1024).await?;
        let mut l = XmppLink { wire, splitter: Splitter::default(), to: String::new(), groupchat: false };
        l.wire.out.extend_from_slice(stream_header().as_bytes());
        l.waitfor_features().await?;
        let password = crate::pipe::PASSWORD;
        if register {
            l.wire.out.extend_from_slice(
                format!(
                    "<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>{user}</username>\
                     <password>{password}</password></query></iq>"
                )
                .as_bytes(),
            );
            l.expect("id='reg'", "register").await?;
        }
        let plain = base64(format!("\0{user}\0{password}").as_bytes());
        l.wire.out.extend_from_slice(
            format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>").as_bytes(),
        );
        l.expect("<success", "SASL PLAIN").await?;
        l.splitter = Splitter::default();
        l.wire.out.extend_from_slice(stream_header().as_bytes());
        l.waitfor_features().await?;
        l.wire.out.extend_from_slice(
            format!(
                "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}\
                 </resource></bind></iq>"
            )
            .as_bytes(),
        );
        l.expect("id='bind'", "bind").await?;
        if available {
            l.wire.out.extend_from_slice(b"<presence/>");
        }
        l.wire.flush_all().await?;
        Ok(l)
    }

    /// Joins (and, for the first member, configures) a MUC room.
    async fn join(&mut self, room: &str, nick: &str, create: bool) -> anyhow::Result<()> {
        self.wire.out.extend_from_slice(
            format!(
                "<presence to='{room}@{MUC}/{nick}'><x xmlns='http://jabber.org/protocol/muc'>\
                 <history maxstanzas='0'/></x></presence>"
            )
            .as_bytes(),
        );
        // Our own presence in the room comes back with status 110.
        loop {
            let s = self.stanza().await?;
            if s.starts_with(b"<presence") && find(&s, b"type='error'").is_some() {
                bail!("joining {room}: {}", String::from_utf8_lossy(&s));
            }
            if s.starts_with(b"<presence") && find(&s, b"code='110'").is_some() {
                break;
            }
        }
        if create {
            self.wire.out.extend_from_slice(
                format!(
                    "<iq type='set' to='{room}@{MUC}' id='cfg'><query xmlns='http://jabber.org/protocol/muc#owner'>\
                     <x xmlns='jabber:x:data' type='submit'/></query></iq>"
                )
                .as_bytes(),
            );
            self.expect("id='cfg'", "configuring the room").await?;
        }
        Ok(())
    }
}

impl Link for XmppLink {
    fn send(&mut self, text: String) -> anyhow::Result<u64> {
        let kind = if self.groupchat { "groupchat" } else { "chat" };
        self.wire.out.extend_from_slice(
            format!("<message to='{}' type='{kind}'><body>{text}</body></message>", self.to).as_bytes(),
        );
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
            match self.splitter.next(&mut self.wire.inbuf) {
                Ok(Some(Piece::Stanza(s))) if s.starts_with(b"<message") => {
                    let head_end = s.iter().position(|&b| b == b'>').unwrap_or(s.len());
                    if find(&s[..head_end], b"type='error'").is_some()
                        || find(&s[..head_end], b"type=\"error\"").is_some()
                    {
                        out.push(LinkEvent::Failed(0, "message error".into()));
                    } else if let Some((stamp, sender)) = child_text(&s, "body").and_then(parse_body) {
                        out.push(LinkEvent::Msg(stamp, sender));
                    }
                }
                Ok(Some(Piece::StreamEnd)) => {
                    out.push(LinkEvent::Failed(0, "stream closed".into()));
                    break;
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

// ----- the server -------------------------------------------------------------

/// ejabberd's config for the bench: plain TCP c2s on loopback, shapers
/// off, per-user and per-room limits raised, in-band registration open to
/// loopback with no rate limit, MUC with no message or presence interval
/// and no history replay; `mod_mam` (archive every message, mnesia) only
/// when `mam`.
pub fn config(port: u16, mam: bool) -> String {
    let mam_module = if mam { "  mod_mam:\n    default: always\n    db_type: mnesia\n" } else { "" };
    format!(
        "hosts:\n  - {HOST}\n\
         loglevel: warning\n\
         listen:\n  -\n    port: {port}\n    ip: \"127.0.0.1\"\n    module: ejabberd_c2s\n    shaper: none\n    \
         max_stanza_size: 1048576\n    access: c2s\n\
         shaper:\n  normal: 1000000000\n  fast: 1000000000\n\
         shaper_rules:\n  max_user_sessions: 1000000\n  max_user_offline_messages: 1000000\n  c2s_shaper: none\n  \
         s2s_shaper: none\n\
         acl:\n  loopback:\n    ip:\n      - 127.0.0.0/8\n\
         access_rules:\n  c2s:\n    allow: all\n  register:\n    allow: all\n  trusted_network:\n    allow: loopback\n\
         auth_method: internal\n\
         registration_timeout: infinity\n\
         auth_password_format: plain\n\
         modules:\n  mod_register:\n    ip_access: trusted_network\n    access: register\n  mod_disco: {{}}\n  mod_muc:\n    access: all\n    access_create: all\n    \
         access_persistent: all\n    max_users: 1000\n    max_user_conferences: 1000\n    min_message_interval: 0\n    \
         min_presence_interval: 0\n    history_size: 0\n    default_room_options:\n      mam: {mam}\n      \
         persistent: false\n{mam_module}"
    )
}

/// A running ejabberd of our own (own config, spool and logs in a temp
/// dir, own Erlang node name).
pub struct Ejabberd {
    child: tokio::process::Child,
    node: String,
    dir: tempfile::TempDir,
    /// Its beam.smp pid.
    pub pid: u32,
    /// The c2s address.
    pub addr: SocketAddr,
}

impl Ejabberd {
    /// Starts it, pinned to CPU 0 with one scheduler when `pin`.
    pub async fn start(pin: bool, mam: bool) -> anyhow::Result<Ejabberd> {
        let dir = tempfile::Builder::new().prefix("confab-bench-ejabberd-").tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let node = format!("bench{port}@localhost");
        let d = dir.path();
        std::fs::create_dir_all(d.join("spool"))?;
        std::fs::create_dir_all(d.join("logs"))?;
        std::fs::write(d.join("ejabberd.yml"), config(port, mam))?;
        // One scheduler (like GOMAXPROCS=1), more ports and processes.
        std::fs::write(
            d.join("ejabberdctl.cfg"),
            format!(
                "ERLANG_NODE={node}\nERL_OPTIONS=\"+S 1:1 +SDcpu 1:1 +SDio 1\"\nERL_MAX_PORTS=400000\n\
                 ERL_PROCESSES=2000000\nPOLL=true\n"
            ),
        )?;
        if Path::new("/etc/ejabberd/inetrc").exists() {
            std::fs::copy("/etc/ejabberd/inetrc", d.join("inetrc"))?;
        }
        let _ = std::process::Command::new("chown").args(["-R", "ejabberd:ejabberd"]).arg(d).status();
        let _ = std::process::Command::new("chmod").args(["755"]).arg(d).status();
        // As the ejabberd user, switched with setpriv rather than the
        // script's own `su`: su's PAM session resets the open-file limit to
        // 1024, which would cap ejabberd at about a thousand connections.
        let mut cmd = crate::daemon::pinned("setpriv", pin);
        cmd.args(["--reuid", "ejabberd", "--regid", "ejabberd", "--init-groups", "/usr/sbin/ejabberdctl"])
            .env("HOME", d)
            .arg("--config-dir")
            .arg(d)
            .arg("--logs")
            .arg(d.join("logs"))
            .arg("--spool")
            .arg(d.join("spool"))
            .arg("foreground");
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).kill_on_drop(true);
        let child = cmd.spawn().context("starting ejabberd")?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if Instant::now() > deadline {
                bail!("ejabberd did not listen on {addr} (logs in {})", d.join("logs").display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let pid = beam_pid(&node).ok_or_else(|| anyhow!("cannot find ejabberd's beam.smp process"))?;
        Ok(Ejabberd { child, node, dir, pid, addr })
    }

    /// Stops it: its own node only (by pid), then its temp dir goes.
    pub async fn stop(mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await.is_err() {
            let _ = std::process::Command::new("kill").args(["-KILL", &self.pid.to_string()]).status();
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
        let _ = (&self.node, self.dir.path());
    }
}

/// The pid of the beam.smp running `node` (from /proc, by its command line).
fn beam_pid(node: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let is_beam = args.first().is_some_and(|a| find(a, b"beam").is_some());
        if is_beam && args.contains(&node.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

/// dm through ejabberd: P pairs of registered users, `type='chat'` to the
/// receiver's full JID.
pub async fn dm(server: &Ejabberd, pairs: usize, params: &LoadParams) -> anyhow::Result<(Outcome, Reading)> {
    let tag = run_tag();
    let addr = server.addr;
    let links = setup_all(pairs, |i| {
        let tag = tag.clone();
        async move {
            let (a, b) = (format!("d{tag}{i}a"), format!("d{tag}{i}b"));
            let rx = XmppLink::login(addr, &b, "r", true, true).await?;
            let mut tx = XmppLink::login(addr, &a, "r", true, true).await?;
            tx.to = format!("{b}@{HOST}/r");
            Ok((tx, rx))
        }
    })
    .await?;
    let mut cast = Vec::new();
    for (i, (tx, rx)) in links.into_iter().enumerate() {
        let (sid, rid) = (2 * i as u32, 2 * i as u32 + 1);
        let progress = Arc::new(Progress::default());
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
    Ok((o, r))
}

/// Groups through ejabberd: G MUC rooms, each joined by the same 100
/// users; member g sends to room g (MUC reflects it to the sender too,
/// which is its ack).
pub async fn group(server: &Ejabberd, groups: usize, params: &LoadParams) -> anyhow::Result<(Outcome, Reading)> {
    let tag = run_tag();
    let addr = server.addr;
    let mut links = setup_all(GROUP_SIZE, |i| {
        let tag = tag.clone();
        async move { XmppLink::login(addr, &format!("g{tag}{i}"), "r", true, true).await }
    })
    .await?;
    for g in 0..groups {
        let room = format!("room{tag}{g}");
        // Member g creates and configures the room, then the others join.
        let order = std::iter::once(g).chain((0..links.len()).filter(|&i| i != g));
        for i in order {
            let Some(l) = links.get_mut(i) else { continue };
            l.join(&room, &format!("n{i}"), i == g).await.with_context(|| format!("member {i} joining {room}"))?;
            if i == g {
                l.to = format!("{room}@{MUC}");
                l.groupchat = true;
            }
        }
    }
    // Drain the join presences everyone got.
    for l in &mut links {
        while l.wire.pump(Some(Instant::now() + Duration::from_millis(20))).await? > 0 {}
        l.wire.inbuf.clear();
        l.splitter = Splitter::default();
    }
    let senders: Vec<u32> = (0..groups as u32).collect();
    let cast = links
        .into_iter()
        .enumerate()
        .map(|(i, link)| Cast {
            link,
            role: Role {
                id: i as u32,
                send: (i < groups).then_some((params.shape, AckMode::Echo)),
                count: true,
                feeds: None,
                remote: vec![],
            },
            sources: senders.clone(),
        })
        .collect();
    let (o, r, _) = measured(cast, params, &[server.pid]).await?;
    Ok((o, r))
}

/// Idle sessions on ejabberd: `n` users, each registered, authenticated,
/// bound and available on its own session (no roster, so presence goes
/// nowhere); the row is the growth of beam's RSS per session (their
/// account records, a few hundred bytes each, included).
pub async fn idle(server: &Ejabberd, n: usize) -> anyhow::Result<Row> {
    let tag = run_tag();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = status_kib(server.pid, "VmRSS").unwrap_or(0);
    let addr = server.addr;
    let started = Instant::now();
    let mut links = setup_all(n, |i| {
        let user = format!("i{tag}{i}");
        async move { XmppLink::login(addr, &user, "r", true, true).await }
    })
    .await?;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    for l in &mut links {
        l.wire.shrink();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = status_kib(server.pid, "VmRSS").unwrap_or(0);
    let per = after.saturating_sub(before) as f64 / n as f64;
    let mut row = Row::new("idle", "ejabberd", format!("tcp N={n}"), per, "KiB/conn");
    row.srv_rss_kib = Some(after);
    row.extra = serde_json::json!({ "connections": n, "register_login_per_sec": rate, "rss_before_kib": before });
    drop(links);
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(input: &[&[u8]]) -> Vec<Piece> {
        let mut s = Splitter::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in input {
            buf.extend_from_slice(chunk);
            while let Some(p) = s.next(&mut buf).unwrap() {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn splits_stanzas_however_the_bytes_arrive() {
        let stream = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' id='1'>\
            <stream:features><mechanisms><mechanism>PLAIN</mechanism></mechanisms></stream:features>\
            <success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>\n\
            <message from='a@h/r' to='b@h' x='a>b'><body>hi &amp; <!-- c --> there</body></message>\
            </stream:stream>";
        let whole = pieces(&[&stream[..]]);
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(pieces(&bytewise), whole);
        assert_eq!(whole.len(), 5);
        assert_eq!(whole[0], Piece::StreamStart);
        assert!(matches!(&whole[1], Piece::Stanza(s) if s.starts_with(b"<stream:features")));
        assert!(matches!(&whole[2], Piece::Stanza(s) if s.starts_with(b"<success") && s.ends_with(b"/>")));
        let Piece::Stanza(m) = &whole[3] else { panic!("not a stanza") };
        assert_eq!(child_text(m, "body"), Some(&b"hi &amp; <!-- c --> there"[..]));
        assert_eq!(whole[4], Piece::StreamEnd);
    }

    #[test]
    fn sasl_plain_is_base64() {
        assert_eq!(base64(b"\0user\0pass"), "AHVzZXIAcGFzcw==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }

    #[test]
    fn the_config_turns_shapers_off() {
        let c = config(5222, true);
        assert!(c.contains("c2s_shaper: none"));
        assert!(c.contains("mod_mam"));
        assert!(!config(5222, false).contains("mod_mam:"));
    }
}
