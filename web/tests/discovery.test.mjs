// Discovery (PROTOCOL.md §2.5) in the browser client: discovery.js's
// parsing and choice, and Session asking /v1/discover before every
// connection attempt, with a fake fetch and the fake server's WebSockets.

import { test, afterEach } from "node:test";
import assert from "node:assert/strict";

import { Session } from "../client.js";
import { chooseEndpoint, describeEndpoint, discover, discoveryUrls, httpBaseOf, parseDiscovery, pickEndpoint, DiscoveryError } from "../discovery.js";
import { ErrorCode } from "../proto.js";
import { FakeServer, MemoryStorage, until } from "./fakeserver.mjs";

const PAGE = "http://chat.test:8080";
const OWN = "ws://chat.test:8080/v1/ws";
const A = "ws://10.0.0.1:7080/v1/ws";
const B = "ws://10.0.0.2:7080/v1/ws";

const node = (name, ws, extra = {}) => ({ node: name, quic: null, tcp: null, ws, fingerprint: "sha256:00", load: { sessions: 1, connections_free: 9 }, ...extra });
const answer = (...nodes) => ({ protocol: "confab.v1", nodes });

/**
 * A fake fetch: `routes` maps a URL to what it answers — a body (200 JSON),
 * {status}, "garbage" (200, not JSON), "hang" (never answers until aborted)
 * or "refuse" (a network error). Unknown URLs are refused. Every call is
 * recorded in `calls`, in order.
 */
