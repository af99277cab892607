// web/client.js against a scripted in-memory server speaking real frames
// (encoded and decoded with web/proto.js): the delivery rules of
// PROTOCOL.md §8.4–§8.7 (gap detection, Sync paging, dedupe, acks), the
// outbox (§8.2), heartbeats (§4.6), resume failures (§6.3) and fatal errors.

import { test } from "node:test";
import assert from "node:assert/strict";

import { Session } from "../client.js";
import { ErrorCode } from "../proto.js";
import { FakeServer, MemoryStorage, until } from "./fakeserver.mjs";

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

test("with max_in_flight 2, queued sends go out in the order typed, even when a request comes in between (§4.4, §4.7)", async () => {
  const server = new FakeServer();
  const { s } = client(server);
  const hello = (frame, ws) => (ws.push({ requestId: frame.requestId, welcome: { version: 1, limits: { maxInFlight: 2 }, heartbeatIntervalMs: 20000, serverTimeMs: 1n, serverName: "fake" } }), true);
  server.hooks.hello = hello;
  s.start();
  await until("online", () => s.state === "online");
  assert.equal(s.limits.maxInFlight, 2);
  // The first two sends are held; their messages are stored without a live event.
  const held = [];
  server.hooks.send = (frame, ws) => (held.length < 2 ? (held.push({ frame, ws }), true) : false);
  const answer = ({ frame, ws }) => {
    server.blackhole = true; // no live event for it: the inbox has a gap
    const sent = server.store(frame.send);
    server.blackhole = false;
    ws.push({ requestId: frame.requestId, sent });
  };
  const texts = ["one", "two", "three", "four", "five"];
  for (const t of texts) s.send(9n, t);
  await until("two sends in flight", () => held.length === 2);
  // Several frames read at once (as a WebSocket may hand them over in one
  // task): one answer, a live event after a gap (a Sync request starts), the
  // other answer. The Sync must not take a slot before the sends waiting for it.
  try {
    answer(held[0]);
    server.addMessage("from bob");
    answer(held[1]);
    await until("all sent", () => s.outbox.size === 0);
    const order = server.received.filter((f) => f.send).map((f) => f.send.text);
    assert.deepEqual(order, texts);
    assert.ok(server.received.some((f) => f.sync && f.sync.after === 0n), "the gap was synced");
  } finally {
    s.stop();
  }
});

test("after GoAway a request waiting for a slot is not sent on that session but on the next one (§13)", async () => {
  const server = new FakeServer();
  const { s } = client(server);
  server.hooks.hello = (frame, ws) => (ws.push({ requestId: frame.requestId, welcome: { version: 1, limits: { maxInFlight: 2 }, heartbeatIntervalMs: 20000, serverTimeMs: 1n, serverName: "fake" } }), true);
  s.start();
  await until("online", () => s.state === "online");
  const first = server.live[0];
  const held = [];
  const on = []; // [socket, text] of every send received
  server.hooks.send = (frame, ws) => {
    on.push([ws, frame.send.text]);
    if (ws !== first) return false;
    held.push(frame);
    return true;
  };
  try {
    for (const t of ["one", "two", "three"]) s.send(9n, t);
    await until("two sends in flight", () => held.length === 2);
    first.push({ requestId: 0n, goAway: { code: ErrorCode.SHUTTING_DOWN, message: "restarting", reconnectAfterMs: 50n } });
    for (const f of held) first.push({ requestId: f.requestId, sent: server.store(f.send) });
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(on.filter(([ws]) => ws === first).map(([, t]) => t), ["one", "two"], "nothing new after GoAway");
    first.drop();
    await until("all sent", () => s.outbox.size === 0);
    assert.deepEqual(on.filter(([ws]) => ws !== first).map(([, t]) => t), ["three"]);
  } finally {
    s.stop();
  }
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
