// The Confab browser UI: sign in, conversation list, message view, composer.
// Talks to the server only through Session (client.js); keeps its view in
// Model (model.js). All user content goes through textContent, never HTML.

import { Session, ConfabError, ConnectionLost, defaultWsUrl, defaultDeviceName } from "./client.js";
import { Model, describeMembership, dateSeparators, dayKey } from "./model.js";
import { Drafts, dropDrafts } from "./drafts.js";
import { ConversationKind, MemberRole, PresenceState, charCount, errorName } from "./proto.js";
import { normalizeUsername, ValidationError } from "./validate.js";
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
const session = new Session({ url: defaultWsUrl() });
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

// Debugging aid (read-only use): the session and the model.
window.confab = { session, model };

// ---------------------------------------------------------------------------
// Errors shown to the user
// ---------------------------------------------------------------------------

function describeError(e) {
  if (e instanceof ConfabError) return { code: e.codeName, text: e.detail || "" };
  if (e instanceof ValidationError) return { code: errorName(e.code), text: e.message };
  if (e instanceof ConnectionLost) return { code: "OFFLINE", text: e.message };
  return { code: "ERROR", text: e?.message ?? String(e) };
}

/**
 * Shows an error toast. `connection`: it is about the connection (also
 * marked by the session, or a ConnectionLost); such toasts go away by
 * themselves once the session is back online, so an ordinary reconnect
 * (a server restart, a network change) leaves no stale red banner.
 */
function showAlert(e, context, { connection = false } = {}) {
  const { code, text } = describeError(e);
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
function formError(target, e) {
  const { code, text } = describeError(e);
  const friendly = {
    INVALID_CREDENTIALS: "Wrong username or password.",
    USERNAME_TAKEN: "That username is taken.",
    USER_NOT_FOUND: "There is no user with that name.",
    CANNOT_MESSAGE_SELF: "That is you.",
    RATE_LIMITED: "Too many attempts; wait a moment.",
    GROUP_FULL: "The group would be too large.",
    TOO_MANY_DEVICES: "This account has as many devices as it may. Sign out on one of them, or sign every other device out from one that is signed in.",
    DEVICE_NOT_FOUND: "That device is already signed out.",
    DEVICE_REVOKED: "This device was signed out from another one.",
    PERMISSION_DENIED: "You may not do that in this group.",
  }[code];
  target.textContent = friendly ? `${friendly} (${code}: ${text})` : `${code}: ${text}`;
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
  if (s.state === "signed-out") {
    forgetSignedOutUser();
    showView("auth");
    if (s.reason) formError($("auth-error"), s.reason);
  }
  if (s.state === "online") {
    clearAlerts({ connectionOnly: true });
    // Back online: refresh what is not carried by the inbox.
    if (openId) refreshReceipts(openId);
    scheduleRender();
  }
});
session.on("error", (e) => showAlert(e));
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
  model.reset();
  model.setMe(auth);
  // §8.7: a client without local state builds its view from the list.
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
  listLoaded = true;
  subscribePeers();
  followUrl(); // a reload reopens the conversation the URL names
  scheduleRender();
};

session.on("auth", ({ auth, fresh, kind }) => {
  if (fresh) {
    openId = null;
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
  scheduleRender();
});

session.on("inbox", (e) => {
  model.applyInbox(e);
  if (e.joined && e.joined.kind === ConversationKind.DIRECT && e.joined.peerUsername) subscribePeers();
  if (e.left && String(e.left.conversationId) === openId) showAlert(new Error("you are no longer a member of this conversation"));
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
  showAlert(error, "message not sent");
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
  });
}

