//! Writes the seed corpus of `server_e2e` to `fuzz/corpus/server_e2e/`:
//! realistic sessions written as scripts (`seed-<what>`), and every golden
//! vector in `spec/vectors/` replayed on a session (`seed-vec-…`).
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_e2e_seeds
//! ```
//!
//! Output is deterministic; a run first removes the `seed-*` files an
//! earlier run wrote. Every seed is checked to decode back to the script
//! it was written from. Names start with `seed-` because git ignores the
//! hex-named files libFuzzer adds (`fuzz/.gitignore`).
#![allow(clippy::print_stdout)] // a command-line tool: its output is the point

use std::{error::Error, fs, path::Path};

use confab_fuzz::script::{
    Arg, ConvRef, DeviceRef, IdMode, Kind, MsgId, Op, Password, Prologue, Script, Session, Str, TokenRef, UserRef, req,
};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const A: Session = Session::A;
const B: Session = Session::B;

fn s(x: &str) -> Arg {
    Arg::Str(Str::of(x))
}

fn conv(c: ConvRef) -> Arg {
    Arg::Conv(c)
}

fn user(u: UserRef) -> Arg {
    Arg::User(u)
}

fn users(us: &[UserRef]) -> Arg {
    Arg::Users(us.to_vec())
}

fn n(v: u64) -> Arg {
    Arg::Num(v)
}

fn send(c: ConvRef, text: &str) -> Op {
    req(Kind::Send, [conv(c), Arg::MsgId(MsgId::Fresh), s(text)])
}

fn history(c: ConvRef, before: u64, after: u64, oldest_first: bool, limit: u64) -> Op {
    req(Kind::History, [conv(c), n(before), n(after), n(u64::from(oldest_first)), n(limit)])
}

fn script(prologue: Prologue, open_b: bool, ops: Vec<(Session, Op)>) -> Script {
    Script { prologue, open_b, ops }
}

fn authed(ops: Vec<(Session, Op)>) -> Script {
    script(Prologue::Resume, false, ops)
}

fn two(ops: Vec<(Session, Op)>) -> Script {
    script(Prologue::Resume, true, ops)
}

fn hello(versions: &[u64], client_name: &str) -> Op {
    req(Kind::Hello, [Arg::Nums(versions.to_vec()), Arg::Strs(vec![Str::of("request-streams")]), s(client_name)])
}

/// One request of every kind, with arguments that mostly succeed.
fn every_kind() -> Vec<(Session, Op)> {
    use ConvRef::*;
    Kind::ALL
        .iter()
        .map(|kind| {
            let args = match kind {
                Kind::Hello => return (A, hello(&[1], "again")),
                Kind::Signup => vec![user(UserRef::Fresh(0)), Arg::Password(Password::Right), s("laptop")],
                Kind::Login => vec![user(UserRef::Me), Arg::Password(Password::Right), s("phone")],
                Kind::Resume => vec![Arg::Token(TokenRef::Mine)],
                Kind::RevokeDevice => vec![Arg::Device(DeviceRef::Spare)],
                Kind::OpenDirect => vec![user(UserRef::Third)],
                Kind::CreateGroup => vec![s("every kind"), users(&[UserRef::Peer])],
                Kind::AddMembers => vec![conv(Group), users(&[UserRef::Fresh(1)])],
                Kind::RemoveMember => vec![conv(Group), user(UserRef::Third)],
                Kind::LeaveGroup => vec![conv(Seen(1))],
                Kind::RenameGroup => vec![conv(Group), s("renamed")],
                Kind::ListConversations => vec![n(0), n(0), conv(Zero)],
                Kind::ListMembers => vec![conv(Group)],
                Kind::SetRole => vec![conv(Group), user(UserRef::Peer), n(2)],
                Kind::GetConversation => vec![conv(Direct)],
                Kind::Send => return (A, send(Direct, "every kind")),
                Kind::Sync => vec![n(0), n(0)],
                Kind::AckCursor => vec![n(1)],
                Kind::History => return (A, history(Direct, 0, 0, false, 0)),
                Kind::MarkRead => vec![conv(Direct), n(2)],
                Kind::ReadReceipts => vec![conv(Direct)],
                Kind::SubscribePresence | Kind::UnsubscribePresence => vec![users(&[UserRef::Peer])],
                Kind::SetStatus => vec![n(2)],
                Kind::Typing => vec![conv(Direct)],
                Kind::RegisterPush => {
                    vec![n(1), s("https://hooks.example/confab"), Arg::Bytes(vec![]), Arg::Bytes(vec![])]
                }
                Kind::Ping => vec![n(99)],
                Kind::Logout | Kind::ListDevices | Kind::UnregisterPush | Kind::Empty => vec![],
            };
            (A, req(*kind, args))
        })
        .collect()
}

