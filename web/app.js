// The Confab browser UI: sign in, conversation list, message view, composer.
// Talks to the server only through Session (client.js); keeps its view in
// Model (model.js). All user content goes through textContent, never HTML.

import { Session, ConfabError, ConnectionLost, defaultWsUrl, defaultDeviceName } from "./client.js";
import { describeEndpoint } from "./discovery.js";
import { ConvCache, MESSAGES_KEPT, RECENT_KEPT } from "./cache.js";
import { Model, describeMembership, dateSeparators, dayKey } from "./model.js";
import { Drafts, dropDrafts } from "./drafts.js";
import { Audience, ConversationKind, ErrorCode, MemberRole, PresenceState, charCount, errorName } from "./proto.js";
import { normalizeUsername, ValidationError } from "./validate.js";
import { friendlyText } from "./errortext.js";
import { Searcher, SEARCH_LIMIT } from "./search.js";
import { canManage, memberActions, nextOwner, roleLabel, sortMembers } from "./groups.js";
import { enablePush, pushSupported } from "./push.js";

const $ = (id) => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`index.html has no #${id}`);
  return el;
};
const el = (tag, props = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role") e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
};

const HISTORY_PAGE = 50;
const model = new Model();
// Before each connection attempt the session asks /v1/discover where to go
// (§2.5; the rule is in discovery.js and README.md); the page's own /v1/ws
// when it cannot tell.
const session = new Session({ url: defaultWsUrl(), discovery: { origin: location.origin, fetch: (...a) => globalThis.fetch(...a) } });
let openId = null; // the open conversation's id (string)
let dividerAfter = null; // the read marker when the open conversation was opened
let outbox = []; // unacknowledged messages (Session's outbox entries)
let loadingOlder = false;
let authMode = "login";
let listLoaded = false; // the conversation list of this sign-in is in the model
// Whose drafts the composer keeps: known from localStorage before the resume
// answers, so a token refused at resume still drops that user's drafts.
let username = session.storedUser?.username ?? null;
let drafts = username ? new Drafts(globalThis.localStorage, username) : null;
// The user's block list (§6.7): username -> BlockedUser, loaded at sign-in.
let blocked = new Map();
const leaving = new Set(); // groups this user is leaving (their "left" is no surprise)

// What this browser keeps of the signed-in user for the next page load
// (cache.js): the list and the newest messages of the conversations opened
// last, painted before the network answers; the resume and sync that follow
// bring them up to date.
const cache = new ConvCache({
  onError: (e) => showAlert(new Error(`this browser refused to keep your conversations for the next visit (${e?.name ?? "Error"}: ${e?.message ?? e}); they will load from the server instead`), "saved conversations"),
});
let seeded = false; // the model shows the cache's state, not yet the server's list
let cacheUser = null; // whose state the cache painted (user id string)
let cacheMeta = null; // its meta (inboxSeq: the inbox position it was saved at)
let recent = []; // conversation ids opened, most recent first (their messages are kept)
let cacheTimer = null;

// Debugging aid (read-only use): the session and the model; the e2e test
// waits for the cache with flushCache.
window.confab = { session, model, cache, flushCache: () => saveCache().then(() => cache.idle()) };

// ---------------------------------------------------------------------------
// Errors shown to the user
// ---------------------------------------------------------------------------

/**
 * An error as the user reads it: the code name, the server's own words and,
 * for the codes a person can cause, a sentence for the action that was
 * refused (errortext.js; `ctx`: {action, who, youBlocked}).
 */
function describeError(e, ctx = {}) {
  let d;
  if (e instanceof ConfabError) d = { code: e.codeName, text: e.detail || "" };
  else if (e instanceof ValidationError) d = { code: errorName(e.code), text: e.message };
  else if (e instanceof ConnectionLost) return { code: "OFFLINE", text: e.message, friendly: null };
  else return { code: "ERROR", text: e?.message ?? String(e), friendly: null };
  return { ...d, friendly: friendlyText(d.code, { ...ctx, retryAfterMs: e.retryAfterMs ?? 0 }) };
}

/**
 * Shows an error toast. `connection`: it is about the connection (also
 * marked by the session, or a ConnectionLost); such toasts go away by
 * themselves once the session is back online, so an ordinary reconnect
 * (a server restart, a network change) leaves no stale red banner.
 */
function showAlert(e, context, { connection = false, ...ctx } = {}) {
  const { code, text: detail, friendly } = describeError(e, ctx);
  const text = friendly ? (detail ? `${friendly} (${detail})` : friendly) : detail;
  const box = $("alerts");
  while (box.children.length >= 4) box.firstElementChild.remove();
  const dismiss = el("button", { type: "button", text: "Dismiss", "aria-label": "Dismiss this message" });
  const item = el("div", { class: "alert" }, el("span", { class: "code", text: code }), el("span", { text: context ? `${context}: ${text}` : text }), dismiss);
  if (connection || e?.connection || e instanceof ConnectionLost) item.dataset.connection = "true";
  dismiss.addEventListener("click", () => item.remove());
  box.append(item);
  setTimeout(() => item.remove(), 10000);
}

/** Removes the toasts: all of them, or only those about the connection. */
function clearAlerts({ connectionOnly = false } = {}) {
  for (const a of [...$("alerts").children]) if (!connectionOnly || a.dataset.connection) a.remove();
}

/** A form's inline error line: "Friendly text (CODE_NAME: server message)". */
function formError(target, e, ctx = {}) {
  const { code, text, friendly } = describeError(e, ctx);
  target.textContent = friendly ? `${friendly} (${code}: ${text})` : `${code}: ${text}`;
}

/** The context of a refusal that names users: `who` when there is exactly one. */
function namedCtx(action, usernames) {
  const who = usernames.length === 1 ? usernames[0] : "";
  return { action, who, youBlocked: !!who && blocked.has(who) };
}

/** The context of a send's refusal in conversation `id`. */
function sendCtx(id) {
  const c = model.conversations.get(String(id));
  return c?.kind === ConversationKind.DIRECT ? namedCtx("send", [c.peerUsername]) : { action: "send" };
}

// ---------------------------------------------------------------------------
// Connection state
// ---------------------------------------------------------------------------

let reconnectTicker = null;
function renderConn(s) {
  const box = $("conn");
  box.dataset.state = s.state;
  document.body.dataset.conn = s.state;
  const retry = $("conn-retry");
  retry.hidden = s.state !== "reconnecting";
  clearInterval(reconnectTicker);
  const text = {
    connecting: "Connecting…",
    authenticating: "Signing in…",
    syncing: "Catching up…",
    online: "Online",
    "signed-out": "Not signed in",
    stopped: "Disconnected",
  }[s.state];
  if (s.state === "reconnecting") {
    const tick = () => {
      const secs = Math.max(0, Math.ceil((s.at - Date.now()) / 1000));
      $("conn-text").textContent = secs > 0 ? `Reconnecting… (next try in ${secs} s)` : "Reconnecting…";
    };
    tick();
    reconnectTicker = setInterval(tick, 1000);
  } else {
    $("conn-text").textContent = text ?? s.state;
  }
  renderEndpoint();
}

/** Which server (node) the session is on: the status's tooltip and the account dialog. */
function renderEndpoint() {
  const ep = session.endpoint;
  const where = describeEndpoint(ep);
  const box = $("conn");
  box.title = where;
  box.dataset.node = ep?.node ?? "";
  box.dataset.url = ep?.url ?? "";
  $("account-server").textContent = where ? `${session.state === "online" ? "Connected to" : "Last connection:"} ${where}.` : "Not connected yet.";
}

function showView(which) {
  $("auth-view").hidden = which !== "auth";
  $("chat-view").hidden = which !== "chat";
  $("me").hidden = which !== "chat";
  document.querySelector(".skip-link").hidden = which !== "chat";
}

