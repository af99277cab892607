//! Replays every vector of spec/vectors/invalid on a live server, as
//! spec/vectors/README.md ("Against a live server") says: each on a fresh
//! session, after its `after` frames and what its `needs` names (nothing,
//! a handshake, or authentication as a user of the pool).
//! The server's one answer must match `expect` (or an `also_accepted`) in
//! code, request_id and fatal.

use std::time::{Duration, Instant};

use confab_protocol::ErrorCode;
use confab_protocol::pb::{self, server_frame::Body as Reply};
use serde_json::Value;

use crate::report::{Outcome, Report};
use crate::server::Ctx;
use crate::wire::{Fallible, Peer, Recv, Transport};

include!(concat!(env!("OUT_DIR"), "/invalid_vectors.rs"));

/// What a vector expects.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expect {
    code: u32,
    request_id: u64,
    fatal: bool,
}

fn expect_of(v: &Value) -> Option<Expect> {
    Some(Expect {
        code: u32::try_from(v.get("code")?.as_u64()?).ok()?,
        request_id: v.get("request_id")?.as_str()?.parse().ok()?,
        fatal: v.get("fatal")?.as_bool()?,
    })
}

/// Replays them all into `report` (ids `vector.<name>`), and on WebSocket
/// the vectors of spec/vectors/websocket (ids `vector.ws.<name>`).
pub async fn replay_all(ctx: &Ctx, report: &mut Report, only: &[String]) {
    replay_invalid(ctx, report, only).await;
    if ctx.target.transport == Transport::Ws {
        replay_websocket(ctx, report, only).await;
    }
}

async fn replay_websocket(ctx: &Ctx, report: &mut Report, only: &[String]) {
    for (name, json) in WEBSOCKET {
        let id = format!("vector.ws.{name}");
        if !only.is_empty() && !only.iter().any(|o| id.contains(o.as_str())) {
            continue;
        }
        let started = Instant::now();
        let (title, outcome) = match serde_json::from_str::<Value>(json) {
            Err(e) => (name.to_string(), Outcome::Fail(format!("the vector does not parse: {e}"))),
            Ok(v) => {
                let title = v.get("description").and_then(Value::as_str).unwrap_or(name).to_string();
                let outcome = match tokio::time::timeout(Duration::from_secs(30), replay_ws(ctx, &v)).await {
                    Ok(Ok(())) => Outcome::Pass,
                    Ok(Err(why)) => Outcome::Fail(why),
                    Err(_) => Outcome::Fail("no answer within 30 s".into()),
                };
                (title, outcome)
            }
        };
        report.add(&id, "§2.3", &title, outcome, started.elapsed());
    }
}

async fn replay_ws(ctx: &Ctx, v: &Value) -> Fallible<()> {
    let expect = v.get("expect").and_then(expect_of).ok_or("the vector has no usable expect")?;
    let close = v.get("expect").and_then(|e| e.get("close_status")).and_then(Value::as_u64);
    let msg = v.get("message").ok_or("the vector has no message")?;
    let mut p = Peer::connect(&ctx.target).await?;
    prepare(ctx, &mut p, v).await?;
    match msg.get("type").and_then(Value::as_str) {
        Some("text") => p.send_text(msg.get("text").and_then(Value::as_str).unwrap_or_default()).await?,
        Some("binary") => {
            let len = msg.get("length").and_then(Value::as_u64).ok_or("a binary message without length")?;
            let fill =
                msg.get("fill").and_then(Value::as_str).map_or(Ok(vec![0]), hex::decode).map_err(|e| e.to_string())?;
            let len = usize::try_from(len).map_err(|e| e.to_string())?;
            let body: Vec<u8> = fill.iter().copied().cycle().take(len).collect();
            // The server may close before it has read it all.
            let _ = p.send_bytes(&body).await;
        }
        other => return Err(format!("unknown message type {other:?}")),
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut got_error = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match p.recv_within(left).await.map_err(|e| format!("no Error: {e}"))? {
            Recv::Frame(pb::ServerFrame { request_id, body: Some(Reply::Error(e)) }) if !got_error => {
                let got = Expect { code: e.code, request_id, fatal: e.fatal };
                if got != expect {
                    return Err(format!(
                        "got Error {} ({}) request_id {request_id}{}, expected {} ({}) fatal",
                        e.code,
                        ErrorCode(e.code),
                        if e.fatal { " fatal" } else { "" },
                        expect.code,
                        ErrorCode(expect.code)
                    ));
                }
                got_error = true;
            }
            Recv::Frame(f) if got_error => return Err(format!("a frame after the fatal Error: {f:?}")),
            Recv::Frame(_) => {}
            Recv::Closed(status) if got_error => {
                return match (close, status) {
                    (Some(want), Some(s)) if u64::from(s) != want => {
                        Err(format!("closed with status {s}, expected {want}"))
                    }
                    (Some(want), None) => Err(format!("closed without a close frame (expected status {want})")),
                    _ => Ok(()),
                };
            }
            Recv::Closed(_) | Recv::Cut(_) => return Err("the connection closed without the Error".into()),
        }
    }
}

