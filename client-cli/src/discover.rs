//! Asking a server's `GET /v1/discover` (spec §2.5) which node to connect
//! to: the first listed node that serves the transport in use. A cluster
//! lists its live nodes least loaded first and leaves out one that is
//! shutting down, so asking again on every reconnect moves a client off a
//! node that told it to go. The other nodes an answer lists are asked in
//! turn when the first URL does not answer (that node may be the one that
//! died), as spec §2.5 says: "of any node it knows".

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::TransportKind;

/// How long asking one URL may take.
const WITHIN: Duration = Duration::from_secs(3);
/// The most discovery URLs asked for one connection.
const MAX_ASKED: usize = 8;
/// The most of an answer read.
const MAX_ANSWER: u64 = 1 << 20;

/// A node to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its name in the answer.
    pub node: String,
    /// `host:port` for the transport.
    pub address: String,
    /// The certificate fingerprint the answer names (hex), if any. It came
    /// over plain HTTP: a hint, not a reason to trust.
    pub fingerprint: Option<String>,
}

/// The `host:port` of a discovery URL (`http://host:port`, a path
/// allowed), or what is wrong with it.
pub fn host_of(url: &str) -> Result<&str, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| "give the server's plain HTTP address, e.g. http://127.0.0.1:7080".to_string())?;
    let host = rest.split('/').next().unwrap_or(rest);
    if host.is_empty() {
        return Err("no host: give the server's plain HTTP address, e.g. http://127.0.0.1:7080".into());
    }
    Ok(host)
}

/// What one discovery answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The node to connect to.
    pub node: Node,
    /// The discovery URL of every node listed that serves plain HTTP, to
    /// ask next time if the first URL does not answer.
    pub peers: Vec<String>,
}

/// The first node `url` (`http://host:port`) names for `transport`.
pub async fn pick(url: &str, transport: TransportKind) -> Result<Node, String> {
    ask(url, transport).await.map(|a| a.node)
}

/// Asks `urls` in order until one answers: the node it names for
/// `transport` and the nodes it lists. The error names every URL asked and
/// what each said.
pub async fn pick_first(urls: &[String], transport: TransportKind) -> Result<Answer, String> {
    let mut failures = Vec::new();
    for url in urls.iter().take(MAX_ASKED) {
        match ask(url, transport).await {
            Ok(answer) => return Ok(answer),
            Err(e) => failures.push(e),
        }
    }
    Err(failures.join("; "))
}

async fn ask(url: &str, transport: TransportKind) -> Result<Answer, String> {
    let fail = |e: String| format!("--discover {url}: {e}");
    let host = host_of(url).map_err(fail)?;
    let body = tokio::time::timeout(WITHIN, get(host, "/v1/discover"))
        .await
        .map_err(|_| fail(format!("no answer within {} s", WITHIN.as_secs())))?
        .map_err(fail)?;
    let node = choose(&body, transport).map_err(fail)?;
    Ok(Answer { node, peers: peers(&body) })
}

/// The discovery URLs (`http://host:port`) of the nodes an answer lists,
/// in its order: those whose `ws` is plain `ws://` (this client asks
/// discovery over plain HTTP only).
pub fn peers(body: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else { return Vec::new() };
    let mut out: Vec<String> = Vec::new();
    for n in v["nodes"].as_array().into_iter().flatten() {
        let Some(rest) = n["ws"].as_str().and_then(|w| w.strip_prefix("ws://")) else { continue };
        let host = rest.split('/').next().unwrap_or(rest);
        let url = format!("http://{host}");
        if !host.is_empty() && !out.contains(&url) {
            out.push(url);
        }
    }
    out
}

/// The first node of a discovery answer that serves `transport`.
pub fn choose(body: &str, transport: TransportKind) -> Result<Node, String> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("not a discovery answer: {e}"))?;
    let field = match transport {
        TransportKind::Quic => "quic",
        TransportKind::Tcp => "tcp",
        TransportKind::Ws | TransportKind::Wss => "ws",
    };
    for n in v["nodes"].as_array().into_iter().flatten() {
        let Some(addr) = n[field].as_str() else { continue };
        let address = match transport {
            // `ws://host:port/v1/ws` or `wss://…`: the client wants
            // host:port and picks the scheme from --transport.
            TransportKind::Ws | TransportKind::Wss => {
                let rest = addr.split_once("://").map_or(addr, |(_, r)| r);
                rest.split('/').next().unwrap_or(rest).to_string()
            }
            _ => addr.to_string(),
        };
        return Ok(Node {
            node: n["node"].as_str().unwrap_or("?").to_string(),
            address,
            fingerprint: n["fingerprint"].as_str().map(|f| f.trim_start_matches("sha256:").to_string()),
        });
    }
    Err(format!("no node serves {field}"))
}

/// `GET path` on `host` (`host:port`), HTTP/1.1: the body of a 200.
async fn get(host: &str, path: &str) -> Result<String, String> {
    let mut stream = tokio::net::TcpStream::connect(host).await.map_err(|e| e.to_string())?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("an incomplete HTTP answer")?;
    let status = head.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("HTTP {status}"));
    }
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Err("a chunked answer (not supported)".into());
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = r#"{"protocol":"confab.v1","nodes":[
        {"node":"b","quic":null,"tcp":"10.0.0.2:7443","ws":"ws://10.0.0.2:7080/v1/ws","fingerprint":"sha256:ab12","load":{}},
        {"node":"a","quic":"10.0.0.1:7443","tcp":"10.0.0.1:7443","ws":null,"fingerprint":"sha256:ab12","load":{}}]}"#;

    #[test]
    fn the_first_node_with_the_transport_wins() {
        let tcp = choose(ANSWER, TransportKind::Tcp).unwrap();
        assert_eq!((tcp.node.as_str(), tcp.address.as_str()), ("b", "10.0.0.2:7443"));
        assert_eq!(tcp.fingerprint.as_deref(), Some("ab12"));
        assert_eq!(choose(ANSWER, TransportKind::Quic).unwrap().node, "a");
        assert_eq!(choose(ANSWER, TransportKind::Ws).unwrap().address, "10.0.0.2:7080");
        let none = r#"{"nodes":[{"node":"a","quic":null}]}"#;
        assert!(choose(none, TransportKind::Quic).unwrap_err().contains("no node serves quic"));
        assert!(choose("<html>", TransportKind::Tcp).is_err());
    }

    #[test]
    fn the_nodes_listed_are_remembered_by_their_plain_http_address() {
        assert_eq!(peers(ANSWER), ["http://10.0.0.2:7080"]);
        let mixed = r#"{"nodes":[{"ws":"wss://a:443/v1/ws"},{"ws":"ws://b:7080/v1/ws"},{"ws":"ws://b:7080/v1/ws"},{"ws":null}]}"#;
        assert_eq!(peers(mixed), ["http://b:7080"], "wss is not asked; duplicates once");
        assert!(peers("<html>").is_empty());
    }

    #[tokio::test]
    async fn when_the_first_url_does_not_answer_the_next_is_asked() {
        // Nothing listens on the first; the second answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let body = ANSWER;
            let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            s.write_all(reply.as_bytes()).await.unwrap();
        });
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let urls = [format!("http://{dead}"), format!("http://{addr}")];
        let answer = pick_first(&urls, TransportKind::Tcp).await.unwrap();
        assert_eq!(answer.node.node, "b");
        assert_eq!(answer.peers, ["http://10.0.0.2:7080"]);
        let none = pick_first(&urls[..1], TransportKind::Tcp).await.unwrap_err();
        assert!(none.contains(&dead.to_string()), "{none}");
    }
}