session.on("state", (s) => {
  renderConn(s);
  updateCount(); // the limits may have changed with Welcome
  // Not connected: nobody's presence is known any more ("online" would be a
  // claim from before); fresh presence replaces it after reconnecting.
  if (s.state !== "online" && s.state !== "syncing" && model.presence.size) {
    model.markPresenceStale();
    scheduleRender();
  }
  if (s.state === "signed-out") {
    forgetSignedOutUser();
    showView("auth");
    if (s.reason) formError($("auth-error"), s.reason);
  }
  if (s.state === "online") {
    clearAlerts({ connectionOnly: true });
    // Back online: refresh what is not carried by the inbox, and load the
    // open conversation's history if it could not be fetched until now.
    if (openId) {
      const c = model.conversations.get(openId);
      if (c && !c.historyLoaded) loadNewest(c);
      refreshReceipts(openId);
    }
    scheduleRender();
  }
});
session.on("error", (e) => showAlert(e));
session.on("endpoint", renderEndpoint);
session.on("goaway", (g) => showAlert(new Error(`the server is restarting (${g.message || "going away"}); reconnecting shortly`), null, { connection: true }));

/**
 * Whatever the way out (the Sign out button, this device revoked from
 * another one, a token the server no longer takes): nothing of the user may
 * stay behind for whoever signs in next on this browser.
 */
function forgetSignedOutUser() {
  if (drafts) drafts.clear();
  else dropDrafts(globalThis.localStorage, username);
  drafts = null;
  username = null;
  listLoaded = false;
  openId = null;
  // Nothing of the user stays on the device: the saved conversations go too.
  clearTimeout(cacheTimer);
  seeded = false;
  cacheUser = null;
  cacheMeta = null;
  recent = [];
  cache.dropAllBut(null);
  blocked = new Map();
  model.reset();
  $("composer-text").value = "";
  for (const d of document.querySelectorAll("dialog[open]")) d.close();
  // The URL must not name a conversation of the user who left.
  if (location.hash) history.replaceState(null, "", listUrl());
  scheduleRender();
}

// ---------------------------------------------------------------------------
// Session -> model
// ---------------------------------------------------------------------------

session.bootstrap = async (auth) => {
  // Painted from the cache: kept on screen while the list comes, then
  // reconciled with it (model.reconcileList). Otherwise built from nothing.
  const fromCache = seeded && cacheUser === String(auth.userId);
  if (!fromCache) {
    model.reset();
    model.setMe(auth);
  }
  // §8.7: a client without local state builds its view from the list.
  const snapshots = [];
  let before = null;
  for (;;) {
    const req = { limit: 0 };
    if (before) Object.assign(req, before);
    const page = await session.request("listConversations", req);
    if (fromCache) snapshots.push(...page.conversations);
    else for (const c of page.conversations) model.applyConversation(c);
    if (!page.hasMore || page.conversations.length === 0) break;
    const lastC = page.conversations[page.conversations.length - 1];
    before = { activeBeforeMs: lastC.activityMs, beforeConversationId: lastC.conversationId };
  }
  if (fromCache) model.reconcileList(snapshots);
  seeded = false;
  listLoaded = true;
  loadBlocked();
  subscribePeers();
  if (openId) {
    // Opened from the cache: still one of the user's? Then its newest page.
    const c = model.conversations.get(openId);
    if (c && c.known && !c.left) {
      loadNewest(c);
      refreshReceipts(openId);
    } else openId = null;
  }
  followUrl(); // a reload reopens the conversation the URL names
  scheduleRender();
};

session.on("auth", ({ auth, fresh, kind }) => {
  const userId = String(auth.userId);
  // Another user's saved conversations never outlive this sign-in.
  cache.dropAllBut(userId);
  if (seeded && (cacheUser !== userId || (cacheMeta && auth.inboxHead < cacheMeta.inboxSeq))) {
    // Painted for someone else, or from an inbox the server no longer has
    // (its data was restored or replaced, §8.5): start from nothing.
    if (cacheUser === userId) cache.dropUser(userId);
    seeded = false;
    model.reset();
    openId = null;
  }
  if (fresh) {
    if (!seeded) openId = null;
    listLoaded = false;
    model.setMe(auth);
  }
  if (username !== auth.username || !drafts) {
    username = auth.username;
    drafts = new Drafts(globalThis.localStorage, username);
  }
  // A new sign-in starts with a clean slate: no toasts of the last session.
  if (kind === "login" || kind === "signup") clearAlerts();
  $("me-name").textContent = auth.username;
  $("auth-error").textContent = "";
  showView("chat");
  scheduleRender();
  syncPush(auth);
});

// Web Push (PROTOCOL.md §10): keep this device's subscription registered
// without prompting; the permission itself needs a click (the button).
function syncPush(auth) {
  const key = session.welcome?.vapidPublicKey || "";
  const button = $("push-enable");
  const offer = !!key && pushSupported() && Notification.permission === "default";
  button.hidden = !offer;
  if (!key || !pushSupported()) return;
  enablePush(session, key, { renew: !!auth.pushDropped }).catch((e) => showAlert(e, "notifications"));
}

session.on("reset", () => {
  const me = model.me;
  model.reset();
  model.me = me;
  openId = null;
  listLoaded = false;
  seeded = false;
  // What is saved came from the inbox the server no longer has (§8.5).
  if (me) cache.dropUser(String(me.userId));
  scheduleRender();
});

session.on("inbox", (e) => {
  // Told once: a 311 of a request on the way may have said it already.
  const wasLeft = !!e.left && !!model.conversations.get(String(e.left.conversationId))?.left;
  model.applyInbox(e);
  if (e.joined) leaving.delete(String(e.joined.conversationId));
  if (e.joined && e.joined.kind === ConversationKind.DIRECT && e.joined.peerUsername) subscribePeers();
  if (e.left && !wasLeft && String(e.left.conversationId) === openId && !leaving.has(openId)) showAlert(new Error("you are no longer a member of this conversation"));
  scheduleRender();
});
session.on("presence", (p) => {
  model.applyPresence(p);
  scheduleRender();
});
session.on("typing", (t) => {
  model.applyTyping(t);
  scheduleRender();
  setTimeout(scheduleRender, (t.expiresInMs || 6000) + 50);
});
session.on("receipt", (r) => {
  model.applyReceipt(r);
  scheduleRender();
});
session.on("outbox", ({ entries }) => {
  outbox = entries;
  scheduleRender();
});
let receiptsTimer = null;
session.on("sent", ({ message }) => {
  model.addMessage(message);
  model.changed({ conversation: String(message.conversationId), message });
  scheduleRender();
  const id = String(message.conversationId);
  const c = model.conversations.get(id);
  if (id === openId && c?.kind === ConversationKind.GROUP) {
    clearTimeout(receiptsTimer);
    receiptsTimer = setTimeout(() => id === openId && refreshReceipts(id), 3000);
  }
});
session.on("failed", ({ entry, error }) => {
  // In the open conversation the message itself says why, with Send again and
  // Delete beside it: a toast would only cover them.
  if (entry.conversationId !== openId) showAlert(error, "message not sent", sendCtx(entry.conversationId));
  scheduleRender();
  void entry;
});

function subscribePeers() {
  const names = [];
  for (const c of model.conversations.values()) if (c.kind === ConversationKind.DIRECT && c.peerUsername) names.push(c.peerUsername);
  if (names.length) session.subscribePresence(names).catch((e) => e instanceof ConnectionLost || showAlert(e, "presence"));
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    try {
      renderList();
      renderOpen();
    } catch (e) {
      console.error(e);
      showAlert(e, "display");
    }
    saveCacheSoon();
  });
}

function presenceState(username) {
  const p = model.presence.get(username);
  // Known only from before the connection went: nothing is claimed until
  // the re-subscription after reconnecting says again (markPresenceStale).
  if (!p || p.stale) return "unknown";
  return { [PresenceState.ONLINE]: "online", [PresenceState.AWAY]: "away", [PresenceState.OFFLINE]: "offline" }[p.state] ?? "unknown";
}

function presenceText(username) {
  const p = model.presence.get(username);
  const s = presenceState(username);
  if (s === "online") return "online";
  if (s === "away") return "away";
  if (s === "offline") return p.lastSeenMs ? `last seen ${relativeTime(Number(p.lastSeenMs))}` : "offline";
  return "";
}

function relativeTime(ms) {
  const d = Date.now() - ms;
  if (d < 60_000) return "just now";
  if (d < 3_600_000) return `${Math.round(d / 60_000)} min ago`;
  if (d < 86_400_000) return `${Math.round(d / 3_600_000)} h ago`;
  return new Date(ms).toLocaleDateString();
}

