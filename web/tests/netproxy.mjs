// A TCP proxy for the browser e2e test: one browser reaches the server
// through it, so the test can take that browser's network away for real
// (every connection reset, new ones refused) while the other keeps talking.

import net from "node:net";

export class NetProxy {
  /** Forwards 127.0.0.1:<ephemeral> to `target` ({host, port}). */
  constructor(target) {
    this.target = target;
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
    client.on("data", (d) => entry.frozen || upstream.write(d));
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

  /** The network goes away: every open connection is reset, new ones are refused. */
  down() {
    this.up = false;
    for (const s of [...this.sockets]) {
      if (typeof s.resetAndDestroy === "function") s.resetAndDestroy();
      else s.destroy();
    }
  }

  /** The network is back. */
  restore() {
    for (const p of [...this.pairs]) if (p.frozen) for (const s of p.pair) s.destroy();
    this.up = true;
  }

  close() {
    this.down();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
