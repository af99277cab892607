//! The `server_e2e` target: a [`Script`] played against a real server
//! session, over an in-memory byte stream, with every server frame checked
//! against the [`Contract`].
//!
//! Per input: a fresh [`World`]; session A (and B when the script names
//! it) each get a `tokio::io::duplex` pipe whose far end goes through
//! `StreamLink` into `connection::serve` with the server's `Ingress`, just
//! as an accepted TCP+TLS connection would, minus TLS. A reader task per
//! connection feeds the server's bytes to the contract as they arrive. The
//! script's ops queue and write bytes; at the end everything is written
//! and the harness waits until every request is answered (or the session
//! ended), then hangs up and waits for the server to close.
//!
//! Time is bounded: at most [`MAX_OPS`](crate::script::MAX_OPS) ops, short
//! pauses, and no wait longer than [`stall_limit`] without the server
//! making progress. A stall is a finding (a request never answered, a
//! session that does not end), reported with the ids concerned.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use confab_protocol::{
    framing::encode_frame,
    pb::{self, client_frame::Body},
};
use confab_server::link::{StreamLink, Transport};
use confab_server::transport::connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::contract::{Contract, Identity};
use crate::script::{
    Arg, ConvRef, DeviceRef, IdMode, Kind, MsgId, Op, Password, Prologue, Script, Session, TokenRef, UserRef,
};
use crate::world::{Backend, Member, PASSWORD, World};

/// The harness: a runtime and a server, made on first use and kept for the
/// life of the process.
struct Harness {
    rt: tokio::runtime::Runtime,
    backend: Backend,
}

fn harness() -> MutexGuard<'static, Harness> {
    static HARNESS: OnceLock<Mutex<Harness>> = OnceLock::new();
    let h = HARNESS.get_or_init(|| {
        // One thread runs the server's tasks and the harness's: inputs
        // replay more alike than on a pool (blocking work, the store
        // writer and fjall still have threads of their own).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the fuzz harness builds a runtime");
        let backend = rt.block_on(Backend::start());
        Mutex::new(Harness { rt, backend })
    });
    // A panic is a finding and ends the process; a poisoned lock is only
    // seen by tests that go on after one.
    h.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bytes written at a time (see `Conn::write`).
const WRITE_PIECE: usize = 4096;

/// Longest the harness waits without the server making progress (a frame
/// arriving, a session ending). `CONFAB_FUZZ_STALL_MS` overrides it.
pub fn stall_limit() -> Duration {
    static LIMIT: OnceLock<Duration> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        let ms = std::env::var("CONFAB_FUZZ_STALL_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000);
        Duration::from_millis(ms)
    })
}

/// Plays one fuzz input. Panics on a broken invariant.
pub fn run(data: &[u8]) {
    let script = Script::parse(data);
    let mut h = harness();
    let Harness { rt, backend } = &mut *h;
    rt.block_on(async {
        let world = backend.world().await;
        play(backend, &world, &script).await;
    });
}

/// What the reader task reports: frames seen so far, and whether the
/// server has closed.
type Progress = watch::Receiver<(usize, bool)>;

/// One client connection and the server session behind it.
struct Conn {
    session: Session,
    writer: Option<WriteHalf<DuplexStream>>,
    /// Queued bytes, not yet written (ops may still cut or mangle them).
    pending: BytesMut,
    contract: Arc<Mutex<Contract>>,
    progress: Progress,
    reader: JoinHandle<()>,
    served: JoinHandle<confab_protocol::ErrorCode>,
    next_id: u64,
    last_id: u64,
    msg_ids: u64,
}

fn lock(c: &Mutex<Contract>) -> MutexGuard<'_, Contract> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

impl Conn {
    fn open(backend: &Backend, world: &World, session: Session, index: u16) -> Conn {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (sr, sw) = tokio::io::split(server);
        let port = 10_000 + index;
        let served = tokio::spawn(connection::serve(
            backend.ingress(),
            StreamLink::new(sr, sw),
            SocketAddr::from((world.peer_ip, port)),
            Transport::Tcp,
            None,
            // Never cancelled: the server does not shut down mid-input.
            CancellationToken::new(),
        ));
        let identity = |m: &Member| Identity { user_id: m.user_id, device_id: m.device_id };
        let tokens = HashMap::from([
            (world.a.token.clone(), identity(&world.a)),
            (world.b.token.clone(), identity(&world.b)),
            (world.spare.1.clone(), Identity { user_id: world.a.user_id, device_id: world.spare.0 }),
        ]);
        let label = format!("{session:?}#{index}");
        let contract = Arc::new(Mutex::new(Contract::new(label, tokens)));
        let (cr, cw) = tokio::io::split(client);
        let (tx, progress) = watch::channel((0, false));
        let reader = tokio::spawn(read_server(cr, Arc::clone(&contract), tx));
        Conn {
            session,
            writer: Some(cw),
            pending: BytesMut::new(),
            contract,
            progress,
            reader,
            served,
            next_id: 1,
            last_id: 0,
            msg_ids: 0,
        }
    }

