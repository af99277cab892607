// A TCP proxy for the browser e2e test: one browser reaches the server
// through it, so the test can take that browser's network away for real
// (every connection reset, new ones refused) while the other keeps talking.

import net from "node:net";
import { readFile } from "node:fs/promises";
import { extname, join, normalize } from "node:path";

export class NetProxy {
  /**
   * Forwards 127.0.0.1:<ephemeral> to `target` ({host, port}). With
   * `hostHeader`, the Host header of each connection's first request is
   * replaced by it, as a reverse proxy that sends its upstream's address
   * does (nginx's default).
   */
  constructor(target, { hostHeader = null } = {}) {
    this.target = target;
    this.hostHeader = hostHeader;
    this.up = true;
    this.sockets = new Set();
    this.pairs = new Set();
    this.accepted = 0;
    this.refused = 0;
    this.server = net.createServer((client) => this.onConnection(client));
  }

  listen() {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(0, "127.0.0.1", () => {
        this.port = this.server.address().port;
        resolve(this.port);
      });
    });
  }

  onConnection(client) {
    if (!this.up) {
      if (this.shellDir) {
        serveShell(client, this.shellDir, () => this.refused++);
        return;
      }
      this.refused++;
      client.resetAndDestroy();
      return;
    }
    this.accepted++;
    const upstream = net.connect(this.target.port, this.target.host);
    const pair = [client, upstream];
    for (const s of pair) {
      this.sockets.add(s);
      s.setNoDelay(true);
      s.on("error", () => {});
      s.on("close", () => {
        this.sockets.delete(s);
        for (const o of pair) if (o !== s && !o.destroyed) o.destroy();
      });
    }
    const entry = { pair, frozen: false };
    this.pairs.add(entry);
    client.on("close", () => this.pairs.delete(entry));
    // Forward by hand so a pair can be frozen (bytes silently dropped).
    const toUpstream = this.hostHeader ? rewriteFirstHost(this.hostHeader) : (d) => d;
    client.on("data", (d) => {
      if (entry.frozen) return;
      const out = toUpstream(d);
      if (out) upstream.write(out);
    });
    upstream.on("data", (d) => entry.frozen || client.write(d));
  }

  /**
   * Half-open: open connections stay open but carry nothing any more (as
   * when a route dies without a reset); new connections are refused. Only a
   * heartbeat can tell. restore() then resets the frozen connections.
   */
  freeze() {
    this.up = false;
    for (const p of this.pairs) p.frozen = true;
  }

  /**
   * The network goes away: every open connection is reset, new ones are
   * refused. With `shell` (a directory), the page's own files are still
   * served from it, as the browser's cache or a service worker would (a
   * reload can show the page), while the server (/v1/…) stays unreachable.
   */
  down({ shell = null } = {}) {
    this.up = false;
    this.shellDir = shell;
    for (const s of [...this.sockets]) {
      if (typeof s.resetAndDestroy === "function") s.resetAndDestroy();
      else s.destroy();
    }
  }

  /** The network is back. */
  restore() {
    this.shellDir = null;
    for (const p of [...this.pairs]) if (p.frozen) for (const s of p.pair) s.destroy();
    this.up = true;
  }

  close() {
    this.down();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * A filter for a connection's bytes that replaces the Host header of its
 * first request (held back until the header block is complete), then
 * passes everything through as it is.
 */
function rewriteFirstHost(host) {
  let head = Buffer.alloc(0);
  let done = false;
  return (d) => {
    if (done) return d;
    head = Buffer.concat([head, d]);
    const end = head.indexOf("\r\n\r\n");
    if (end < 0 && head.length < 65536) return null;
    done = true;
    if (end < 0) return head;
    const text = head.subarray(0, end).toString("latin1").replace(/^host:[^\r\n]*$/im, `Host: ${host}`);
    return Buffer.concat([Buffer.from(text, "latin1"), head.subarray(end)]);
  };
}

const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".json": "application/json" };

/**
 * Answers one HTTP request on `client` with a file of `dir` (404 when there
 * is none); a request for the server (/v1/…) is reset, as by a dead network.
 */
function serveShell(client, dir, refused) {
  let head = "";
  client.on("error", () => {});
  client.on("data", async (d) => {
    head += d.toString("latin1");
    if (!head.includes("\r\n\r\n")) return;
    client.removeAllListeners("data");
    const path = decodeURIComponent((/^[A-Z]+ ([^ ?#]*)/.exec(head)?.[1] ?? "/"));
    if (path.startsWith("/v1/")) {
      refused();
      client.resetAndDestroy();
      return;
    }
    const file = normalize(join(dir, path === "/" ? "index.html" : path));
    let body = null;
    if (file.startsWith(normalize(dir))) body = await readFile(file).catch(() => null);
    const status = body ? "200 OK" : "404 Not Found";
    body ??= Buffer.from("not found\n");
    const type = TYPES[extname(file)] ?? "application/octet-stream";
    client.end(Buffer.concat([Buffer.from(`HTTP/1.1 ${status}\r\nContent-Type: ${type}\r\nContent-Length: ${body.length}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n`, "latin1"), body]));
  });
}