function preview(c) {
  const m = c.lastMessage;
  if (!m) return c.kind === ConversationKind.GROUP ? `${c.memberCount} members` : "No messages yet";
  if (m.membership) return describeMembership(m);
  const who = model.me && m.senderId === model.me.userId ? "You" : c.kind === ConversationKind.GROUP ? m.senderUsername : "";
  const text = m.text.length > 120 ? `${m.text.slice(0, 120)}…` : m.text;
  return who ? `${who}: ${text}` : text;
}

function renderList() {
  const list = $("conv-list");
  const focusedId = document.activeElement?.closest?.(".conv-item")?.dataset.id;
  const convs = model.sortedConversations();
  $("conv-empty").hidden = convs.length > 0;
  const items = convs.map((c) => {
    const name = model.nameOf(c);
    const unread = model.unread(c);
    const avatar = el("span", { class: "avatar", "aria-hidden": "true", text: c.kind === ConversationKind.GROUP ? "#" : name.slice(0, 1) });
    let presenceLabel = "";
    if (c.kind === ConversationKind.DIRECT) {
      const state = presenceState(c.peerUsername);
      avatar.append(el("span", { class: "presence-dot", "data-state": state }));
      presenceLabel = presenceText(c.peerUsername);
    }
    const badge = unread > 0n ? el("span", { class: "badge", text: unread > 99n ? "99+" : String(unread) }) : el("span");
    const label = [name, presenceLabel, unread > 0n ? `${unread} unread` : "", preview(c)].filter(Boolean).join(", ");
    const button = el(
      "button",
      { type: "button", class: "conv-item", "data-id": c.id, "aria-label": label, "aria-current": String(c.id === openId) },
      avatar,
      el("span", { class: "conv-name", text: name }),
      badge,
      el("span", { class: "conv-preview", text: preview(c) }),
    );
    button.dataset.unread = String(unread);
    button.addEventListener("click", () => openConversation(c.id));
    return el("li", {}, button);
  });
  list.replaceChildren(...items);
  const total = convs.reduce((n, c) => n + model.unread(c), 0n);
  document.title = total > 0n ? `(${total}) Confab` : "Confab";
  if (focusedId) list.querySelector(`.conv-item[data-id="${CSS.escape(focusedId)}"]`)?.focus();
}

const nodes = new Map(); // message key -> <li>, for the open conversation
let nodesFor = null;

function timeNode(ms) {
  const d = new Date(Number(ms));
  return el("time", { dateTime: d.toISOString(), title: d.toLocaleString(), text: d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) });
}

function messageNode(c, m) {
  if (m.membership) return el("li", { class: "system", "data-seq": String(m.seq), text: describeMembership(m) });
  const mine = model.me && m.senderId === model.me.userId;
  const li = el(
    "li",
    { class: mine ? "msg mine" : "msg", "data-seq": String(m.seq) },
    el("div", { class: "meta" }, el("span", { class: "author", text: mine ? "You" : m.senderUsername }), timeNode(m.sentAtMs)),
    el("p", { class: "text", text: m.text }),
  );
  if (mine) li.append(el("div", { class: "status" }));
  return li;
}

function pendingNode(entry) {
  const li = el(
    "li",
    { class: "msg mine pending", "data-client-msg-id": entry.clientMsgId },
    el("div", { class: "meta" }, el("span", { class: "author", text: "You" }), timeNode(entry.createdAt)),
    el("p", { class: "text", text: entry.text }),
    el("div", { class: "status" }),
  );
  return li;
}

/** "Send again" and "Delete" for a message the server refused (it is not resent by itself). */
function pendingActions(entry) {
  const excerpt = entry.text.length > 40 ? `${entry.text.slice(0, 40)}…` : entry.text;
  const again = el("button", { type: "button", class: "linkish", text: "Send again", "aria-label": `Send again: ${excerpt}` });
  const drop = el("button", { type: "button", class: "linkish", text: "Delete", "aria-label": `Delete unsent message: ${excerpt}` });
  again.addEventListener("click", () => {
    session.discard(entry.clientMsgId);
    try {
      session.send(entry.conversationId, entry.text);
    } catch (e) {
      showAlert(e, "message not sent", sendCtx(entry.conversationId));
    }
    scheduleRender();
    $("composer-text").focus();
  });
  drop.addEventListener("click", () => {
    session.discard(entry.clientMsgId);
    scheduleRender();
    $("composer-text").focus();
  });
  return el("div", { class: "pending-actions" }, again, drop);
}

function renderOpen() {
  const c = openId ? model.conversations.get(openId) : null;
  $("chat-view").classList.toggle("has-open", !!c);
  $("conv-none").hidden = !!c;
  $("conv-open").hidden = !c;
  if (!c) return;

  $("conv-title").textContent = model.nameOf(c);
  const sub = c.kind === ConversationKind.DIRECT ? presenceText(c.peerUsername) : `${c.memberCount} member${c.memberCount === 1 ? "" : "s"}`;
  $("conv-sub").textContent = c.left ? "You are no longer a member" : sub;
  const group = c.kind === ConversationKind.GROUP;
  $("add-members").hidden = !(group && !c.left && canManage(c.role));
  $("group-info").hidden = !group || c.left;
  // Direct: block or unblock the other member (§6.7).
  const peer = c.kind === ConversationKind.DIRECT ? c.peerUsername : "";
  const peerBlocked = !!peer && blocked.has(peer);
  const toggle = $("block-toggle");
  toggle.hidden = !peer;
  toggle.textContent = peerBlocked ? "Unblock" : "Block";
  toggle.setAttribute("aria-label", peerBlocked ? `Unblock ${peer}` : `Block ${peer}`);
  $("blocked-note").hidden = !peerBlocked;
  $("blocked-note-text").textContent = peerBlocked ? `You blocked ${peer}. Neither of you can send messages here until you unblock them.` : "";
  $("blocked-note-unblock").setAttribute("aria-label", `Unblock ${peer}`);
  $("composer-text").disabled = composerLocked(c);
  $("composer-send").disabled = composerLocked(c);

  // Messages: keyed, so existing nodes stay (and are not re-announced).
  if (nodesFor !== c.id) {
    nodes.clear();
    nodesFor = c.id;
    $("message-list").replaceChildren();
  }
  const scroller = $("messages");
  const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
  // Until its newest page is in (a cache's messages and live ones may not
  // join yet), only the newest messages without a hole are shown.
  const messages = c.historyLoaded ? model.messagesOf(c) : model.cacheMessages(c, Infinity);
  const stored = new Set(messages.map((m) => m.clientMsgId).filter(Boolean));
  const pending = outbox.filter((e) => e.conversationId === c.id && !stored.has(e.clientMsgId));

  const want = [];
  let lastSeen = null; // my newest message the peer has read (direct)
  let myLast = null; // my newest stored message
  let myLastSeq = 0n;
  // "Today", "Yesterday", a date: before the first message of each local day.
  const times = [...messages.map((m) => Number(m.sentAtMs)), ...pending.map((e) => e.createdAt)];
  const days = dateSeparators(times);
  const daySeparator = (i) => {
    if (!days[i]) return;
    // Keyed by day and label: the node is replaced when "Today" turns into "Yesterday".
    want.push({ key: `day:${dayKey(times[i])}:${days[i]}`, make: () => el("li", { class: "day", role: "separator" }, el("span", { text: days[i] })) });
  };
  for (const [i, m] of messages.entries()) {
    daySeparator(i);
    if (dividerAfter !== null && m.seq > dividerAfter && !want.some((w) => w.key === "divider") && !(model.me && m.senderId === model.me.userId)) {
      want.push({ key: "divider", make: () => el("li", { class: "divider", role: "separator" }, el("span", { text: "New messages" })) });
    }
    const key = `m:${m.seq}`;
    want.push({ key, make: () => messageNode(c, m), m });
    if (model.me && m.senderId === model.me.userId && !m.membership) {
      myLast = key;
      myLastSeq = m.seq;
      if (c.kind === ConversationKind.DIRECT && m.seq <= c.peerReadSeq) lastSeen = key;
    }
  }
  for (const [j, e] of pending.entries()) {
    daySeparator(messages.length + j);
    want.push({ key: `p:${e.clientMsgId}`, make: () => pendingNode(e), pending: e });
  }

  const list = $("message-list");
  const keep = new Set(want.map((w) => w.key));
  for (const [k, n] of nodes) if (!keep.has(k)) (n.remove(), nodes.delete(k));
  let cursor = list.firstChild;
  for (const w of want) {
    let n = nodes.get(w.key);
    if (!n) {
      n = w.make();
      nodes.set(w.key, n);
    }
    if (n !== cursor) list.insertBefore(n, cursor);
    else cursor = cursor.nextSibling;
    // Mutable parts: delivery status.
    const status = n.querySelector?.(".status");
    if (status) {
      if (w.pending) {
        n.classList.toggle("failed", !!w.pending.error);
        const why = w.pending.error ? describeError(w.pending.error, sendCtx(c.id)) : null;
        status.textContent = why ? `Not sent — ${why.friendly ? `${why.friendly} (${why.code})` : `${why.code}: ${why.text}`}` : session.state === "online" ? "Sending…" : "Waiting for connection…";
        // Made once, so a focused button survives the redraws.
        const actions = n.querySelector(".pending-actions");
        if (why && !actions) n.append(pendingActions(w.pending));
        else if (!why && actions) actions.remove();
      } else {
        // Only the newest of my messages says Sent, and the newest read one Seen.
        let text = w.key === lastSeen ? "Seen" : w.key === myLast ? "Sent" : "";
        if (w.key === myLast && c.kind === ConversationKind.GROUP) {
          // A member's read marker moving onto a message reaches its author live
          // (§8.10); a marker that passes it on the way to a later message does
          // not, so the receipts are also fetched on open, on reconnect, a moment
          // after sending and every 30 s.
          const readers = [...c.receipts].filter(([u, seq]) => seq >= myLastSeq && u !== model.me?.username).map(([u]) => u);
          if (readers.length) text = `Seen by ${readers.length > 3 ? `${readers.slice(0, 3).join(", ")} and ${readers.length - 3} more` : readers.join(", ")}`;
        }
        status.textContent = text;
        status.hidden = status.textContent === "";
      }
    }
  }
  while (cursor) {
    const next = cursor.nextSibling;
    cursor.remove();
    cursor = next;
  }

  $("load-older").hidden = !(c.hasOlder && c.historyLoaded && messages.length > 0);
  if (!c.hasOlder && messages.length > 0 && messages[0].seq <= 1n) $("older-status").textContent = "Start of the conversation";
  else if (!loadingOlder) $("older-status").textContent = "";

  const typing = model.typingIn(c.id);
  $("typing").textContent = typing.length === 0 ? "" : typing.length === 1 ? `${typing[0]} is typing…` : `${typing.join(", ")} are typing…`;

  if (atBottom && !loadingOlder) scroller.scrollTop = scroller.scrollHeight;
  maybeMarkRead(c);
}