    fn hung_up(&self) -> bool {
        self.writer.is_none()
    }

    fn queue(&mut self, frame: &pb::ClientFrame) {
        encode_frame(frame, &mut self.pending);
    }

    /// Writes the first `n` queued bytes (all of them when `n` is 0 or
    /// more than is queued).
    async fn write(&mut self, n: usize) {
        let n = if n == 0 { self.pending.len() } else { n.min(self.pending.len()) };
        if n == 0 {
            return;
        }
        let chunk = self.pending.split_to(n);
        let Some(w) = self.writer.as_mut() else { return };
        // In pieces, each with its own deadline: the server may answer
        // every byte (a zero-length frame earns an error frame), so a big
        // write can take long while it keeps making progress.
        for piece in chunk.chunks(WRITE_PIECE) {
            // Recorded first: the server cannot answer bytes before they
            // are written, so a response never precedes its request here.
            lock(&self.contract).client_wrote(piece);
            match tokio::time::timeout(stall_limit(), w.write_all(piece)).await {
                Ok(Ok(())) => {}
                // The server ended the session and dropped its end.
                Ok(Err(_)) => return,
                Err(_) => panic!(
                    "server_e2e invariant broken on session {:?}: the server reads its input (stalled for {:?})",
                    self.session,
                    stall_limit()
                ),
            }
        }
    }

    async fn hang_up(&mut self) {
        self.write(0).await;
        if let Some(mut w) = self.writer.take() {
            lock(&self.contract).client_hung_up();
            let _ = w.shutdown().await;
        }
    }

    /// Waits until the contract is settled, failing on a stall.
    async fn settle(&mut self) {
        loop {
            if lock(&self.contract).settled() {
                return;
            }
            match tokio::time::timeout(stall_limit(), self.progress.changed()).await {
                Ok(Ok(())) => {}
                // The reader is done: the server closed.
                Ok(Err(_)) => return,
                Err(_) => lock(&self.contract).check_settled(stall_limit()),
            }
        }
    }

    /// Hangs up and waits for the server to close and the session task to
    /// end.
    async fn finish(mut self) {
        self.hang_up().await;
        let session = self.session;
        let stalled = |what: &str| -> ! {
            panic!("server_e2e invariant broken on session {session:?}: {what} (stalled for {:?})", stall_limit())
        };
        match tokio::time::timeout(stall_limit(), &mut self.served).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            Err(_) => stalled("a session ends once the client has gone"),
        }
        match tokio::time::timeout(stall_limit(), &mut self.reader).await {
            Ok(Ok(())) => {}
            // A broken invariant in the reader: re-raise it here, where a
            // test (without libFuzzer's abort-on-panic hook) sees it.
            Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            Err(_) => stalled("the server closes its end when the session ends"),
        }
    }
}

/// Feeds what the server writes to the contract until it closes.
async fn read_server(mut r: ReadHalf<DuplexStream>, contract: Arc<Mutex<Contract>>, tx: watch::Sender<(usize, bool)>) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        buf.clear();
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                lock(&contract).server_closed();
                tx.send_replace((lock(&contract).frames(), true));
                return;
            }
            Ok(_) => {
                let frames = {
                    let mut c = lock(&contract);
                    c.server_wrote(buf.chunk());
                    c.frames()
                };
                tx.send_replace((frames, false));
            }
        }
    }
}

/// Connections of one input: the live one per session, and those the
/// script hung up (finished at the end).
struct Sessions<'a> {
    backend: &'a Backend,
    world: &'a World,
    live: [Option<Conn>; 2],
    done: Vec<Conn>,
    opened: u16,
}

