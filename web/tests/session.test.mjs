// web/client.js against a scripted in-memory server speaking real frames
// (encoded and decoded with web/proto.js): the delivery rules of
// PROTOCOL.md §8.4–§8.7 (gap detection, Sync paging, dedupe, acks), the
// outbox (§8.2), heartbeats (§4.6), resume failures (§6.3) and fatal errors.

import { test } from "node:test";
import assert from "node:assert/strict";

import { Session } from "../client.js";
import { encode, decode, clientBody, ErrorCode } from "../proto.js";

class MemoryStorage {
  constructor() {
    this.m = new Map();
  }
  getItem(k) {
    return this.m.has(k) ? this.m.get(k) : null;
  }
  setItem(k, v) {
    this.m.set(k, String(v));
  }
  removeItem(k) {
    this.m.delete(k);
  }
}

/** One user's server side: an inbox, a cursor, sessions over fake WebSockets. */
class FakeServer {
  constructor({ heartbeatMs = 20000, pageLimit = 100 } = {}) {
    this.heartbeatMs = heartbeatMs;
    this.pageLimit = pageLimit;
    this.inbox = []; // InboxEvent objects, inbox[i].inboxSeq = i + 1
    this.cursor = 0n;
    this.token = "tok-1";
    this.sockets = [];
    this.received = []; // every ClientFrame, in order
    this.sentIds = new Map(); // client_msg_id -> message
    this.nextSeq = 1n;
    this.hooks = {}; // body name -> fn(frame, ws) returning true when handled
    this.blackhole = false;
    this.connections = 0;
    const server = this;
    this.WebSocket = class FakeWebSocket {
      constructor(url, protocol) {
        this.url = url;
        this.protocol = protocol;
        this.readyState = 0;
        this.binaryType = "blob";
        server.sockets.push(this);
        server.connections++;
        server.onConnect?.();
        setTimeout(() => {
          this.readyState = 1;
          this.onopen?.({});
        }, 1);
      }
      send(bytes) {
        if (this.readyState !== 1) throw new Error("not open");
        if (server.blackhole) return;
        const frame = decode("ClientFrame", bytes);
        server.received.push(frame);
        setTimeout(() => server.handle(this, frame), 1);
      }
      close(code = 1000) {
        if (this.readyState >= 2) return;
        this.readyState = 3;
        setTimeout(() => this.onclose?.({ code, reason: "" }), 1);
      }
      // server side
      push(frame) {
        if (this.readyState !== 1 || server.blackhole) return;
        const bytes = encode("ServerFrame", frame);
        const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
        this.onmessage?.({ data: buf });
      }
      drop() {
        this.readyState = 3;
        this.onclose?.({ code: 1006, reason: "" });
      }
    };
  }

  get live() {
    return this.sockets.filter((s) => s.readyState === 1);
  }

  addMessage(text, { live = true } = {}) {
    const seq = this.nextSeq++;
    const message = { conversationId: 9n, seq, senderId: 18n, senderUsername: "bob", sentAtMs: 1767225604210n + seq, clientMsgId: `b-${seq}`, text };
    return this.addEvent({ message }, { live });
  }

  addEvent(body, { live = true } = {}) {
    const e = { inboxSeq: BigInt(this.inbox.length + 1), ...body };
    this.inbox.push(e);
    if (live) for (const s of this.live) s.push({ requestId: 0n, event: e });
    return e;
  }

  /** Stores a SendRequest idempotently (§8.1): Sent{message, duplicate}. */
  store(s) {
    const dup = this.sentIds.get(s.clientMsgId);
    if (dup) return { message: dup, duplicate: true };
    const seq = this.nextSeq++;
    const message = { conversationId: s.conversationId, seq, senderId: 17n, senderUsername: "alice", sentAtMs: 5n, clientMsgId: s.clientMsgId, text: s.text };
    this.sentIds.set(s.clientMsgId, message);
    this.addEvent({ message });
    return { message, duplicate: false };
  }