// ---------------------------------------------------------------------------
// Conversations
// ---------------------------------------------------------------------------

async function openConversation(id, { push = true } = {}) {
  id = String(id);
  const c = model.conversations.get(id);
  if (!c) return;
  // The URL names the open conversation (#c/<id>): reload, back and forward follow it.
  if (push && location.hash !== conversationHash(id)) history.pushState(null, "", conversationHash(id));
  if (openId !== id) {
    openId = id;
    dividerAfter = model.unread(c) > 0n ? c.readSeq : null;
    loadingOlder = false;
    $("composer-text").value = draftFor(id);
    updateCount();
  }
  // Its newest messages are kept for the next page load (cache.js).
  recent = [id, ...recent.filter((r) => r !== id)].slice(0, RECENT_KEPT);
  scheduleRender();
  requestAnimationFrame(() => {
    const s = $("messages");
    s.scrollTop = s.scrollHeight;
    if (window.matchMedia("(max-width: 700px)").matches) $("back").focus();
    else $("composer-text").focus();
  });
  // Not signed in yet (painted from the cache, or reconnecting): the
  // history and receipts are fetched once the session is (bootstrap, "online").
  if (!signedIn()) return;
  if (!c.historyLoaded) await loadNewest(c);
  refreshReceipts(id);
}

/** The session is authenticated: requests may go out (the catch-up may still run). */
const signedIn = () => session.state === "online" || session.state === "syncing";

const newestLoading = new Set(); // conversation ids whose newest page is on its way

/** Fetches the newest history page of `c` (once at a time). */
async function loadNewest(c) {
  if (newestLoading.has(c.id)) return;
  newestLoading.add(c.id);
  try {
    const page = await session.request("history", { conversationId: c.conversationId, limit: HISTORY_PAGE });
    model.applyHistory(page, { older: false });
    scheduleRender();
    if (c.id === openId) requestAnimationFrame(() => ($("messages").scrollTop = $("messages").scrollHeight));
  } catch (e) {
    handleConvError(c, e, "history");
  } finally {
    newestLoading.delete(c.id);
  }
}

const conversationHash = (id) => `#c/${id}`;
const listUrl = () => location.pathname + location.search;

/** The conversation the URL names, or null. */
function urlConversation() {
  const m = /^#c\/(\d+)$/.exec(location.hash);
  return m ? m[1] : null;
}

/** Shows what the URL names: a conversation, or the list. */
function followUrl() {
  // Before the list (or the cache) is in nothing is known; bootstrap calls this again.
  if (!listLoaded && !seeded) return;
  const id = urlConversation();
  if (id === openId) return;
  const c = id ? model.conversations.get(id) : null;
  if (c && c.known && !c.left) {
    openConversation(id, { push: false });
    return;
  }
  // Not in the cache: the server's list will tell.
  if (!listLoaded) return;
  // Unknown (another user's, or no longer ours): quietly show the list.
  if (location.hash) history.replaceState(null, "", listUrl());
  openId = null;
  scheduleRender();
}

async function refreshReceipts(id) {
  const c = model.conversations.get(id);
  if (!c || c.left || !signedIn()) return;
  try {
    const list = await session.request("readReceipts", { conversationId: c.conversationId });
    for (const r of list.receipts) model.applyReceipt(r);
    scheduleRender();
  } catch (e) {
    handleConvError(c, e, "read receipts");
  }
}

function handleConvError(c, e, what) {
  if (e instanceof ConnectionLost) return; // done again after reconnecting
  if (e instanceof ConfabError && e.codeName === "CONVERSATION_NOT_FOUND") {
    // Checklist item 15: not (or no longer) a member.
    const wasLeft = c.left;
    c.left = true;
    scheduleRender();
    // Known already (the inbox said so, or this user left): no news.
    if (wasLeft || leaving.has(c.id)) return;
  }
  showAlert(e, what);
}

async function loadOlder() {
  const c = openId ? model.conversations.get(openId) : null;
  if (!c || loadingOlder || !c.hasOlder) return;
  const oldest = model.oldestSeq(c);
  if (oldest === null) return;
  loadingOlder = true;
  $("older-status").textContent = "Loading older messages…";
  const scroller = $("messages");
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  try {
    const page = await session.request("history", { conversationId: c.conversationId, beforeSeq: oldest, limit: HISTORY_PAGE });
    model.applyHistory(page, { older: true });
    renderOpen();
    scroller.scrollTop = scroller.scrollHeight - fromBottom;
    $("older-status").textContent = page.messages.length ? `Loaded ${page.messages.length} older messages` : "";
  } catch (e) {
    $("older-status").textContent = "";
    handleConvError(c, e, "older messages");
  } finally {
    loadingOlder = false;
    scheduleRender();
  }
}

let markReadTimer = null;
let markReadInFlight = false;
function maybeMarkRead(c) {
  if (document.visibilityState !== "visible" || c.left || !c.historyLoaded) return;
  if (model.unread(c) === 0n) return;
  // Only what is on screen: the newest message held, not a snapshot's last_seq.
  const newest = model.messagesOf(c).at(-1);
  if (!newest || newest.seq <= c.readSeq) return;
  const s = $("messages");
  if (s.scrollHeight - s.scrollTop - s.clientHeight > 80) return; // the newest messages are not in view
  clearTimeout(markReadTimer);
  markReadTimer = setTimeout(async () => {
    if (markReadInFlight || session.state !== "online") return;
    markReadInFlight = true;
    try {
      const r = await session.request("markRead", { conversationId: c.conversationId, seq: newest.seq });
      model.applyReadState(r);
    } catch (e) {
      handleConvError(c, e, "read marker");
    } finally {
      markReadInFlight = false;
      scheduleRender();
    }
  }, 300);
}