impl Sessions<'_> {
    /// The session's live connection, opened (with its prologue) when it
    /// has none: at first use, and again after a hangup (a reconnect).
    async fn get(&mut self, session: Session, prologue: Prologue) -> &mut Conn {
        let slot = usize::from(session == Session::B);
        if self.live[slot].as_ref().is_some_and(Conn::hung_up)
            && let Some(old) = self.live[slot].take()
        {
            self.done.push(old);
        }
        if self.live[slot].is_none() {
            let mut conn = Conn::open(self.backend, self.world, session, self.opened);
            self.opened += 1;
            let me = member(self.world, session);
            if prologue != Prologue::Nothing {
                let hello = pb::Hello { versions: vec![1], capabilities: vec![], client_name: "confab-fuzz".into() };
                let id = conn.fresh_id();
                conn.queue(&pb::ClientFrame { request_id: id, body: Some(Body::Hello(hello)) });
            }
            if prologue == Prologue::Resume {
                let id = conn.fresh_id();
                let resume = pb::ResumeRequest { token: me.token.clone() };
                conn.queue(&pb::ClientFrame { request_id: id, body: Some(Body::Resume(resume)) });
            }
            self.live[slot] = Some(conn);
        }
        self.live[slot].as_mut().expect("opened above")
    }
}

fn member(world: &World, session: Session) -> &Member {
    match session {
        Session::A => &world.a,
        Session::B => &world.b,
    }
}

async fn play(backend: &Backend, world: &World, script: &Script) {
    let mut sessions = Sessions { backend, world, live: [None, None], done: Vec::new(), opened: 0 };
    sessions.get(Session::A, script.prologue).await;
    if script.open_b {
        sessions.get(Session::B, Prologue::Resume).await;
    }
    for (session, op) in &script.ops {
        // A reconnect (after a hangup) resumes; only A's first connection
        // may start otherwise.
        let prologue = Prologue::Resume;
        let conn = sessions.get(*session, prologue).await;
        apply(conn, world, op).await;
    }
    // Write what is left, then wait for every answer on every connection.
    let mut all: Vec<Conn> = sessions.done.drain(..).collect();
    all.extend(sessions.live.iter_mut().filter_map(Option::take));
    for conn in &mut all {
        conn.write(0).await;
    }
    for conn in &mut all {
        conn.settle().await;
    }
    for conn in all {
        conn.finish().await;
    }
}

async fn apply(conn: &mut Conn, world: &World, op: &Op) {
    match op {
        Op::Request { id, kind, args } => {
            let request_id = match id {
                IdMode::Fresh => conn.fresh_id(),
                IdMode::Zero => 0,
                IdMode::Repeat => conn.last_id,
                IdMode::Explicit(v) => *v,
            };
            conn.last_id = request_id;
            let seen = lock(&conn.contract).seen_conversations.clone();
            let body = Resolver { world, me: conn.session, seen: &seen, msg_ids: &mut conn.msg_ids }.body(*kind, args);
            conn.queue(&pb::ClientFrame { request_id, body });
        }
        Op::Typing(c) => {
            let seen = lock(&conn.contract).seen_conversations.clone();
            let conversation_id =
                Resolver { world, me: conn.session, seen: &seen, msg_ids: &mut conn.msg_ids }.conv(*c);
            conn.queue(&pb::ClientFrame {
                request_id: 0,
                body: Some(Body::Typing(pb::TypingNotice { conversation_id })),
            });
        }
        Op::Raw(bytes) => conn.pending.extend_from_slice(bytes),
        Op::RawFrame(bytes) => {
            prost::encoding::encode_varint(bytes.len() as u64, &mut conn.pending);
            conn.pending.extend_from_slice(bytes);
        }
        Op::Mangle { at, xor } => {
            let len = conn.pending.len() as u64;
            if len > 0 {
                conn.pending[(at % len) as usize] ^= xor;
            }
        }
        Op::Write(n) => conn.write(usize::try_from(*n).unwrap_or(usize::MAX)).await,
        Op::Settle => {
            conn.write(0).await;
            conn.settle().await;
        }
        Op::Pause(ms) => {
            conn.write(0).await;
            tokio::time::sleep(Duration::from_millis(u64::from(ms % 8))).await;
        }
        Op::Hangup => conn.hang_up().await,
    }
}

impl Conn {
    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.last_id = id;
        id
    }
}

/// Turns a request's role-based arguments into a body for this world.
struct Resolver<'a> {
    world: &'a World,
    me: Session,
    seen: &'a [u64],
    msg_ids: &'a mut u64,
}

