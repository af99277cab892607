#!/usr/bin/env node
// Browser end-to-end test of the Confab web client in headless Chromium.
//
//   node web/tests/e2e.mjs --url http://127.0.0.1:PORT [--out DIR] [--chromium PATH] [--control stdin]
//
// Needs a running confabd serving web/ over HTTP (server/tests/browser.rs
// starts one) and Debian's chromium. With `--control stdin` (browser.rs
// passes it) the server is also restarted mid-test: a line
// "e2e-control: stop-server" / "e2e-control: start-server" on stdout asks
// the harness, which answers "ok" on stdin; without it that phase is skipped. Two browser contexts (alice and bob)
// sign up, open a DM and talk; alice's network is then taken away for real
// (her browser reaches the server through a TCP proxy that resets every
// connection and refuses new ones) while bob sends; when it is back alice
// must show "reconnecting…", then catch up with exactly the missed messages,
// once each, in order, and her own message written while offline must arrive
// exactly once. Then: reload (resume from localStorage; the conversation in
// the URL reopens, an unsent draft is back), history paging by scrolling up,
// a group, back/forward between conversations, the devices dialog (a second
// browser of alice's signed out from the first), alerts cleared by sign-out
// and sign-in; group info (roles and the controls they allow, rename, a
// refusal shown in words, leave, remove), blocking from a DM's header and
// the account dialog's block list, privacy settings refusing a DM and a
// group add, finding people by the start of their username (and staying out
// of it), the password change. A reload with the network down paints
// from the saved conversations (IndexedDB), then syncs once it is back;
// sign-out and a revoked device delete them. Last, discovery (§2.5): one
// node keeps a page on its origin; two nodes (answered by the test) send it
// to the first, and a node that goes away to the other. Screenshots go to --out.

import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { NetProxy } from "./netproxy.mjs";

const webDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");

const args = Object.fromEntries(
  process.argv
    .slice(2)
    .reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1] && !all[i + 1].startsWith("--") ? all[i + 1] : "true"]] : acc), []),
);
const baseUrl = args.url;
if (!baseUrl) {
  console.error("usage: node web/tests/e2e.mjs --url http://127.0.0.1:PORT [--out DIR] [--chromium /usr/bin/chromium]");
  process.exit(2);
}
const outDir = resolve(args.out ?? "target/browser-artifacts");
if (args.control && args.control !== "stdin") {
  console.error(`e2e: --control ${args.control}: only "stdin" is known`);
  process.exit(2);
}
const chromiumPath = args.chromium ?? "/usr/bin/chromium";
mkdirSync(outDir, { recursive: true });
for (const f of readdirSync(outDir)) if (/^failure-.*\.png$/.test(f)) rmSync(join(outDir, f));

let chromium;
try {
  ({ chromium } = await import("playwright-core"));
} catch (e) {
  console.error(`e2e: cannot load playwright-core (run "npm ci" in web/): ${e.message}`);
  process.exit(2);
}

const T0 = Date.now();
const log = (...a) => console.log(`[e2e ${((Date.now() - T0) / 1000).toFixed(1)}s]`, ...a);
let passed = 0;
const check = (cond, what) => {
  if (!cond) throw new Error(`check failed: ${what}`);
  passed++;
  log(`ok - ${what}`);
};

const target = new URL(baseUrl);
const proxy = new NetProxy({ host: target.hostname, port: Number(target.port) });
await proxy.listen();
const proxiedUrl = `http://127.0.0.1:${proxy.port}/`;
const proxyOrigin = `http://127.0.0.1:${proxy.port}`;
const proxyWs = `ws://127.0.0.1:${proxy.port}/v1/ws`;
const serverWs = `ws://${target.host}/v1/ws`;
log(`server ${baseUrl}, alice through proxy ${proxiedUrl}`);

const browser = await chromium.launch({
  executablePath: chromiumPath,
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
log(`chromium ${browser.version()}`);

const pages = {};
const consoleLines = [];
async function newUser(name, url, viewport = { width: 1100, height: 760 }, setup = null) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  page.on("console", (m) => consoleLines.push(`[${name} console.${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => consoleLines.push(`[${name} pageerror] ${e.stack || e.message}`));
  if (setup) await setup(page);
  await page.goto(url);
  pages[name] = page;
  return page;
}

const suffix = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`.slice(-9);
const aliceName = `alice${suffix}`;
const bobName = `bob${suffix}`;
const password = "correct horse battery staple";

async function login(page, username, deviceName) {
  await page.getByRole("tab", { name: "Log in" }).click();
  await page.getByLabel("Username", { exact: true }).fill(username);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByLabel("Device name", { exact: true }).fill(deviceName);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.locator("#me-name", { hasText: username }).waitFor();
  await page.locator('#conn[data-state="online"]').waitFor();
}

const alertCount = (page) => page.locator("#alerts .alert").count();
/** The toasts on screen, as text (for a failed check's message). */
const alertTexts = (page) => page.evaluate(() => [...document.querySelectorAll("#alerts .alert")].map((a) => `${a.dataset.connection ? "[connection] " : ""}${a.textContent}`));
const draftKeys = (page) => page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith("confab.draft.")));

async function signup(page, username) {
  await page.getByRole("tab", { name: "Sign up" }).click();
  await page.getByLabel("Username", { exact: true }).fill(username);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByRole("button", { name: "Create account" }).click();
  await page.locator("#me-name", { hasText: username }).waitFor();
  await page.locator('#conn[data-state="online"]').waitFor();
}

/** A conversation in the list by its exact name (previews may name anyone). */
const convItem = (page, name) => page.locator(`.conv-item[aria-label^="${name},"]`);
/** Accepts the confirmation dialog (its button is named `ok`), checking its title. */
async function confirm(page, title, ok) {
  const dialog = page.getByRole("dialog", { name: title });
  await dialog.waitFor();
  await dialog.getByRole("button", { name: ok, exact: true }).click();
  await dialog.waitFor({ state: "hidden" });
}

const messageTexts = (page) => page.locator("#message-list li.msg:not(.pending) .text").allTextContents();
const seqs = (page) => page.locator("#message-list li[data-seq]").evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));

async function send(page, text) {
  const box = page.getByLabel("Message", { exact: true });
  await box.fill(text);
  await box.press("Enter");
}

// Asking the harness to stop or start the server (--control stdin): the
// request on stdout, the answer read from stdin.
const controlAnswers = [];
const controlWaiters = [];
let controlInput = null;
if (args.control === "stdin") {
  const { createInterface } = await import("node:readline");
  controlInput = createInterface({ input: process.stdin });
  controlInput.on("line", (l) => (controlWaiters.length ? controlWaiters.shift()(l) : controlAnswers.push(l)));
}
async function serverControl(request, timeoutMs = 60000) {
  console.log(`e2e-control: ${request}`);
  let timer;
  const answer = await Promise.race([
    controlAnswers.length ? Promise.resolve(controlAnswers.shift()) : new Promise((r) => controlWaiters.push(r)),
    new Promise((r) => (timer = setTimeout(() => r(`no answer within ${timeoutMs} ms`), timeoutMs))),
  ]);
  clearTimeout(timer);
  if (answer !== "ok") throw new Error(`the harness could not ${request}: ${answer}`);
}

async function waitFor(what, fn, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Rows kept in the page's IndexedDB cache (cache.js), all stores; -1 without IndexedDB. */
const savedRows = (page) =>
  page.evaluate(async () => {
    await confab.cache.idle();
    const db = await confab.cache.db();
    if (!db) return -1;
    const tx = db.transaction(["meta", "conversations", "messages"]);
    const counts = await Promise.all(["meta", "conversations", "messages"].map((n) => new Promise((r, j) => {
      const q = tx.objectStore(n).count();
      q.onsuccess = () => r(q.result);
      q.onerror = () => j(q.error);
    })));
    return counts.reduce((a, b) => a + b, 0);
  });

/** A /v1/discover answer naming two nodes, a and b (spec §2.5). */
const twoNodes = (a, b) =>
  JSON.stringify({
    protocol: "confab.v1",
    nodes: [
      { node: "a", quic: null, tcp: null, ws: a, fingerprint: "sha256:00", load: { sessions: 0, connections_free: 100, cpu: 0.1 } },
      { node: "b", quic: null, tcp: null, ws: b, fingerprint: "sha256:00", load: { sessions: 0, connections_free: 100, cpu: 0.2 } },
    ],
  });

/** The HTTP status of a WebSocket upgrade to `host` (host:port) from a page of `origin`: 101 or a refusal. */
function upgradeStatus(host, origin) {
  const [hostname, port] = [host.slice(0, host.lastIndexOf(":")), Number(host.slice(host.lastIndexOf(":") + 1))];
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: hostname,
      port,
      path: "/v1/ws",
      headers: { Connection: "Upgrade", Upgrade: "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "confab.v1", Origin: origin },
    });
    req.on("upgrade", (_res, socket) => {
      socket.destroy();
      resolve(101);
    });
    req.on("response", (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on("error", reject);
    req.setTimeout(5000, () => req.destroy(new Error("no answer to the upgrade within 5 s")));
    req.end();
  });
}

