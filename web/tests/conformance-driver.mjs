// Driver for `confab-conformance client --transport ws` (spec/CONFORMANCE.md
// §3): the browser client's session (web/client.js, as served) run in Node.
//
//   confab-conformance client --transport ws -- node web/tests/conformance-driver.mjs
//
// It builds the Session the way web/app.js does and lets it do its own work:
// the user "types" the credentials and each text of CONFAB_CONFORMANCE_SEND
// once, everything else (heartbeats, catch-up, acks, reconnects, resends) is
// client.js's. It runs until the suite kills it. What it does:
//
// - WebSocket: the WHATWG WebSocket Node ships (undici's). Node 20 has it
//   only behind --experimental-websocket: without a global WebSocket this
//   script starts itself again with that flag (the suite stops the whole
//   process group, so both go).
// - storage: an in-memory localStorage (a new device each run: no token);
//   the token, the user and the outbox live in it as in a browser.
// - the heartbeat ticks on the real web/ticker.js, run in a worker_threads
//   worker behind a small shim of the browser's `Worker` (`workerTicker:
//   true`, as a page has).
// - discovery as on the page: app.js asks /v1/discover of the page's
//   origin (here the scripted server's http://host:port) before every
//   attempt; the scripted server answers it with itself (one node), so
//   every attempt goes to its /v1/ws.
// - the sign-in as on the page: it starts the session at load
//   (session.start(): a connection, Hello, no token, so it closes it and
//   shows the sign-in form) and the user submits the form (session.login(),
//   on a new connection).
// - session.bootstrap asks what app.js's does before the catch-up: every
//   ListConversations page, presence of the direct conversations' peers and
//   the block list; inbox events and sent messages go into a Model
//   (model.js) as on the page. No IndexedDB: the page's saved conversations
//   (cache.js) are the page's, not the session's, and the page works
//   without them.
// - texts are sent through the composer's path: session.send(openId, text)
//   (the outbox, then the draft emptied), in order, once the session is
//   online.
//
// Nothing on stdout; stderr says what happened, for `--verbose`.
//
// `node conformance-driver.mjs --check` exits 0 when this Node can run it
// (conformance/tests/web_client.rs asks before running the suite).

import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const WS_FLAG = "--experimental-websocket";

/** Whether this Node has a WebSocket, or can have one with WS_FLAG. */
const canHaveWebSocket = () => typeof globalThis.WebSocket === "function" || process.allowedNodeEnvironmentFlags.has(WS_FLAG);

if (typeof globalThis.WebSocket !== "function") {
  if (!process.allowedNodeEnvironmentFlags.has(WS_FLAG) || process.execArgv.includes(WS_FLAG)) {
    console.error(`conformance-driver: Node ${process.version} has no WebSocket (Node 20.10 or later is needed: ${WS_FLAG}, on by default from Node 22)`);
    process.exit(2);
  }
  const child = spawn(process.execPath, [WS_FLAG, ...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: "inherit",
  });
  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"]) process.on(sig, () => child.kill(sig));
  child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
} else if (process.argv.includes("--check")) {
  process.exit(canHaveWebSocket() ? 0 : 2);
} else {
  await main();
}

