//! §2.1, §2.2: the TCP+TLS and QUIC ports serve a session only to a client
//! that offers ALPN `confab/1`, and refuse the others in the handshake with
//! a TLS alert — not served, and not a bare close: on TCP, a ClientHello
//! offering only other protocols gets `no_application_protocol` (RFC 7301
//! §3.2) and one without the ALPN extension `access_denied`; on QUIC both
//! get `no_application_protocol` (QUIC error 0x178, RFC 9001 §8.1).
//! (`--http-tls` serves HTTP clients with or without ALPN.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::TestServer;
use confab_client::TransportKind;
use confab_client::tls::Trust;

/// A TLS handshake with the TCP port offering `alpn`; the error, if any.
async fn handshake(server: &TestServer, alpn: &[&[u8]]) -> Result<Option<Vec<u8>>, std::io::Error> {
    let s = server.server();
    let mut config =
        (*confab_client::tls::rustls_config(Trust::Fingerprint(s.fingerprint().to_string())).unwrap()).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(s.tcp_addr().unwrap()).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
    Ok(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
}

/// The error as rustls names it (`AlertReceived(…)` for an alert).
fn alert(e: &std::io::Error) -> String {
    format!("{e:?}")
}

#[tokio::test]
async fn a_client_hello_without_confab_alpn_is_refused_with_an_alert() {
    let server = TestServer::start().await;

    let none = handshake(&server, &[]).await.expect_err("no ALPN: refused");
    assert!(alert(&none).contains("AlertReceived(AccessDenied)"), "an access_denied alert, not a bare close: {none:?}");

    let other = handshake(&server, &[b"h2"]).await.expect_err("only h2: refused");
    assert!(
        alert(&other).contains("AlertReceived(NoApplicationProtocol)"),
        "a no_application_protocol alert, not a bare close: {other:?}"
    );

    // Offering it among others is fine, and the session works.
    let chosen = handshake(&server, &[b"h2", b"confab/1"]).await.unwrap();
    assert_eq!(chosen.as_deref(), Some(&b"confab/1"[..]));
    let c = server.connect(TransportKind::Tcp).await;
    c.signup("alice", "alice-password", "laptop").await.unwrap();
}

/// A QUIC handshake with the server offering `alpn`; how it ended.
async fn quic_handshake(server: &TestServer, alpn: &[&[u8]]) -> Result<(), quinn::ConnectionError> {
    let s = server.server();
    let mut config =
        (*confab_client::tls::rustls_config(Trust::Fingerprint(s.fingerprint().to_string())).unwrap()).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(config)).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let connecting = endpoint.connect(s.quic_addr().unwrap(), "localhost").unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), connecting).await.expect("the handshake ended").map(drop)
}

#[tokio::test]
async fn a_quic_client_hello_without_confab_alpn_is_refused_with_no_application_protocol() {
    let server = TestServer::start().await;
    // TLS alert 120 (no_application_protocol) as a QUIC CRYPTO_ERROR: 0x100 + 120.
    for alpn in [&[][..], &[&b"h3"[..]][..]] {
        let e = quic_handshake(&server, alpn).await.expect_err("refused");
        match &e {
            quinn::ConnectionError::ConnectionClosed(c) => {
                assert_eq!(u64::from(c.error_code), 0x178, "offering {alpn:?}: {e}");
            }
            other => panic!("offering {alpn:?}: closed otherwise: {other}"),
        }
    }
    quic_handshake(&server, &[b"h3", b"confab/1"]).await.unwrap();
}