async fn replay_invalid(ctx: &Ctx, report: &mut Report, only: &[String]) {
    for (name, json) in INVALID {
        let id = format!("vector.{name}");
        if !only.is_empty() && !only.iter().any(|o| id.contains(o.as_str())) {
            continue;
        }
        let started = Instant::now();
        let (section, title, outcome) = match serde_json::from_str::<Value>(json) {
            Err(e) => ("§3".to_string(), name.to_string(), Outcome::Fail(format!("the vector does not parse: {e}"))),
            Ok(v) => {
                let stage =
                    v.get("expect").and_then(|e| e.get("stage")).and_then(Value::as_str).unwrap_or("?").to_string();
                let section = match stage.as_str() {
                    "framing" | "parse" => "§3",
                    "session" => "§4.3",
                    _ => "§6–§10",
                };
                let title = v.get("description").and_then(Value::as_str).unwrap_or(name).to_string();
                let outcome = match tokio::time::timeout(Duration::from_secs(30), replay(ctx, &v, &stage)).await {
                    Ok(Ok(None)) => Outcome::Pass,
                    Ok(Ok(Some(skip))) => Outcome::Skip(skip),
                    Ok(Err(why)) => Outcome::Fail(why),
                    Err(_) => Outcome::Fail("no answer within 30 s".into()),
                };
                (format!("{section} ({stage})"), title, outcome)
            }
        };
        report.add(&id, &section, &title, outcome, started.elapsed());
    }
}

/// Tells the server what the vector's `needs` says it must have been told
/// first: nothing, a handshake, or authentication as a user of the pool.
async fn prepare(ctx: &Ctx, p: &mut Peer, v: &Value) -> Fallible<()> {
    match v.get("needs").and_then(Value::as_str) {
        Some("fresh-session") => {}
        Some("handshake") => {
            p.hello().await?;
        }
        Some("authenticated") => {
            p.hello().await?;
            p.resume(&ctx.users[3].token).await?;
        }
        other => {
            return Err(format!("the vector's \"needs\" is {other:?}, not fresh-session, handshake or authenticated"));
        }
    }
    Ok(())
}

/// Strips a frame's length prefix (WebSocket carries none).
fn payload(frame: &[u8]) -> Option<Vec<u8>> {
    let mut b = frame;
    let len = prost::encoding::decode_varint(&mut b).ok()?;
    (usize::try_from(len).ok()? == b.len()).then(|| b.to_vec())
}

fn bytes_of(hex_str: &str, ws: bool) -> Fallible<Option<Vec<u8>>> {
    let raw = hex::decode(hex_str).map_err(|e| format!("bad hex in the vector: {e}"))?;
    Ok(if ws { payload(&raw) } else { Some(raw) })
}

async fn replay(ctx: &Ctx, v: &Value, stage: &str) -> Fallible<Option<String>> {
    let ws = ctx.target.transport == Transport::Ws;
    if ws && stage == "framing" {
        return Ok(Some("WebSocket messages carry no length prefix (§2.3)".into()));
    }
    let expect = v.get("expect").and_then(expect_of).ok_or("the vector has no usable expect")?;
    let mut accepted = vec![expect.clone()];
    if let Some(Value::Array(more)) = v.get("also_accepted") {
        accepted.extend(more.iter().filter_map(expect_of));
    }
    let hex_str = v.get("hex").and_then(Value::as_str).ok_or("the vector has no hex")?;
    let Some(bytes) = bytes_of(hex_str, ws)? else {
        return Ok(Some(
            "the frame's length prefix does not match its bytes, so it cannot be one WebSocket message".into(),
        ));
    };

    let mut p = Peer::connect(&ctx.target).await?;
    if let Some(Value::Array(after)) = v.get("after") {
        for a in after {
            let Some(b) = bytes_of(a.as_str().ok_or("a non-string in after")?, ws)? else {
                return Ok(Some("an after frame cannot be one WebSocket message".into()));
            };
            p.send_bytes(&b).await?;
        }
    }
    // The vector says what the server must have been told before it.
    prepare(ctx, &mut p, v).await?;
    p.send_bytes(&bytes).await?;
    // The first Error is the answer (Welcome and the like answer the
    // after frames).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match p.recv_within(left).await.map_err(|e| format!("no Error: {e}"))? {
            Recv::Frame(pb::ServerFrame { request_id, body: Some(Reply::Error(e)) }) => {
                let got = Expect { code: e.code, request_id, fatal: e.fatal };
                if accepted.contains(&got) {
                    return Ok(None);
                }
                return Err(format!(
                    "got Error {} ({}) request_id {request_id}{}, expected {} ({}) request_id {}{}",
                    e.code,
                    ErrorCode(e.code),
                    if e.fatal { " fatal" } else { "" },
                    expect.code,
                    ErrorCode(expect.code),
                    expect.request_id,
                    if expect.fatal { " fatal" } else { "" }
                ));
            }
            Recv::Frame(_) => {}
            Recv::Cut(n) => return Err(format!("the connection ended mid-frame ({n} bytes) without an Error")),
            Recv::Closed(status) => {
                return Err(format!(
                    "the connection closed without an Error{}",
                    status.map(|s| format!(" (close status {s})")).unwrap_or_default()
                ));
            }
        }
    }
}