fn scripted() -> Vec<(&'static str, Script)> {
    use ConvRef::*;
    use UserRef::*;
    vec![
        (
            "seed-resume-send-history-sync",
            authed(vec![
                (A, send(Direct, "hi bob")),
                (A, Op::Settle),
                (A, history(Direct, 0, 0, false, 0)),
                (A, req(Kind::Sync, [n(0), n(0)])),
                (A, req(Kind::AckCursor, [n(1)])),
                (A, req(Kind::ListConversations, [n(0), n(0), conv(Zero)])),
                (A, req(Kind::GetConversation, [conv(Direct)])),
                (A, req(Kind::MarkRead, [conv(Direct), n(2)])),
            ]),
        ),
        (
            "seed-two-users-chat",
            two(vec![
                (A, Op::Typing(Direct)),
                (A, send(Direct, "hi bob")),
                (B, Op::Pause(5)),
                (B, req(Kind::MarkRead, [conv(Direct), n(2)])),
                (B, Op::Typing(Direct)),
                (B, send(Direct, "hi alice")),
                (A, Op::Settle),
                (A, req(Kind::ReadReceipts, [conv(Direct)])),
                (B, history(Direct, 0, 1, true, 10)),
                (B, send(Group, "hello group")),
                (A, Op::Pause(3)),
                (A, req(Kind::Sync, [n(0), n(2)])),
            ]),
        ),
        (
            "seed-group-lifecycle",
            two(vec![
                (A, req(Kind::CreateGroup, [s("team"), users(&[Peer, Third])])),
                (A, Op::Settle),
                (A, req(Kind::RenameGroup, [conv(Seen(0)), s("renamed team")])),
                (A, req(Kind::SetRole, [conv(Seen(0)), user(Peer), n(2)])),
                (A, req(Kind::RemoveMember, [conv(Seen(0)), user(Third)])),
                (A, req(Kind::AddMembers, [conv(Seen(0)), users(&[Third, Fresh(1)])])),
                (A, req(Kind::AddMembers, [conv(Seen(0)), users(&[Third])])),
                (A, req(Kind::ListMembers, [conv(Seen(0))])),
                (B, req(Kind::RenameGroup, [conv(Group), s("not mine")])),
                (A, req(Kind::LeaveGroup, [conv(Group)])),
                (A, Op::Settle),
                (B, req(Kind::ListMembers, [conv(Group)])),
                (B, req(Kind::ListConversations, [n(1), n(0), conv(Zero)])),
                (A, history(Group, 0, 0, false, 0)),
            ]),
        ),
        (
            "seed-handshake-by-hand",
            script(
                Prologue::Nothing,
                false,
                vec![
                    (A, hello(&[2, 1], "by hand")),
                    (A, req(Kind::Ping, [n(7)])),
                    (A, req(Kind::Sync, [n(0), n(0)])),
                    (A, req(Kind::Signup, [user(Fresh(0)), Arg::Password(Password::Right), s("laptop")])),
                    (A, Op::Settle),
                    (A, send(Direct, "not a member")),
                    (A, req(Kind::OpenDirect, [user(Me)])),
                ],
            ),
        ),
        (
            "seed-hello-id-zero-then-hello",
            script(
                Prologue::Nothing,
                false,
                vec![
                    (
                        A,
                        Op::Request {
                            id: IdMode::Zero,
                            kind: Kind::Hello,
                            args: vec![Arg::Nums(vec![1]), Arg::Strs(vec![]), s("")],
                        },
                    ),
                    (A, hello(&[1], "second try")),
                    (A, req(Kind::Resume, [Arg::Token(TokenRef::Mine)])),
                    (A, req(Kind::ListDevices, [])),
                ],
            ),
        ),
        (
            "seed-bad-version",
            script(Prologue::Nothing, false, vec![(A, hello(&[2, 3], "future")), (A, req(Kind::Ping, [n(1)]))]),
        ),
        (
            "seed-not-hello-first",
            script(Prologue::Nothing, false, vec![(A, req(Kind::Ping, [n(1)])), (A, req(Kind::Ping, [n(2)]))]),
        ),
        (
            "seed-login-logout",
            script(
                Prologue::Hello,
                false,
                vec![
                    (A, req(Kind::Sync, [n(0), n(0)])),
                    (A, req(Kind::Login, [user(Me), Arg::Password(Password::Raw(Str::of("wrong password"))), s("x")])),
                    (A, req(Kind::Login, [user(Me), Arg::Password(Password::Right), s("phone")])),
                    (A, Op::Settle),
                    (A, req(Kind::ListDevices, [])),
                    (A, req(Kind::Logout, [])),
                    (A, Op::Settle),
                    (A, req(Kind::Sync, [n(0), n(0)])),
                    (A, req(Kind::Resume, [Arg::Token(TokenRef::Mine)])),
                ],
            ),
        ),
        (
            "seed-split-frames",
            authed(vec![
                (A, req(Kind::Ping, [n(1)])),
                (A, send(Direct, "cut into pieces")),
                (A, history(Direct, 0, 0, false, 0)),
                (A, Op::Write(1)),
                (A, Op::Write(2)),
                (A, Op::Write(3)),
                (A, Op::Write(5)),
                (A, Op::Pause(1)),
                (A, Op::Write(7)),
                (A, Op::Write(0)),
            ]),
        ),
        (
            "seed-malformed-frames",
            authed(vec![
                // request_id 5, then a hello field announcing 5 bytes, giving 1.
                (A, Op::RawFrame(vec![0x08, 0x05, 0x52, 0x05, 0x00])),
                (A, Op::RawFrame(vec![])),
                // request_id 6 and an unknown field 70 (a body this server does not know).
                (A, Op::RawFrame(vec![0x08, 0x06, 0xb2, 0x04, 0x00])),
                // invalid UTF-8 in open_direct.username.
                (A, Op::RawFrame(vec![0x08, 0x07, 0xa2, 0x01, 0x03, 0x0a, 0x01, 0xff])),
                (A, req(Kind::Ping, [n(3)])),
                (A, Op::Mangle { at: 3, xor: 0x40 }),
                (A, req(Kind::Ping, [n(4)])),
                (A, Op::Settle),
                // Eleven continuation bytes: no length prefix at all.
                (A, Op::Raw(vec![0x80; 11])),
            ]),
        ),
        (
            "seed-eight-malformed-in-a-row",
            authed((0..8u8).map(|i| (A, Op::RawFrame(vec![0x08, 10 + i, 0xff]))).collect()),
        ),
        // Found by the fuzzer: the kill raced the write of the Done, and the
        // session closed without its fatal Error.
        ("seed-revoke-own-device", authed(vec![(A, req(Kind::RevokeDevice, [Arg::Device(DeviceRef::Mine)]))])),
        (
            "seed-revoke-spare-and-peer",
            authed(vec![
                (A, req(Kind::ListDevices, [])),
                (A, req(Kind::RevokeDevice, [Arg::Device(DeviceRef::Spare)])),
                (A, req(Kind::RevokeDevice, [Arg::Device(DeviceRef::Peer)])),
                (A, req(Kind::RevokeDevice, [Arg::Device(DeviceRef::Raw(u64::MAX))])),
                (A, Op::Settle),
                (A, req(Kind::Logout, [])),
                (A, Op::Settle),
                (A, req(Kind::Resume, [Arg::Token(TokenRef::Spare)])),
                (A, req(Kind::Resume, [Arg::Token(TokenRef::Mine)])),
                (A, req(Kind::Resume, [Arg::Token(TokenRef::Peer)])),
            ]),
        ),
        (
            "seed-presence-and-reconnect",
            two(vec![
                (A, req(Kind::SubscribePresence, [users(&[Peer, Third])])),
                (A, Op::Settle),
                (B, req(Kind::SetStatus, [n(2)])),
                (B, Op::Pause(15)),
                (B, Op::Hangup),
                (A, Op::Pause(15)),
                (B, req(Kind::Ping, [n(1)])),
                (B, req(Kind::SetStatus, [n(1)])),
                (A, req(Kind::UnsubscribePresence, [users(&[Peer])])),
                (A, req(Kind::SubscribePresence, [users(&[Fresh(3)])])),
            ]),
        ),
        (
            "seed-push",
            authed(vec![
                (
                    A,
                    req(
                        Kind::RegisterPush,
                        [n(0), s("https://push.example/x"), Arg::Bytes([4u8; 65].to_vec()), Arg::Bytes(vec![1; 16])],
                    ),
                ),
                (
                    A,
                    req(
                        Kind::RegisterPush,
                        [n(1), s("https://hooks.example/confab"), Arg::Bytes(vec![]), Arg::Bytes(vec![])],
                    ),
                ),
                (A, req(Kind::RegisterPush, [n(2), s(""), Arg::Bytes(vec![]), Arg::Bytes(vec![])])),
                (A, req(Kind::UnregisterPush, [])),
            ]),
        ),
        (
            "seed-request-ids",
            authed(vec![
                (A, Op::Request { id: IdMode::Zero, kind: Kind::Ping, args: vec![n(1)] }),
                (A, Op::Request { id: IdMode::Explicit(u64::MAX), kind: Kind::Sync, args: vec![n(0), n(0)] }),
                (A, Op::Request { id: IdMode::Explicit(77), kind: Kind::Empty, args: vec![] }),
                (A, send(Direct, "first")),
                (
                    A,
                    Op::Request {
                        id: IdMode::Repeat,
                        kind: Kind::Send,
                        args: vec![conv(Direct), Arg::MsgId(MsgId::Again), s("again")],
                    },
                ),
                (A, Op::Request { id: IdMode::Explicit(9), kind: Kind::Typing, args: vec![conv(Direct)] }),
                (A, Op::Request { id: IdMode::Zero, kind: Kind::Typing, args: vec![conv(Group)] }),
            ]),
        ),
        (
            "seed-long-messages",
            authed(vec![
                (
                    A,
                    req(
                        Kind::Send,
                        [
                            conv(Direct),
                            Arg::MsgId(MsgId::Fresh),
                            Arg::Str(Str::Repeat { len: 200_000, unit: "é".into() }),
                        ],
                    ),
                ),
                (
                    A,
                    req(
                        Kind::Send,
                        [
                            conv(Direct),
                            Arg::MsgId(MsgId::Fresh),
                            Arg::Str(Str::Repeat { len: 100_001, unit: b"a".to_vec() }),
                        ],
                    ),
                ),
                (A, req(Kind::Send, [conv(Direct), Arg::MsgId(MsgId::Fresh), s("")])),
                (A, req(Kind::Send, [conv(Direct), Arg::MsgId(MsgId::Raw(Str::of("has space"))), s("x")])),
                (A, Op::Settle),
                (A, history(Direct, 0, 0, false, 0)),
                (
                    A,
                    req(
                        Kind::Send,
                        [
                            conv(Direct),
                            Arg::MsgId(MsgId::Fresh),
                            Arg::Str(Str::Repeat { len: 600_000, unit: b"b".to_vec() }),
                        ],
                    ),
                ),
            ]),
        ),
        (
            "seed-bounds",
            authed(vec![
                (A, history(Direct, 0, u64::MAX, false, 0)),
                (A, history(Direct, u64::MAX, 0, false, 1)),
                (A, history(Direct, 0, 0, true, 1)),
                (A, history(Group, 2, 0, false, u64::MAX)),
                (A, req(Kind::Sync, [n(u64::MAX), n(0)])),
                (A, req(Kind::Sync, [n(0), n(1)])),
                (A, req(Kind::AckCursor, [n(u64::MAX)])),
                (A, req(Kind::MarkRead, [conv(Direct), n(u64::MAX)])),
                (A, req(Kind::ListConversations, [n(u64::MAX), n(u64::MAX), conv(ConvRef::Raw(u64::MAX))])),
                (A, req(Kind::GetConversation, [conv(ConvRef::Raw(u64::MAX))])),
                (A, req(Kind::SetRole, [conv(Group), user(Peer), n(u64::MAX)])),
            ]),
        ),
        (
            "seed-typing",
            two((0..6)
                .map(|i| (if i % 2 == 0 { A } else { B }, Op::Typing(if i < 3 { Direct } else { Group })))
                .collect()),
        ),
        ("seed-every-kind", authed(every_kind())),
        (
            // Found by the fuzzer: a send committed between the sync's two
            // reads put an event past the page's inbox_head.
            "seed-sync-racing-sends",
            two(vec![
                (A, req(Kind::Sync, [n(0), n(0)])),
                (A, send(Direct, "racing")),
                (B, req(Kind::Sync, [n(0), n(0)])),
                (A, send(Group, "racing")),
                (B, req(Kind::Sync, [n(3), n(0)])),
                (A, req(Kind::Sync, [n(0), n(0)])),
            ]),
        ),
        (
            "seed-hangup-mid-request",
            two(vec![
                (A, send(Direct, "going away")),
                (A, Op::Write(4)),
                (A, Op::Hangup),
                (A, req(Kind::Sync, [n(0), n(0)])),
                (B, req(Kind::Sync, [n(0), n(0)])),
            ]),
        ),
    ]
}

fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("fuzz/corpus/server_e2e");
    fs::create_dir_all(&dir)?;
    for entry in fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("seed-")) {
            fs::remove_file(&path)?;
        }
    }
    let mut written = 0;
    let named = scripted().into_iter().map(|(name, s)| (name.to_string(), s));
    for (name, script) in named.chain(vectors(&root.join("spec/vectors"))?) {
        let bytes = script.encode();
        assert_eq!(Script::parse(&bytes), script, "{name} does not decode to the script it was written from");
        fs::write(dir.join(&name), bytes)?;
        written += 1;
    }
    println!("wrote {written} seeds to {}", dir.display());
    Ok(())
}

/// Every golden vector on a session: valid client frames after Hello and
/// Resume (Hello itself on a bare connection), invalid ones the way
/// spec/vectors/README.md says to replay them.
fn vectors(dir: &Path) -> Result<Vec<(String, Script)>> {
    let mut out = Vec::new();
    for (folder, kind) in [("client", "client"), ("invalid", "invalid")] {
        let mut files: Vec<_> = fs::read_dir(dir.join(folder))?.collect::<std::result::Result<_, _>>()?;
        files.sort_by_key(|e| e.path());
        for entry in files {
            let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(entry.path())?)?;
            let name = v["name"].as_str().ok_or("vector without a name")?;
            let wire = unhex(v["hex"].as_str().ok_or("vector without hex")?)?;
            if wire.len() > 4096 {
                continue; // the 100,000-character messages: seed-long-messages covers them
            }
            let mut stream = Vec::new();
            for after in v["after"].as_array().into_iter().flatten() {
                stream.extend(unhex(after.as_str().ok_or("bad after")?)?);
            }
            stream.extend_from_slice(&wire);
            let unauthenticated =
                ["hello", "signup", "login", "resume", "ping", "example_c1_hello", "example_c2_login"];
            let prologue = match (kind, v["expect"]["stage"].as_str()) {
                ("client", _) if name.contains("hello") => Prologue::Nothing,
                ("client", _) if unauthenticated.contains(&name) => Prologue::Hello,
                ("client", _) => Prologue::Resume,
                (_, Some("validate")) if ["signup", "login", "resume"].iter().any(|k| name.starts_with(k)) => {
                    Prologue::Hello
                }
                (_, Some("validate")) => Prologue::Resume,
                _ => Prologue::Nothing,
            };
            let ops = stream.chunks(255).map(|c| (A, Op::Raw(c.to_vec()))).collect();
            out.push((format!("seed-vec-{kind}-{name}"), script(prologue, false, ops)));
        }
    }
    Ok(out)
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2).ok_or("odd hex")?, 16).map_err(Into::into))
        .collect()
}