function fakeFetch(routes) {
  const calls = [];
  const fetch = (url, opts = {}) => {
    calls.push(url);
    const r = typeof routes === "function" ? routes(url, calls.length) : routes[url];
    if (r === undefined || r === "refuse") return Promise.reject(new TypeError("Failed to fetch"));
    if (r === "hang") {
      return new Promise((_, reject) => opts.signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError"))));
    }
    if (r === "garbage") return Promise.resolve({ ok: true, status: 200, json: () => Promise.reject(new SyntaxError("Unexpected token <")) });
    if (r && typeof r.status === "number" && !r.nodes) return Promise.resolve({ ok: r.status >= 200 && r.status < 300, status: r.status, json: async () => ({}) });
    return Promise.resolve({ ok: true, status: 200, json: async () => JSON.parse(JSON.stringify(r)) });
  };
  return { fetch, calls };
}

// Sessions are stopped after each test even when it fails (no timers left behind).
const sessions = new Set();
afterEach(() => {
  for (const s of sessions) s.stop();
  sessions.clear();
});

function session(server, fetch, { origin = PAGE, url = OWN, timeoutMs = 300 } = {}) {
  const storage = new MemoryStorage();
  storage.setItem("confab.token", server.token);
  const s = new Session({ url, storage, WebSocket: server.WebSocket, backoffStartMs: 20, discovery: { origin, fetch, timeoutMs } });
  sessions.add(s);
  const endpoints = [];
  s.on("endpoint", (ep) => endpoints.push(ep));
  return { s, endpoints };
}

// ---- discovery.js ---------------------------------------------------------------

test("parseDiscovery: nodes in order, unknown members ignored, unusable ws as null", () => {
  const nodes = parseDiscovery({
    protocol: "confab.v1",
    future: { anything: [1, 2] },
    nodes: [
      node("n1", A, { region: "eu", load: { sessions: 3, connections_free: 7, cpu: 0.2, gpu: 1 } }),
      node("n2", null),
      node("n3", "http://10.0.0.3/v1/ws"),
      node("n4", "not a url"),
      { ws: B },
    ],
  });
  assert.deepEqual(nodes, [
    { node: "n1", ws: A },
    { node: "n2", ws: null },
    { node: "n3", ws: null },
    { node: "n4", ws: null },
    { node: "", ws: B },
  ]);
});

test("parseDiscovery refuses what is not a discovery answer", () => {
  for (const [body, why] of [
    [null, /not a JSON object/],
    [[node("n1", A)], /not a JSON object/],
    ["nodes", /not a JSON object/],
    [{ protocol: "confab.v1" }, /no list of nodes/],
    [{ nodes: {} }, /no list of nodes/],
    [{ nodes: [node("n1", A), 7] }, /node 2 is not an object/],
    [{ protocol: "confab.v2", nodes: [node("n1", A)] }, /speaks "confab.v2"/],
  ]) {
    assert.throws(() => parseDiscovery(body), (e) => e instanceof DiscoveryError && why.test(e.message), JSON.stringify(body));
  }
});

test("httpBaseOf and discoveryUrls: the page's origin first, then the node last used", () => {
  assert.equal(httpBaseOf("ws://h.test:7080/v1/ws"), "http://h.test:7080");
  assert.equal(httpBaseOf("wss://h.test/v1/ws"), "https://h.test");
  assert.equal(httpBaseOf("wss://[::1]:8443/v1/ws"), "https://[::1]:8443");
  assert.throws(() => httpBaseOf("ftp://h.test/"), TypeError);
  assert.deepEqual(discoveryUrls(PAGE), [`${PAGE}/v1/discover`]);
  assert.deepEqual(discoveryUrls(PAGE, A), [`${PAGE}/v1/discover`, "http://10.0.0.1:7080/v1/discover"]);
  assert.deepEqual(discoveryUrls(PAGE, OWN), [`${PAGE}/v1/discover`], "the page's own node is not asked twice");
  // An https page may not fetch http:// (mixed content).
  assert.deepEqual(discoveryUrls("https://chat.test", A), ["https://chat.test/v1/discover"]);
  assert.deepEqual(discoveryUrls("https://chat.test", "wss://n2.chat.test/v1/ws"), ["https://chat.test/v1/discover", "https://n2.chat.test/v1/discover"]);
});

test("chooseEndpoint: one node is the page's own origin; a cluster's first usable node; another than the one to avoid", () => {
  const one = [{ node: "local", ws: "ws://127.0.0.1:7080/v1/ws" }];
  assert.deepEqual(chooseEndpoint(one, { ownUrl: OWN }), { url: OWN, node: "local", own: true, listed: 1 });
  assert.deepEqual(chooseEndpoint([], { ownUrl: OWN }), { url: OWN, node: "", own: true, listed: 0 });
  const two = [{ node: "a", ws: A }, { node: "b", ws: B }];
  assert.deepEqual(chooseEndpoint(two, { ownUrl: OWN }), { url: A, node: "a", own: false, listed: 2 });
  assert.equal(chooseEndpoint(two, { ownUrl: OWN, avoid: A }).url, B);
  assert.equal(chooseEndpoint(two, { ownUrl: OWN, avoid: B }).url, A);
  assert.equal(chooseEndpoint([{ node: "a", ws: A }, { node: "b", ws: null }], { ownUrl: OWN, avoid: A }).url, A, "no other usable node: the same one again");
  assert.equal(chooseEndpoint([{ node: "a", ws: null }, { node: "b", ws: null }], { ownUrl: OWN }).url, OWN, "no node has a WebSocket: own origin");
  // The page's own node listed first: own.
  assert.equal(chooseEndpoint([{ node: "a", ws: OWN }, { node: "b", ws: B }], { ownUrl: OWN }).own, true);
});

test("chooseEndpoint: an https page skips ws:// nodes", () => {
  const ownUrl = "wss://chat.test/v1/ws";
  const nodes = [{ node: "a", ws: A }, { node: "b", ws: "wss://n2.chat.test/v1/ws" }];
  assert.equal(chooseEndpoint(nodes, { ownUrl }).url, "wss://n2.chat.test/v1/ws");
  assert.equal(chooseEndpoint([{ node: "a", ws: A }, { node: "b", ws: B }], { ownUrl }).url, ownUrl, "none usable: own origin");
});

test("discover: asks the next URL when one fails; all within the one deadline", async () => {
  const { fetch, calls } = fakeFetch({ [`${PAGE}/v1/discover`]: { status: 502 }, "http://10.0.0.1:7080/v1/discover": answer(node("a", A), node("b", B)) });
  const r = await discover(fetch, discoveryUrls(PAGE, A), { timeoutMs: 500 });
  assert.equal(r.from, "http://10.0.0.1:7080/v1/discover");
  assert.equal(r.nodes.length, 2);
  assert.deepEqual(calls, [`${PAGE}/v1/discover`, "http://10.0.0.1:7080/v1/discover"]);

  const slow = fakeFetch(() => "hang");
  const t0 = Date.now();
  await assert.rejects(discover(slow.fetch, discoveryUrls(PAGE, A), { timeoutMs: 150 }), (e) => e instanceof DiscoveryError && /did not answer within/.test(e.message));
  const took = Date.now() - t0;
  assert.ok(took >= 140 && took < 400, `both URLs together gave up after ${took} ms, for a 150 ms budget`);
  assert.equal(slow.calls.length, 1, "the first URL used the whole budget: the second was not asked");
});

test("pickEndpoint never rejects: garbage, non-200 and refused fetches give the page's own /v1/ws with the reason", async () => {
  for (const [route, why] of [
    ["garbage", /did not answer JSON/],
    [{ status: 404 }, /answered HTTP 404/],
    ["refuse", /Failed to fetch/],
    [{ hello: "world" }, /no list of nodes/],
    ["hang", /did not answer within 50 ms/],
  ]) {
    const { fetch } = fakeFetch({ [`${PAGE}/v1/discover`]: route });
    const ep = await pickEndpoint({ fetch, pageOrigin: PAGE, ownUrl: OWN, timeoutMs: 50 });
    assert.equal(ep.url, OWN, JSON.stringify(route));
    assert.equal(ep.own, true);
    assert.match(ep.error, why);
  }
  // A fetch function that throws synchronously is a failure like any other.
  const ep = await pickEndpoint({ fetch: () => { throw new TypeError("no fetch here"); }, pageOrigin: PAGE, ownUrl: OWN });
  assert.equal(ep.url, OWN);
  assert.match(ep.error, /no fetch here/);
});

test("describeEndpoint says which node, or that it is the site's own server", () => {
  assert.equal(describeEndpoint({ url: A, node: "a", own: false, listed: 3, error: null }), `Server node a (${A}), one of 3 nodes`);
  assert.equal(describeEndpoint({ url: OWN, node: "local", own: true, listed: 1, error: null }), `This site's server (${OWN})`);
  assert.match(describeEndpoint({ url: OWN, node: "", own: true, listed: 0, error: "x answered HTTP 500" }), /discovery did not answer \(x answered HTTP 500\)/);
});

// ---- Session ----------------------------------------------------------------------

test("a single server listed: the session connects to the page's own /v1/ws, after asking discovery", async () => {
  const server = new FakeServer();
  // The server names an address the browser may not reach (behind a proxy).
  const { fetch, calls } = fakeFetch({ [`${PAGE}/v1/discover`]: answer(node("local", "ws://0.0.0.0:7080/v1/ws")) });
  const { s, endpoints } = session(server, fetch);
  s.start();
  await until("online", () => s.state === "online");
  assert.deepEqual(calls, [`${PAGE}/v1/discover`]);
  assert.deepEqual(server.urls, [OWN]);
  assert.equal(endpoints[0].own, true);
  assert.equal(s.endpoint.node, "local");
  s.stop();
});

test("two nodes listed: the session connects to the first node's ws", async () => {
  const server = new FakeServer();
  const { fetch } = fakeFetch({ [`${PAGE}/v1/discover`]: answer(node("a", A), node("b", B)) });
  const { s } = session(server, fetch);
  s.start();
  await until("online", () => s.state === "online");
  assert.deepEqual(server.urls, [A]);
  assert.equal(s.endpoint.node, "a");
  assert.equal(s.endpoint.listed, 2);
  s.stop();
});

test("a GoAway from node a: discovery is asked again and the session reconnects to node b", async () => {
  const server = new FakeServer();
  const { fetch, calls } = fakeFetch({ [`${PAGE}/v1/discover`]: answer(node("a", A), node("b", B)) });
  const { s } = session(server, fetch);
  s.start();
  await until("online on a", () => s.state === "online");
  assert.deepEqual(server.urls, [A]);
  const asked = calls.length;
  server.addMessage("before the restart");
  // §13: GoAway, then the fatal SHUTTING_DOWN and the close.
  const ws = server.live[0];
  ws.push({ requestId: 0n, goAway: { code: ErrorCode.SHUTTING_DOWN, message: "restarting", reconnectAfterMs: 10n } });
  ws.push({ requestId: 0n, error: { code: ErrorCode.SHUTTING_DOWN, message: "bye", fatal: true } });
  ws.drop();
  server.addMessage("while moving", { live: false });
  await until("online on b", () => s.state === "online" && server.urls.length === 2);
  assert.deepEqual(server.urls, [A, B], "reconnected to the other node");
  assert.ok(calls.length > asked, "asked /v1/discover again before reconnecting");
  const fetchedBeforeSecond = calls.length;
  assert.equal(s.endpoint.node, "b");
  // A later cut-off from b goes back to a: the node just left is the one avoided.
  server.live[0].drop();
  await until("online on a again", () => s.state === "online" && server.urls.length === 3);
  assert.deepEqual(server.urls, [A, B, A]);
  assert.ok(calls.length > fetchedBeforeSecond);
  s.stop();
});

test("the page's origin does not answer: the node last used is asked (its HTTP base), and its answer is followed", async () => {
  const server = new FakeServer();
  let pageUp = true;
  const { fetch, calls } = fakeFetch((url) => {
    if (url === `${PAGE}/v1/discover`) return pageUp ? answer(node("a", A), node("b", B)) : "refuse";
    if (url === "http://10.0.0.1:7080/v1/discover") return answer(node("b", B), node("c", "ws://10.0.0.3:7080/v1/ws"));
    return "refuse";
  });
  const { s } = session(server, fetch);
  s.start();
  await until("online on a", () => s.state === "online");
  pageUp = false;
  server.live[0].drop();
  await until("online again", () => s.state === "online" && server.urls.length === 2);
  assert.deepEqual(calls.slice(-2), [`${PAGE}/v1/discover`, "http://10.0.0.1:7080/v1/discover"]);
  assert.deepEqual(server.urls, [A, B]);
  s.stop();
});

for (const [what, route] of [
  ["times out", "hang"],
  ["answers garbage", "garbage"],
  ["answers 500", { status: 500 }],
  ["is refused", "refuse"],
]) {
  test(`discovery ${what}: the session connects to the page's own /v1/ws, within the discovery timeout`, async () => {
    const server = new FakeServer();
    const { fetch } = fakeFetch({ [`${PAGE}/v1/discover`]: route });
    const { s, endpoints } = session(server, fetch, { timeoutMs: 200 });
    const t0 = Date.now();
    s.start();
    await until("a connection attempt", () => server.urls.length === 1);
    const took = Date.now() - t0;
    assert.ok(took < 600, `connecting waited ${took} ms for discovery (budget 200 ms)`);
    await until("online", () => s.state === "online");
    assert.deepEqual(server.urls, [OWN]);
    assert.ok(endpoints[0].error, "the reason is kept for the UI");
    s.stop();
  });
}

test("an https page never opens ws:// nodes", async () => {
  const server = new FakeServer();
  const page = "https://chat.test";
  const own = "wss://chat.test/v1/ws";
  const { fetch } = fakeFetch({ [`${page}/v1/discover`]: answer(node("a", A), node("b", "wss://n2.chat.test/v1/ws"), node("c", B)) });
  const { s } = session(server, fetch, { origin: page, url: own });
  s.start();
  await until("online", () => s.state === "online");
  assert.deepEqual(server.urls, ["wss://n2.chat.test/v1/ws"]);
  s.stop();
});

test("stopping while discovery is asked opens no connection; a login while discovering does not ask twice", async () => {
  const server = new FakeServer();
  const waiting = []; // answers held back until release()
  const calls = [];
  const slowFetch = (url) => {
    calls.push(url);
    return new Promise((resolve) => waiting.push(() => resolve({ ok: true, status: 200, json: async () => answer(node("a", A), node("b", B)) })));
  };
  const release = () => waiting.splice(0).forEach((f) => f());
  const storage = new MemoryStorage();
  storage.setItem("confab.token", server.token);
  const s = new Session({ url: OWN, storage, WebSocket: server.WebSocket, backoffStartMs: 20, discovery: { origin: PAGE, fetch: slowFetch, timeoutMs: 1000 } });
  sessions.add(s);
  s.start();
  await until("discovery asked", () => calls.length === 1);
  s.stop();
  release();
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(server.urls.length, 0, "no WebSocket after stop()");

  // Signed out (no token): the first attempt is still asking discovery when
  // the user logs in; the login waits for that attempt instead of starting another.
  const s2 = new Session({ url: OWN, storage: new MemoryStorage(), WebSocket: server.WebSocket, backoffStartMs: 20, discovery: { origin: PAGE, fetch: slowFetch, timeoutMs: 1000 } });
  sessions.add(s2);
  s2.start();
  await until("discovery asked", () => calls.length === 2);
  const login = s2.login("alice", "correct horse", "test");
  await new Promise((r) => setTimeout(r, 20));
  release();
  await login;
  await until("online", () => s2.state === "online");
  assert.equal(calls.length, 2, "one discovery for the one attempt");
  assert.deepEqual(server.urls, [A]);
});

test("a sign-in whose first node refuses the connection waits for the next attempt, on another node", async () => {
  const server = new FakeServer();
  // Node a refuses every WebSocket of this page (an Origin it does not allow: HTTP 403).
  server.onConnect = () => {
    const ws = server.sockets.at(-1);
    if (ws.url === A) setTimeout(() => ws.drop(), 0);
  };
  const { fetch } = fakeFetch({ [`${PAGE}/v1/discover`]: answer(node("a", A), node("b", B)) });
  const s = new Session({ url: OWN, storage: new MemoryStorage(), WebSocket: server.WebSocket, backoffStartMs: 20, discovery: { origin: PAGE, fetch, timeoutMs: 300 } });
  sessions.add(s);
  const auth = await s.login("alice", "correct horse", "test");
  assert.equal(auth.username, "alice");
  await until("online", () => s.state === "online");
  assert.deepEqual(server.urls, [A, B]);
  assert.equal(s.endpoint.node, "b");
});
