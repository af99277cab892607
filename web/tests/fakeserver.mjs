// A scripted in-memory Confab server speaking real frames (encoded and
// decoded with web/proto.js) over fake WebSockets, for the session tests
// (session.test.mjs, discovery.test.mjs). One user's server side.

import { encode, decode, clientBody, ErrorCode } from "../proto.js";

export class MemoryStorage {
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
export class FakeServer {
  constructor({ heartbeatMs = 20000, pageLimit = 100 } = {}) {
    this.heartbeatMs = heartbeatMs;
    this.pageLimit = pageLimit;
    this.inbox = []; // InboxEvent objects, inbox[i].inboxSeq = i + 1
    this.cursor = 0n;
    this.token = "tok-1";
    this.sockets = [];
    this.urls = []; // the URL of every connection attempt, in order
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
        server.urls.push(url);
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

export const until = async (what, fn, ms = 5000) => {
  const deadline = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};