  handle(ws, frame) {
    const body = clientBody(frame);
    const id = frame.requestId;
    if (this.hooks[body]?.(frame, ws)) return;
    const reply = (b) => ws.push({ requestId: id, ...b });
    switch (body) {
      case "hello":
        return reply({ welcome: { version: 1, limits: { maxFrameBytes: 524288 }, heartbeatIntervalMs: this.heartbeatMs, serverTimeMs: 1n, serverName: "fake" } });
      case "resume":
        if (frame.resume.token !== this.token) return reply({ error: { code: ErrorCode.INVALID_TOKEN, message: "unknown token" } });
        return reply({ authOk: { userId: 17n, username: "alice", deviceId: 42n, token: "", cursor: this.cursor, inboxHead: BigInt(this.inbox.length) } });
      case "login":
      case "signup":
        return reply({ authOk: { userId: 17n, username: "alice", deviceId: 42n, token: this.token, cursor: BigInt(this.inbox.length), inboxHead: BigInt(this.inbox.length) } });
      case "sync": {
        const after = Number(frame.sync.after);
        const events = this.inbox.slice(after, after + this.pageLimit);
        return reply({ syncPage: { events, inboxHead: BigInt(this.inbox.length), hasMore: after + events.length < this.inbox.length } });
      }
      case "ackCursor":
        if (frame.ackCursor.inboxSeq > BigInt(this.inbox.length)) return reply({ error: { code: ErrorCode.INVALID_ARGUMENT, message: "beyond head" } });
        if (frame.ackCursor.inboxSeq > this.cursor) this.cursor = frame.ackCursor.inboxSeq;
        return reply({ done: {} });
      case "ping":
        return reply({ pong: { nonce: frame.ping.nonce, serverTimeMs: 2n } });
      case "send":
        return reply({ sent: this.store(frame.send) });
      case "subscribePresence":
        return reply({ presenceList: { presences: [] } });
      default:
        return reply({ error: { code: ErrorCode.UNKNOWN_REQUEST, message: `fake server does not do ${body}` } });
    }
  }
}

const until = async (what, fn, ms = 5000) => {
  const deadline = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};

function client(server, storage = new MemoryStorage()) {
  storage.setItem("confab.token", server.token);
  const s = new Session({ url: "ws://fake/v1/ws", storage, WebSocket: server.WebSocket, backoffStartMs: 20 });
  const applied = [];
  s.on("inbox", (e) => applied.push(e.inboxSeq));
  const errors = [];
  s.on("error", (e) => errors.push(e));
  return { s, applied, errors, storage };
}

const seqsOf = (n, from = 1) => Array.from({ length: n }, (_, i) => BigInt(from + i));

test("resume, then Sync pages from the stored cursor until has_more = false, then ack", async () => {
  const server = new FakeServer({ pageLimit: 2 });
  for (let i = 0; i < 5; i++) server.addMessage(`m${i}`, { live: false });
  server.cursor = 1n;
  const { s, applied } = client(server);
  s.start();
  await until("online", () => s.state === "online");
  assert.deepEqual(applied, seqsOf(4, 2), "events 2..5 applied once each, in order");
  const syncs = server.received.filter((f) => f.sync).map((f) => f.sync.after);
  assert.deepEqual(syncs, [1n, 3n], "two pages: 2–3 (has_more), 4–5");
  await until("cursor acked", () => server.cursor === 5n);
  s.stop();
});

test("a gap in live events is filled by Sync; duplicates are dropped; order is kept", async () => {
  const server = new FakeServer();
  const { s, applied } = client(server);
  s.start();
  await until("online", () => s.state === "online");
  server.addMessage("one");
  await until("event 1", () => applied.length === 1);
  // Event 2 is written but not delivered live (as if lost): event 3 arrives.
  server.addMessage("two", { live: false });
  server.addMessage("three");
  await until("events 2 and 3", () => applied.length === 3);
  assert.deepEqual(applied, seqsOf(3));
  assert.ok(server.received.some((f) => f.sync && f.sync.after === 1n), "Sync{after: 1} was sent");
  // A replayed old event changes nothing.
  server.live[0].push({ requestId: 0n, event: server.inbox[1] });
  server.addMessage("four");
  await until("event 4", () => applied.length === 4);
  assert.deepEqual(applied, seqsOf(4));
  s.stop();
});

test("after a connection loss the session reconnects, resumes and gets exactly what it missed", async () => {
  const server = new FakeServer();
  const { s, applied } = client(server);
  const states = [];
  s.on("state", (x) => states.push(x.state));
  s.start();
  await until("online", () => s.state === "online");
  server.addMessage("before");
  await until("event 1", () => applied.length === 1);
  server.live[0].drop();
  for (let i = 0; i < 3; i++) server.addMessage(`missed ${i}`); // nobody is connected
  await until("online again", () => s.state === "online" && server.connections === 2);
  assert.ok(states.includes("reconnecting"), "went through reconnecting");
  assert.deepEqual(applied, seqsOf(4));
  s.stop();
});

test("an unanswered send is resent with the same client_msg_id and stored once", async () => {
  const server = new FakeServer();
  const { s } = client(server);
  const sent = [];
  s.on("sent", (x) => sent.push(x));
  s.start();
  await until("online", () => s.state === "online");
  // The server stores the message but the connection dies before the response.
  let first = true;
  server.hooks.send = (frame, ws) => {
    if (!first) return false;
    first = false;
    server.store(frame.send); // stored, but the response is lost with the connection
    ws.drop();
    return true;
  };
  const entry = s.send(9n, "hello once");
  await until("sent", () => sent.length === 1);
  const sends = server.received.filter((f) => f.send);
  assert.equal(sends.length, 2, "sent twice");
  assert.equal(sends[0].send.clientMsgId, entry.clientMsgId);
  assert.equal(sends[1].send.clientMsgId, entry.clientMsgId);
  assert.equal(sent[0].duplicate, true, "the retry got the original");
  assert.equal(server.sentIds.size, 1);
  assert.equal(s.outbox.size, 0);
  s.stop();
});