// ---------------------------------------------------------------------------
// Forms
// ---------------------------------------------------------------------------

function setAuthMode(mode) {
  authMode = mode;
  const login = mode === "login";
  $("tab-login").setAttribute("aria-selected", String(login));
  $("tab-signup").setAttribute("aria-selected", String(!login));
  $("tab-login").tabIndex = login ? 0 : -1;
  $("tab-signup").tabIndex = login ? -1 : 0;
  $("auth-form").setAttribute("aria-labelledby", login ? "tab-login" : "tab-signup");
  $("auth-submit").textContent = login ? "Log in" : "Create account";
  $("auth-password").autocomplete = login ? "current-password" : "new-password";
  $("auth-password-hint").hidden = login;
  $("auth-error").textContent = "";
}

function initAuth() {
  $("auth-device").value = defaultDeviceName();
  $("tab-login").addEventListener("click", () => setAuthMode("login"));
  $("tab-signup").addEventListener("click", () => setAuthMode("signup"));
  $("auth-view").querySelector(".tabs").addEventListener("keydown", (ev) => {
    if (ev.key === "ArrowLeft" || ev.key === "ArrowRight") {
      const next = authMode === "login" ? "signup" : "login";
      setAuthMode(next);
      $(`tab-${next}`).focus();
      ev.preventDefault();
    }
  });
  $("auth-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const username = normalizeUsername($("auth-username").value);
    $("auth-username").value = username;
    const password = $("auth-password").value;
    const device = $("auth-device").value.trim();
    const button = $("auth-submit");
    button.disabled = true;
    $("auth-error").textContent = "";
    try {
      if (authMode === "signup") await session.signup(username, password, device);
      else await session.login(username, password, device);
      $("auth-password").value = "";
    } catch (e) {
      formError($("auth-error"), e, { action: authMode });
    } finally {
      button.disabled = false;
    }
  });
}

function parseNames(s) {
  return [...new Set(s.split(/[\s,]+/).map(normalizeUsername).filter(Boolean))];
}

/** Opens (or creates) the direct conversation with `username`; clears the "Message a user" box when it worked. */
async function openDirectByName(username) {
  const input = $("dm-username");
  const done = () => {
    input.value = "";
    dmSearch?.cancel();
    showDmResults({ prefix: null, users: [], hasMore: false });
  };
  const known = model.findDirect(username);
  if (known && known.known) {
    done();
    openConversation(known.id);
    return;
  }
  try {
    const conv = await session.request("openDirect", { username });
    model.applyConversation(conv);
    subscribePeers();
    done();
    openConversation(String(conv.conversationId));
  } catch (e) {
    showAlert(e, `open ${username}`, namedCtx("openDirect", [username]));
  }
}

// Search as you type (§6.9): the matches under the box, each opening the
// direct conversation on click. A server without search (a cluster)
// answers FEATURE_UNAVAILABLE once; the box then works by whole username.
let dmSearch = null;
let dmSearchOff = false;

function showDmResults(r) {
  const list = $("dm-results");
  const hint = $("dm-search-hint");
  if (r.error) {
    list.replaceChildren();
    list.hidden = true;
    if (r.error instanceof ConfabError && r.error.codeName === "FEATURE_UNAVAILABLE") {
      dmSearchOff = true;
      hint.textContent = "This server does not offer search: type the whole username.";
    } else {
      const d = describeError(r.error, { action: "searchUsers" });
      hint.textContent = `Search failed: ${d.friendly || `${d.code}: ${d.text}`}`;
    }
    return;
  }
  list.replaceChildren(
    ...r.users.map((username) => {
      const b = el("button", { type: "button", class: "dm-result", "data-username": username, text: username, "aria-label": `Message ${username}` });
      b.addEventListener("click", () => openDirectByName(username));
      return el("li", {}, b);
    }),
  );
  list.hidden = r.users.length === 0;
  if (dmSearchOff) return;
  if (r.prefix === null) hint.textContent = "";
  else if (r.users.length === 0) hint.textContent = `Nobody found starting with “${r.prefix}”.`;
  else hint.textContent = r.hasMore ? "More match: type more of the name." : "";
}

function initChat() {
  dmSearch = new Searcher({
    search: (prefix) => session.request("searchUsers", { prefix, limit: SEARCH_LIMIT }),
    show: showDmResults,
  });
  $("dm-username").addEventListener("input", (ev) => {
    if (!dmSearchOff) dmSearch.typed(ev.target.value);
  });
  $("dm-username").addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") {
      dmSearch.cancel();
      showDmResults({ prefix: null, users: [], hasMore: false });
    } else if (ev.key === "ArrowDown" && !$("dm-results").hidden) {
      ev.preventDefault();
      $("dm-results").querySelector("button")?.focus();
    }
  });
  $("dm-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const username = normalizeUsername($("dm-username").value).replace(/^@/, "");
    if (!username) return;
    await openDirectByName(username);
  });

  const groupDialog = $("group-dialog");
  $("new-group").addEventListener("click", () => {
    $("group-error").textContent = "";
    groupDialog.showModal();
    $("group-title").focus();
  });
  $("group-cancel").addEventListener("click", () => groupDialog.close());
  $("group-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const title = $("group-title").value.trim();
    const usernames = parseNames($("group-members").value);
    try {
      const conv = await session.request("createGroup", { title, usernames });
      model.applyConversation(conv);
      groupDialog.close();
      $("group-title").value = "";
      $("group-members").value = "";
      openConversation(String(conv.conversationId));
    } catch (e) {
      formError($("group-error"), e, namedCtx("createGroup", usernames));
    }
  });

  const addDialog = $("add-dialog");
  $("add-members").addEventListener("click", () => {
    $("add-error").textContent = "";
    addDialog.showModal();
    $("add-members-input").focus();
  });
  $("add-cancel").addEventListener("click", () => addDialog.close());
  $("add-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const c = openId ? model.conversations.get(openId) : null;
    if (!c) return;
    const usernames = parseNames($("add-members-input").value);
    try {
      await session.request("addMembers", { conversationId: c.conversationId, usernames });
      addDialog.close();
      $("add-members-input").value = "";
    } catch (e) {
      formError($("add-error"), e, namedCtx("addMembers", usernames));
    }
  });

  $("back").addEventListener("click", () => {
    const id = openId;
    history.pushState(null, "", listUrl());
    openId = null;
    scheduleRender();
    requestAnimationFrame(() => document.querySelector(`.conv-item[data-id="${CSS.escape(id ?? "")}"]`)?.focus());
  });

  $("push-enable").addEventListener("click", async () => {
    try {
      const r = await enablePush(session, session.welcome?.vapidPublicKey || "", { askPermission: true });
      $("push-enable").hidden = r === "registered" || r === "unchanged" || r === "denied";
      if (r === "denied") showAlert(new Error("notifications are blocked for this site in the browser's settings"));
    } catch (e) {
      showAlert(e, "notifications");
    }
  });
  $("logout").addEventListener("click", async () => {
    let error = null;
    try {
      await session.logout();
    } catch (e) {
      error = e;
    }
    // The session's "signed-out" state has dropped the user's drafts and view.
    clearAlerts();
    $("dm-username").value = "";
    dmSearch?.cancel();
    showDmResults({ prefix: null, users: [], hasMore: false });
    if (error) showAlert(error, "sign out");
    showView("auth");
  });

  // Back and forward move between the conversations the URL named.
  window.addEventListener("popstate", followUrl);
  window.addEventListener("hashchange", followUrl);

  initDevices();
  initAccount();
  initGroupInfo();
  $("block-toggle").addEventListener("click", () => {
    const c = openId ? model.conversations.get(openId) : null;
    if (c?.peerUsername) setBlocked(c.peerUsername, !blocked.has(c.peerUsername)).then((ok) => ok && $("block-toggle").focus());
  });
  $("blocked-note-unblock").addEventListener("click", () => {
    const c = openId ? model.conversations.get(openId) : null;
    if (c?.peerUsername) setBlocked(c.peerUsername, false).then((ok) => ok && $("composer-text").focus());
  });

  $("conn-retry").addEventListener("click", () => session.reconnectNow());
  window.addEventListener("online", () => session.reconnectNow());
  // Leaving the page: store the cursor now rather than after the debounce.
  window.addEventListener("pagehide", () => {
    session.ack();
    saveCache();
  });

  $("messages").addEventListener("scroll", () => {
    if ($("messages").scrollTop < 80) loadOlder();
    const c = openId ? model.conversations.get(openId) : null;
    if (c) maybeMarkRead(c);
  });
  $("load-older").addEventListener("click", loadOlder);
  document.addEventListener("visibilitychange", () => {
    scheduleRender();
    awayTracking();
    if (document.visibilityState === "hidden") saveCache();
  });

  // Conversation list: arrow keys move between conversations.
  $("conv-list").addEventListener("keydown", (ev) => {
    if (ev.key !== "ArrowDown" && ev.key !== "ArrowUp") return;
    const items = [...document.querySelectorAll(".conv-item")];
    const i = items.indexOf(document.activeElement);
    if (i < 0) return;
    items[Math.max(0, Math.min(items.length - 1, i + (ev.key === "ArrowDown" ? 1 : -1)))].focus();
    ev.preventDefault();
  });

  initComposer();
}

