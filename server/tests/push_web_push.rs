//! Web Push end to end: a local HTTPS receiver plays the browser's push
//! service. It checks the VAPID JWT against the key the server advertised
//! in Welcome and decrypts the aes128gcm body with the subscription's
//! private key (a test-only key pair), using an independent RFC 8291
//! implementation; the payload is content-free.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod push_support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use confab_protocol::pb;
use confab_protocol::pb::client_frame::Body;
use confab_protocol::pb::server_frame::Body as Reply;
use push_support::*;
use web_push_native::p256;
use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_push_is_vapid_signed_encrypted_and_content_free() {
    let certs = tempfile::tempdir().unwrap();
    let (mut push_service, ca) = Receiver::https(certs.path()).await;
    let server = PushServer::start(|c| {
        c.push.ca_file = Some(ca);
        c.push.vapid_subject = "mailto:ops@example.com".into();
        // Web Push endpoints are https only; plain http stays refused.
        c.push.allow_http = false;
    })
    .await;
    let alice = server.connect().await;
    let a = alice.signup("alice", "alice-password", "laptop").await.unwrap();
    let bob = server.connect().await;
    let b = bob.signup("bob", "bob-password", "browser").await.unwrap();

    // The advertised key: an uncompressed P-256 point, base64url.
    let vapid_b64 = bob.welcome().vapid_public_key.clone();
    let vapid = URL_SAFE_NO_PAD.decode(&vapid_b64).unwrap();
    assert_eq!((vapid.len(), vapid[0]), (65, 4));

    // The browser's subscription: a key pair and auth secret that only the
    // "browser" (this test) knows.
    let ua = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let p256dh = ua.public_key().to_encoded_point(false).as_bytes().to_vec();
    let auth: [u8; 16] = rand::random();
    let endpoint = push_service.url("/wpush/v2/sub-7f3a");
    let subscribe = |endpoint: String, p256dh: Vec<u8>| {
        Body::RegisterPush(pb::RegisterPushRequest {
            target: Some(pb::register_push_request::Target::WebPush(pb::WebPushTarget {
                endpoint,
                p256dh: p256dh.into(),
                auth: auth.to_vec().into(),
            })),
        })
    };
    // A key that is not a curve point is refused at registration.
    let mut bad = p256dh.clone();
    bad[64] ^= 1;
    let err = bob.request(subscribe(endpoint.clone(), bad)).await.unwrap_err();
    assert_eq!(err.code(), Some(confab_protocol::ErrorCode::INVALID_ARGUMENT));
    match bob.request(subscribe(endpoint.clone(), p256dh)).await.unwrap() {
        Reply::PushRegistered(r) => assert!(r.webhook_secret.is_empty()),
        other => panic!("expected PushRegistered, got {other:?}"),
    }
    // Webhooks over plain http are refused on this server.
    let target = pb::register_push_request::Target::Webhook(pb::WebhookTarget { url: "http://127.0.0.1:9/x".into() });
    let err = bob.request(Body::RegisterPush(pb::RegisterPushRequest { target: Some(target) })).await.unwrap_err();
    assert_eq!(err.code(), Some(confab_protocol::ErrorCode::INVALID_ARGUMENT));
    drop(bob);

    let dm = alice.open_direct("bob").await.unwrap();
    let sent_at = tokio::time::Instant::now();
    alice.send(dm.conversation_id, "m1", "meet at the old mill at noon").await.unwrap();
    let r = push_service.next(Duration::from_secs(5)).await;
    eprintln!("message → Web Push latency: {:?} (push.delay_ms = 300)", r.at - sent_at);

    // RFC 8030 delivery headers.
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/wpush/v2/sub-7f3a");
    assert_eq!(r.header("content-encoding"), "aes128gcm");
    assert_eq!(r.header("content-type"), "application/octet-stream");
    assert_eq!(r.header("ttl"), "86400");
    assert_eq!(r.header("urgency"), "high");
    assert_eq!(r.header("topic"), format!("c{:x}", dm.conversation_id));

    // RFC 8292: Authorization: vapid t=<JWT>, k=<the advertised key>.
    let authorization = r.header("authorization");
    let (jwt, k) = authorization.strip_prefix("vapid t=").unwrap().split_once(", k=").unwrap();
    assert_eq!(k, vapid_b64);
    let (signing_input, signature) = jwt.rsplit_once('.').unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &vapid)
        .verify(signing_input.as_bytes(), &URL_SAFE_NO_PAD.decode(signature).unwrap())
        .expect("the VAPID JWT is signed with the advertised key");
    let (header, claims) = signing_input.split_once('.').unwrap();
    let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    assert_eq!(claims["aud"], format!("https://{}", push_service.addr));
    assert_eq!(claims["sub"], "mailto:ops@example.com");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let exp = claims["exp"].as_u64().unwrap();
    assert!(exp > now && exp <= now + 24 * 3600, "exp {exp} must be within 24 h of {now}");

    // RFC 8291: only the subscription's private key opens it.
    let plaintext = web_push_native::decrypt(r.body.to_vec(), &ua, web_push_native::Auth::from_slice(&auth))
        .expect("decrypts with the subscription's private key");
    let other = p256::SecretKey::random(&mut rand::rngs::OsRng);
    assert!(web_push_native::decrypt(r.body.to_vec(), &other, web_push_native::Auth::from_slice(&auth)).is_err());
    let p: serde_json::Value = serde_json::from_slice(&plaintext).unwrap();
    assert_eq!(p["v"], 1);
    assert_eq!(p["type"], "message");
    assert_eq!(p["user_id"], b.user_id.to_string());
    assert_eq!(p["device_id"], b.device_id.to_string());
    assert_eq!(p["conversation_id"], dm.conversation_id.to_string());
    assert_eq!(p["seq"], "1");
    assert_eq!(p["unread_count"], "1");
    assert_eq!(p["sender_id"], a.user_id.to_string());
    assert_eq!(p["sender_username"], "alice");
    assert!(p.get("preview").is_none());
    assert!(!String::from_utf8_lossy(&plaintext).contains("mill"), "no message text by default");
    // Padded, so the length says little: a 128-byte multiple plus framing.
    assert_eq!((r.body.len() - 86 - 16) % 128, 0);

    // Exactly one for m1: once its delivery is done, a second message
    // queues a new job whose notification is the next request the push
    // service gets.
    assert_eq!(server.metrics().queued.load(std::sync::atomic::Ordering::Relaxed), 1);
    eventually(Duration::from_secs(5), || async { (server.metrics().sent_total() == 1).then_some(()) }).await;
    alice.send(dm.conversation_id, "m2", "or at one").await.unwrap();
    assert_eq!(server.metrics().queued.load(std::sync::atomic::Ordering::Relaxed), 2);
    let r = push_service.next(Duration::from_secs(5)).await;
    let plaintext = web_push_native::decrypt(r.body.to_vec(), &ua, web_push_native::Auth::from_slice(&auth)).unwrap();
    let p: serde_json::Value = serde_json::from_slice(&plaintext).unwrap();
    assert_eq!(p["seq"], "2", "the next request is m2's: {p}");
    server.stop().await;
}
