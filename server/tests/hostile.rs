//! Hostile clients against a real `confabd` (a child process, so its memory
//! can be read from /proc): slowloris, silent and never-authenticating
//! connections, a connection flood past the per-address limit, a frame
//! flood, oversized frames on TCP and QUIC, 10,000 requests in flight, and
//! garbage after a valid handshake. After each attack a well-behaved client
//! on a fresh connection is served (its ping round trip is printed), and
//! the server's memory comes back near its baseline.
//!
//! (WebSocket's oversized and text messages are in `websocket.rs`;
//! authorization and tokens in `authorization.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::daemon::Daemon;
use confab_client::TransportKind;
use confab_protocol::ErrorCode;
use confab_protocol::framing::frame_bytes;
use confab_protocol::pb::{self, client_frame::Body, server_frame::Body as Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A well-behaved client on a fresh QUIC connection: the median ping round
/// trip over 20 pings.
async fn healthy_rtt(daemon: &Daemon, token: &str) -> Duration {
    let conn = daemon.resume(TransportKind::Quic, token).await;
    let mut rtts = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        conn.ping(i).await.unwrap();
        rtts.push(t.elapsed());
    }
    rtts.sort();
    rtts[rtts.len() / 2]
}

/// Waits (up to 10 s) for the server's RSS to come back within `slack` of
/// `baseline`; returns it.
async fn settled_rss(daemon: &Daemon, baseline: u64, slack: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rss = daemon.rss_kib();
        if rss <= baseline + slack || Instant::now() > deadline {
            return rss;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Attack<'a> {
    daemon: &'a Daemon,
    token: String,
    baseline_rss: u64,
    baseline_rtt: Duration,
}

impl<'a> Attack<'a> {
    async fn prepare(daemon: &'a Daemon) -> Attack<'a> {
        let conn = daemon.connect(TransportKind::Quic).await;
        let token = conn.signup("goodguy", "goodguy-password", "laptop").await.unwrap().token;
        drop(conn);
        let baseline_rtt = healthy_rtt(daemon, &token).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        Attack { daemon, token, baseline_rss: daemon.rss_kib(), baseline_rtt }
    }

    /// The well-behaved client's latency during an attack.
    async fn during(&self, what: &str) -> Duration {
        let rtt = healthy_rtt(self.daemon, &self.token).await;
        eprintln!("{what}: well-behaved ping p50 {rtt:?} during the attack (baseline {:?})", self.baseline_rtt);
        assert!(rtt < Duration::from_secs(1), "{what}: the server stopped serving others ({rtt:?})");
        rtt
    }

    /// After the attack: still served, memory back near the baseline.
    async fn after(&self, what: &str) {
        let rtt = healthy_rtt(self.daemon, &self.token).await;
        let slack = 48 * 1024;
        let rss = settled_rss(self.daemon, self.baseline_rss, slack).await;
        eprintln!("{what}: after the attack ping p50 {rtt:?}, RSS {} KiB (baseline {} KiB)", rss, self.baseline_rss);
        assert!(rtt < Duration::from_secs(1), "{what}: not serving after the attack");
        assert!(
            rss <= self.baseline_rss + slack,
            "{what}: memory stayed at {rss} KiB (baseline {})",
            self.baseline_rss
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_silent_and_unauthenticated_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &["--handshake-timeout-ms", "1000", "--auth-timeout-ms", "1500"]).await;
    let attack = Attack::prepare(&daemon).await;
    let hello = frame_bytes(&pb::ClientFrame {
        request_id: 1,
        body: Some(Body::Hello(pb::Hello { versions: vec![1], client_name: "slowloris".into(), ..Default::default() })),
    });
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..150u32 {
        let mut raw = daemon.raw().await;
        let hello = hello.clone();
        tasks.spawn(async move {
            match i % 3 {
                // Silent: never sends a byte.
                0 => {}
                // Slowloris: the Hello a byte at a time, too slowly.
                1 => {
                    for b in hello.iter() {
                        if raw.try_send_bytes(&[*b]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(400)).await;
                    }
                }
                // Handshakes, then never authenticates (pings keep it
                // "alive" for heartbeats, not for authentication).
                _ => {
                    raw.handshake().await;
                    for n in 0..10 {
                        raw.send(10 + n, Body::Ping(pb::PingRequest { nonce: n })).await;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            let code = raw.until_fatal(Duration::from_secs(10)).await;
            (i % 3, code, started.elapsed())
        });
    }
    attack.during("slowloris").await;
    let mut worst: HashMap<u32, Duration> = HashMap::new();
    while let Some(r) = tasks.join_next().await {
        let (kind, code, when) = r.unwrap();
        let expected = if kind == 2 { ErrorCode::AUTH_TIMEOUT } else { ErrorCode::HANDSHAKE_TIMEOUT };
        assert_eq!(code, expected, "kind {kind}");
        let w = worst.entry(kind).or_default();
        *w = (*w).max(when);
    }
    eprintln!("slowloris: all 150 closed; latest close per kind (silent, trickle, no auth): {worst:?}");
    assert!(worst[&0] < Duration::from_secs(4) && worst[&1] < Duration::from_secs(4), "handshake deadline of 1 s");
    assert!(worst[&2] < Duration::from_secs(5), "auth deadline of 1.5 s");
    attack.after("slowloris").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_past_the_per_address_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &["--max-connections-per-address", "20"]).await;
    // The well-behaved client comes from another address than the flood.
    let good_src: IpAddr = [127, 0, 0, 2].into();
    let mut good = daemon.raw_from(good_src).await.unwrap();
    good.signup("goodguy").await;
    let flood_src: IpAddr = [127, 0, 0, 1].into();
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..200 {
        match daemon.raw_from(flood_src).await {
            Ok(mut raw) => {
                // A refused TCP connection fails the TLS handshake or reads
                // EOF at once.
                let hello = pb::ClientFrame {
                    request_id: 1,
                    body: Some(Body::Hello(pb::Hello { versions: vec![1], ..Default::default() })),
                };
                if raw.try_send_bytes(&frame_bytes(&hello)).await.is_err() {
                    refused += 1;
                    continue;
                }
                match raw.recv_within(Duration::from_secs(5)).await {
                    Some(f) if matches!(f.body, Some(Reply::Welcome(_))) => held.push(raw),
                    _ => refused += 1,
                }
            }
            Err(_) => refused += 1,
        }
    }
    eprintln!("connection flood: {} admitted, {refused} refused (limit 20 per address)", held.len());
    assert_eq!(held.len(), 20, "exactly the per-address limit is admitted");
    let t = Instant::now();
    good.send(9, Body::Ping(pb::PingRequest { nonce: 9 })).await;
    assert!(matches!(good.recv().await.body, Some(Reply::Pong(_))));
    eprintln!("connection flood: well-behaved ping from 127.0.0.2 during the flood {:?}", t.elapsed());
    let mut other = daemon.raw_from(good_src).await.unwrap();
    other.handshake().await;
    // The refusals are counted (the HTTP listener is limited per address
    // too: ask from the other one).
    let metrics = http_get(&daemon, good_src, "/metrics").await;
    let refused_metric: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("confab_connections_refused_per_address_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(refused_metric >= 180.0, "{refused_metric}");
    // Closing the flood frees its slots.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Until the server has seen the flood's connections close, a new
        // one is still refused (the TLS handshake or the first read fails).
        if let Ok(mut raw) = daemon.raw_from(flood_src).await
            && raw
                .try_send_bytes(&frame_bytes(&pb::ClientFrame {
                    request_id: 1,
                    body: Some(Body::Hello(pb::Hello { versions: vec![1], ..Default::default() })),
                }))
                .await
                .is_ok()
            && let Some(f) = raw.recv_within(Duration::from_secs(5)).await
        {
            assert!(matches!(f.body, Some(Reply::Welcome(_))));
            break;
        }
        assert!(Instant::now() < deadline, "slots were not freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn http_get(daemon: &Daemon, src: IpAddr, path: &str) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(src, 0)).unwrap();
    let mut s = socket.connect(daemon.http.parse().unwrap()).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", daemon.http);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_flood_is_rate_limited_then_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &["--request-rate", "100", "--request-burst", "200"]).await;
    let attack = Attack::prepare(&daemon).await;
    let mut raw = daemon.raw().await;
    raw.signup("flooder").await;
    // 20,000 pings in one burst, without reading.
    let mut burst = BytesMut::new();
    for id in 0..20_000u64 {
        confab_protocol::framing::encode_frame(
            &pb::ClientFrame { request_id: 100 + id, body: Some(Body::Ping(pb::PingRequest { nonce: id })) },
            &mut burst,
        );
    }
    let _writing = raw.write_in_background(burst);
    attack.during("frame flood").await;
    let (mut pongs, mut limited, mut retry_after) = (0, 0, 0);
    let code = loop {
        match raw.recv_within(Duration::from_secs(10)).await {
            Some(pb::ServerFrame { body: Some(Reply::Pong(_)), .. }) => pongs += 1,
            Some(pb::ServerFrame { body: Some(Reply::Error(e)), .. }) if e.fatal => break ErrorCode(e.code),
            Some(pb::ServerFrame { body: Some(Reply::Error(e)), .. }) => {
                assert_eq!(e.code, ErrorCode::RATE_LIMITED.0);
                retry_after = retry_after.max(e.retry_after_ms);
                limited += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    eprintln!(
        "frame flood: {pongs} answered, {limited} RATE_LIMITED (retry_after_ms up to {retry_after}), then {code}"
    );
    assert_eq!(code, ErrorCode::RATE_LIMITED, "a persistent flooder is disconnected");
    assert!((200..400).contains(&pongs), "the burst is admitted, then the rate: {pongs}");
    assert!(retry_after > 0);
    assert!(raw.try_recv().await.is_none());
    attack.after("frame flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_in_flight_each_get_one_answer() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &["--request-rate", "1000000", "--request-burst", "1000000"]).await;
    let attack = Attack::prepare(&daemon).await;
    let mut raw = daemon.raw().await;
    raw.signup("pipeliner").await;
    let mut burst = BytesMut::new();
    for id in 0..10_000u64 {
        let body = Body::ListConversations(pb::ListConversationsRequest { limit: 10, ..Default::default() });
        confab_protocol::framing::encode_frame(
            &pb::ClientFrame { request_id: 1000 + id, body: Some(body) },
            &mut burst,
        );
    }
    let _writing = raw.write_in_background(burst);
    let mut answers: HashMap<u64, u32> = HashMap::new();
    let (mut ok, mut too_many) = (0, 0);
    while answers.len() < 10_000 {
        let f = raw.recv_within(Duration::from_secs(20)).await.expect("the session stays open");
        *answers.entry(f.request_id).or_default() += 1;
        match f.body {
            Some(Reply::ConversationList(_)) => ok += 1,
            Some(Reply::Error(e)) if e.code == ErrorCode::TOO_MANY_IN_FLIGHT.0 => too_many += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    eprintln!("10,000 in flight: {ok} answered, {too_many} TOO_MANY_IN_FLIGHT");
    assert!(answers.values().all(|&n| n == 1), "exactly one answer per request");
    assert!(ok >= 128, "at least max_in_flight were served");
    attack.during("10,000 in flight").await;
    drop(raw);
    attack.after("10,000 in flight").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_end_only_their_own_session() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]).await;
    let attack = Attack::prepare(&daemon).await;

    // Garbage after a valid handshake and login.
    let mut raw = daemon.raw().await;
    raw.signup("garbler").await;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let garbage: BytesMut = (0..64 * 1024)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // Short varint lengths, so the parser sees frames, not one
            // huge length.
            (rng & 0x3f) as u8
        })
        .collect();
    let _writing = raw.write_in_background(garbage);
    let code = raw.until_fatal(Duration::from_secs(10)).await;
    assert_eq!(code, ErrorCode::PROTOCOL_VIOLATION, "eight malformed frames in a row end the session");

    // A length prefix one byte over the limit: refused before reading it.
    let mut raw = daemon.raw().await;
    raw.handshake().await;
    let mut prefix = BytesMut::new();
    prost::encoding::encode_varint(u64::from(confab_protocol::limits::DEFAULT_MAX_FRAME_BYTES) + 1, &mut prefix);
    raw.send_bytes(&prefix).await;
    assert_eq!(raw.until_fatal(Duration::from_secs(5)).await, ErrorCode::FRAME_TOO_LARGE);
    // A varint of 2^63: the same, no allocation attempted.
    let mut raw = daemon.raw().await;
    raw.handshake().await;
    raw.send_bytes(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]).await;
    assert_eq!(raw.until_fatal(Duration::from_secs(5)).await, ErrorCode::FRAME_TOO_LARGE);

    // The same on QUIC: the session stream, and a request stream.
    let mut session = daemon.raw_quic().await;
    session
        .send(
            1,
            Body::Hello(pb::Hello {
                versions: vec![1],
                capabilities: vec!["request-streams".into()],
                ..Default::default()
            }),
        )
        .await;
    assert!(matches!(session.recv().await.body, Some(Reply::Welcome(_))));
    let mut stream = session.open_request_stream().await;
    let mut big = BytesMut::new();
    prost::encoding::encode_varint(u64::from(confab_protocol::limits::DEFAULT_MAX_FRAME_BYTES) + 1, &mut big);
    big.extend_from_slice(&vec![0u8; 600 * 1024]);
    let _ = stream.try_send_bytes(&big).await;
    let _ = stream.finish().await;
    let f = stream.recv().await;
    assert!(
        matches!(&f.body, Some(Reply::Error(e)) if e.code == ErrorCode::FRAME_TOO_LARGE.0 && !e.fatal),
        "a request stream's error is stream-level: {f:?}"
    );
    session.send_bytes(&prefix).await;
    let f = session.recv().await;
    assert!(matches!(&f.body, Some(Reply::Error(e)) if e.code == ErrorCode::FRAME_TOO_LARGE.0 && e.fatal), "{f:?}");
    attack.after("garbage and oversized frames").await;
}

/// Past `max_connections` (all transports together) a new connection is
/// not accepted: it waits in the kernel's backlog, its TLS handshake
/// unanswered, and is served as soon as another connection ends.
#[tokio::test]
async fn connections_past_the_total_wait_until_one_ends() {
    let server = common::TestServer::start_with(|c| c.max_connections = 2).await;
    let (addr, fingerprint) = (server.server().tcp_addr().unwrap(), server.server().fingerprint().to_string());
    let mut first = common::Raw::tcp(addr, &fingerprint).await.unwrap();
    first.handshake().await;
    let _second = server.connect(TransportKind::Quic).await;
    let third = {
        let fingerprint = fingerprint.clone();
        tokio::spawn(async move { common::Raw::tcp(addr, &fingerprint).await })
    };
    // Two connections hold both permits: the third gets no TLS answer.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!third.is_finished(), "a third connection was served past max_connections = 2");
    drop(first);
    let third = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("the waiting connection was not served after another one ended")
        .unwrap();
    let mut raw = third.expect("TLS handshake of the waiting connection");
    raw.handshake().await;
}
