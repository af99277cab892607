//! The input format of `server_e2e`: a script of client actions, decoded
//! from the fuzzer's bytes, and the encoder the seed generator uses.
//!
//! ```text
//! input   := header op*            (at most MAX_OPS ops; the rest is ignored)
//! header  := u8                     bits 0-1: how session A starts (Prologue)
//!                                   bit 2: open session B at once
//! op      := u8 args                bit 7: the session (0 = A, 1 = B);
//!                                   bits 0-6 mod 9: what to do (Op)
//! ```
//!
//! Every byte string decodes to some script (missing bytes read as 0), so
//! the fuzzer never wastes an input on a parse error; and decoding is the
//! exact inverse of [`Script::encode`] (`script_round_trip` below), so the
//! committed seeds mean what the generator says.
//!
//! Requests name users, conversations, devices and tokens by *role*
//! ([`UserRef`], [`ConvRef`], …) rather than by value: every input runs in
//! a fresh world of its own (see `world.rs`), and the roles are resolved
//! against it when the frame is built. Each request kind has a fixed list
//! of argument types ([`Kind::signature`]) that drives both the decoder and
//! the encoder, so the two cannot drift apart.

/// Ops past this many are ignored: it bounds the time one input takes.
pub const MAX_OPS: usize = 64;
/// Longest string a [`Str::Repeat`] expands to: past `max_frame_bytes`
/// (524,288), to reach the framing limit, and no further.
pub const MAX_REPEAT: usize = 600_000;

/// How session A starts, before the script's own ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prologue {
    /// Hello, then Resume with A's token: the script starts authenticated.
    Resume,
    /// Hello only: the script must sign up, log in or resume itself.
    Hello,
    /// Nothing: the script does the handshake (or fails to).
    Nothing,
}

/// A decoded input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// How session A starts.
    pub prologue: Prologue,
    /// Whether session B (the peer user, Hello + Resume) opens before the
    /// first op; otherwise it opens on the first op that names it.
    pub open_b: bool,
    /// What to do, in order.
    pub ops: Vec<(Session, Op)>,
}

/// Which of the input's two connections an op acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Session {
    /// User A's session.
    A,
    /// User B's session (B is A's peer in the direct conversation).
    B,
}

/// One client action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A well-formed `ClientFrame` (prost-encoded) queued for sending.
    Request {
        /// How its request_id is chosen.
        id: IdMode,
        /// The body and its arguments.
        kind: Kind,
        /// Arguments, one per entry of `kind.signature()`.
        args: Vec<Arg>,
    },
    /// A typing notice with request_id 0 (a notification).
    Typing(ConvRef),
    /// Raw bytes queued as they are (garbage, or a whole frame with its
    /// prefix, e.g. from the golden vectors).
    Raw(Vec<u8>),
    /// Bytes queued behind a correct length prefix: a malformed body that
    /// keeps the stream in sync.
    RawFrame(Vec<u8>),
    /// XORs one byte of what is queued and not yet written.
    Mangle {
        /// Position, modulo the queued length.
        at: u64,
        /// The XOR mask.
        xor: u8,
    },
    /// Writes the first `n` queued bytes (0: all of them): frames cut at
    /// arbitrary points.
    Write(u64),
    /// Writes everything queued and waits until every request so far is
    /// answered (or the session ends).
    Settle,
    /// Writes everything queued and sleeps `n % 8` milliseconds, so live
    /// events, presence and typing get a chance to arrive.
    Pause(u8),
    /// Writes everything queued, then closes the sending half: the client
    /// goes away.
    Hangup,
}

/// How a request_id is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdMode {
    /// The next id of the session's counter (never used before).
    Fresh,
    /// 0 (only typing may use it).
    Zero,
    /// The id of the previous request on this session (maybe in flight).
    Repeat,
    /// This one.
    Explicit(u64),
}

/// Argument types of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgType {
    /// A [`ConvRef`].
    Conv,
    /// A [`UserRef`].
    User,
    /// A list of [`UserRef`]s.
    Users,
    /// A [`DeviceRef`].
    Device,
    /// A [`TokenRef`].
    Token,
    /// A [`Password`].
    Password,
    /// A [`MsgId`].
    MsgId,
    /// A string.
    Str,
    /// A list of strings.
    Strs,
    /// An integer (cast to the field's type).
    Num,
    /// A list of integers.
    Nums,
    /// Raw bytes (`bytes` fields).
    Bytes,
}

/// One argument of a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// A conversation.
    Conv(ConvRef),
    /// A user.
    User(UserRef),
    /// Users.
    Users(Vec<UserRef>),
    /// A device.
    Device(DeviceRef),
    /// A resume token.
    Token(TokenRef),
    /// A password.
    Password(Password),
    /// A client_msg_id.
    MsgId(MsgId),
    /// A string.
    Str(Str),
    /// Strings.
    Strs(Vec<Str>),
    /// An integer.
    Num(u64),
    /// Integers.
    Nums(Vec<u64>),
    /// Bytes.
    Bytes(Vec<u8>),
}

/// A string argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Str {
    /// These bytes, made valid UTF-8 (prost only encodes `String`s; invalid
    /// UTF-8 reaches the server through [`Op::Raw`]).
    Bytes(Vec<u8>),
    /// `unit` repeated to `len` bytes (at most [`MAX_REPEAT`]): long
    /// messages, titles past their limit, frames past theirs.
    Repeat {
        /// Bytes wanted.
        len: u64,
        /// What to repeat (empty: "x").
        unit: Vec<u8>,
    },
}

