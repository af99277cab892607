//! QUIC rules of spec §2.1 that have no frame to carry them: what the
//! connection itself shows.
//! - no unidirectional streams are granted (opening one cannot complete);
//! - no session stream within the handshake deadline: closed with 107;
//! - a client's FIN on the session stream: the server closes with code 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Raw;
use common::TestServer;
use confab_protocol::ErrorCode;

fn application_close(e: &quinn::ConnectionError) -> Option<(u64, String)> {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => {
            Some((c.error_code.into_inner(), String::from_utf8_lossy(&c.reason).into_owned()))
        }
        _ => None,
    }
}

#[tokio::test]
async fn no_unidirectional_streams_are_granted() {
    let server = TestServer::start().await;
    let s = server.server();
    let conn = Raw::quic_connection_to(s.quic_addr().unwrap(), s.fingerprint()).await;
    // Control: a bidirectional stream (the session stream) opens at once.
    let (_send, _recv) = tokio::time::timeout(Duration::from_secs(5), conn.open_bi()).await.unwrap().unwrap();
    // A unidirectional one waits for credit the server never gives.
    let uni = tokio::time::timeout(Duration::from_secs(1), conn.open_uni()).await;
    assert!(uni.is_err(), "the server granted a unidirectional stream");
}

#[tokio::test]
async fn no_session_stream_within_the_handshake_deadline_closes_with_107() {
    let server = TestServer::start_with(|c| c.handshake_timeout_ms = 300).await;
    let s = server.server();
    let conn = Raw::quic_connection_to(s.quic_addr().unwrap(), s.fingerprint()).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await.unwrap();
    let (code, reason) = application_close(&closed).unwrap_or_else(|| panic!("closed otherwise: {closed}"));
    assert_eq!(code, u64::from(ErrorCode::HANDSHAKE_TIMEOUT.0));
    assert_eq!(reason, "no session stream");
}

#[tokio::test]
async fn a_fin_on_the_session_stream_ends_it_with_code_0() {
    let server = TestServer::start().await;
    let s = server.server();
    let mut raw = Raw::quic(s.quic_addr().unwrap(), s.fingerprint()).await;
    raw.handshake().await;
    raw.finish().await.unwrap();
    let conn = raw.quic_connection().clone();
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await.unwrap();
    let (code, _) = application_close(&closed).unwrap_or_else(|| panic!("closed otherwise: {closed}"));
    assert_eq!(code, 0);
}