// ---------------------------------------------------------------------------
// Devices (§6.5)
// ---------------------------------------------------------------------------

function deviceNode(d, reload) {
  const name = d.name || "(unnamed device)";
  const added = new Date(Number(d.createdAtMs)).toLocaleString();
  const seen = d.online ? "online now" : Number(d.lastSeenMs) ? `last seen ${relativeTime(Number(d.lastSeenMs))}` : "never seen";
  const li = el(
    "li",
    { class: "device", "data-device-id": String(d.deviceId) },
    el("div", { class: "device-name" }, el("strong", { text: name }), d.current ? el("span", { class: "this-device", text: "This device" }) : null),
    el("div", { class: "device-meta", text: `Signed in ${added} · ${seen}` }),
  );
  if (!d.current) {
    // This device signs out with the top bar's button; here, only the others.
    const button = el("button", { type: "button", class: "secondary", text: "Sign out", "aria-label": `Sign out ${name} (signed in ${added})` });
    button.addEventListener("click", async () => {
      button.disabled = true;
      $("devices-error").textContent = "";
      try {
        await session.revokeDevice(d.deviceId);
      } catch (e) {
        formError($("devices-error"), e);
      }
      await reload();
    });
    li.append(button);
  }
  return li;
}

function initDevices() {
  const dialog = $("devices-dialog");
  const list = $("device-list");
  const reload = async () => {
    list.setAttribute("aria-busy", "true");
    $("devices-status").textContent = "Loading…";
    try {
      const devices = await session.listDevices();
      list.replaceChildren(...devices.map((d) => deviceNode(d, reload)));
      const others = devices.filter((d) => !d.current).length;
      $("devices-revoke-others").disabled = others === 0;
      $("devices-status").textContent = others === 0 ? "No other device is signed in." : `${others} other device${others === 1 ? " is" : "s are"} signed in.`;
    } catch (e) {
      $("devices-status").textContent = "";
      formError($("devices-error"), e);
    } finally {
      list.removeAttribute("aria-busy");
    }
  };
  $("devices").addEventListener("click", () => {
    $("devices-error").textContent = "";
    list.replaceChildren();
    dialog.showModal();
    $("devices-close").focus();
    reload();
  });
  $("devices-close").addEventListener("click", () => dialog.close());
  $("devices-revoke-others").addEventListener("click", async () => {
    const button = $("devices-revoke-others");
    button.disabled = true;
    $("devices-error").textContent = "";
    try {
      await session.revokeOtherDevices();
    } catch (e) {
      formError($("devices-error"), e);
    }
    await reload();
  });
}

// ---------------------------------------------------------------------------
// Confirmations
// ---------------------------------------------------------------------------

/**
 * Asks before something that cannot simply be undone. Resolves true for
 * `ok`, false for Cancel or Esc. Cancel has the focus.
 */
function confirmAction(title, text, ok) {
  const dialog = $("confirm-dialog");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = ok;
  dialog.returnValue = "";
  dialog.showModal();
  $("confirm-cancel").focus();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}

// ---------------------------------------------------------------------------
// Blocking (§6.7)
// ---------------------------------------------------------------------------

/** Loads the whole block list (every ListBlocked page). */
async function loadBlocked() {
  try {
    const users = await session.listBlocked();
    blocked = new Map(users.map((u) => [u.username, u]));
    scheduleRender();
    return true;
  } catch (e) {
    if (!(e instanceof ConnectionLost)) showAlert(e, "block list");
    return false;
  }
}

/**
 * Blocks (after a confirmation) or unblocks `username`. Errors go to
 * `errorTarget` (a form's error line) or a toast. Resolves true when done.
 */
async function setBlocked(username, block, { errorTarget = null } = {}) {
  const ctx = { action: "setBlocked", who: username };
  const fail = (e) => {
    if (errorTarget) formError(errorTarget, e, ctx);
    else showAlert(e, block ? `block ${username}` : `unblock ${username}`, ctx);
    return false;
  };
  if (block && username === model.me?.username) return fail(new ValidationError(ErrorCode.INVALID_ARGUMENT, "you cannot block yourself"));
  if (block) {
    const ok = await confirmAction(
      `Block ${username}?`,
      `${username} will not be able to message you, start a conversation with you or add you to groups, and you will not be able to message them. Groups you share are not affected. You can unblock them at any time.`,
      "Block",
    );
    if (!ok) return false;
  }
  try {
    await session.request("setBlocked", { username, blocked: block });
  } catch (e) {
    return fail(e);
  }
  if (block) blocked.set(username, { username, blockedAtMs: BigInt(Date.now()) });
  else blocked.delete(username);
  updateCount();
  scheduleRender();
  return true;
}

/** The composer is closed: not a member any more, or the DM's peer is blocked. */
function composerLocked(c) {
  if (!c) return false;
  return !!c.left || (c.kind === ConversationKind.DIRECT && blocked.has(c.peerUsername));
}

// ---------------------------------------------------------------------------
// Account: password, privacy, block list (§6.6, §6.7)
// ---------------------------------------------------------------------------

const audienceName = (a) => Object.keys(Audience).find((k) => Audience[k] === a) ?? "EVERYONE";

function showPrivacy(p) {
  for (const [name, value] of [["privacy-dm", p.directMessages], ["privacy-groups", p.groupInvites], ["privacy-search", p.search]]) {
    for (const r of document.querySelectorAll(`input[name="${name}"]`)) r.checked = r.value === audienceName(value);
  }
}

/** "Saved: …" in words, for the status line after a change. */
function privacySummary(p) {
  const dm = { EVERYONE: "everyone", NOBODY: "nobody" }[audienceName(p.directMessages)] ?? "everyone";
  const groups = { EVERYONE: "everyone", CONTACTS: "your contacts", NOBODY: "nobody" }[audienceName(p.groupInvites)] ?? "everyone";
  const found = audienceName(p.search) === "NOBODY" ? "your whole username only" : "the start of your username";
  return `Saved: new conversations from ${dm}; added to groups by ${groups}; found by ${found}.`;
}