/// A conversation, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvRef {
    /// The direct conversation of A and B.
    Direct,
    /// The group A owns, with B and C as members.
    Group,
    /// The k-th conversation id seen in a response or event during this
    /// input (modulo how many; the direct one when none).
    Seen(u8),
    /// This id.
    Raw(u64),
    /// 0 (absent).
    Zero,
}

/// A user, by role, relative to the session that sends the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    /// The sending session's own user.
    Me,
    /// The other session's user.
    Peer,
    /// User C: a member of the group, never connected.
    Third,
    /// A valid username nobody has (k makes it distinct).
    Fresh(u8),
    /// This string.
    Raw(Str),
}

/// A device, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRef {
    /// The sending session's own device.
    Mine,
    /// A's second device (never connected, unless resumed with its token).
    Spare,
    /// The other session's device.
    Peer,
    /// This id.
    Raw(u64),
    /// 0.
    Zero,
}

/// A resume token, by role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRef {
    /// The sending session's own device token.
    Mine,
    /// A's spare device token.
    Spare,
    /// The other session's token.
    Peer,
    /// This string.
    Raw(Str),
}

/// A password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password {
    /// The one every user of the world has (logins with it succeed; each
    /// costs an Argon2 verification, so scripts that use it run slower).
    Right,
    /// This string.
    Raw(Str),
}

/// A client_msg_id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MsgId {
    /// A new one ("m" and a counter).
    Fresh,
    /// The previous one on this session again (a retried send).
    Again,
    /// This string.
    Raw(Str),
}

macro_rules! kinds {
    ($($kind:ident => [$($arg:ident),*]),* $(,)?) => {
        /// A `ClientFrame` body kind (or none).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Kind { $(
            #[allow(missing_docs)]
            $kind
        ),* }

        impl Kind {
            /// Every kind, in opcode order.
            pub const ALL: &'static [Kind] = &[$(Kind::$kind),*];

            /// The arguments this kind reads, in order.
            pub fn signature(self) -> &'static [ArgType] {
                match self { $(Kind::$kind => &[$(ArgType::$arg),*]),* }
            }
        }
    };
}

kinds! {
    Hello => [Nums, Strs, Str],
    Signup => [User, Password, Str],
    Login => [User, Password, Str],
    Resume => [Token],
    Logout => [],
    ListDevices => [],
    RevokeDevice => [Device],
    OpenDirect => [User],
    CreateGroup => [Str, Users],
    AddMembers => [Conv, Users],
    RemoveMember => [Conv, User],
    LeaveGroup => [Conv],
    RenameGroup => [Conv, Str],
    ListConversations => [Num, Num, Conv],
    ListMembers => [Conv],
    SetRole => [Conv, User, Num],
    GetConversation => [Conv],
    Send => [Conv, MsgId, Str],
    Sync => [Num, Num],
    AckCursor => [Num],
    History => [Conv, Num, Num, Num, Num],
    MarkRead => [Conv, Num],
    ReadReceipts => [Conv],
    SubscribePresence => [Users],
    UnsubscribePresence => [Users],
    SetStatus => [Num],
    Typing => [Conv],
    RegisterPush => [Num, Str, Bytes, Bytes],
    UnregisterPush => [],
    Ping => [Num],
    // A frame with a request_id and no body.
    Empty => [],
}

/// Ops there are (the op byte is taken modulo this).
const OP_COUNT: u8 = 9;
/// Lists hold fewer entries than this.
const LIST_MAX: u8 = 8;

mod decode;
mod encode;

impl Str {
    /// The string as a valid `String`.
    pub fn to_string_lossy(&self) -> String {
        match self {
            Str::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            Str::Repeat { len, unit } => {
                let unit: &[u8] = if unit.is_empty() { b"x" } else { unit };
                let bytes: Vec<u8> = unit.iter().copied().cycle().take(*len as usize).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
        }
    }

    /// A short string, for seeds.
    pub fn of(s: &str) -> Str {
        Str::Bytes(s.as_bytes().to_vec())
    }
}

/// A request op, for seeds: `req(Kind::Send, [..])` with a fresh id.
pub fn req(kind: Kind, args: impl IntoIterator<Item = Arg>) -> Op {
    Op::Request { id: IdMode::Fresh, kind, args: args.into_iter().collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_round_trip() {
        let script = Script {
            prologue: Prologue::Hello,
            open_b: true,
            ops: vec![
                (
                    Session::A,
                    req(Kind::Login, [Arg::User(UserRef::Me), Arg::Password(Password::Right), Arg::Str(Str::of("d"))]),
                ),
                (
                    Session::B,
                    Op::Request {
                        id: IdMode::Explicit(1 << 40),
                        kind: Kind::Send,
                        args: vec![
                            Arg::Conv(ConvRef::Seen(3)),
                            Arg::MsgId(MsgId::Raw(Str::of("x"))),
                            Arg::Str(Str::Repeat { len: 100_000, unit: b"ab".to_vec() }),
                        ],
                    },
                ),
                (
                    Session::A,
                    req(
                        Kind::CreateGroup,
                        [Arg::Str(Str::of("t")), Arg::Users(vec![UserRef::Peer, UserRef::Fresh(2)])],
                    ),
                ),
                (Session::A, Op::Mangle { at: 300, xor: 0x80 }),
                (Session::B, Op::Write(7)),
                (Session::A, Op::Hangup),
            ],
        };
        assert_eq!(Script::parse(&script.encode()), script);
    }

    #[test]
    fn every_input_decodes_and_ops_are_capped() {
        assert_eq!(Script::parse(&[]).ops, vec![]);
        let long = vec![6u8; 10_000];
        assert_eq!(Script::parse(&long).ops.len(), MAX_OPS);
        let _ = Script::parse(&[0, 0, 7, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    }
}