function presenceState(username) {
  const p = model.presence.get(username);
  if (!p) return "unknown";
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

function renderOpen() {
  const c = openId ? model.conversations.get(openId) : null;
  $("chat-view").classList.toggle("has-open", !!c);
  $("conv-none").hidden = !!c;
  $("conv-open").hidden = !c;
  if (!c) return;

  $("conv-title").textContent = model.nameOf(c);
  const sub = c.kind === ConversationKind.DIRECT ? presenceText(c.peerUsername) : `${c.memberCount} member${c.memberCount === 1 ? "" : "s"}`;
  $("conv-sub").textContent = c.left ? "You are no longer a member" : sub;
  $("add-members").hidden = !(c.kind === ConversationKind.GROUP && !c.left && (c.role === MemberRole.OWNER || c.role === MemberRole.ADMIN));
  $("composer-text").disabled = c.left;
  $("composer-send").disabled = c.left;

  // Messages: keyed, so existing nodes stay (and are not re-announced).
  if (nodesFor !== c.id) {
    nodes.clear();
    nodesFor = c.id;
    $("message-list").replaceChildren();
  }
  const scroller = $("messages");
  const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
  const messages = model.messagesOf(c);
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
        status.textContent = w.pending.error ? `Not sent — ${describeError(w.pending.error).code}: ${describeError(w.pending.error).text}` : session.state === "online" ? "Sending…" : "Waiting for connection…";
      } else {
        // Only the newest of my messages says Sent, and the newest read one Seen.
        let text = w.key === lastSeen ? "Seen" : w.key === myLast ? "Sent" : "";
        if (w.key === myLast && c.kind === ConversationKind.GROUP) {
          // Groups have no live receipts (§8.10): fetched on open, on reconnect and after sending.
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
  scheduleRender();
  requestAnimationFrame(() => {
    const s = $("messages");
    s.scrollTop = s.scrollHeight;
    if (window.matchMedia("(max-width: 700px)").matches) $("back").focus();
    else $("composer-text").focus();
  });
  if (!c.historyLoaded) {
    try {
      const page = await session.request("history", { conversationId: c.conversationId, limit: HISTORY_PAGE });
      model.applyHistory(page, { older: false });
      scheduleRender();
      requestAnimationFrame(() => ($("messages").scrollTop = $("messages").scrollHeight));
    } catch (e) {
      handleConvError(c, e, "history");
    }
  }
  refreshReceipts(id);
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
  // Before the list is loaded nothing is known; bootstrap calls this again.
  if (!listLoaded) return;
  const id = urlConversation();
  if (id === openId) return;
  const c = id ? model.conversations.get(id) : null;
  if (c && c.known && !c.left) {
    openConversation(id, { push: false });
    return;
  }
  // Unknown (another user's, or no longer ours): quietly show the list.
  if (location.hash) history.replaceState(null, "", listUrl());
  openId = null;
  scheduleRender();
}

async function refreshReceipts(id) {
  const c = model.conversations.get(id);
  if (!c || c.left) return;
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
    c.left = true;
    scheduleRender();
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
      formError($("auth-error"), e);
    } finally {
      button.disabled = false;
    }
  });
}

function parseNames(s) {
  return [...new Set(s.split(/[\s,]+/).map(normalizeUsername).filter(Boolean))];
}

function initChat() {
  $("dm-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = $("dm-username");
    const username = normalizeUsername(input.value);
    if (!username) return;
    const known = model.findDirect(username);
    if (known && known.known) {
      input.value = "";
      openConversation(known.id);
      return;
    }
    try {
      const conv = await session.request("openDirect", { username });
      model.applyConversation(conv);
      subscribePeers();
      input.value = "";
      openConversation(String(conv.conversationId));
    } catch (e) {
      showAlert(e, `open ${username}`);
    }
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
      formError($("group-error"), e);
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
    try {
      await session.request("addMembers", { conversationId: c.conversationId, usernames: parseNames($("add-members-input").value) });
      addDialog.close();
      $("add-members-input").value = "";
    } catch (e) {
      formError($("add-error"), e);
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
    if (error) showAlert(error, "sign out");
    showView("auth");
  });

  // Back and forward move between the conversations the URL named.
  window.addEventListener("popstate", followUrl);
  window.addEventListener("hashchange", followUrl);

  initDevices();

  $("conn-retry").addEventListener("click", () => session.reconnectNow());
  window.addEventListener("online", () => session.reconnectNow());
  // Leaving the page: store the cursor now rather than after the debounce.
  window.addEventListener("pagehide", () => session.ack());

  $("messages").addEventListener("scroll", () => {
    if ($("messages").scrollTop < 80) loadOlder();
    const c = openId ? model.conversations.get(openId) : null;
    if (c) maybeMarkRead(c);
  });
  $("load-older").addEventListener("click", loadOlder);
  document.addEventListener("visibilitychange", () => {
    scheduleRender();
    awayTracking();
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
  $("composer-send").disabled = n > max || !!(openId && model.conversations.get(openId)?.left);
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
// Start
// ---------------------------------------------------------------------------

initAuth();
initChat();
showView(session.token ? "chat" : "auth");
if (session.storedUser) $("me-name").textContent = session.storedUser.username;
session.start();
setInterval(() => {
  // Relative times ("last seen 3 min ago") and expired typing indicators.
  if (model.conversations.size) scheduleRender();
  const c = openId ? model.conversations.get(openId) : null;
  if (c && c.kind === ConversationKind.GROUP && session.state === "online" && document.visibilityState === "visible") refreshReceipts(openId);
}, 30_000);