function renderBlockedList() {
  const list = $("blocked-list");
  const users = [...blocked.values()];
  list.replaceChildren(
    ...users.map((u) => {
      const since = Number(u.blockedAtMs) ? new Date(Number(u.blockedAtMs)).toLocaleDateString() : "";
      const button = el("button", { type: "button", class: "secondary", text: "Unblock", "aria-label": `Unblock ${u.username}` });
      button.addEventListener("click", async () => {
        $("blocked-error").textContent = "";
        button.disabled = true;
        const i = users.indexOf(u);
        if (await setBlocked(u.username, false, { errorTarget: $("blocked-error") })) {
          renderBlockedList();
          // Focus stays in the list: the next entry's button, or the input.
          const buttons = list.querySelectorAll("button");
          (buttons[Math.min(i, buttons.length - 1)] ?? $("block-username")).focus();
        } else button.disabled = false;
      });
      return el(
        "li",
        { class: "blocked-user", "data-username": u.username },
        el("div", { class: "device-name" }, el("strong", { text: u.username })),
        el("div", { class: "device-meta", text: since ? `Blocked ${since}` : "Blocked" }),
        button,
      );
    }),
  );
  $("blocked-status").textContent = users.length === 0 ? "You have not blocked anyone." : `${users.length} blocked user${users.length === 1 ? "" : "s"}.`;
}

function initAccount() {
  const dialog = $("account-dialog");
  const radios = () => document.querySelectorAll('input[name="privacy-dm"], input[name="privacy-groups"], input[name="privacy-search"]');
  const setRadiosDisabled = (d) => radios().forEach((r) => (r.disabled = d));

  const loadPrivacy = async () => {
    setRadiosDisabled(true);
    try {
      showPrivacy(await session.request("getPrivacy", {}));
      setRadiosDisabled(false);
    } catch (e) {
      formError($("privacy-error"), e, { action: "setPrivacy" });
    }
  };

  $("account").addEventListener("click", () => {
    $("password-username").value = model.me?.username ?? "";
    for (const id of ["password-error", "password-status", "privacy-error", "privacy-status", "blocked-error"]) $(id).textContent = "";
    $("blocked-status").textContent = "Loading…";
    $("blocked-list").replaceChildren();
    dialog.showModal();
    $("password-current").focus();
    loadPrivacy();
    loadBlocked().then((ok) => (ok ? renderBlockedList() : ($("blocked-status").textContent = "")));
  });
  $("account-close").addEventListener("click", () => dialog.close());
  // Passwords are not left in a closed dialog.
  dialog.addEventListener("close", () => {
    $("password-current").value = "";
    $("password-new").value = "";
    $("password-revoke").checked = false;
  });

  $("password-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const current = $("password-current").value;
    const next = $("password-new").value;
    const revoke = $("password-revoke").checked;
    $("password-error").textContent = "";
    $("password-status").textContent = "";
    if (!current) {
      $("password-error").textContent = "Enter your current password.";
      $("password-current").focus();
      return;
    }
    const button = $("password-submit");
    button.disabled = true;
    let waitMs = 0;
    try {
      await session.changePassword(current, next, revoke);
      $("password-current").value = "";
      $("password-new").value = "";
      $("password-revoke").checked = false;
      $("password-status").textContent = revoke ? "Password changed. Your other devices were signed out." : "Password changed. Your other devices stay signed in.";
    } catch (e) {
      formError($("password-error"), e, { action: "changePassword" });
      if (e instanceof ConfabError && e.codeName === "RATE_LIMITED") waitMs = Math.min(Number(e.retryAfterMs) || 0, 600_000);
      else if (e instanceof ConfabError && e.codeName === "INVALID_CREDENTIALS") $("password-current").select();
      else if ((e instanceof ConfabError || e instanceof ValidationError) && e.code === ErrorCode.INVALID_ARGUMENT) $("password-new").select();
    } finally {
      // Rate limited: the button waits as long as the server asked.
      if (waitMs) setTimeout(() => (button.disabled = false), waitMs);
      else button.disabled = false;
    }
  });

  for (const r of radios()) {
    r.addEventListener("change", async () => {
      if (!r.checked) return;
      const field = { "privacy-dm": "directMessages", "privacy-groups": "groupInvites", "privacy-search": "search" }[r.name];
      const body = { directMessages: Audience.UNSPECIFIED, groupInvites: Audience.UNSPECIFIED, search: Audience.UNSPECIFIED, [field]: Audience[r.value] };
      $("privacy-error").textContent = "";
      $("privacy-status").textContent = "Saving…";
      try {
        const p = await session.request("setPrivacy", body);
        showPrivacy(p);
        $("privacy-status").textContent = privacySummary(p);
      } catch (e) {
        $("privacy-status").textContent = "";
        formError($("privacy-error"), e, { action: "setPrivacy" });
        loadPrivacy(); // show what is stored
      }
    });
  }

  $("block-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = $("block-username");
    const name = normalizeUsername(input.value);
    input.value = name;
    $("blocked-error").textContent = "";
    if (!name) return;
    if (await setBlocked(name, true, { errorTarget: $("blocked-error") })) {
      input.value = "";
      // The server's order (account creation) and blocked_at_ms: ask again.
      if (await loadBlocked()) renderBlockedList();
    }
    input.focus();
  });
}

// ---------------------------------------------------------------------------
// Group info: members and roles, rename, leave (§7.3)
// ---------------------------------------------------------------------------

let infoFor = null; // the conversation id the group info dialog shows
let infoMembers = []; // its MemberList, as last fetched

function infoConv() {
  return infoFor ? model.conversations.get(infoFor) : null;
}

/** Fetches the member list; the user's own role in it is authoritative. */
async function loadMembers() {
  const c = infoConv();
  if (!c) return;
  const list = $("member-list");
  list.setAttribute("aria-busy", "true");
  try {
    const r = await session.request("listMembers", { conversationId: c.conversationId });
    if (infoFor !== c.id) return;
    infoMembers = r.members;
    const me = infoMembers.find((m) => m.userId === model.me?.userId);
    if (me) c.role = me.role;
    renderInfo();
    scheduleRender();
  } catch (e) {
    if (e instanceof ConfabError && e.codeName === "CONVERSATION_NOT_FOUND") c.left = true;
    formError($("info-error"), e);
    renderInfo();
  } finally {
    list.removeAttribute("aria-busy");
  }
}

function renderInfo() {
  const c = infoConv();
  if (!c) return;
  const manage = canManage(c.role) && !c.left;
  $("info-name").textContent = model.nameOf(c);
  $("info-name").hidden = manage;
  $("rename-form").hidden = !manage;
  if (document.activeElement !== $("rename-input")) $("rename-input").value = c.title;
  $("info-leave").hidden = c.left;
  const n = infoMembers.length;
  $("info-status").textContent = c.left ? "You are no longer a member of this group." : n ? `${n} member${n === 1 ? "" : "s"} · you are ${roleLabel(c.role).toLowerCase()}` : "Loading…";
  // Keep the focus on the same member's row when the list is redrawn.
  const focusedRow = document.activeElement?.closest?.(".member")?.dataset.username;
  $("member-list").replaceChildren(...(c.left ? [] : sortMembers(infoMembers).map((m) => memberNode(c, m))));
  if (focusedRow) {
    const row = $("member-list").querySelector(`.member[data-username="${CSS.escape(focusedRow)}"]`);
    (row?.querySelector("button") ?? $("info-close")).focus();
  }
}

function memberNode(c, m) {
  const self = m.userId === model.me?.userId;
  const { remove, roles } = memberActions(c.role, model.me?.userId, m, infoMembers);
  const joined = Number(m.joinedAtMs) ? `joined ${new Date(Number(m.joinedAtMs)).toLocaleDateString()}` : "";
  const actions = el("div", { class: "member-actions" });
  for (const role of roles) {
    const label = roleLabel(role).toLowerCase();
    const b = el("button", { type: "button", class: "secondary", text: `Make ${label}`, "aria-label": self ? `Make yourself ${label}` : `Make ${m.username} ${label}` });
    b.addEventListener("click", () => changeRole(c, m, role));
    actions.append(b);
  }
  if (remove) {
    const b = el("button", { type: "button", class: "danger", text: "Remove", "aria-label": `Remove ${m.username} from the group` });
    b.addEventListener("click", () => removeMember(c, m));
    actions.append(b);
  }
  return el(
    "li",
    { class: "member", "data-username": m.username, "data-role": roleLabel(m.role).toLowerCase() },
    el(
      "div",
      { class: "device-name" },
      el("strong", { text: m.username }),
      self ? el("span", { class: "this-device", text: "You" }) : null,
      el("span", { class: "role-badge", "data-role": roleLabel(m.role).toLowerCase(), text: roleLabel(m.role) }),
    ),
    joined ? el("div", { class: "device-meta", text: joined }) : null,
    actions.childElementCount ? actions : null,
  );
}