impl Resolver<'_> {
    fn my(&self) -> &Member {
        member(self.world, self.me)
    }

    fn peer(&self) -> &Member {
        member(self.world, if self.me == Session::A { Session::B } else { Session::A })
    }

    fn conv(&self, c: ConvRef) -> u64 {
        match c {
            ConvRef::Direct => self.world.direct,
            ConvRef::Group => self.world.group,
            ConvRef::Seen(k) if !self.seen.is_empty() => self.seen[usize::from(k) % self.seen.len()],
            ConvRef::Seen(_) => self.world.direct,
            ConvRef::Raw(id) => id,
            ConvRef::Zero => 0,
        }
    }

    fn user(&self, u: &UserRef) -> String {
        match u {
            UserRef::Me => self.my().username.clone(),
            UserRef::Peer => self.peer().username.clone(),
            UserRef::Third => self.world.c.username.clone(),
            UserRef::Fresh(k) => format!("{}x{k}", self.world.prefix),
            UserRef::Raw(s) => s.to_string_lossy(),
        }
    }

    fn arg_conv(&self, a: Option<&Arg>) -> u64 {
        match a {
            Some(Arg::Conv(c)) => self.conv(*c),
            _ => 0,
        }
    }

    fn arg_user(&self, a: Option<&Arg>) -> String {
        match a {
            Some(Arg::User(u)) => self.user(u),
            _ => String::new(),
        }
    }

    fn arg_users(&self, a: Option<&Arg>) -> Vec<String> {
        match a {
            Some(Arg::Users(us)) => us.iter().map(|u| self.user(u)).collect(),
            _ => Vec::new(),
        }
    }

    fn arg_str(a: Option<&Arg>) -> String {
        match a {
            Some(Arg::Str(s)) => s.to_string_lossy(),
            _ => String::new(),
        }
    }

    fn arg_num(a: Option<&Arg>) -> u64 {
        match a {
            Some(Arg::Num(n)) => *n,
            _ => 0,
        }
    }

    fn arg_bytes(a: Option<&Arg>) -> Vec<u8> {
        match a {
            Some(Arg::Bytes(b)) => b.clone(),
            _ => Vec::new(),
        }
    }

    fn body(&mut self, kind: Kind, args: &[Arg]) -> Option<Body> {
        let a = |i: usize| args.get(i);
        let client_msg_id = match (kind, a(1)) {
            (Kind::Send, Some(Arg::MsgId(MsgId::Fresh))) => {
                *self.msg_ids += 1;
                format!("m{}", self.msg_ids)
            }
            (Kind::Send, Some(Arg::MsgId(MsgId::Again))) => format!("m{}", self.msg_ids),
            (Kind::Send, Some(Arg::MsgId(MsgId::Raw(s)))) => s.to_string_lossy(),
            _ => String::new(),
        };
        let (conv, user, users) = (|i| self.arg_conv(a(i)), |i| self.arg_user(a(i)), |i| self.arg_users(a(i)));
        let str = |i| Self::arg_str(a(i));
        let num = |i| Self::arg_num(a(i));
        Some(match kind {
            Kind::Hello => {
                let versions = match a(0) {
                    Some(Arg::Nums(ns)) => ns.iter().map(|n| *n as u32).collect(),
                    _ => Vec::new(),
                };
                let capabilities = match a(1) {
                    Some(Arg::Strs(ss)) => ss.iter().map(|s| s.to_string_lossy()).collect(),
                    _ => Vec::new(),
                };
                Body::Hello(pb::Hello { versions, capabilities, client_name: str(2) })
            }
            Kind::Signup => {
                Body::Signup(pb::SignupRequest { username: user(0), password: password(a(1)), device_name: str(2) })
            }
            Kind::Login => {
                Body::Login(pb::LoginRequest { username: user(0), password: password(a(1)), device_name: str(2) })
            }
            Kind::Resume => Body::Resume(pb::ResumeRequest {
                token: match a(0) {
                    Some(Arg::Token(TokenRef::Mine)) => self.my().token.clone(),
                    Some(Arg::Token(TokenRef::Spare)) => self.world.spare.1.clone(),
                    Some(Arg::Token(TokenRef::Peer)) => self.peer().token.clone(),
                    Some(Arg::Token(TokenRef::Raw(s))) => s.to_string_lossy(),
                    _ => String::new(),
                },
            }),
            Kind::Logout => Body::Logout(pb::LogoutRequest {}),
            Kind::ListDevices => Body::ListDevices(pb::ListDevicesRequest::default()),
            Kind::RevokeDevice => Body::RevokeDevice(pb::RevokeDeviceRequest {
                device_id: match a(0) {
                    Some(Arg::Device(DeviceRef::Mine)) => self.my().device_id,
                    Some(Arg::Device(DeviceRef::Spare)) => self.world.spare.0,
                    Some(Arg::Device(DeviceRef::Peer)) => self.peer().device_id,
                    Some(Arg::Device(DeviceRef::Raw(id))) => *id,
                    _ => 0,
                },
            }),
            Kind::OpenDirect => Body::OpenDirect(pb::OpenDirectRequest { username: user(0) }),
            Kind::CreateGroup => Body::CreateGroup(pb::CreateGroupRequest { title: str(0), usernames: users(1) }),
            Kind::AddMembers => {
                Body::AddMembers(pb::AddMembersRequest { conversation_id: conv(0), usernames: users(1) })
            }
            Kind::RemoveMember => {
                Body::RemoveMember(pb::RemoveMemberRequest { conversation_id: conv(0), username: user(1) })
            }
            Kind::LeaveGroup => Body::LeaveGroup(pb::LeaveGroupRequest { conversation_id: conv(0) }),
            Kind::RenameGroup => Body::RenameGroup(pb::RenameGroupRequest { conversation_id: conv(0), title: str(1) }),
            Kind::ListConversations => Body::ListConversations(pb::ListConversationsRequest {
                limit: num(0) as u32,
                active_before_ms: num(1) as i64,
                before_conversation_id: conv(2),
            }),
            Kind::ListMembers => Body::ListMembers(pb::ListMembersRequest { conversation_id: conv(0) }),
            Kind::SetRole => {
                Body::SetRole(pb::SetRoleRequest { conversation_id: conv(0), username: user(1), role: num(2) as i32 })
            }
            Kind::GetConversation => Body::GetConversation(pb::GetConversationRequest { conversation_id: conv(0) }),
            Kind::Send => Body::Send(pb::SendRequest { conversation_id: conv(0), client_msg_id, text: str(2) }),
            Kind::Sync => Body::Sync(pb::SyncRequest { after: num(0), limit: num(1) as u32 }),
            Kind::AckCursor => Body::AckCursor(pb::AckCursorRequest { inbox_seq: num(0) }),
            Kind::History => Body::History(pb::HistoryRequest {
                conversation_id: conv(0),
                before_seq: num(1),
                after_seq: num(2),
                oldest_first: num(3) & 1 == 1,
                limit: num(4) as u32,
            }),
            Kind::MarkRead => Body::MarkRead(pb::MarkReadRequest { conversation_id: conv(0), seq: num(1) }),
            Kind::ReadReceipts => Body::ReadReceipts(pb::ReadReceiptsRequest { conversation_id: conv(0) }),
            Kind::SubscribePresence => Body::SubscribePresence(pb::SubscribePresenceRequest { usernames: users(0) }),
            Kind::UnsubscribePresence => {
                Body::UnsubscribePresence(pb::UnsubscribePresenceRequest { usernames: users(0) })
            }
            Kind::SetStatus => Body::SetStatus(pb::SetStatusRequest { status: num(0) as i32 }),
            Kind::Typing => Body::Typing(pb::TypingNotice { conversation_id: conv(0) }),
            Kind::RegisterPush => {
                use pb::register_push_request::Target;
                let target = match num(0) % 3 {
                    0 => Some(Target::WebPush(pb::WebPushTarget {
                        endpoint: str(1),
                        p256dh: Self::arg_bytes(a(2)).into(),
                        auth: Self::arg_bytes(a(3)).into(),
                    })),
                    1 => Some(Target::Webhook(pb::WebhookTarget { url: str(1) })),
                    _ => None,
                };
                Body::RegisterPush(pb::RegisterPushRequest { target })
            }
            Kind::UnregisterPush => Body::UnregisterPush(pb::UnregisterPushRequest {}),
            Kind::Ping => Body::Ping(pb::PingRequest { nonce: num(0) }),
            Kind::Empty => return None,
        })
    }
}

fn password(a: Option<&Arg>) -> String {
    match a {
        Some(Arg::Password(Password::Right)) => PASSWORD.into(),
        Some(Arg::Password(Password::Raw(s))) => s.to_string_lossy(),
        _ => String::new(),
    }
}