function assertContiguous(list, what) {
  for (let i = 1; i < list.length; i++) if (list[i] !== list[i - 1] + 1) throw new Error(`${what}: seqs not contiguous/ascending: ${list.join(",")}`);
}

let failed = null;
try {
  const alice = await newUser("alice", proxiedUrl);
  const bob = await newUser("bob", baseUrl);

  // --- accounts --------------------------------------------------------------
  await signup(alice, aliceName);
  await signup(bob, bobName);
  check(true, "alice and bob signed up and are online");
  check(await alice.evaluate(() => confab.session.tickerWorker !== null), "the heartbeat ticks on a worker (not throttled in hidden tabs)");
  // One server: discovery names its own address, the page keeps to its origin (the proxy).
  const aliceEp = await alice.evaluate(() => ({ ...confab.session.endpoint }));
  check(aliceEp.url === proxyWs && aliceEp.listed === 1 && aliceEp.error === null, `a single server listed by /v1/discover: alice stays on her page's origin (${aliceEp.url}), not the address it names`);

  // A refused request shows the Error frame's code name.
  await alice.getByLabel("Message a user").fill(aliceName);
  await alice.getByRole("button", { name: "Open" }).click();
  await alice.locator(".alert", { hasText: "CANNOT_MESSAGE_SELF" }).waitFor();
  check(true, "opening a DM with oneself shows CANNOT_MESSAGE_SELF");
  await alice.getByLabel("Message a user").fill(`nobody${suffix}`);
  await alice.getByRole("button", { name: "Open" }).click();
  await alice.locator(".alert", { hasText: "USER_NOT_FOUND" }).waitFor();
  check(true, "opening a DM with an unknown user shows USER_NOT_FOUND");
  // The reader dismisses them (they would otherwise stay 10 s and blur the checks below).
  for (let n = await alertCount(alice); n > 0; n--) await alice.locator("#alerts .alert").first().getByRole("button", { name: "Dismiss this message" }).click();
  await waitFor("the dismissed toasts to go", async () => (await alertCount(alice)) === 0);
  check(true, "Dismiss removes a toast");

  // --- DM --------------------------------------------------------------------
  await alice.getByLabel("Message a user").fill(bobName.toUpperCase()); // lowercased by the client
  await alice.getByRole("button", { name: "Open" }).click();
  await alice.locator("#conv-title", { hasText: bobName }).waitFor();
  check(true, "alice opened the DM with bob by username");

  const count = await alice.locator("#composer-count").textContent();
  check(count.includes("100,000"), `the composer shows the 100,000-character limit ("${count}")`);

  await send(alice, "hello bob 👋");
  await alice.locator("#message-list li.msg:not(.pending) .text", { hasText: "hello bob" }).waitFor();
  await alice.locator("#message-list li.msg .status", { hasText: "Sent" }).first().waitFor();
  check(true, "alice's message was stored (Sent)");

  // Bob: the conversation appears with an unread badge and alice's presence.
  const bobItem = bob.locator(".conv-item", { hasText: aliceName });
  await bobItem.waitFor();
  await waitFor("bob's unread badge = 1", async () => (await bobItem.getAttribute("data-unread")) === "1");
  check(true, "bob sees the new DM with 1 unread");
  await bob.locator(`.conv-item[data-id] .presence-dot[data-state="online"]`).waitFor();
  check(true, "bob sees alice online (presence dot)");

  await bobItem.click();
  await bob.locator("#message-list .text", { hasText: "hello bob 👋" }).waitFor();
  await waitFor("bob's unread badge cleared", async () => (await bobItem.getAttribute("data-unread")) === "0");
  check(true, "bob opened the DM, read the message, unread count back to 0");
  await alice.locator("#message-list li.msg .status", { hasText: "Seen" }).waitFor();
  check(true, "alice sees the read marker (Seen)");

  // Typing indicator, then Shift+Enter for a newline.
  const bobBox = bob.getByLabel("Message", { exact: true });
  await bobBox.pressSequentially("hi ali", { delay: 20 });
  await alice.locator("#typing", { hasText: `${bobName} is typing` }).waitFor();
  check(true, "alice sees bob typing");
  await bobBox.pressSequentially("ce");
  await bobBox.press("Shift+Enter");
  await bobBox.pressSequentially("second line");
  await bobBox.press("Enter");
  await alice.locator("#message-list .text", { hasText: "second line" }).waitFor();
  const two = (await messageTexts(alice)).at(-1);
  check(two === "hi alice\nsecond line", `Shift+Enter made a newline (${JSON.stringify(two)})`);

  // --- alice goes offline ------------------------------------------------------
  // What alice knows of bob before: online (header and list), her message Seen.
  const peerClaims = (page, peer) =>
    page.evaluate((name) => {
      const item = [...document.querySelectorAll(".conv-item")].find((b) => b.getAttribute("aria-label").startsWith(`${name},`));
      return { sub: document.getElementById("conv-sub").textContent, label: item?.getAttribute("aria-label") ?? "", dot: item?.querySelector(".presence-dot")?.dataset.state ?? "" };
    }, peer);
  await waitFor("alice to see bob online", async () => {
    const c = await peerClaims(alice, bobName);
    return c.sub === "online" && c.label.startsWith(`${bobName}, online,`) && c.dot === "online";
  });
  check(true, "alice sees bob online (header, list and dot)");
  const aliceStatuses = () => alice.locator("#message-list li.msg:not(.pending) .status").evaluateAll((els) => els.filter((e) => !e.hidden).map((e) => e.textContent));
  check(JSON.stringify(await aliceStatuses()) === JSON.stringify(["Seen"]), "before going offline alice's message says Seen");
  log("alice's network goes down");
  proxy.down();
  // Read state and text together: between attempts it flips to "connecting".
  const connText = await waitFor("alice's reconnecting state", () =>
    alice.evaluate(() => {
      const box = document.getElementById("conn");
      const text = document.getElementById("conn-text").textContent;
      return box.dataset.state === "reconnecting" && /Reconnecting…/.test(text) && !box.querySelector("#conn-retry").hidden ? text : null;
    }),
  );
  check(true, `alice shows "${connText}" and a "Retry now" button`);
  await alice.screenshot({ path: join(outDir, "alice-reconnecting.png") });

  const missed = ["missed 1", "missed 2 ✓", "missed 3 — the last one"];
  for (const m of missed) {
    await send(bob, m);
    await bob.locator("#message-list li.msg:not(.pending) .text", { hasText: m }).waitFor();
  }
  check(true, "bob sent 3 messages while alice is offline");

  // Alice writes while offline: it waits in the outbox.
  await send(alice, "written while offline");
  await alice.locator("#message-list li.msg.pending .status", { hasText: "Waiting for connection" }).waitFor();
  check(true, "alice's offline message waits in the outbox");
  const aliceOfflineSeen = await messageTexts(alice);
  check(!aliceOfflineSeen.some((t) => t.startsWith("missed")), "alice cannot see bob's messages while offline");
  // Offline, nothing of bob's presence is known: no "online" claimed in
  // words (header, list) or by the dot until fresh presence comes.
  const offlineClaims = await waitFor("alice to stop claiming bob is online", async () => {
    const c = await peerClaims(alice, bobName);
    return !/\bonline\b/.test(c.sub) && !/\bonline\b/.test(c.label.split(",")[1] ?? "") && c.dot !== "online" ? c : null;
  });
  check(offlineClaims.sub === "" && offlineClaims.dot === "unknown", `while offline alice does not show bob as online (header "${offlineClaims.sub}", dot ${offlineClaims.dot}, list "${offlineClaims.label}")`);
  // Read state already known stays: "Seen" does not turn back into "Sent".
  const offlineStatuses = await aliceStatuses();
  check(JSON.stringify(offlineStatuses) === JSON.stringify(["Seen"]), `while offline alice's message still says Seen (${JSON.stringify(offlineStatuses)})`);

  // Bob sees alice go offline once the presence grace period has passed.
  await bob.locator('.conv-item .presence-dot[data-state="offline"]').waitFor({ timeout: 20000 });
  check(true, "bob sees alice offline after the grace period");

  log("alice's network is back");
  proxy.restore();
  await alice.locator('#conn[data-state="online"]').waitFor({ timeout: 90000 });
  check(true, "alice reconnected (resume + sync)");
  await waitFor("alice to see bob online again", async () => {
    const c = await peerClaims(alice, bobName);
    return c.sub === "online" && c.dot === "online";
  });
  check(true, "back online, fresh presence shows bob online again");

  await waitFor("alice to show the missed messages", async () => {
    const t = await messageTexts(alice);
    return missed.every((m) => t.includes(m)) && t.includes("written while offline");
  });
  const afterTexts = await messageTexts(alice);
  const expected = ["hello bob 👋", "hi alice\nsecond line", ...missed, "written while offline"];
  check(JSON.stringify(afterTexts) === JSON.stringify(expected), `alice has exactly the messages, once each, in order: ${JSON.stringify(afterTexts)}`);
  assertContiguous(await seqs(alice), "alice");
  check((await alice.locator("#message-list li.pending").count()) === 0, "alice's outbox is empty");
  await bob.locator("#message-list .text", { hasText: "written while offline" }).waitFor();
  const bobTexts = await messageTexts(bob);
  check(bobTexts.filter((t) => t === "written while offline").length === 1, "bob got alice's offline message exactly once");
  check(JSON.stringify(bobTexts) === JSON.stringify(expected), "bob's and alice's views agree");
  await bob.locator('.conv-item .presence-dot[data-state="online"]').waitFor({ timeout: 20000 });
  check(true, "bob sees alice online again");

  // --- half-open: alice's connection goes silent (no reset) --------------------
  const heartbeatMs = await alice.evaluate(() => confab.session.heartbeatMs);
  if (heartbeatMs <= 5000) {
    log(`alice's connection goes silent (heartbeat ${heartbeatMs} ms)`);
    const frozenAt = Date.now();
    proxy.freeze();
    await send(bob, "sent into the void");
    await bob.locator("#message-list li.msg:not(.pending) .text", { hasText: "sent into the void" }).waitFor();
    // A request on the dead connection: its outcome is lost with it (an OFFLINE toast).
    await alice.getByLabel("Message a user").fill(`nobody${suffix}`);
    await alice.getByRole("button", { name: "Open" }).click();
    await alice.locator('#conn[data-state="reconnecting"]').waitFor({ timeout: 4 * heartbeatMs });
    const after = Date.now() - frozenAt;
    check(after >= 2 * heartbeatMs, `alice's heartbeat declared the silent connection dead after ${after} ms`);
    await alice.locator(".alert", { hasText: "OFFLINE" }).waitFor();
    const toastAt = Date.now();
    proxy.restore();
    await alice.locator('#conn[data-state="online"]').waitFor({ timeout: 90000 });
    const left = await alertTexts(alice);
    check(left.length === 0, `back online, the connection's error toast is gone (${Date.now() - toastAt} ms after it appeared; toasts otherwise last 10 s)${left.length ? `; on screen: ${JSON.stringify(left)}` : ""}`);
    await alice.locator("#message-list .text", { hasText: "sent into the void" }).waitFor();
    expected.push("sent into the void");
    check(JSON.stringify(await messageTexts(alice)) === JSON.stringify(expected), "after the half-open connection alice has every message once");
  } else {
    log(`half-open phase skipped: the server's heartbeat is ${heartbeatMs} ms (it needs <= 5000 to finish quickly)`);
  }

  // --- the server restarts (an upgrade): both reconnect, no error left ----------
  if (controlInput) {
    check((await alertCount(alice)) === 0 && (await alertCount(bob)) === 0, "no toast on screen before the server restarts");
    log("the server stops (as on SIGTERM: GoAway, SHUTTING_DOWN, the store closed)");
    await serverControl("stop-server");
    for (const page of [alice, bob]) await page.locator('#conn[data-state="reconnecting"]').waitFor({ timeout: 20000 });
    check(true, "the server stopped: alice and bob show Reconnecting…");
    const duringRestart = ["bob, while the server restarts", "alice, while the server restarts"];
    await send(bob, duringRestart[0]);
    await send(alice, duringRestart[1]);
    for (const page of [alice, bob]) await page.locator("#message-list li.msg.pending .status", { hasText: "Waiting for connection" }).waitFor();
    check(true, "alice and bob each wrote a message while the server was down: it waits in the outbox");
    // The GoAway is said (a toast about the connection) while it lasts.
    for (const page of [alice, bob]) await page.locator('#alerts .alert[data-connection="true"]', { hasText: "the server is restarting" }).waitFor();
    check(true, "both were told the server is restarting");
    log("the server starts again (same data dir, same address)");
    await serverControl("start-server");
    for (const page of [alice, bob]) await page.locator('#conn[data-state="online"]').waitFor({ timeout: 90000 });
    check(true, "after the restart alice and bob reconnected by themselves");
    for (const page of [alice, bob]) {
      await waitFor("the messages written during the restart, stored", async () => {
        const t = await messageTexts(page);
        return duringRestart.every((m) => t.includes(m)) && (await page.locator("#message-list li.pending").count()) === 0;
      });
    }
    const aliceAfter = await messageTexts(alice);
    const tail = aliceAfter.slice(expected.length);
    check(
      JSON.stringify(aliceAfter.slice(0, expected.length)) === JSON.stringify(expected) && tail.length === 2 && duringRestart.every((m) => tail.includes(m)),
      `the messages written during the restart arrived once each (${JSON.stringify(tail)})`,
    );
    expected.push(...tail);
    check(JSON.stringify(await messageTexts(bob)) === JSON.stringify(expected), "bob's and alice's views agree after the restart");
    assertContiguous(await seqs(alice), "alice after the restart");
    const leftAlice = await alertTexts(alice);
    const leftBob = await alertTexts(bob);
    check(leftAlice.length === 0 && leftBob.length === 0, `back online after the restart, no toast is left on screen${leftAlice.length + leftBob.length ? ` (alice: ${JSON.stringify(leftAlice)}, bob: ${JSON.stringify(leftBob)})` : ""}`);
    check((await alice.locator("#conn").getAttribute("data-state")) === "online" && (await alice.locator("#conn-text").textContent()) === "Online", "alice's status says Online");
  } else {
    log("server restart phase skipped: no --control stdin (server/tests/browser.rs passes it)");
  }

  // --- reload: resume from localStorage, rebuild from the server ----------------
  await alice.reload();
  await alice.locator('#conn[data-state="online"]').waitFor();
  await alice.locator(".conv-item", { hasText: bobName }).click();
  await waitFor("alice's history after reload", async () => (await messageTexts(alice)).length === expected.length);
  check(JSON.stringify(await messageTexts(alice)) === JSON.stringify(expected), "after a reload alice resumes and sees the same history");

  // --- the URL names the open conversation; a draft survives a reload -----------
  const dmHash = await alice.evaluate(() => location.hash);
  check(/^#c\/\d+$/.test(dmHash), `the URL names the open conversation (${dmHash})`);
  const draft = "a draft that survives a reload ✍️";
  await alice.getByLabel("Message", { exact: true }).fill(draft);
  await alice.reload();
  await alice.locator('#conn[data-state="online"]').waitFor();
  await alice.locator("#conv-title", { hasText: bobName }).waitFor(); // no click: the URL opened it
  check((await alice.evaluate(() => location.hash)) === dmHash, "after a reload the conversation the URL names is open again");
  await waitFor("the draft back in the composer", async () => (await alice.getByLabel("Message", { exact: true }).inputValue()) === draft);
  check(true, "the unsent draft survived the reload");
  await alice.getByLabel("Message", { exact: true }).press("Enter");
  await alice.locator("#message-list li.msg:not(.pending) .text", { hasText: draft }).waitFor();
  expected.push(draft);
  check((await draftKeys(alice)).length === 0 && (await alice.getByLabel("Message", { exact: true }).inputValue()) === "", "sending the draft cleared it (composer and storage)");
  check((await alice.locator("#message-list li.day", { hasText: "Today" }).count()) === 1, "one date separator (Today) above today's messages");

  // --- a reload without the network: painted from the saved conversations ---------
  await waitFor("alice's conversations saved in IndexedDB", () =>
    alice.evaluate(async (last) => {
      await confab.flushCache();
      const saved = await confab.cache.load(confab.session.auth.userId);
      return !!saved && [...saved.messages.values()].some((list) => list.at(-1)?.text === last);
    }, expected.at(-1)),
  );
  // Bob (the DM open) has read the draft alice sent: her message says Seen.
  // The reload follows at once: only the save at pagehide can keep that.
  await waitFor("alice's draft Seen by bob", async () => JSON.stringify(await aliceStatuses()) === JSON.stringify(["Seen"]));
  // The page itself must come from somewhere with the network down (as from
  // the browser's cache): the proxy serves its files from web/ for this
  // reload; /v1/discover and the WebSocket are refused like the rest.
  log("alice's network goes down; she reloads");
  proxy.down({ shell: webDir });
  await alice.reload();
  await alice.locator("#conv-title", { hasText: bobName }).waitFor();
  await waitFor("the saved messages on screen", async () => JSON.stringify(await messageTexts(alice)) === JSON.stringify(expected));
  const offlineState = await alice.locator("#conn").getAttribute("data-state");
  check(
    offlineState !== "online" && offlineState !== "syncing" && (await convItem(alice, bobName).count()) === 1,
    `with the network down (${offlineState}), a reload paints the list and the open conversation's ${expected.length} last messages from IndexedDB`,
  );
  const reloadedStatuses = await aliceStatuses();
  check(JSON.stringify(reloadedStatuses) === JSON.stringify(["Seen"]), `reloaded offline, alice's message still says Seen (${JSON.stringify(reloadedStatuses)})`);
  const reloadedClaims = await peerClaims(alice, bobName);
  check(reloadedClaims.sub === "" && reloadedClaims.dot === "unknown", `reloaded offline, bob's presence is not claimed (header "${reloadedClaims.sub}", dot ${reloadedClaims.dot})`);
  const cachedSeqs = await seqs(alice);
  assertContiguous(cachedSeqs, "alice from the cache");
  const whileDown = "sent while alice reloaded offline";
  await send(bob, whileDown);
  await bob.locator("#message-list li.msg:not(.pending) .text", { hasText: whileDown }).waitFor();
  log("alice's network is back");
  proxy.restore();
  await alice.locator('#conn[data-state="online"]').waitFor({ timeout: 90000 });
  expected.push(whileDown);
  await waitFor("alice to catch up after the offline reload", async () => (await messageTexts(alice)).includes(whileDown));
  check(JSON.stringify(await messageTexts(alice)) === JSON.stringify(expected), "back online, the resume and sync add what was missed: every message once, in order");
  assertContiguous(await seqs(alice), "alice after the offline reload");
  check((await convItem(alice, bobName).count()) === 1 && (await alice.locator(".conv-item").count()) === 1, "the conversation list is not doubled either");

  // --- history paging ---------------------------------------------------------
  const N = 70;
  for (let i = 1; i <= N; i++) await send(bob, `bulk ${i}`);
  await bob.locator("#message-list li.msg:not(.pending) .text", { hasText: `bulk ${N}` }).waitFor({ timeout: 30000 });
  await alice.locator("#message-list .text", { hasText: `bulk ${N}` }).waitFor({ timeout: 30000 });
  check(true, `bob sent ${N} more messages, alice got them live`);
  // Let alice's debounced AckCursor go out, so the reload starts from the head.
  await waitFor("alice's cursor acked", () => alice.evaluate(() => confab.session.lastAcked === confab.session.last));
  await alice.reload();
  await alice.locator('#conn[data-state="online"]').waitFor();
  await alice.locator(".conv-item", { hasText: bobName }).click();
  await alice.locator("#message-list .text", { hasText: `bulk ${N}` }).waitFor();
  const firstPage = (await seqs(alice)).length;
  check(firstPage < expected.length + N, `after a reload only the newest page is loaded (${firstPage} messages)`);
  await waitFor("older pages by scrolling up", async () => {
    await alice.locator("#messages").evaluate((e) => (e.scrollTop = 0));
    return (await seqs(alice)).length === expected.length + N;
  });
  const all = await seqs(alice);
  assertContiguous(all, "alice after paging");
  check(all[0] === 1 && all.length === expected.length + N, `scrolling up loaded every older message once (seq 1..${all.at(-1)})`);
  await alice.locator("#older-status", { hasText: "Start of the conversation" }).waitFor();

  // --- a group ------------------------------------------------------------------
  await alice.getByRole("button", { name: "New group…" }).click();
  await alice.getByLabel("Group name", { exact: true }).fill("Weekend hike 🥾");
  await alice.getByLabel("Members", { exact: true }).fill(bobName);
  await alice.getByRole("button", { name: "Create" }).click();
  await alice.locator("#conv-title", { hasText: "Weekend hike" }).waitFor();
  await alice.locator("#message-list .system", { hasText: "created the group" }).waitFor();
  await send(alice, "group hello");
  await bob.locator(".conv-item", { hasText: "Weekend hike" }).click();
  await bob.locator("#message-list .text", { hasText: "group hello" }).waitFor();
  check(true, "alice created a group with bob; bob sees it and its message");

  const carol = await newUser("carol", baseUrl, { width: 390, height: 780 });
  const carolName = `carol${suffix}`;
  await signup(carol, carolName);
  await alice.locator(".conv-item", { hasText: "Weekend hike" }).click();
  await alice.getByRole("button", { name: "Add members…" }).click();
  await alice.getByLabel("Members to add", { exact: true }).fill(carolName);
  await alice.getByRole("button", { name: "Add", exact: true }).click();
  await alice.locator("#message-list .system", { hasText: `added ${carolName}` }).waitFor();
  await alice.locator("#conv-sub", { hasText: "3 members" }).waitFor();
  await carol.locator(".conv-item", { hasText: "Weekend hike" }).click();
  await carol.locator("#message-list .text", { hasText: "group hello" }).waitFor();
  check((await carol.locator("#conv-sub").textContent()) === "3 members", "carol, just added, counts 3 members (her ADDED is not counted twice)");
  await send(carol, "hi all, carol here");
  await bob.locator("#message-list .text", { hasText: "carol here" }).waitFor();
  check(true, "alice added carol; carol reads the group's history and posts; bob sees it");
  // Group read markers are fetched when the group opens (live receipts go
  // only to the author of the message read), and carol's marker goes out a
  // moment after she saw the message: reopen the group until both readers
  // are in (10 s at most).
  let seenBy = "";
  for (let attempt = 0; attempt < 20; attempt++) {
    await alice.locator(".conv-item", { hasText: bobName }).click();
    await alice.locator(".conv-item", { hasText: "Weekend hike" }).click();
    await alice.locator("#message-list li.msg .status", { hasText: "Seen by" }).waitFor();
    seenBy = await alice.locator("#message-list li.msg .status", { hasText: "Seen by" }).textContent();
    if (seenBy.includes(bobName) && seenBy.includes(carolName)) break;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  check(seenBy.includes(bobName) && seenBy.includes(carolName), `alice sees who read her group message ("${seenBy}")`);
  // Live (§8.10): the author hears of a read at once. Bob looks elsewhere
  // while alice posts; once her post-send refresh (3 s) is over, nothing
  // but the live receipt can tell her bob read it.
  await bob.locator(".conv-item", { hasText: aliceName }).click();
  await send(alice, "who has seen this one?");
  await alice.locator("#message-list li.msg:not(.pending) .text", { hasText: "who has seen this one?" }).waitFor();
  await new Promise((resolve) => setTimeout(resolve, 3500));
  const lastStatus = alice.locator("#message-list li.msg", { hasText: "who has seen this one?" }).locator(".status");
  check(!((await lastStatus.textContent()) ?? "").includes(bobName), "before bob opens the group, alice's new message is not seen by him");
  await bob.locator(".conv-item", { hasText: "Weekend hike" }).click();
  await bob.locator("#message-list .text", { hasText: "who has seen this one?" }).waitFor();
  await lastStatus.filter({ hasText: bobName }).waitFor({ timeout: 2500 });
  check(true, "bob reads the group: alice's \"Seen by\" names him at once (a live group receipt)");
  await carol.screenshot({ path: join(outDir, "carol-phone.png") });
  const created = await alice.locator("#message-list .system", { hasText: "created the group" }).textContent();
  check(created === `${aliceName} created the group with ${bobName}`, `the creator is not among "with …" ("${created}")`);

  // --- back and forward: the URL names the conversation ---------------------------
  await alice.locator(".conv-item", { hasText: bobName }).click();
  await alice.locator("#conv-title", { hasText: bobName }).waitFor();
  await alice.locator(".conv-item", { hasText: "Weekend hike" }).click();
  await alice.locator("#conv-title", { hasText: "Weekend hike" }).waitFor();
  const groupHash = await alice.evaluate(() => location.hash);
  check(/^#c\/\d+$/.test(groupHash) && groupHash !== dmHash, `opening the group changed the URL (${groupHash})`);
  await alice.goBack();
  await alice.locator("#conv-title", { hasText: bobName }).waitFor();
  check((await alice.evaluate(() => location.hash)) === dmHash, "Back shows the DM again");
  await alice.goForward();
  await alice.locator("#conv-title", { hasText: "Weekend hike" }).waitFor();
  check((await alice.evaluate(() => location.hash)) === groupHash, "Forward shows the group again");
  await alice.reload();
  await alice.locator('#conn[data-state="online"]').waitFor();
  await alice.locator("#conv-title", { hasText: "Weekend hike" }).waitFor();
  await alice.locator("#message-list .text", { hasText: "carol here" }).waitFor();
  check(true, "a reload on the group's URL opens the group");
  // A URL naming no conversation of hers: just the list, no error.
  await alice.evaluate(() => history.replaceState(null, "", "#c/999999999"));
  await alice.reload();
  await alice.locator('#conn[data-state="online"]').waitFor();
  await alice.locator(".conv-item", { hasText: "Weekend hike" }).waitFor();
  await waitFor("the unknown id dropped from the URL", async () => (await alice.evaluate(() => location.hash)) === "");
  check(await alice.locator("#conv-none").isVisible(), "a reload on an unknown conversation's URL shows the list");
  await alice.evaluate(() => (location.hash = "#c/999999998"));
  await waitFor("the unknown id dropped from the URL", async () => (await alice.evaluate(() => location.hash)) === "");
  check((await alertCount(alice)) === 0 && (await alice.locator("#conv-none").isVisible()), "an unknown conversation in the URL shows the list without an error");

  // --- devices: a second browser of alice's, signed out from the first ------------
  const alice2 = await newUser("alice2", baseUrl);
  await login(alice2, aliceName, "Second browser");
  await waitFor("the second browser's conversations saved", async () => {
    await alice2.evaluate(() => confab.flushCache());
    return (await savedRows(alice2)) > 1;
  });
  await alice.getByRole("button", { name: "Devices" }).click();
  const devices = alice.getByRole("dialog", { name: "Devices" });
  await devices.locator(".device", { hasText: "Second browser" }).waitFor();
  check((await devices.locator(".device").count()) === 2, "the devices dialog lists alice's two devices");
  check((await devices.locator(".device", { hasText: "This device" }).count()) === 1, 'one of them is marked "This device"');
  await alice.screenshot({ path: join(outDir, "alice-devices.png") });
  await devices.locator(".device", { hasText: "Second browser" }).getByRole("button", { name: /^Sign out/ }).click();
  await alice2.locator("#auth-error", { hasText: "DEVICE_REVOKED" }).waitFor();
  check(await alice2.locator("#auth-view").isVisible(), "the second browser was signed out (DEVICE_REVOKED, sign-in form)");
  check((await savedRows(alice2)) === 0, "the revoked browser deleted its saved conversations (IndexedDB)");
  await waitFor("the list down to one device", async () => (await devices.locator(".device").count()) === 1);
  check((await devices.locator(".device", { hasText: "This device" }).count()) === 1, "alice's list now has only this device");

  // Alerts: a new sign-in and a sign-out each start clean; sign-out drops the drafts.
  await alice2.locator(".alert", { hasText: "DEVICE_REVOKED" }).waitFor();
  await login(alice2, aliceName, "Second browser");
  check((await alertCount(alice2)) === 0, "signing in again cleared the alerts");
  await alice2.getByLabel("Message a user").fill(aliceName);
  await alice2.getByRole("button", { name: "Open" }).click();
  await alice2.locator(".alert", { hasText: "CANNOT_MESSAGE_SELF" }).waitFor();
  await alice2.locator(".conv-item", { hasText: bobName }).click();
  await alice2.getByLabel("Message", { exact: true }).fill("never sent");
  check((await draftKeys(alice2)).length === 1, "the second browser keeps a draft");
  await waitFor("the second browser's saved conversations", async () => {
    await alice2.evaluate(() => confab.flushCache());
    return (await savedRows(alice2)) > 2;
  });
  await alice2.getByRole("button", { name: "Sign out", exact: true }).click();
  await alice2.locator("#auth-view").waitFor();
  check((await alertCount(alice2)) === 0, "signing out cleared the alerts");
  check((await draftKeys(alice2)).length === 0 && (await alice2.evaluate(() => location.hash)) === "", "signing out dropped the drafts and the conversation in the URL");
  check((await savedRows(alice2)) === 0, "signing out deleted the saved conversations (IndexedDB)");

  await login(alice2, aliceName, "Second browser");
  await devices.getByRole("button", { name: "Close" }).click();
  await alice.getByRole("button", { name: "Devices" }).click();
  await devices.locator(".device", { hasText: "Second browser" }).waitFor();
  await devices.getByRole("button", { name: "Sign out all other devices" }).click();
  await alice2.locator("#auth-error", { hasText: "DEVICE_REVOKED" }).waitFor();
  await waitFor("the list down to one device", async () => (await devices.locator(".device").count()) === 1);
  check(true, '"Sign out all other devices" signed the second browser out');
  await devices.getByRole("button", { name: "Close" }).click();
  check((await alice.locator('#conn[data-state="online"]').count()) === 1, "alice herself is still signed in");
  await alice2.context().close();
  delete pages.alice2;

  // --- group management: members and roles, rename, refusals, leave, remove ------
  await convItem(alice, "Weekend hike 🥾").click();
  await alice.getByRole("button", { name: "Group info…" }).click();
  const aliceInfo = alice.getByRole("dialog", { name: "Group info" });
  const memberRow = (dialog, name) => dialog.locator(`.member[data-username="${name}"]`);
  await memberRow(aliceInfo, carolName).waitFor();
  check((await aliceInfo.locator(".member").count()) === 3, "group info lists the three members");
  check(
    (await memberRow(aliceInfo, aliceName).getAttribute("data-role")) === "owner" && (await memberRow(aliceInfo, bobName).getAttribute("data-role")) === "member",
    "with their roles (alice owner, bob member)",
  );
  check(
    (await aliceInfo.getByLabel("Group title").isVisible()) &&
      (await aliceInfo.getByRole("button", { name: `Remove ${bobName} from the group` }).count()) === 1 &&
      (await aliceInfo.getByRole("button", { name: `Make ${bobName} admin` }).count()) === 1 &&
      (await memberRow(aliceInfo, aliceName).getByRole("button").count()) === 0,
    "the owner sees rename, remove and role controls, none on her own row (the only owner)",
  );
  await alice.screenshot({ path: join(outDir, "alice-group-info.png") });
  await aliceInfo.getByRole("button", { name: `Make ${bobName} admin` }).click();
  await waitFor("bob shown as admin", async () => (await memberRow(aliceInfo, bobName).getAttribute("data-role")) === "admin");
  await alice.locator("#message-list .system", { hasText: `${bobName} is now admin` }).waitFor();
  check(true, "alice made bob admin (SetRole; the group shows the change)");

  await convItem(bob, "Weekend hike 🥾").click();
  await bob.getByRole("button", { name: "Group info…" }).click();
  const bobInfo = bob.getByRole("dialog", { name: "Group info" });
  await memberRow(bobInfo, carolName).waitFor();
  check(
    (await bobInfo.getByLabel("Group title").isVisible()) &&
      (await bobInfo.getByRole("button", { name: `Remove ${carolName} from the group` }).count()) === 1 &&
      (await bobInfo.getByRole("button", { name: `Remove ${aliceName} from the group` }).count()) === 0 &&
      (await bobInfo.getByRole("button", { name: /^Make / }).count()) === 0,
    "an admin may rename and remove members, but not the owner, and changes no roles",
  );
  await bobInfo.getByLabel("Group title").fill("Weekend hike 2 🏔");
  await bobInfo.getByRole("button", { name: "Rename" }).click();
  await alice.locator("#conv-title", { hasText: "Weekend hike 2 🏔" }).waitFor();
  await carol.locator("#message-list .system", { hasText: `${bobName} renamed the group to “Weekend hike 2 🏔”` }).waitFor();
  check(true, "bob (admin) renamed the group; alice's title and carol's history show it");

  // The server refuses what the dialog still offers: alice demotes bob while his dialog is open.
  await aliceInfo.getByRole("button", { name: `Make ${bobName} member` }).click();
  await bob.locator("#message-list .system", { hasText: `${bobName} is now member` }).waitFor();
  await bobInfo.getByRole("button", { name: `Remove ${carolName} from the group` }).click();
  await confirm(bob, `Remove ${carolName}?`, "Remove");
  await bobInfo.locator("#info-error", { hasText: "PERMISSION_DENIED" }).waitFor();
  const refusal = await bobInfo.locator("#info-error").textContent();
  check(/admins may remove only members/.test(refusal), `a refusal that comes back anyway is shown in words ("${refusal}")`);
  await waitFor("bob's controls gone after the refusal", async () => (await bobInfo.getByRole("button", { name: /^Remove / }).count()) === 0 && !(await bobInfo.getByLabel("Group title").isVisible()));
  check(true, "after the refusal the dialog shows bob's new role's controls (none)");
  await bobInfo.getByRole("button", { name: "Close" }).click();

  // Carol (a member, phone-sized): no controls, only Leave; she leaves after a confirmation.
  await carol.getByRole("button", { name: "Group info…" }).click();
  const carolInfo = carol.getByRole("dialog", { name: "Group info" });
  await memberRow(carolInfo, aliceName).waitFor();
  check(
    !(await carolInfo.getByLabel("Group title").isVisible()) && (await carolInfo.locator(".member button").count()) === 0 && (await carolInfo.getByRole("button", { name: "Leave group" }).isVisible()),
    "a member sees the members and roles, no controls but Leave",
  );
  await carolInfo.getByRole("button", { name: "Leave group" }).click();
  await confirm(carol, "Leave “Weekend hike 2 🏔”?", "Leave group");
  await waitFor("carol back at the list, the group gone", async () => (await carol.locator("#conv-none").isVisible() || (await carol.locator("#conv-empty").isVisible())) && (await convItem(carol, "Weekend hike 2 🏔").count()) === 0);
  check((await alertCount(carol)) === 0, "carol left the group (confirmed); it is gone from her list, no error toast");
  await alice.locator("#message-list .system", { hasText: `${carolName} left` }).waitFor();
  // Alice removes bob.
  await aliceInfo.getByRole("button", { name: `Remove ${bobName} from the group` }).click();
  await confirm(alice, `Remove ${bobName}?`, "Remove");
  await waitFor("alice alone in the group", async () => (await aliceInfo.locator(".member").count()) === 1);
  await waitFor("the group gone from bob's list", async () => (await convItem(bob, "Weekend hike 2 🏔").count()) === 0);
  check(true, "alice removed bob (confirmed); the group left bob's list");
  // Bob had it open: he is told (and dismisses the toast).
  const bobRemoved = bob.locator(".alert", { hasText: "no longer a member" });
  await bobRemoved.first().waitFor();
  await new Promise((r) => setTimeout(r, 500)); // late answers of requests on the way must not say it again
  check((await bobRemoved.count()) === 1, "bob, who had the group open, is told once that he is no longer a member");
  await bobRemoved.getByRole("button", { name: "Dismiss this message" }).click();
  await aliceInfo.getByRole("button", { name: "Close" }).click();

  // --- blocking from a DM's header -----------------------------------------------
  await convItem(alice, bobName).click();
  await alice.getByRole("button", { name: `Block ${bobName}`, exact: true }).click();
  await confirm(alice, `Block ${bobName}?`, "Block");
  await alice.getByRole("button", { name: `Unblock ${bobName}` }).first().waitFor();
  check(
    (await alice.locator("#blocked-note").isVisible()) && (await alice.getByLabel("Message", { exact: true }).isDisabled()),
    "alice blocked bob from the DM's header: a note, the composer closed",
  );
  await convItem(bob, aliceName).click();
  await send(bob, "can you hear me?");
  const bobRefused = bob.locator("#message-list li.msg.pending.failed .status");
  await bobRefused.waitFor();
  const refusedText = await bobRefused.textContent();
  check(refusedText.includes(`${aliceName} doesn't accept messages from you`) && refusedText.includes("REFUSED_BY_USER"), `bob's send is refused in words ("${refusedText}")`);
  check((await bob.locator(".alert", { hasText: "REFUSED_BY_USER" }).count()) === 0, "no toast over it: the message itself says why");
  await send(bob, "still there?");
  await bob.locator("#message-list li.msg.pending.failed", { hasText: "still there?" }).waitFor();
  await bob.getByRole("button", { name: "Delete unsent message: still there?" }).click();
  await waitFor("the refused message deleted", async () => (await bob.locator("#message-list li.msg.pending", { hasText: "still there?" }).count()) === 0);
  check((await bob.locator("#message-list li.msg.pending.failed").count()) === 1, "bob deleted a refused message; the other stays, with Send again");

  // --- account settings: the block list -------------------------------------------
  await alice.getByRole("button", { name: "Account" }).click();
  const account = alice.getByRole("dialog", { name: "Account" });
  const blockedList = account.getByRole("list", { name: "Blocked users" });
  await blockedList.locator(`[data-username="${bobName}"]`).waitFor();
  check((await blockedList.locator("li").count()) === 1, "the account dialog lists bob as blocked");
  await blockedList.getByRole("button", { name: `Unblock ${bobName}` }).click();
  await account.locator("#blocked-status", { hasText: "You have not blocked anyone." }).waitFor();
  check(true, "alice unblocked bob from the list");
  await account.getByLabel("Block a user").fill(`nobody${suffix}`);
  await account.getByLabel("Block a user").press("Enter");
  await confirm(alice, `Block nobody${suffix}?`, "Block");
  await account.locator("#blocked-error", { hasText: "USER_NOT_FOUND" }).waitFor();
  check((await account.locator("#blocked-error").textContent()).startsWith(`There is no user called “nobody${suffix}”`), "blocking an unknown name says so");
  await account.getByLabel("Block a user").fill(carolName.toUpperCase());
  await account.getByLabel("Block a user").press("Enter");
  await confirm(alice, `Block ${carolName}?`, "Block");
  await blockedList.locator(`[data-username="${carolName}"]`).waitFor();
  check((await account.locator("#blocked-error").textContent()) === "", "alice blocked carol by username from the account dialog");
  await alice.screenshot({ path: join(outDir, "alice-account.png") });
  await account.getByRole("button", { name: "Close" }).click();
  await alice.getByRole("button", { name: `Block ${bobName}`, exact: true }).waitFor();
  check(await alice.getByLabel("Message", { exact: true }).isEnabled(), "the DM's header offers Block again and the composer is open");
  await bob.getByRole("button", { name: "Send again: can you hear me?" }).click();
  await alice.locator("#message-list .text", { hasText: "can you hear me?" }).waitFor();
  await bob.locator("#message-list li.msg:not(.pending) .text", { hasText: "can you hear me?" }).waitFor();
  check((await bob.locator("#message-list li.msg.pending").count()) === 0, "after the unblock bob sent his refused message again; alice has it");
  // Carol, blocked by alice, cannot open a conversation with her.
  check((await alertCount(carol)) === 0, "seconds after leaving, carol still has no toast (late read markers of the group are no news)");
  await carol.getByLabel("Message a user").fill(aliceName);
  await carol.getByRole("button", { name: "Open" }).click();
  const carolAlert = carol.locator(".alert", { hasText: "REFUSED_BY_USER" });
  await carolAlert.waitFor();
  check((await carolAlert.textContent()).includes(`${aliceName} doesn't accept new conversations from you`), "a blocked user opening a DM reads who refused it");
  await carolAlert.getByRole("button", { name: "Dismiss this message" }).click();

  // --- account settings: privacy ------------------------------------------------------
  await bob.getByRole("button", { name: "Account" }).click();
  const bobAccount = bob.getByRole("dialog", { name: "Account" });
  await bobAccount.getByRole("radio", { name: "Everyone" }).first().waitFor();
  await waitFor("bob's settings loaded (everyone, everyone)", async () => (await bobAccount.locator('input[name="privacy-dm"][value="EVERYONE"]').isChecked()) && (await bobAccount.locator('input[name="privacy-groups"][value="EVERYONE"]').isEnabled()));
  check((await bobAccount.locator('input[name="privacy-groups"][value="EVERYONE"]').isChecked()), "the privacy settings start at everyone / everyone");
  check((await bobAccount.getByText("Your contacts are the people you have a direct conversation with.").count()) === 1, "the dialog explains who contacts are");
  await bobAccount.getByRole("group", { name: "Who can start a conversation with me" }).getByRole("radio", { name: "Nobody" }).check();
  await bobAccount.locator("#privacy-status", { hasText: "new conversations from nobody" }).waitFor();
  await bobAccount.getByRole("group", { name: "Who can add me to groups" }).getByRole("radio", { name: "My contacts" }).check();
  await bobAccount.locator("#privacy-status", { hasText: "added to groups by your contacts" }).waitFor();
  check(true, "bob allows no new conversations and group adds by contacts only");
  await bobAccount.getByRole("button", { name: "Close" }).click();
  await carol.getByLabel("Message a user").fill(bobName);
  await carol.getByRole("button", { name: "Open" }).click();
  await carol.locator(".alert", { hasText: `${bobName} doesn't accept new conversations from you` }).waitFor();
  check(true, "carol cannot open a DM with bob (REFUSED_BY_USER, in words)");
  await carol.getByRole("button", { name: "Dismiss this message" }).click();
  await carol.getByRole("button", { name: "New group…" }).click();
  await carol.getByLabel("Group name", { exact: true }).fill("Carol's club");
  await carol.getByLabel("Members", { exact: true }).fill(bobName);
  await carol.getByRole("button", { name: "Create" }).click();
  await carol.locator("#group-error", { hasText: "REFUSED_BY_USER" }).waitFor();
  check((await carol.locator("#group-error").textContent()).startsWith(`${bobName} doesn't accept being added to groups by you, so the group was not created.`), "carol cannot add bob to a group: not one of his contacts");
  await carol.getByRole("button", { name: "Cancel" }).click();
  await alice.getByRole("button", { name: "New group…" }).click();
  await alice.getByLabel("Group name", { exact: true }).fill("Contacts only");
  await alice.getByLabel("Members", { exact: true }).fill(bobName);
  await alice.getByRole("button", { name: "Create" }).click();
  await alice.locator("#conv-title", { hasText: "Contacts only" }).waitFor();
  await convItem(bob, "Contacts only").waitFor();
  check(true, "alice (a contact: they have a DM) adds bob to a group");
  await bob.reload();
  await bob.locator('#conn[data-state="online"]').waitFor();
  await bob.getByRole("button", { name: "Account" }).click();
  await waitFor("bob's stored settings", async () => (await bobAccount.locator('input[name="privacy-dm"][value="NOBODY"]').isChecked()) && (await bobAccount.locator('input[name="privacy-groups"][value="CONTACTS"]').isChecked()));
  check(true, "after a reload the dialog shows bob's stored settings (nobody, contacts)");
  await bobAccount.getByRole("button", { name: "Close" }).click();

  // --- finding people (§6.9): search as you type, and staying out of it --------------
  const carolFind = carol.getByLabel("Message a user");
  const carolResults = carol.locator("#dm-results");
  await carolFind.fill(""); // the refused name is still there
  await carolFind.pressSequentially(bobName.slice(0, 5).toUpperCase(), { delay: 30 });
  await carolResults.getByRole("button", { name: `Message ${bobName}` }).waitFor();
  check((await carolResults.getByRole("button").count()) === 1, "carol types the start of bob's name (any case): he is listed as she types");
  await carol.screenshot({ path: join(outDir, "carol-search.png") });
  await carolFind.fill(aliceName.slice(0, 7));
  await carol.locator("#dm-search-hint", { hasText: `Nobody found starting with “${aliceName.slice(0, 7)}”` }).waitFor();
  check(await carolResults.isHidden(), "alice, who blocked carol, is not listed");
  await carolFind.fill("b");
  await waitFor("one character clears the list", async () => (await carol.locator("#dm-search-hint").textContent()) === "");
  check(await carolResults.isHidden(), "one character is no search: the list and the hint are cleared");
  await bob.getByRole("button", { name: "Account" }).click();
  await waitFor("bob's search setting loaded", async () => await bobAccount.locator('input[name="privacy-search"][value="EVERYONE"]').isChecked());
  await bobAccount.getByRole("group", { name: "Who can find me by the start of my username" }).getByRole("radio", { name: "Nobody" }).check();
  await bobAccount.locator("#privacy-status", { hasText: "found by your whole username only" }).waitFor();
  check(true, "bob chooses to be found by his whole username only (Account, Privacy)");
  await bobAccount.getByRole("button", { name: "Close" }).click();
  await carolFind.fill(bobName.slice(0, 5));
  await carol.locator("#dm-search-hint", { hasText: `Nobody found starting with “${bobName.slice(0, 5)}”` }).waitFor();
  await carolFind.fill(bobName);
  await carolResults.getByRole("button", { name: `Message ${bobName}` }).waitFor();
  check(true, "now the start of bob's name finds nobody, his whole name still finds him");
  await carolFind.press("Escape");
  await waitFor("Escape clears carol's list", async () => await carolResults.isHidden());
  await carolFind.fill("");
  const bobFind = bob.getByLabel("Message a user");
  await bobFind.fill(carolName.slice(0, 7));
  await bob.locator("#dm-results").getByRole("button", { name: `Message ${carolName}` }).click();
  await bob.locator("#conv-title", { hasText: carolName }).waitFor();
  check((await bobFind.inputValue()) === "" && (await bob.locator("#dm-results").isHidden()), "bob picks carol from the list: their DM opens, the box is cleared");

  // --- account settings: password -------------------------------------------------------
  const alice3 = await newUser("alice3", baseUrl);
  await login(alice3, aliceName, "Third browser");
  await alice.getByRole("button", { name: "Account" }).click();
  await account.getByLabel("Current password").fill("not my password");
  await account.getByLabel("New password").fill("a whole new passphrase");
  await account.getByRole("button", { name: "Change password" }).click();
  await account.locator("#password-error", { hasText: "INVALID_CREDENTIALS" }).waitFor();
  check((await account.locator("#password-error").textContent()).startsWith("Your current password is wrong."), "a wrong current password is refused in words");
  await account.getByLabel("Current password").fill(password);
  await account.getByLabel("New password").fill("12345678");
  await account.getByRole("button", { name: "Change password" }).click();
  await account.locator("#password-error", { hasText: "INVALID_ARGUMENT" }).waitFor();
  check((await account.locator("#password-error").textContent()).startsWith("The new password is not allowed"), "a weak new password is refused in words");
  const newPassword = "a whole new passphrase";
  await account.getByLabel("New password").fill(newPassword);
  await account.getByLabel("Sign out my other devices").check();
  await account.getByRole("button", { name: "Change password" }).click();
  await account.locator("#password-status", { hasText: "Password changed. Your other devices were signed out." }).waitFor();
  check((await account.getByLabel("Current password").inputValue()) === "" && (await account.getByLabel("New password").inputValue()) === "", "alice changed her password; the fields are cleared");
  await alice3.locator("#auth-error", { hasText: "DEVICE_REVOKED" }).waitFor();
  check(true, '"Sign out my other devices" signed the third browser out');
  await alice3.getByLabel("Username", { exact: true }).fill(aliceName);
  await alice3.getByLabel("Password", { exact: true }).fill(password);
  await alice3.getByRole("button", { name: "Log in" }).click();
  await alice3.locator("#auth-error", { hasText: "INVALID_CREDENTIALS" }).waitFor();
  await alice3.getByLabel("Password", { exact: true }).fill(newPassword);
  await alice3.getByRole("button", { name: "Log in" }).click();
  await alice3.locator('#conn[data-state="online"]').waitFor();
  check(true, "the old password no longer logs in; the new one does");
  await alice3.context().close();
  delete pages.alice3;
  // Wrong guesses count as failed logins: past the limit, the wait is said.
  let limited = "";
  for (let i = 0; i < 15 && !limited; i++) {
    await account.getByLabel("Current password").fill(`wrong guess ${i}`);
    await account.getByLabel("New password").fill("another new passphrase");
    await account.getByRole("button", { name: "Change password" }).click();
    await waitFor("an answer", async () => (await account.locator("#password-error").textContent()) !== "");
    const t = await account.locator("#password-error").textContent();
    if (t.includes("RATE_LIMITED")) limited = t;
  }
  check(/^Too many attempts; try again in (a second|\d+ seconds|a minute|\d+ minutes)\./.test(limited), `repeated wrong passwords are rate limited, with the wait ("${limited}")`);
  check(await account.getByRole("button", { name: "Change password" }).isDisabled(), "the button waits as long as the server asked");
  await account.getByRole("button", { name: "Close" }).click();
  check((await alice.locator('#conn[data-state="online"]').count()) === 1, "alice is still signed in");

  // --- screenshots --------------------------------------------------------------
  await convItem(alice, bobName).click();
  // Reloaded since the paging above: only the newest page is loaded again.
  await waitFor("the DM's older messages", async () => {
    await alice.locator("#messages").evaluate((e) => (e.scrollTop = 0));
    return (await alice.locator("#message-list .text", { hasText: "written while offline" }).count()) === 1;
  });
  await alice.locator("#message-list .text", { hasText: "written while offline" }).scrollIntoViewIfNeeded();
  await alice.screenshot({ path: join(outDir, "alice.png") });
  await bob.screenshot({ path: join(outDir, "bob.png") });
  // Phone-sized: one pane at a time, a back button to the list.
  await bob.setViewportSize({ width: 390, height: 780 });
  await bob.getByRole("button", { name: "Back to conversations" }).click();
  await convItem(bob, aliceName).waitFor();
  await bob.screenshot({ path: join(outDir, "bob-phone-list.png") });
  await convItem(bob, aliceName).click();
  await bob.locator("#message-list .text", { hasText: "bulk 70" }).waitFor();
  await bob.screenshot({ path: join(outDir, "bob-phone.png") });
  check(true, `screenshots saved in ${outDir}`);

  // --- discovery (§2.5): a cluster's nodes --------------------------------------
  // Dave's page is served through the proxy, as alice's; /v1/discover answers
  // that this is a cluster of two: node a, the server's direct address (not
  // the proxy), then node b, the proxy (the page's own origin).
  const daveName = `dave${suffix}`;
  const asked = [];
  const opened = [];
  const dave = await newUser("dave", proxiedUrl, undefined, async (page) => {
    page.on("websocket", (ws) => opened.push(ws.url()));
    await page.route("**/v1/discover", (route) => {
      asked.push(route.request().url());
      return route.fulfill({ status: 200, contentType: "application/json", body: twoNodes(serverWs, proxyWs) });
    });
  });
  // Whether node a lets a page of the proxy's origin open a WebSocket: by
  // default a server accepts only pages of its own address (docs/CLUSTER.md,
  // "Browsers and several nodes").
  const status = await upgradeStatus(target.host, proxyOrigin);
  check(status === 101 || status === 403, `node a answers a WebSocket from the proxy's origin with ${status}`);
  await signup(dave, daveName);
  check(asked.length >= 1 && opened[0] === serverWs, `dave asked /v1/discover and opened his first WebSocket to node a (${opened[0]})`);
  const daveNode = async () => dave.evaluate(() => ({ node: document.getElementById("conn").dataset.node, url: document.getElementById("conn").dataset.url, title: document.getElementById("conn").title }));
  if (status === 101) {
    const on = await daveNode();
    check(on.node === "a" && on.url === serverWs && on.title.includes("node a"), `dave is on node a (${on.title})`);
  } else {
    // Refused (403): the next attempt asks discovery again and goes to the
    // other node rather than the one that refused.
    const on = await daveNode();
    check(on.node === "b" && on.url === proxyWs && opened.slice(-1)[0] === proxyWs && asked.length >= 2, `node a refused the page's origin; dave asked again and is on node b (${on.title})`);
  }
  await dave.getByRole("button", { name: "Account" }).click();
  const daveWhere = await dave.locator("#account-server").textContent();
  check(daveWhere.startsWith(`Connected to Server node ${status === 101 ? "a" : "b"}`) && daveWhere.includes("one of 2 nodes"), `the account dialog names the node ("${daveWhere}")`);
  await dave.getByRole("dialog", { name: "Account" }).getByRole("button", { name: "Close" }).click();
  await dave.getByLabel("Message a user").fill(aliceName);
  await dave.getByRole("button", { name: "Open" }).click();
  await dave.locator("#conv-title", { hasText: aliceName }).waitFor();
  // On node a the proxy is not on the way: its network going away changes nothing.
  if (status === 101) proxy.down();
  await send(dave, "hello from a cluster node");
  await dave.locator("#message-list li.msg:not(.pending) .text", { hasText: "hello from a cluster node" }).waitFor();
  check((await dave.locator('#conn[data-state="online"]').count()) === 1, `dave's message was stored through node ${status === 101 ? "a, with the proxy down" : "b"}`);
  if (status === 101) proxy.restore();
  await alice.locator('#conn[data-state="online"]').waitFor({ timeout: 90000 });
  await convItem(alice, daveName).click();
  await alice.locator("#message-list .text", { hasText: "hello from a cluster node" }).waitFor();
  check(true, "alice has dave's message");

  // A node at another address than the page's, which accepts it: node a is
  // reached through a reverse proxy that sends its upstream's address as
  // Host (nginx's default), so the server sees this page's own origin.
  // Then node a goes away (cut off): the client asks discovery again and
  // moves to node b, the server's direct address, with nothing lost.
  const nodeA = new NetProxy({ host: target.hostname, port: Number(target.port) }, { hostHeader: target.host });
  await nodeA.listen();
  const nodeAWs = `ws://127.0.0.1:${nodeA.port}/v1/ws`;
  const asked2 = [];
  const opened2 = [];
  const dave2 = await newUser("dave2", baseUrl, undefined, async (page) => {
    page.on("websocket", (ws) => opened2.push(ws.url()));
    await page.route("**/v1/discover", (route) => {
      asked2.push(route.request().url());
      return route.fulfill({ status: 200, contentType: "application/json", body: twoNodes(nodeAWs, serverWs) });
    });
  });
  try {
    await login(dave2, daveName, "Dave's second browser");
    const on = await dave2.evaluate(() => document.getElementById("conn").dataset.node);
    check(
      on === "a" && opened2.length > 0 && opened2.every((u) => u === nodeAWs) && nodeA.accepted >= 1,
      `dave's second browser connected to node a at another address than its page (${nodeAWs}; on ${on}, opened ${JSON.stringify(opened2)})`,
    );
    await convItem(dave2, aliceName).click();
    await send(dave2, "through node a");
    await alice.locator("#message-list .text", { hasText: "through node a" }).waitFor();
    check(true, "a message through node a reached alice");
    const askedBefore = asked2.length;
    log("node a goes away");
    nodeA.down();
    await waitFor("dave's second browser on node b", async () => (await dave2.evaluate(() => document.getElementById("conn").dataset.state === "online" && document.getElementById("conn").dataset.node)) === "b");
    check(asked2.length > askedBefore && opened2.at(-1) === serverWs, "cut off from node a, it asked /v1/discover again and reconnected to node b");
    await send(alice, "after the move");
    await dave2.locator("#message-list .text", { hasText: "after the move" }).waitFor();
    const daveTexts = await messageTexts(dave2);
    check(
      JSON.stringify(daveTexts) === JSON.stringify(["hello from a cluster node", "through node a", "after the move"]),
      `on node b it has every message once, in order (${JSON.stringify(daveTexts)})`,
    );
    assertContiguous(await seqs(dave2), "dave on node b");
  } finally {
    await nodeA.close();
  }
} catch (e) {
  failed = e;
  for (const [name, page] of Object.entries(pages)) {
    await page.screenshot({ path: join(outDir, `failure-${name}.png`) }).catch(() => {});
  }
}

controlInput?.close();
process.stdin.destroy();
writeFileSync(join(outDir, "console.log"), consoleLines.join("\n") + "\n");
await browser.close().catch(() => {});
await proxy.close().catch(() => {});

if (failed) {
  console.error(`e2e: FAILED: ${failed.stack || failed.message}`);
  console.error("browser console (last 40 lines):");
  for (const l of consoleLines.slice(-40)) console.error(`  ${l}`);
  console.log(`e2e: ${passed} passed, 1 failed`);
  process.exit(1);
}
console.log(`e2e: ${passed} passed, 0 failed (${((Date.now() - T0) / 1000).toFixed(1)} s; artifacts in ${outDir})`);