async function main() {
  const { Worker: ThreadWorker } = await import("node:worker_threads");
  const { Session, ConnectionLost } = await import("../client.js");
  const { Model } = await import("../model.js");
  const { Drafts } = await import("../drafts.js");
  const { MemoryStorage } = await import("./fakeserver.mjs");
  const { ConversationKind } = await import("../proto.js");

  const env = (name) => {
    const v = process.env[`CONFAB_CONFORMANCE_${name}`];
    if (v === undefined) {
      console.error(`conformance-driver: CONFAB_CONFORMANCE_${name} is not set (run me through confab-conformance client)`);
      process.exit(2);
    }
    return v;
  };
  const url = env("ADDR");
  const username = env("USERNAME");
  const password = env("PASSWORD");
  const openId = env("CONVERSATION");
  const texts = env("SEND")
    .split("\n")
    .filter((t) => t !== "");
  const scenario = process.env.CONFAB_CONFORMANCE_SCENARIO ?? "";
  if ((process.env.CONFAB_CONFORMANCE_TRANSPORT ?? "ws") !== "ws") {
    console.error("conformance-driver: a browser speaks only WebSocket: run the suite with --transport ws");
    process.exit(2);
  }

  const t0 = Date.now();
  const log = (...a) => console.error(`[web ${String(Date.now() - t0).padStart(6)} ms]`, ...a);

  /**
   * The browser's `Worker`, for web/ticker.js: a worker_threads worker
   * whose `self` has the two members ticker.js uses (onmessage,
   * postMessage); messages posted before ticker.js has set its handler wait
   * for it.
   */
  class Worker {
    constructor(scriptUrl) {
      const boot = `
        const { parentPort } = require("node:worker_threads");
        let handler = null;
        const early = [];
        globalThis.self = {
          get onmessage() { return handler; },
          set onmessage(fn) { handler = fn; for (const data of early.splice(0)) handler?.({ data }); },
          postMessage: (data) => parentPort.postMessage(data),
        };
        parentPort.on("message", (data) => (handler ? handler({ data }) : early.push(data)));
        import(${JSON.stringify(String(scriptUrl))});
      `;
      this.onmessage = null;
      this.thread = new ThreadWorker(boot, { eval: true });
      this.thread.on("message", (data) => this.onmessage?.({ data }));
      this.thread.on("error", (e) => log("ticker worker failed:", e));
    }
    postMessage(data) {
      this.thread.postMessage(data);
    }
    terminate() {
      this.thread.terminate();
    }
  }
  globalThis.Worker = Worker;

  const storage = new MemoryStorage();
  const origin = new URL(url.replace(/^ws/, "http")).origin;
  const discovery = { origin, fetch: (...a) => globalThis.fetch(...a) };
  const session = new Session({ url, storage, WebSocket: globalThis.WebSocket, workerTicker: true, discovery });
  const model = new Model();
  let drafts = null;

  session.on("state", (s) => log("state", s.state, s.reason ? String(s.reason.message ?? s.reason) : ""));
  session.on("error", (e) => log("error:", e?.message ?? e));
  session.on("goaway", (g) => log("goaway", Number(g.reconnectAfterMs), "ms"));
  session.on("auth", ({ auth, fresh }) => {
    log(`auth: ${auth.username} cursor ${auth.cursor} head ${auth.inboxHead}${fresh ? " (fresh)" : ""}`);
    if (fresh) model.setMe(auth);
    drafts ??= new Drafts(storage, auth.username);
  });
  session.on("reset", () => {
    const me = model.me;
    model.reset();
    model.me = me;
  });
  session.on("inbox", (e) => {
    log("inbox", e.inboxSeq);
    model.applyInbox(e);
  });
  session.on("presence", (p) => model.applyPresence(p));
  session.on("typing", (t) => model.applyTyping(t));
  session.on("receipt", (r) => model.applyReceipt(r));
  session.on("sent", ({ message, duplicate }) => {
    log(`sent: seq ${message.seq}${duplicate ? " (duplicate)" : ""}`);
    model.addMessage(message);
  });
  session.on("failed", ({ entry, error }) => log(`failed: ${JSON.stringify(entry.text)}: ${error?.message ?? error}`));

  // What app.js's bootstrap asks before the catch-up (§8.7: a client
  // without local state builds its view from the list).
  session.bootstrap = async (auth) => {
    model.reset();
    model.setMe(auth);
    let before = null;
    for (;;) {
      const req = { limit: 0 };
      if (before) Object.assign(req, before);
      const page = await session.request("listConversations", req);
      for (const c of page.conversations) model.applyConversation(c);
      if (!page.hasMore || page.conversations.length === 0) break;
      const lastC = page.conversations[page.conversations.length - 1];
      before = { activeBeforeMs: lastC.activityMs, beforeConversationId: lastC.conversationId };
    }
    session.listBlocked().catch((e) => e instanceof ConnectionLost || log("block list:", e.message));
    const peers = [];
    for (const c of model.conversations.values()) if (c.kind === ConversationKind.DIRECT && c.peerUsername) peers.push(c.peerUsername);
    if (peers.length) session.subscribePresence(peers).catch((e) => e instanceof ConnectionLost || log("presence:", e.message));
  };

  // The texts, once, the first time the session is online: the composer's
  // submit (session.send queues in the outbox and sends when online).
  let typed = false;
  session.on("state", ({ state }) => {
    if (state !== "online" || typed) return;
    typed = true;
    log(`heartbeat every ${session.heartbeatMs} ms, ticking on ${session.tickerWorker ? "ticker.js (a worker)" : "the page's setInterval"}`);
    for (const text of texts) {
      const entry = session.send(openId, text);
      drafts?.set(openId, "");
      log(`queued ${JSON.stringify(text)} as ${entry.clientMsgId}`);
    }
  });

  log(`scenario ${scenario || "(none)"}: ${url}, ${texts.length} text(s) to send`);
  // The page's load (app.js): with no token the session shows the sign-in
  // form ("signed-out"); the user then submits it (after 3 s anyway, as a
  // user who does not wait for the form would).
  const formShown = new Promise((resolve) => {
    const off = session.on("state", ({ state }) => state === "signed-out" && (off(), resolve()));
    setTimeout(resolve, 3000);
  });
  session.start();
  await formShown;
  try {
    await session.login(username, password, "conformance driver (Node)");
  } catch (e) {
    log("login failed:", e?.message ?? e);
  }
  // Runs until killed: the session's timers and socket keep the process up.
  setInterval(() => {}, 1 << 30);
}
