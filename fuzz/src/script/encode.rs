//! [`Script`] to bytes, the exact inverse of decoding (for seeds).

use super::*;

impl Script {
    /// The bytes that [`Script::parse`] turns back into this script.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        let prologue = match self.prologue {
            Prologue::Resume => 0,
            Prologue::Hello => 1,
            Prologue::Nothing => 2,
        };
        w.u8(prologue | if self.open_b { 4 } else { 0 });
        for (session, op) in &self.ops {
            w.op(*session, op);
        }
        w.out
    }
}

#[derive(Default)]
struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn u8(&mut self, b: u8) {
        self.out.push(b);
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.out.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
    }

    fn bytes(&mut self, b: &[u8]) {
        // Longer byte strings cannot be expressed; seeds never need them.
        let b = &b[..b.len().min(255)];
        self.u8(b.len() as u8);
        self.out.extend_from_slice(b);
    }

    fn str(&mut self, s: &Str) {
        match s {
            Str::Bytes(b) => {
                // 255 would announce a repeat.
                let b = &b[..b.len().min(254)];
                self.u8(b.len() as u8);
                self.out.extend_from_slice(b);
            }
            Str::Repeat { len, unit } => {
                self.u8(255);
                self.varint(*len);
                self.bytes(unit);
            }
        }
    }

    fn conv(&mut self, c: ConvRef) {
        match c {
            ConvRef::Direct => self.u8(0),
            ConvRef::Group => self.u8(1),
            ConvRef::Seen(k) => {
                self.u8(2);
                self.u8(k);
            }
            ConvRef::Raw(id) => {
                self.u8(3);
                self.varint(id);
            }
            ConvRef::Zero => self.u8(4),
        }
    }

    fn user(&mut self, u: &UserRef) {
        match u {
            UserRef::Me => self.u8(0),
            UserRef::Peer => self.u8(1),
            UserRef::Third => self.u8(2),
            UserRef::Fresh(k) => {
                self.u8(3);
                self.u8(*k);
            }
            UserRef::Raw(s) => {
                self.u8(4);
                self.str(s);
            }
        }
    }

    fn arg(&mut self, a: &Arg) {
        match a {
            Arg::Conv(c) => self.conv(*c),
            Arg::User(u) => self.user(u),
            Arg::Users(us) => {
                self.u8(us.len() as u8 % LIST_MAX);
                us.iter().take(usize::from(LIST_MAX - 1)).for_each(|u| self.user(u));
            }
            Arg::Device(d) => match d {
                DeviceRef::Mine => self.u8(0),
                DeviceRef::Spare => self.u8(1),
                DeviceRef::Peer => self.u8(2),
                DeviceRef::Raw(id) => {
                    self.u8(3);
                    self.varint(*id);
                }
                DeviceRef::Zero => self.u8(4),
            },
            Arg::Token(t) => match t {
                TokenRef::Mine => self.u8(0),
                TokenRef::Spare => self.u8(1),
                TokenRef::Peer => self.u8(2),
                TokenRef::Raw(s) => {
                    self.u8(3);
                    self.str(s);
                }
            },
            Arg::Password(p) => match p {
                Password::Right => self.u8(0),
                Password::Raw(s) => {
                    self.u8(1);
                    self.str(s);
                }
            },
            Arg::MsgId(m) => match m {
                MsgId::Fresh => self.u8(0),
                MsgId::Again => self.u8(1),
                MsgId::Raw(s) => {
                    self.u8(2);
                    self.str(s);
                }
            },
            Arg::Str(s) => self.str(s),
            Arg::Strs(ss) => {
                self.u8(ss.len() as u8 % LIST_MAX);
                ss.iter().take(usize::from(LIST_MAX - 1)).for_each(|s| self.str(s));
            }
            Arg::Num(n) => self.varint(*n),
            Arg::Nums(ns) => {
                self.u8(ns.len() as u8 % LIST_MAX);
                ns.iter().take(usize::from(LIST_MAX - 1)).for_each(|n| self.varint(*n));
            }
            Arg::Bytes(b) => self.bytes(b),
        }
    }

    fn op(&mut self, session: Session, op: &Op) {
        let s = match session {
            Session::A => 0,
            Session::B => 0x80,
        };
        match op {
            Op::Request { id, kind, args } => {
                self.u8(s);
                match id {
                    IdMode::Fresh => self.u8(0),
                    IdMode::Zero => self.u8(5),
                    IdMode::Repeat => self.u8(6),
                    IdMode::Explicit(v) => {
                        self.u8(7);
                        self.varint(*v);
                    }
                }
                let k = Kind::ALL.iter().position(|k| k == kind).unwrap_or(0);
                self.u8(k as u8);
                args.iter().for_each(|a| self.arg(a));
            }
            Op::Typing(c) => {
                self.u8(s | 1);
                self.conv(*c);
            }
            Op::Raw(b) => {
                self.u8(s | 2);
                self.bytes(b);
            }
            Op::RawFrame(b) => {
                self.u8(s | 3);
                self.bytes(b);
            }
            Op::Mangle { at, xor } => {
                self.u8(s | 4);
                self.varint(*at);
                self.u8(*xor);
            }
            Op::Write(n) => {
                self.u8(s | 5);
                self.varint(*n);
            }
            Op::Settle => self.u8(s | 6),
            Op::Pause(n) => {
                self.u8(s | 7);
                self.u8(*n);
            }
            Op::Hangup => self.u8(s | 8),
        }
    }
}
