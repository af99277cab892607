//! Bytes to [`Script`]: every byte string decodes, missing bytes read as 0.

use super::*;

/// Reads the fuzzer's bytes; past the end every read is 0.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&b, rest)) => {
                self.bytes = rest;
                b
            }
            None => 0,
        }
    }

    fn varint(&mut self) -> u64 {
        let mut value = 0u64;
        for i in 0..10 {
            let b = self.u8();
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                break;
            }
        }
        value
    }

    fn bytes(&mut self) -> Vec<u8> {
        let n = usize::from(self.u8()).min(self.bytes.len());
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        taken.to_vec()
    }

    fn str(&mut self) -> Str {
        // A length byte of 255 announces a repeat: the length is a varint.
        let n = self.u8();
        if n == 255 {
            let len = self.varint().min(MAX_REPEAT as u64);
            return Str::Repeat { len, unit: self.bytes() };
        }
        let n = usize::from(n).min(self.bytes.len());
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Str::Bytes(taken.to_vec())
    }

    fn conv(&mut self) -> ConvRef {
        match self.u8() % 5 {
            0 => ConvRef::Direct,
            1 => ConvRef::Group,
            2 => ConvRef::Seen(self.u8()),
            3 => ConvRef::Raw(self.varint()),
            _ => ConvRef::Zero,
        }
    }

    fn user(&mut self) -> UserRef {
        match self.u8() % 5 {
            0 => UserRef::Me,
            1 => UserRef::Peer,
            2 => UserRef::Third,
            3 => UserRef::Fresh(self.u8()),
            _ => UserRef::Raw(self.str()),
        }
    }

    fn arg(&mut self, t: ArgType) -> Arg {
        match t {
            ArgType::Conv => Arg::Conv(self.conv()),
            ArgType::User => Arg::User(self.user()),
            ArgType::Users => {
                let n = self.u8() % LIST_MAX;
                Arg::Users((0..n).map(|_| self.user()).collect())
            }
            ArgType::Device => Arg::Device(match self.u8() % 5 {
                0 => DeviceRef::Mine,
                1 => DeviceRef::Spare,
                2 => DeviceRef::Peer,
                3 => DeviceRef::Raw(self.varint()),
                _ => DeviceRef::Zero,
            }),
            ArgType::Token => Arg::Token(match self.u8() % 4 {
                0 => TokenRef::Mine,
                1 => TokenRef::Spare,
                2 => TokenRef::Peer,
                _ => TokenRef::Raw(self.str()),
            }),
            ArgType::Password => Arg::Password(match self.u8() % 2 {
                0 => Password::Right,
                _ => Password::Raw(self.str()),
            }),
            ArgType::MsgId => Arg::MsgId(match self.u8() % 3 {
                0 => MsgId::Fresh,
                1 => MsgId::Again,
                _ => MsgId::Raw(self.str()),
            }),
            ArgType::Str => Arg::Str(self.str()),
            ArgType::Strs => {
                let n = self.u8() % LIST_MAX;
                Arg::Strs((0..n).map(|_| self.str()).collect())
            }
            ArgType::Num => Arg::Num(self.varint()),
            ArgType::Nums => {
                let n = self.u8() % LIST_MAX;
                Arg::Nums((0..n).map(|_| self.varint()).collect())
            }
            ArgType::Bytes => Arg::Bytes(self.bytes()),
        }
    }

    fn op(&mut self) -> (Session, Op) {
        let b = self.u8();
        let session = if b & 0x80 == 0 { Session::A } else { Session::B };
        let op = match (b & 0x7f) % OP_COUNT {
            0 => {
                let id = match self.u8() % 8 {
                    0..=4 => IdMode::Fresh,
                    5 => IdMode::Zero,
                    6 => IdMode::Repeat,
                    _ => IdMode::Explicit(self.varint()),
                };
                let kind = Kind::ALL[usize::from(self.u8()) % Kind::ALL.len()];
                let args = kind.signature().iter().map(|t| self.arg(*t)).collect();
                Op::Request { id, kind, args }
            }
            1 => Op::Typing(self.conv()),
            2 => Op::Raw(self.bytes()),
            3 => Op::RawFrame(self.bytes()),
            4 => Op::Mangle { at: self.varint(), xor: self.u8() },
            5 => Op::Write(self.varint()),
            6 => Op::Settle,
            7 => Op::Pause(self.u8()),
            _ => Op::Hangup,
        };
        (session, op)
    }
}

impl Script {
    /// Decodes fuzzer bytes. Never fails.
    pub fn parse(data: &[u8]) -> Script {
        let mut r = Reader { bytes: data };
        let header = r.u8();
        let prologue = match header & 3 {
            1 => Prologue::Hello,
            2 => Prologue::Nothing,
            _ => Prologue::Resume,
        };
        let mut ops = Vec::new();
        while !r.is_empty() && ops.len() < MAX_OPS {
            ops.push(r.op());
        }
        Script { prologue, open_b: header & 4 != 0, ops }
    }
}
