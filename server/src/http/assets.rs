//! The browser client's static files: embedded at build time from `web/`
//! (see `build.rs`), or read from a directory given with `--web-dir` so the
//! client can be developed without rebuilding the server.

use std::path::{Component, Path, PathBuf};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

/// Where the files come from.
#[derive(Debug, Clone)]
pub enum Assets {
    /// The copy built into the binary.
    Embedded,
    /// A directory on disk.
    Dir(PathBuf),
}

/// Content type by file extension.
pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        "proto" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The relative path a request names, or `None` when it tries to leave
/// the asset root or names a hidden or excluded file.
fn clean(path: &str) -> Option<String> {
    let path = path.trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    let mut parts = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => {
                let p = p.to_str()?;
                if p.starts_with('.') {
                    return None;
                }
                parts.push(p);
            }
            _ => return None,
        }
    }
    let first = parts.first()?;
    if matches!(*first, "node_modules" | "tests" | "package.json" | "package-lock.json") {
        return None;
    }
    Some(parts.join("/"))
}

impl Assets {
    /// Whether there is a client to serve at all.
    pub fn available(&self) -> bool {
        match self {
            Assets::Embedded => embedded::FILES.iter().any(|(p, _)| *p == "index.html"),
            Assets::Dir(d) => d.join("index.html").is_file(),
        }
    }

    /// Serves one file.
    pub async fn serve(&self, path: &str) -> Response {
        let Some(rel) = clean(path) else { return not_found() };
        let body: Vec<u8> = match self {
            Assets::Embedded => match embedded::FILES.iter().find(|(p, _)| *p == rel) {
                Some((_, bytes)) => bytes.to_vec(),
                None => return not_found(),
            },
            Assets::Dir(dir) => match read_inside(dir, &rel).await {
                Some(b) => b,
                // Missing, a directory, unreadable, or outside the root:
                // nothing to serve either way.
                None => return not_found(),
            },
        };
        let mut resp = body.into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(&rel)));
        // Small files that change with the server: always revalidate.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                 style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
            ),
        );
        resp
    }
}

/// The file `rel` under `dir`, if it resolves inside `dir`: a symbolic
/// link in the web directory that points out of it (at the data dir, at
/// /etc) is not followed there.
async fn read_inside(dir: &Path, rel: &str) -> Option<Vec<u8>> {
    let root = tokio::fs::canonicalize(dir).await.ok()?;
    let file = tokio::fs::canonicalize(dir.join(rel)).await.ok()?;
    if !file.starts_with(&root) {
        tracing::debug!(path = %rel, "a web file resolves outside the web directory; not served");
        return None;
    }
    tokio::fs::read(&file).await.ok()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_root() {
        assert_eq!(clean("/").as_deref(), Some("index.html"));
        assert_eq!(clean("/app.js").as_deref(), Some("app.js"));
        assert_eq!(clean("/img/logo.svg").as_deref(), Some("img/logo.svg"));
        assert_eq!(clean("/../Cargo.toml"), None);
        assert_eq!(clean("/a/../../b"), None);
        assert_eq!(clean("/.git/config"), None);
        assert_eq!(clean("/node_modules/x.js"), None);
        assert_eq!(clean("/tests/e2e.mjs"), None);
        assert_eq!(clean("/package.json"), None);
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("a/b.MJS"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("x"), "application/octet-stream");
    }
}
