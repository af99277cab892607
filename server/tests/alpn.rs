//! §2.2: the TCP+TLS port serves a session only to a client that offers
//! ALPN `confab/1`. A ClientHello without ALPN, or offering only another
//! protocol, is refused in the handshake with a TLS alert (`access_denied`)
//! — not served, and not a bare close. (QUIC refuses both in quinn; `--http-tls` serves HTTP
//! clients with or without ALPN.)
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
    assert!(alert(&other).contains("AlertReceived("), "an alert, not a bare close: {other:?}");

    // Offering it among others is fine, and the session works.
    let chosen = handshake(&server, &[b"h2", b"confab/1"]).await.unwrap();
    assert_eq!(chosen.as_deref(), Some(&b"confab/1"[..]));
    let c = server.connect(TransportKind::Tcp).await;
    c.signup("alice", "alice-password", "laptop").await.unwrap();
}