test("a refused message (3xx) leaves the outbox as failed and is not resent", async () => {
  const server = new FakeServer();
  const { s } = client(server);
  const failed = [];
  s.on("failed", (x) => failed.push(x));
  server.hooks.send = (frame, ws) => (ws.push({ requestId: frame.requestId, error: { code: ErrorCode.CONVERSATION_NOT_FOUND, message: "no" } }), true);
  s.start();
  await until("online", () => s.state === "online");
  s.send(9n, "to nowhere");
  await until("failed", () => failed.length === 1);
  assert.equal(failed[0].error.codeName, "CONVERSATION_NOT_FOUND");
  assert.match(failed[0].error.message, /^CONVERSATION_NOT_FOUND: no$/);
  s.stop();
});

test("text over max_message_chars is refused before sending, counted in Unicode scalar values", async () => {
  const server = new FakeServer();
  const { s } = client(server);
  s.start();
  await until("online", () => s.state === "online");
  assert.throws(() => s.send(9n, "😀".repeat(100001)), (e) => e.code === ErrorCode.MESSAGE_TOO_LONG);
  s.send(9n, "😀".repeat(100000)); // 100,000 characters, 200,000 UTF-16 units: allowed
  s.stop();
});

test("an invalid token is forgotten and the session waits for a password", async () => {
  const server = new FakeServer();
  server.token = "other";
  const storage = new MemoryStorage();
  const { s } = client(server, storage);
  storage.setItem("confab.token", "stale");
  s.start();
  await until("signed-out", () => s.state === "signed-out");
  assert.equal(storage.getItem("confab.token"), null);
  await s.login("alice", "pw", "test");
  await until("online", () => s.state === "online");
  assert.equal(storage.getItem("confab.token"), "other");
  s.stop();
});

test("a fatal RESYNC_REQUIRED reconnects and syncs", async () => {
  const server = new FakeServer();
  const { s, applied } = client(server);
  s.start();
  await until("online", () => s.state === "online");
  server.addMessage("a", { live: false });
  server.live[0].push({ requestId: 0n, error: { code: ErrorCode.RESYNC_REQUIRED, message: "queue full", fatal: true } });
  await until("second connection online", () => server.connections === 2 && s.state === "online");
  assert.deepEqual(applied, seqsOf(1));
  s.stop();
});

test("heartbeats: pings while idle; a silent server is declared dead after 2.5 intervals", async () => {
  const server = new FakeServer({ heartbeatMs: 400 });
  const { s } = client(server);
  s.start();
  await until("online", () => s.state === "online");
  const t0 = server.received.length;
  await new Promise((r) => setTimeout(r, 900));
  const pings = server.received.slice(t0).filter((f) => f.ping);
  assert.ok(pings.length >= 2, `expected pings at least every interval, got ${pings.length}`);
  // Half-open: nothing gets through any more, in either direction.
  server.blackhole = true;
  const before = server.connections;
  const lostAt = Date.now();
  server.onConnect = () => (server.blackhole = false); // the network is back for the next attempt
  await until("reconnect attempt", () => server.connections > before, 4000);
  const waited = Date.now() - lostAt;
  assert.ok(waited >= 2.5 * 400 - 50, `declared dead after ${waited} ms, not before 2.5 intervals`);
  await until("online again", () => s.state === "online");
  s.stop();
});

test("signed out, no connection is held (the server's auth deadline, §4.1); login opens one, logout closes it", async () => {
  const server = new FakeServer();
  const storage = new MemoryStorage();
  const s = new Session({ url: "ws://fake/v1/ws", storage, WebSocket: server.WebSocket, backoffStartMs: 20 });
  s.start();
  await until("signed-out", () => s.state === "signed-out");
  await until("socket closed", () => server.live.length === 0);
  assert.equal(server.connections, 1);
  await s.login("alice", "pw", "test");
  await until("online", () => s.state === "online");
  assert.equal(server.connections, 2);
  assert.equal(storage.getItem("confab.token"), server.token);
  server.hooks.logout = (frame, ws) => (ws.push({ requestId: frame.requestId, done: {} }), true);
  await s.logout();
  assert.equal(s.state, "signed-out");
  assert.equal(storage.getItem("confab.token"), null);
  await until("socket closed after logout", () => server.live.length === 0);
  s.stop();
});
