//! The in-process server the `server_e2e` target talks to, and the small
//! world of users each input gets.
//!
//! One [`confab_server::server::Server`] runs per fuzz process (TCP on
//! 127.0.0.1:0, no QUIC, no HTTP, buffered durability), in a directory of
//! its own under the temp dir. Startup signs a template user up through a
//! real session, which checks the harness end to end and gives the
//! password hash that every later user shares.
//!
//! Each input then gets fresh users (A, B, C), a spare device for A, the
//! direct conversation of A and B with one message in it, and a group A
//! owns with B and C. They are made through the store seam, as the
//! handlers would make them, because a login costs an Argon2 hash (tens of
//! milliseconds) and because fresh users keep inputs independent: what one
//! input revokes, renames or leaves cannot change what the next one sees,
//! so a crash replays. The server itself is replaced every
//! [`GENERATION`] inputs so its store stays small and fast.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use confab_protocol::{
    framing::{FrameDecoder, decode_server_frame, encode_frame},
    pb::{self, client_frame::Body, server_frame::Body as Reply},
};
use confab_server::{
    config::Config,
    link::{StreamLink, Transport},
    server::Server,
    store::{Durability, NewAccount, Op, UserRef},
    transport::{Ingress, connection},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// The password of every user the harness makes.
pub const PASSWORD: &str = "correct horse battery";
/// Inputs served by one server before it is replaced by a fresh one.
pub const GENERATION: u64 = 20_000;
const TEMPLATE_USER: &str = "fuzz-template";

/// A user of the world, with a device and its token.
#[derive(Debug, Clone)]
pub struct Member {
    /// The user.
    pub user_id: u64,
    /// Their username.
    pub username: String,
    /// Their device.
    pub device_id: u64,
    /// That device's token.
    pub token: String,
}

/// What one input works with.
#[derive(Debug, Clone)]
pub struct World {
    /// User A (session A).
    pub a: Member,
    /// User B (session B), A's peer.
    pub b: Member,
    /// User C, in the group only.
    pub c: Member,
    /// A's second device: (device_id, token).
    pub spare: (u64, String),
    /// The direct conversation of A and B.
    pub direct: u64,
    /// The group A owns with B and C.
    pub group: u64,
    /// Prefix of this world's usernames (fresh names start with it too).
    pub prefix: String,
    /// The address sessions claim to come from: one of its own per input,
    /// so failed-login throttling does not carry over between inputs.
    pub peer_ip: Ipv4Addr,
}

/// The running server and what every input needs from it.
pub struct Backend {
    server: Option<Server>,
    dir: PathBuf,
    generation: u64,
    password_hash: String,
    inputs: u64,
}

impl Backend {
    /// Starts the first server. Call inside the runtime.
    pub async fn start() -> Backend {
        remove_stale_dirs();
        let mut backend =
            Backend { server: None, dir: PathBuf::new(), generation: 0, password_hash: String::new(), inputs: 0 };
        backend.next_generation().await;
        backend
    }

    /// What sessions are served with.
    pub fn ingress(&self) -> Arc<Ingress> {
        Arc::clone(self.server.as_ref().expect("the harness keeps a server running").ingress())
    }

    async fn next_generation(&mut self) {
        if let Some(old) = self.server.take() {
            old.shutdown().await;
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        self.generation += 1;
        self.dir = base_dir().join(format!("confab-fuzz-e2e-{}-{}", std::process::id(), self.generation));
        let _ = std::fs::remove_dir_all(&self.dir);
        let config = Config {
            data_dir: self.dir.clone(),
            quic: None,
            http: None,
            tcp: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            durability: Durability::Buffered,
            ..Config::default()
        };
        let server = Server::start(config).await.expect("the fuzz harness starts a server");
        let ingress = Arc::clone(server.ingress());
        self.server = Some(server);
        signup_template(&ingress).await;
        let user = harness(ingress.core.store.user_by_name(TEMPLATE_USER.into()))
            .await
            .expect("the template user exists after signup");
        self.password_hash = user.password_hash;
    }

    /// Makes a fresh world for the next input (replacing the server first
    /// when its generation is over).
    pub async fn world(&mut self) -> World {
        if self.inputs > 0 && self.inputs.is_multiple_of(GENERATION) {
            self.next_generation().await;
        }
        self.inputs += 1;
        let n = self.inputs;
        let store = Arc::clone(&self.ingress().core.store);
        let prefix = format!("fz{n}");
        let names = [format!("{prefix}a"), format!("{prefix}b"), format!("{prefix}c")];
        // Step by step through the store seam; a step that fails is a
        // harness bug, and the harness then panics.
        let mut users = Vec::new();
        let mut tokens = Vec::new();
        for name in &names {
            let account = NewAccount {
                username: name.clone(),
                password_hash: self.password_hash.clone(),
                device_name: "fuzz".into(),
                now_ms: now(),
            };
            let created = harness(store.create_user(account)).await;
            users.push((created.user.user_id, created.device.device_id));
            tokens.push(created.token);
        }
        let (spare, spare_token) = harness(store.create_device(users[0].0, "spare".into(), now())).await;
        tokens.push(spare_token);
        let me = UserRef { user_id: users[0].0, username: names[0].clone() };
        let direct = harness(store.open_direct(me.clone(), names[1].clone(), now())).await;
        let hello = "hello from the harness".to_string();
        harness(store.send(me.clone(), direct.conversation_id, "seed-1".into(), hello, now())).await;
        let group = harness(store.create_group(me, "fuzz group".into(), names[1..].to_vec(), now())).await;
        let made = (users, spare.device_id, direct.conversation_id, group.conversation_id, names);
        let (users, spare, direct, group, names) = made;
        let member = |i: usize| Member {
            user_id: users[i].0,
            username: names[i].clone(),
            device_id: users[i].1,
            token: tokens[i].clone(),
        };
        let peer_ip = Ipv4Addr::from(0x7f00_0000 | ((n as u32) & 0x00ff_ffff)).max(Ipv4Addr::new(127, 0, 0, 2));
        World {
            a: member(0),
            b: member(1),
            c: member(2),
            spare: (spare, tokens[3].clone()),
            direct,
            group,
            prefix,
            peer_ip,
        }
    }
}
/// Awaits a store operation the harness needs; its failure is the
/// harness's.
async fn harness<T>(op: Op<T>) -> T {
    match op.await {
        Ok(v) => v,
        Err(e) => panic!("the fuzz harness could not set up its world: {e}"),
    }
}

fn now() -> i64 {
    confab_protocol::Now::system().unix_ms
}

/// Where the servers' directories go: `$CONFAB_FUZZ_DIR`, or the temp dir.
fn base_dir() -> PathBuf {
    std::env::var_os("CONFAB_FUZZ_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir)
}

/// libFuzzer ends a process with `exit`, so no destructor removes its
/// server's directory: the next process removes those whose process is
/// gone (Linux; elsewhere they stay in the temp dir).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(base_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("confab-fuzz-e2e-")) else { continue };
        let Some(pid) = rest.split('-').next() else { continue };
        if Path::new("/proc/self").exists() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Signs the template user up through a real session: Hello, Signup, and
/// the Welcome and AuthOk they must get.
async fn signup_template(ingress: &Arc<Ingress>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (sr, sw) = tokio::io::split(server);
    let task = tokio::spawn(connection::serve(
        Arc::clone(ingress),
        StreamLink::new(sr, sw),
        SocketAddr::from(([127, 0, 0, 1], 1)),
        Transport::Tcp,
        None,
        CancellationToken::new(),
    ));
    let (mut cr, mut cw) = tokio::io::split(client);
    let mut out = BytesMut::new();
    let hello = pb::Hello { versions: vec![1], capabilities: vec![], client_name: "confab-fuzz".into() };
    encode_frame(&pb::ClientFrame { request_id: 1, body: Some(Body::Hello(hello)) }, &mut out);
    let signup =
        pb::SignupRequest { username: TEMPLATE_USER.into(), password: PASSWORD.into(), device_name: "template".into() };
    encode_frame(&pb::ClientFrame { request_id: 2, body: Some(Body::Signup(signup)) }, &mut out);
    cw.write_all(&out).await.expect("the harness writes to its own session");
    let mut buf = BytesMut::new();
    let mut replies = Vec::new();
    let decoder = FrameDecoder::new(u32::MAX);
    while replies.len() < 2 {
        let read = tokio::time::timeout(Duration::from_secs(30), cr.read_buf(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(n)) if n > 0), "the template signup session ended early: {replies:?}");
        while let Ok(Some(frame)) = decoder.next_frame(&mut buf) {
            replies.push(decode_server_frame(&frame).expect("the server sends valid frames"));
        }
    }
    assert!(
        matches!(
            &replies[..],
            [
                pb::ServerFrame { request_id: 1, body: Some(Reply::Welcome(_)) },
                pb::ServerFrame { request_id: 2, body: Some(Reply::AuthOk(_)) },
            ]
        ),
        "the template signup got {replies:?}"
    );
    drop(cw);
    drop(cr);
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}