/** Sends one group request from the dialog; the list is fetched again whatever the outcome. */
async function groupAction(action, body, ctx = {}) {
  $("info-error").textContent = "";
  try {
    await session.request(action, body);
    return true;
  } catch (e) {
    formError($("info-error"), e, { action, ...ctx });
    return false;
  } finally {
    await loadMembers();
  }
}

async function changeRole(c, m, role) {
  const self = m.userId === model.me?.userId;
  const label = roleLabel(role).toLowerCase();
  if (role === MemberRole.OWNER) {
    const ok = await confirmAction(`Make ${m.username} an owner?`, `Owners are peers: once ${m.username} is an owner, only ${m.username} can change their role, and nobody can remove them from the group.`, "Make owner");
    if (!ok) return;
  } else if (self) {
    const ok = await confirmAction(`Become ${label}?`, `You will no longer be an owner of “${model.nameOf(c)}”; only an owner can make you one again.`, `Become ${label}`);
    if (!ok) return;
  }
  await groupAction("setRole", { conversationId: c.conversationId, username: m.username, role }, { who: m.username });
}

async function removeMember(c, m) {
  const ok = await confirmAction(`Remove ${m.username}?`, `${m.username} will no longer receive the messages of “${model.nameOf(c)}”. They keep what they could read until now.`, "Remove");
  if (ok) await groupAction("removeMember", { conversationId: c.conversationId, username: m.username }, { who: m.username });
}

function initGroupInfo() {
  const dialog = $("info-dialog");
  $("group-info").addEventListener("click", () => {
    const c = openId ? model.conversations.get(openId) : null;
    if (!c) return;
    infoFor = c.id;
    infoMembers = [];
    $("info-error").textContent = "";
    renderInfo();
    dialog.showModal();
    $("info-close").focus();
    loadMembers();
  });
  $("info-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => {
    infoFor = null;
    infoMembers = [];
  });

  $("rename-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const c = infoConv();
    if (!c) return;
    const title = $("rename-input").value.trim();
    if (title === c.title) return;
    if (await groupAction("renameGroup", { conversationId: c.conversationId, title })) {
      c.title = title;
      renderInfo();
      scheduleRender();
      $("info-status").textContent = `Renamed to “${title}”.`;
    }
  });

  $("info-leave").addEventListener("click", async () => {
    const c = infoConv();
    if (!c) return;
    const heir = nextOwner(infoMembers, model.me?.userId);
    const alone = infoMembers.length === 1;
    const text = [
      "You will no longer receive its messages; what you could read until now stays readable.",
      heir ? `${heir.username} will become the owner.` : "",
      alone ? "You are its last member: nobody will see it any more." : "",
    ].filter(Boolean).join(" ");
    if (!(await confirmAction(`Leave “${model.nameOf(c)}”?`, text, "Leave group"))) return;
    $("info-error").textContent = "";
    leaving.add(c.id);
    clearTimeout(markReadTimer);
    try {
      await session.request("leaveGroup", { conversationId: c.conversationId });
    } catch (e) {
      leaving.delete(c.id);
      formError($("info-error"), e, { action: "leaveGroup" });
      return;
    }
    c.left = true;
    dialog.close();
    if (openId === c.id) {
      openId = null;
      history.pushState(null, "", listUrl());
    }
    scheduleRender();
    requestAnimationFrame(() => $("dm-username").focus());
  });
}

// ---------------------------------------------------------------------------
// Composer
// ---------------------------------------------------------------------------

const draftFor = (id) => drafts?.get(id) ?? "";

function updateCount() {
  const text = $("composer-text").value;
  const n = charCount(text);
  const max = session.limits.maxMessageChars;
  const count = $("composer-count");
  count.textContent = `${n.toLocaleString("en")} / ${max.toLocaleString("en")}`;
  count.classList.toggle("over", n > max);
  count.setAttribute("aria-label", n > max ? `${n - max} characters over the limit of ${max}` : `${n} of ${max} characters`);
  $("composer-send").disabled = n > max || composerLocked(openId ? model.conversations.get(openId) : null);
  const ta = $("composer-text");
  ta.style.height = "auto";
  ta.style.height = `${Math.min(ta.scrollHeight + 2, window.innerHeight * 0.4)}px`;
}

function initComposer() {
  const ta = $("composer-text");
  ta.addEventListener("input", () => {
    updateCount();
    if (openId) {
      drafts?.set(openId, ta.value);
      if (ta.value) session.typing(openId);
    }
  });
  ta.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("composer").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!openId) return;
    const text = ta.value;
    if (text.trim() === "") return;
    try {
      session.send(openId, text);
    } catch (e) {
      showAlert(e, "message not sent");
      return;
    }
    // Queued in the outbox is as good as sent: the outbox keeps it from here.
    ta.value = "";
    drafts?.set(openId, "");
    updateCount();
    scheduleRender();
    requestAnimationFrame(() => ($("messages").scrollTop = $("messages").scrollHeight));
  });
  updateCount();
}

// Away after a minute hidden (§9.3).
let awayTimer = null;
let away = false;
function awayTracking() {
  clearTimeout(awayTimer);
  if (document.visibilityState === "hidden") {
    awayTimer = setTimeout(() => {
      if (session.state !== "online") return;
      away = true;
      session.setStatus(true).catch(() => {});
    }, 60_000);
  } else if (away) {
    away = false;
    if (session.state === "online") session.setStatus(false).catch(() => {});
  }
}

// ---------------------------------------------------------------------------
// The saved conversations (cache.js)
// ---------------------------------------------------------------------------

/**
 * Paints the list and the conversation the URL names from what this browser
 * kept of `stored` (the user of the stored token), unless the server
 * answered first or the user changed meanwhile.
 */
async function paintFromCache(stored) {
  const data = await cache.load(stored.userId);
  if (!data || session.auth || listLoaded || session.storedUser?.userId !== stored.userId || !session.token) return;
  model.reset();
  model.setMe({ userId: BigInt(stored.userId), username: stored.username });
  for (const rec of data.conversations) model.restoreConversation(rec, data.messages.get(rec.id) ?? []);
  recent = Array.isArray(data.meta.recent) ? data.meta.recent : [];
  cacheMeta = data.meta;
  cacheUser = String(stored.userId);
  seeded = true;
  followUrl();
  scheduleRender();
}

/** Saves the user's state a moment after it changed (many changes, one write). */
function saveCacheSoon() {
  if (cacheTimer || !listLoaded) return;
  cacheTimer = setTimeout(() => {
    cacheTimer = null;
    saveCache();
  }, 800);
}

/** Saves the user's state now: the list, the newest messages of the conversations opened last. */
function saveCache() {
  clearTimeout(cacheTimer);
  cacheTimer = null;
  const me = model.me;
  // Only the server's view of a signed-in user (not a half-built one).
  if (!listLoaded || !session.auth || !me || String(session.auth.userId) !== String(me.userId)) return Promise.resolve(false);
  const convs = model.sortedConversations();
  const known = new Set(convs.map((c) => c.id));
  recent = recent.filter((id) => known.has(id)).slice(0, RECENT_KEPT);
  const messages = new Map();
  for (const id of recent) {
    const list = model.cacheMessages(model.conversations.get(id), MESSAGES_KEPT);
    if (list.length) messages.set(id, list);
  }
  return cache.save(String(me.userId), { username: me.username, inboxSeq: session.last, recent, conversations: convs.map((c) => model.cacheRecord(c)), messages });
}

// ---------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------

initAuth();
initChat();
showView(session.token ? "chat" : "auth");
if (session.storedUser) $("me-name").textContent = session.storedUser.username;
if (session.token && session.storedUser?.userId) paintFromCache(session.storedUser);
session.start();
setInterval(() => {
  // Relative times ("last seen 3 min ago") and expired typing indicators.
  if (model.conversations.size) scheduleRender();
  const c = openId ? model.conversations.get(openId) : null;
  if (c && c.kind === ConversationKind.GROUP && session.state === "online" && document.visibilityState === "visible") refreshReceipts(openId);
}, 30_000);
