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
//! owns with B and C. They are made through the store writer, as the
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
    accounts,
    config::Config,
    connection,
    hub::Transport,
    link::StreamLink,
    server::{Server, Shared},
    store::{Durability, UserRef, writer::Deliveries},
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

    /// The shared state sessions are served with.
    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(self.server.as_ref().expect("the harness keeps a server running").shared())
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
        let shared = Arc::clone(server.shared());
        self.server = Some(server);
        signup_template(&shared).await;
        let user = shared
            .store
            .read(|s| s.user_by_name(TEMPLATE_USER))
            .await
            .expect("the store reads")
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
        let shared = self.shared();
        let prefix = format!("fz{n}");
        let names = [format!("{prefix}a"), format!("{prefix}b"), format!("{prefix}c")];
        let tokens: Vec<(String, Vec<u8>)> = (0..4).map(|_| accounts::new_token()).collect();
        let hashes: Vec<Vec<u8>> = tokens.iter().map(|(_, h)| h.clone()).collect();
        let password_hash = self.password_hash.clone();
        let max = shared.limits.max_group_members;
        // One writer command for the whole world: each step is a command of
        // its own (with every check before its writes), and the group's
        // overlay lets a step see what the steps before it staged. A step
        // that fails is a harness bug, and the harness then panics.
        let made = run(&shared, move |tx| {
            let mut deliveries = Vec::new();
            let mut step = |d: Deliveries| deliveries.extend(d.0);
            let mut users = Vec::new();
            for (name, hash) in names.iter().zip(&hashes) {
                let ((user, device), d) = tx.create_user(name, password_hash.clone(), "fuzz", hash.clone(), now())?;
                step(d);
                users.push((user.user_id, device.device_id));
            }
            let (spare, d) = tx.create_device(users[0].0, "spare", hashes[3].clone(), now())?;
            step(d);
            let me = UserRef { user_id: users[0].0, username: names[0].clone() };
            let (direct, d) = tx.open_direct(&me, &names[1], now())?;
            step(d);
            let (_, d) =
                tx.send(&me, direct.conversation_id, "seed-1", "hello from the harness".into(), now(), None)?;
            step(d);
            let (group, d) = tx.create_group(&me, "fuzz group", &names[1..], max, now())?;
            step(d);
            let made = (users, spare.device_id, direct.conversation_id, group.conversation_id, names);
            Ok((made, Deliveries(deliveries)))
        })
        .await;
        let (users, spare, direct, group, names) = made;
        let member = |i: usize| Member {
            user_id: users[i].0,
            username: names[i].clone(),
            device_id: users[i].1,
            token: tokens[i].0.clone(),
        };
        let peer_ip = Ipv4Addr::from(0x7f00_0000 | ((n as u32) & 0x00ff_ffff)).max(Ipv4Addr::new(127, 0, 0, 2));
        World {
            a: member(0),
            b: member(1),
            c: member(2),
            spare: (spare, tokens[3].0.clone()),
            direct,
            group,
            prefix,
            peer_ip,
        }
    }
}
/// Runs a writer command the harness needs; its failure is the harness's.
async fn run<T, F>(shared: &Arc<Shared>, command: F) -> T
where
    T: Send + 'static,
    F: FnOnce(
            &mut confab_server::store::Tx<'_>,
        ) -> Result<(T, confab_server::store::writer::Deliveries), confab_server::store::CommandError>
        + Send
        + 'static,
{
    match shared.writer.run(command).await {
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
async fn signup_template(shared: &Arc<Shared>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (sr, sw) = tokio::io::split(server);
    let task = tokio::spawn(connection::serve(
        Arc::clone(shared),
        StreamLink::new(sr, sw),
        SocketAddr::from(([127, 0, 0, 1], 1)),
        Transport::Tcp,
        tokio::sync::watch::channel(None).0,
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
