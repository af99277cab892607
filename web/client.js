// The Confab session over WebSocket (PROTOCOL.md §2.3, §4, §8): handshake,
// signup / login / resume, request correlation, heartbeats, the inbox cursor
// with gap detection and Sync paging (§8.4), AckCursor (§8.6), an outbox with
// idempotent resend (§8.2), presence re-subscription, and reconnecting with
// backoff and jitter (§8.9, §13). No DOM: the UI listens to its events.
//
// Events (session.on(name, fn)):
//   state      {state, detail}  "connecting" | "signed-out" | "authenticating"
//                               | "syncing" | "online" | "reconnecting" | "stopped"
//   auth       {auth, fresh}    AuthOk; fresh = no state kept from before
//   reset      {}               local state must be discarded (§8.5)
//   inbox      InboxEvent       applied strictly in inbox_seq order, once each
//   presence   Presence
//   typing     TypingEvent
//   receipt    ReadReceipt
//   outbox     {entries}        the unacknowledged messages changed
//   sent       {entry, message} a message of the outbox was stored
//   failed     {entry, error}   a message was refused (3xx): it is not resent
//   error      ConfabError      a session-level error the user should see;
//                               `connection: true` on those about the connection
//                               itself (the UI drops them once it is back online)
//   goaway     GoAway
//   endpoint   {url, node, own, listed, error}  where this connection attempt
//                               goes (after /v1/discover, §2.5; see discovery.js)

import {
  encodeClientFrame,
  decodeServerFrame,
  serverBody,
  effectiveLimits,
  DEFAULT_HEARTBEAT_MS,
  DEFAULT_MAX_FRAME_BYTES,
  errorName,
  errorClass,
  ErrorCode,
  PresenceState,
} from "./proto.js";
import { validateRequest, ValidationError } from "./validate.js";
import { pickEndpoint, DISCOVERY_TIMEOUT_MS } from "./discovery.js";

export const CLIENT_NAME = "confab-web/0.1";
export const PROTOCOL_VERSIONS = [1];

/** An Error frame from the server (or a client-side refusal with the code the server would use). */
export class ConfabError extends Error {
  constructor(code, message, { retryAfterMs = 0, fatal = false, requestId = 0n, local = false } = {}) {
    super(`${errorName(code)}: ${message || "(no message)"}`);
    this.name = "ConfabError";
    this.code = code;
    this.codeName = errorName(code);
    this.detail = message;
    this.retryAfterMs = retryAfterMs;
    this.fatal = fatal;
    this.requestId = requestId;
    this.local = local;
  }
  get kind() {
    return errorClass(this.code);
  }
}

/** The connection ended before the response: the request's outcome is unknown (§8.2). */
export class ConnectionLost extends Error {
  constructor(reason) {
    super(`connection lost (${reason}); the outcome of the request is unknown`);
    this.name = "ConnectionLost";
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const jitter = (ms) => ms * (0.5 + Math.random()); // ±50 %

/** Marks an error as being about the connection (see the "error" event). */
const connectionError = (e) => {
  if (e && typeof e === "object") e.connection = true;
  return e;
};

/**
 * Every device of the user (§6.5): ListDevicesRequest pages, oldest first,
 * each asking after the last device of the previous one until has_more is
 * false. `request(name, body)` is Session.request (tests pass a fake).
 */
export async function listAllDevices(request, { limit = 0 } = {}) {
  const devices = [];
  let after = 0n;
  for (;;) {
    const page = await request("listDevices", { afterDeviceId: after, limit });
    devices.push(...page.devices);
    const last = page.devices.at(-1);
    // An empty page, or one that does not move forward, ends the walk
    // rather than asking the same question forever.
    if (!page.hasMore || !last || last.deviceId <= after) return devices;
    after = last.deviceId;
  }
}

/**
 * The user's whole block list (§6.7): ListBlockedRequest pages, each asking
 * after the last username of the previous one until has_more is false.
 * `request(name, body)` is Session.request (tests pass a fake).
 */
export async function listAllBlocked(request, { limit = 0 } = {}) {
  const users = [];
  let after = "";
  for (;;) {
    const page = await request("listBlocked", { afterUsername: after, limit });
    users.push(...page.users);
    const last = page.users.at(-1);
    // An empty page, or one that repeats the last name, ends the walk.
    if (!page.hasMore || !last || last.username === after) return users;
    after = last.username;
  }
}

/** The WebSocket URL of the page's own origin (§2.3). */
export function defaultWsUrl(loc = globalThis.location) {
  return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/v1/ws`;
}

/** A default device name from the browser ("Chrome on Linux"). */
export function defaultDeviceName(nav = globalThis.navigator) {
  const ua = nav?.userAgent ?? "";
  const browser = /Edg\//.test(ua) ? "Edge" : /Firefox\//.test(ua) ? "Firefox" : /Chrom(e|ium)\//.test(ua) ? "Chromium" : /Safari\//.test(ua) ? "Safari" : "Browser";
  const os = /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS" : /Mac OS X/.test(ua) ? "macOS" : /Windows/.test(ua) ? "Windows" : /Linux/.test(ua) ? "Linux" : "";
  return os ? `${browser} on ${os}` : browser;
}

function newClientMsgId() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

const KEY_TOKEN = "confab.token";
const KEY_USER = "confab.user";
const keyOutbox = (userId) => `confab.outbox.${userId}`;

export class Session {
  /**
   * @param {object} opts
   * @param {string} opts.url            ws:// or wss:// URL of /v1/ws
   * @param {Storage} [opts.storage]     where the token and outbox live (localStorage)
   * @param {Function} [opts.WebSocket]  the WebSocket constructor (tests inject one)
   * @param {number} [opts.requestTimeoutMs] how long a response may take before the connection is recycled
   * @param {object} [opts.discovery]    ask /v1/discover before each connection attempt (§2.5):
   *   {origin: the page's origin, fetch: the fetch function (tests inject one), timeoutMs};
   *   without it every attempt goes to `url`
   */
  constructor({
    url,
    storage = globalThis.localStorage,
    WebSocket = globalThis.WebSocket,
    requestTimeoutMs = 30000,
    backoffStartMs = 750,
    workerTicker = typeof document !== "undefined",
    discovery = null,
  } = {}) {
    if (!url) throw new TypeError("Session needs a url");
    this.url = url; // the page's own /v1/ws: the fallback
    this.discovery = discovery ? { timeoutMs: DISCOVERY_TIMEOUT_MS, ...discovery } : null;
    if (this.discovery && (!this.discovery.origin || typeof this.discovery.fetch !== "function")) {
      throw new TypeError("Session's discovery needs the page's origin and a fetch function");
    }
    this.endpoint = null; // {url, node, own, listed, error}: where the current (or last) attempt went
    this.avoidNext = null; // the ws URL of the node the last connection was on, when it ended badly
    this.discovering = false;
    this.storage = storage;
    this.WS = WebSocket;
    this.requestTimeoutMs = requestTimeoutMs;
    this.backoffStartMs = backoffStartMs;
    this.useWorkerTicker = workerTicker;
    this.tickerWorker = null;
    this.listeners = new Map();

    this.state = "stopped";
    this.ws = null;
    this.connId = 0; // increases with every connection, so stale callbacks do nothing
    this.welcome = null;
    this.limits = effectiveLimits();
    this.heartbeatMs = DEFAULT_HEARTBEAT_MS;
    this.nextRequestId = 1n;
    this.pending = new Map(); // requestId string -> {resolve, reject, name, timer}
    this.waitingForSlot = []; // requests waiting for a max_in_flight slot, in order: {start, reject}
    this.lastSentAt = 0;
    this.lastReceivedAt = 0;
    this.pingSentAt = 0;
    this.pingNonce = 0n;
    this.heartbeatTimer = null;
    this.welcomeWaiters = [];
    this.authWanted = 0; // logins / signups waiting for a connection

    this.auth = null; // AuthOk of the current user
    this.userId = null; // string: the user whose state we keep
    this.hasState = false; // we hold state for userId from an earlier session

    // Inbox (§8.4).
    this.last = 0n;
    this.syncing = false;
    this.buffer = new Map(); // inbox_seq string -> InboxEvent
    this.lastAcked = 0n;
    this.ackTimer = null;

    // Outbox (§8.2).
    this.outbox = new Map(); // clientMsgId -> entry
    this.outboxInFlight = new Set();

    this.presenceSubs = new Set();
    this.typingSentAt = new Map();

    this.backoffMs = 0;
    this.reconnectTimer = null;
    this.reconnectAt = 0;
    this.nextDelayHint = 0; // retry_after_ms / reconnect_after_ms from the server
    this.stopped = true;
    this.goingAway = false;
    this.lastError = null;
  }

  // ---- tiny emitter ------------------------------------------------------

  on(name, fn) {
    if (!this.listeners.has(name)) this.listeners.set(name, new Set());
    this.listeners.get(name).add(fn);
    return () => this.listeners.get(name).delete(fn);
  }
  emit(name, detail) {
    for (const fn of this.listeners.get(name) ?? []) {
      try {
        fn(detail);
      } catch (e) {
        // A listener's bug must not break the session; make it visible.
        console.error(`confab: "${name}" listener failed`, e);
        if (name !== "error") this.emit("error", e);
      }
    }
  }
  setState(state, detail = {}) {
    this.state = state;
    this.emit("state", { state, ...detail });
  }

  // ---- stored credentials -------------------------------------------------

  get token() {
    return this.storage?.getItem(KEY_TOKEN) || "";
  }
  get storedUser() {
    try {
      return JSON.parse(this.storage?.getItem(KEY_USER) || "null");
    } catch {
      return null;
    }
  }
  forgetToken() {
    this.storage?.removeItem(KEY_TOKEN);
    this.storage?.removeItem(KEY_USER);
  }

  // ---- connection lifecycle ----------------------------------------------

  /** Starts connecting (and keeps reconnecting until stop()). */
  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  /** Closes the connection and stops reconnecting. */
  stop() {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    this.teardown("stopped", 1000);
    this.setState("stopped");
  }

  /** Skips the backoff wait (the user pressed "retry", or the browser is online again). */
  reconnectNow() {
    if (this.stopped || this.state !== "reconnecting") return;
    clearTimeout(this.reconnectTimer);
    this.backoffMs = 0;
    this.connect();
  }

  connect() {
    clearTimeout(this.reconnectTimer);
    const id = ++this.connId;
    this.setState("connecting");
    this.goingAway = false;
    if (!this.discovery) {
      this.open(id, { url: this.url, node: "", own: true, listed: 0, error: null });
      return;
    }
    // §2.5: ask where to go first (at most discovery.timeoutMs), before
    // every attempt: a cluster may have moved on since the last one.
    this.discovering = true;
    const { origin, fetch, timeoutMs } = this.discovery;
    pickEndpoint({ fetch, pageOrigin: origin, ownUrl: this.url, last: this.endpoint?.url ?? null, avoid: this.avoidNext, timeoutMs }).then((ep) => {
      if (id !== this.connId) return; // stopped, or another attempt started meanwhile
      this.discovering = false;
      this.open(id, ep);
    });
  }

  /** Opens attempt `id`'s WebSocket to endpoint `ep`. */
  open(id, ep) {
    this.endpoint = ep;
    this.emit("endpoint", ep);
    let ws;
    try {
      ws = new this.WS(ep.url, "confab.v1");
    } catch (e) {
      this.lastError = e;
      this.emit("error", connectionError(new Error(`cannot open ${ep.url}: ${e.message}`)));
      this.scheduleReconnect("cannot connect");
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    // A connection attempt that hangs (no reset, no answer) is abandoned.
    const openTimer = setTimeout(() => {
      if (id === this.connId && ws.readyState === 0) this.dropConnection("connection attempt timed out");
    }, 10000);
    this.welcome = null;
    this.nextRequestId = 1n;
    this.lastReceivedAt = Date.now();
    this.lastSentAt = 0;
    this.pingSentAt = 0;
    ws.onopen = () => {
      clearTimeout(openTimer);
      if (id !== this.connId) return;
      if (ws.protocol && ws.protocol !== "confab.v1") {
        this.emit("error", connectionError(new Error(`server chose WebSocket subprotocol "${ws.protocol}", not confab.v1`)));
        this.dropConnection("wrong subprotocol");
        return;
      }
      this.handshake(id).catch((e) => this.connectionFailed(id, e));
    };
    ws.onmessage = (ev) => {
      if (id !== this.connId) return;
      this.onMessage(ev.data);
    };
    ws.onerror = () => {
      // The close event that follows says what happened.
    };
    ws.onclose = (ev) => {
      if (id !== this.connId) return;
      this.onClose(ev);
    };
  }

  async handshake(id) {
    const welcome = await this.request("hello", { versions: PROTOCOL_VERSIONS, capabilities: [], clientName: CLIENT_NAME });
    if (id !== this.connId) return;
    if (!PROTOCOL_VERSIONS.includes(welcome.version)) {
      throw new Error(`server chose protocol version ${welcome.version}, which this client does not speak`);
    }
    this.welcome = welcome;
    this.limits = effectiveLimits(welcome.limits);
    this.releaseSlots(); // in case the server allows more in flight than the defaults
    this.heartbeatMs = welcome.heartbeatIntervalMs || DEFAULT_HEARTBEAT_MS;
    this.startHeartbeat(id);
    for (const w of this.welcomeWaiters.splice(0)) w.resolve();
    const token = this.token;
    if (token) {
      this.setState("authenticating");
      let auth;
      try {
        auth = await this.request("resume", { token });
      } catch (e) {
        if (e instanceof ConfabError && (e.code === ErrorCode.INVALID_TOKEN || e.code === ErrorCode.DEVICE_REVOKED)) {
          this.forgetToken();
          this.idleSignedOut({ reason: e });
          return;
        }
        throw e;
      }
      await this.authenticated(id, auth, null);
    } else if (this.authWanted > 0) {
      this.setState("signed-out", {}); // a login or signup is waiting for this connection
    } else {
      this.idleSignedOut({});
    }
  }

  /** Signed out and not connected: nothing happens until login or signup. */
  idleSignedOut(detail) {
    clearTimeout(this.reconnectTimer);
    this.avoidNext = null;
    this.teardown("signed out", 1000);
    this.stopped = true;
    this.setState("signed-out", detail);
  }

  connectionFailed(id, e) {
    if (id !== this.connId) return;
    if (!(e instanceof ConnectionLost)) {
      this.lastError = e;
      this.emit("error", connectionError(e));
      if (e instanceof ConfabError && e.retryAfterMs) this.nextDelayHint = Number(e.retryAfterMs);
      this.dropConnection(e.message);
    }
  }

  onClose(ev) {
    const reason = ev.reason || `WebSocket closed (${ev.code})`;
    this.teardown(reason);
    if (this.stopped) return;
    this.scheduleReconnect(reason);
  }

  /** Closes the current socket; onClose (or this) then reconnects. */
  dropConnection(reason) {
    if (!this.ws) return;
    this.teardown(reason, 1000);
    if (!this.stopped) this.scheduleReconnect(reason);
  }

  teardown(reason, closeCode) {
    const ws = this.ws;
    this.ws = null;
    this.connId++;
    this.discovering = false;
    this.stopTicker();
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      if (closeCode && (ws.readyState === 0 || ws.readyState === 1)) {
        try {
          ws.close(closeCode);
        } catch {
          // already closing
        }
      }
    }
    const lost = new ConnectionLost(reason);
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(lost);
    }
    this.pending.clear();
    for (const w of this.waitingForSlot.splice(0)) w.reject(lost);
    for (const w of this.welcomeWaiters.splice(0)) w.reject(lost);
    this.outboxInFlight.clear();
    this.syncing = false;
    this.buffer.clear();
  }

  scheduleReconnect(reason) {
    if (this.stopped) return;
    clearTimeout(this.reconnectTimer);
    // Told to go, cut off or never reached: the next attempt prefers
    // another node, when discovery lists one (§2.5).
    this.avoidNext = this.endpoint?.url ?? null;
    let delay;
    if (this.nextDelayHint > 0) {
      // GoAway / retry_after_ms: at least that long, plus jitter (§13).
      delay = this.nextDelayHint + Math.random() * Math.max(this.nextDelayHint, 1000);
      this.nextDelayHint = 0;
    } else {
      this.backoffMs = this.backoffMs ? Math.min(this.backoffMs * 2, 60000) : this.backoffStartMs;
      delay = jitter(this.backoffMs);
    }
    this.reconnectAt = Date.now() + delay;
    this.setState("reconnecting", { reason, at: this.reconnectAt });
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  whenWelcomed(timeoutMs = 15000) {
    if (this.welcome && this.ws) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("the server is not reachable right now; try again when the connection is back")), timeoutMs);
      this.welcomeWaiters.push({
        resolve: () => (clearTimeout(t), resolve()),
        reject: (e) => (clearTimeout(t), reject(e)),
      });
    });
  }

  // ---- frames -------------------------------------------------------------

  sendFrame(frame) {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) throw new ConnectionLost("not connected");
    const bytes = encodeClientFrame(frame);
    const max = this.welcome ? this.limits.maxFrameBytes : DEFAULT_MAX_FRAME_BYTES;
    if (bytes.length > max) throw new ConfabError(ErrorCode.FRAME_TOO_LARGE, `frame of ${bytes.length} bytes is above max_frame_bytes ${max}`, { local: true });
    ws.send(bytes);
    this.lastSentAt = Date.now();
  }

  /**
   * Sends request `name` (a ClientFrame body member) and resolves with the
   * response body's value. Rejects with ConfabError (an Error frame or a
   * field rule), ConnectionLost, or Error for an unexpected response body.
   */
  async request(name, body, { timeoutMs = name === "hello" ? Math.min(this.requestTimeoutMs, 15000) : this.requestTimeoutMs } = {}) {
    if (name !== "hello") validateRequest(name, body, this.limits);
    if (!this.ws) throw new ConnectionLost("not connected");
    // §13: after GoAway no new requests on this session; they go on the next.
    if (this.goingAway) throw new ConnectionLost("the server is going away");
    // §4.7: at most max_in_flight unanswered; the others wait their turn in
    // the order they were made (the outbox's sends in the order typed, §4.4).
    // A slot that frees is handed to the first waiting request at once, in
    // the same task (releaseSlots): nothing made meanwhile can take it.
    if (this.pending.size < this.limits.maxInFlight && this.waitingForSlot.length === 0) return this.issue(name, body, timeoutMs);
    const ws = this.ws;
    return new Promise((resolve, reject) => {
      const start = () => {
        if (this.ws !== ws) return reject(new ConnectionLost("reconnected"));
        if (this.goingAway) return reject(new ConnectionLost("the server is going away"));
        this.issue(name, body, timeoutMs).then(resolve, reject);
      };
      this.waitingForSlot.push({ start, reject });
    });
  }

  /** Starts the requests waiting for a slot, first come first served, while there are slots. */
  releaseSlots() {
    while (this.waitingForSlot.length > 0 && this.pending.size < this.limits.maxInFlight) this.waitingForSlot.shift().start();
  }

  /** Sends request `name` now (a slot is free) and resolves with its response body's value. */
  issue(name, body, timeoutMs) {
    let id = this.nextRequestId;
    while (this.pending.has(String(id))) id++;
    this.nextRequestId = id + 1n;
    return new Promise((resolve, reject) => {
      const entry = { name, resolve, reject, timer: null };
      entry.timer = setTimeout(() => {
        // No final response in time: treat the connection as broken (§4.6).
        this.dropConnection(`no response to ${name} within ${timeoutMs / 1000} s`);
      }, timeoutMs);
      this.pending.set(String(id), entry);
      try {
        this.sendFrame({ requestId: id, [name]: body });
      } catch (e) {
        clearTimeout(entry.timer);
        this.pending.delete(String(id));
        reject(e);
        this.releaseSlots();
      }
    });
  }

  onMessage(data) {
    this.lastReceivedAt = Date.now();
    if (typeof data === "string") {
      this.emit("error", connectionError(new Error("the server sent a text WebSocket message; reconnecting")));
      this.dropConnection("text message");
      return;
    }
    const max = this.welcome ? this.limits.maxFrameBytes : DEFAULT_MAX_FRAME_BYTES;
    if (data.byteLength > max) {
      this.emit("error", connectionError(new Error(`the server sent a frame of ${data.byteLength} bytes, above max_frame_bytes; reconnecting`)));
      this.dropConnection("frame too large");
      return;
    }
    let frame;
    try {
      frame = decodeServerFrame(new Uint8Array(data));
    } catch (e) {
      // §3: close and reconnect, never crash.
      this.emit("error", connectionError(new Error(`malformed frame from the server (${e.message}); reconnecting`)));
      this.dropConnection("malformed frame");
      return;
    }
    const body = serverBody(frame);
    if (frame.requestId !== 0n) {
      this.onResponse(frame, body);
      return;
    }
    switch (body) {
      case "event":
        this.onLiveEvent(frame.event);
        return;
      case "presence":
        this.emit("presence", frame.presence);
        return;
      case "typing":
        this.emit("typing", frame.typing);
        return;
      case "readReceipt":
        this.emit("receipt", frame.readReceipt);
        return;
      case "goAway":
        this.onGoAway(frame.goAway);
        return;
      case "error":
        this.onSessionError(frame.error);
        return;
      default:
        return; // an event this client does not know (or no body): ignored (§3)
    }
  }

  onResponse(frame, body) {
    const key = String(frame.requestId);
    const p = this.pending.get(key);
    if (!p) return; // not ours (e.g. answered after a timeout): nothing to do
    this.pending.delete(key);
    clearTimeout(p.timer);
    if (body === "error") {
      const e = frame.error;
      const err = new ConfabError(e.code, e.message, { retryAfterMs: Number(e.retryAfterMs), fatal: e.fatal, requestId: frame.requestId });
      p.reject(err);
      if (e.fatal) this.onSessionError(e);
    } else if (body === null) {
      p.reject(new Error(`request ${p.name} failed: the server answered with a response type this client does not know`));
    } else {
      p.resolve(frame[body]);
    }
    // The slot goes to the first request waiting for one (after a fatal
    // error there is none: the teardown refused them all).
    this.releaseSlots();
  }

  onSessionError(e) {
    const err = new ConfabError(e.code, e.message, { retryAfterMs: Number(e.retryAfterMs), fatal: e.fatal });
    if (!e.fatal) {
      // A non-fatal session-level error (e.g. MALFORMED_FRAME for a frame whose id was lost).
      this.emit("error", err);
      return;
    }
    this.lastError = err;
    if (e.retryAfterMs) this.nextDelayHint = Number(e.retryAfterMs);
    if (e.code === ErrorCode.DEVICE_REVOKED) {
      this.forgetToken();
      this.emit("error", err);
      this.clearUserState();
      this.idleSignedOut({ reason: err });
      return;
    }
    if (e.code === ErrorCode.AUTH_TIMEOUT && !this.auth) {
      // Nobody signed in on this connection in time: just let it go.
      this.idleSignedOut({});
      return;
    }
    if (e.code === ErrorCode.UNSUPPORTED_VERSION) {
      this.emit("error", err);
      this.stop();
      return;
    }
    // RESYNC_REQUIRED, SHUTTING_DOWN, HEARTBEAT_TIMEOUT, …: reconnect, resume, sync.
    if (e.code !== ErrorCode.SHUTTING_DOWN && e.code !== ErrorCode.RESYNC_REQUIRED) this.emit("error", connectionError(err));
    this.dropConnection(err.codeName);
  }

  onGoAway(g) {
    this.goingAway = true;
    this.nextDelayHint = Math.max(Number(g.reconnectAfterMs), 1);
    this.emit("goaway", g);
    // Wait for the responses in flight; the server closes the connection.
    if (this.pending.size === 0) {
      // Nothing to wait for; still let the server close first, but do not hang.
      const id = this.connId;
      setTimeout(() => {
        if (id === this.connId) this.dropConnection("server going away");
      }, 5000);
    }
  }

  // ---- heartbeat (§4.6) ---------------------------------------------------

  startHeartbeat(id) {
    this.stopTicker();
    const tick = Math.max(250, Math.min(1000, this.heartbeatMs / 4));
    this.startTicker(tick, () => {
      if (id !== this.connId || !this.ws) return;
      const now = Date.now();
      const hb = this.heartbeatMs;
      if (this.pingSentAt && this.lastReceivedAt < this.pingSentAt && now - this.pingSentAt > 2.5 * hb) {
        this.emit("error", connectionError(new Error(`nothing heard from the server for ${Math.round((now - this.lastReceivedAt) / 1000)} s; reconnecting`)));
        this.dropConnection("heartbeat timeout");
        return;
      }
      const pingOutstanding = this.pingSentAt && this.lastReceivedAt < this.pingSentAt;
      if (!pingOutstanding && (now - this.lastSentAt >= hb / 2 || now - this.lastReceivedAt >= hb / 2)) {
        this.pingNonce++;
        this.pingSentAt = now;
        this.request("ping", { nonce: this.pingNonce }).catch(() => {});
      } else if (now - this.lastSentAt >= hb * 0.75 && this.ws.readyState === 1) {
        // A ping is outstanding but we must still send something every interval.
        this.pingNonce++;
        this.request("ping", { nonce: this.pingNonce }).catch(() => {});
      }
    });
  }

  /** Calls fn every ms: on a worker (ticker.js) where there is one, else setInterval. */
  startTicker(ms, fn) {
    if (this.useWorkerTicker && typeof Worker !== "undefined") {
      try {
        if (!this.tickerWorker) this.tickerWorker = new Worker(new URL("./ticker.js", import.meta.url));
        this.tickerWorker.onmessage = fn;
        this.tickerWorker.postMessage({ ms });
        return;
      } catch {
        this.tickerWorker = null; // fall back to the page's timer
      }
    }
    this.heartbeatTimer = setInterval(fn, ms);
  }

  stopTicker() {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    if (this.tickerWorker) {
      this.tickerWorker.onmessage = null;
      this.tickerWorker.postMessage({ ms: 0 });
    }
  }

  // ---- authentication ------------------------------------------------------

  // Passwords are compared byte for byte: send them in NFC (§6.1), so the
  // same password typed on another keyboard or OS still matches.
  async signup(username, password, deviceName) {
    return this.passwordAuth("signup", { username, password: password.normalize("NFC"), deviceName });
  }

  async login(username, password, deviceName) {
    return this.passwordAuth("login", { username, password: password.normalize("NFC"), deviceName });
  }

  async passwordAuth(kind, body) {
    validateRequest(kind, body, this.limits);
    if (this.auth) throw new Error("already signed in; sign out first");
    // Signed out, the session holds no connection (the server would end an
    // unauthenticated one after its authentication deadline, §4.1): open one.
    this.authWanted++;
    let auth;
    let id;
    try {
      this.stopped = false;
      if ((!this.ws && !this.discovering) || this.state === "reconnecting") this.connect();
      // An attempt that fails before Welcome (a node refusing this page, the
      // network) is followed by the session's next one, on another node when
      // discovery lists one: the sign-in waits for it, 15 s in all.
      const deadline = Date.now() + 15000;
      for (;;) {
        try {
          await this.whenWelcomed(Math.max(1, deadline - Date.now()));
          break;
        } catch (e) {
          if (e instanceof ConnectionLost && !this.stopped && Date.now() < deadline) continue;
          throw e;
        }
      }
      id = this.connId;
      this.setState("authenticating");
      auth = await this.request(kind, body);
    } catch (e) {
      if (id === this.connId && !this.auth) this.idleSignedOut({ reason: e });
      throw e;
    } finally {
      this.authWanted--;
    }
    if (id !== this.connId) throw new ConnectionLost("reconnected during sign-in");
    this.storage?.setItem(KEY_TOKEN, auth.token);
    // The catch-up runs on; its failures are connection failures (reconnect).
    this.authenticated(id, auth, kind).catch((e) => this.connectionFailed(id, e));
    return auth;
  }

  /** Logs out: the server revokes this device's token (§6.4). */
  async logout() {
    try {
      if (this.auth && this.ws) await this.request("logout", {});
    } finally {
      this.forgetToken();
      this.clearUserState();
      this.idleSignedOut({});
    }
  }

  // ---- devices (§6.5) -----------------------------------------------------

  /** Every device of the signed-in user, oldest first. */
  listDevices() {
    return listAllDevices((name, body) => this.request(name, body));
  }

  /** Signs device `deviceId` out (its sessions end with DEVICE_REVOKED). */
  revokeDevice(deviceId) {
    return this.request("revokeDevice", { deviceId: BigInt(deviceId) });
  }

  /** Signs out every device of the user but this one. */
  revokeOtherDevices() {
    return this.request("revokeOtherDevices", {});
  }

  // ---- account (§6.6, §6.7) -------------------------------------------------

  /**
   * Changes the password; with `revokeOthers`, every other device is signed
   * out in the same write. Both passwords are sent in NFC, as at login.
   */
  async changePassword(current, next, revokeOthers) {
    const body = { currentPassword: current.normalize("NFC"), newPassword: next.normalize("NFC"), revokeOtherDevices: !!revokeOthers };
    // The server refuses the username as a password too (§6.6); say so before asking.
    if (this.auth && body.newPassword.toLowerCase() === this.auth.username.toLowerCase()) {
      throw new ValidationError(ErrorCode.INVALID_ARGUMENT, "the password must not be your username");
    }
    return this.request("changePassword", body);
  }

  /** Every user this user blocked, in the server's order. */
  listBlocked() {
    return listAllBlocked((name, body) => this.request(name, body));
  }

  clearUserState() {
    if (this.userId) this.storage?.removeItem(keyOutbox(this.userId));
    this.auth = null;
    this.userId = null;
    this.hasState = false;
    this.last = 0n;
    this.lastAcked = 0n;
    this.outbox.clear();
    this.presenceSubs.clear();
    this.emit("outbox", { entries: [] });
    this.emit("reset", {});
  }

  async authenticated(id, auth, kind) {
    const userId = String(auth.userId);
    if (this.userId !== userId) {
      // Another user than the state we hold: start from nothing.
      if (this.userId) this.clearUserState();
      this.userId = userId;
      this.hasState = false;
      this.loadOutbox();
    }
    this.auth = auth;
    this.storage?.setItem(KEY_USER, JSON.stringify({ userId, username: auth.username, deviceId: String(auth.deviceId) }));
    this.backoffMs = 0;

    // §8.7 step 2: last = our local cursor if we keep state, else AuthOk.cursor.
    let fresh = !this.hasState;
    if (!fresh && auth.inboxHead < this.last) {
      // §8.5: the server's data is not what we synced from: rebuild.
      this.emit("reset", {});
      fresh = true;
    }
    if (fresh) this.last = auth.cursor;
    this.lastAcked = auth.cursor;
    this.syncing = true; // live events are buffered until the catch-up is done
    this.buffer.clear();
    this.setState("syncing");
    this.emit("auth", { auth, fresh, kind });
    if (this.bootstrap && fresh) await this.bootstrap(auth);
    if (id !== this.connId) return;
    this.hasState = true;

    // Step 3: sync until has_more = false.
    await this.syncLoop(id);
    if (id !== this.connId) return;
    // Step 4: resend the outbox. Step 5: ack (done by syncLoop per page).
    this.flushOutbox();
    this.resubscribePresence();
    this.setState("online");
  }

  // ---- inbox (§8.4 – §8.7) -------------------------------------------------

  onLiveEvent(e) {
    if (!this.auth) return;
    const seq = e.inboxSeq;
    if (seq <= this.last) return; // duplicate
    if (seq === this.last + 1n && !this.syncing) {
      this.apply(e);
      this.scheduleAck();
      return;
    }
    this.buffer.set(String(seq), e);
    if (!this.syncing) {
      this.syncing = true;
      const id = this.connId;
      this.syncLoop(id).catch((err) => this.connectionFailed(id, err));
    }
  }

  apply(e) {
    this.last = e.inboxSeq;
    this.emit("inbox", e);
  }

  async syncLoop(id) {
    this.syncing = true;
    for (;;) {
      const page = await this.request("sync", { after: this.last, limit: 0 });
      if (id !== this.connId) return;
      if (page.inboxHead < this.last) {
        this.emit("reset", {});
        this.last = 0n;
        continue;
      }
      for (const e of page.events) if (e.inboxSeq > this.last) {
        if (e.inboxSeq !== this.last + 1n) {
          // v1 inboxes never skip (§8.5); a jump means we cannot trust our state.
          this.emit("error", new Error(`sync page jumped from inbox_seq ${this.last} to ${e.inboxSeq}`));
        }
        this.apply(e);
      }
      for (const k of [...this.buffer.keys()]) if (BigInt(k) <= this.last) this.buffer.delete(k);
      while (this.buffer.has(String(this.last + 1n))) {
        const e = this.buffer.get(String(this.last + 1n));
        this.buffer.delete(String(this.last + 1n));
        this.apply(e);
      }
      this.ack();
      if (page.hasMore || this.buffer.size > 0) continue;
      this.syncing = false;
      return;
    }
  }

  scheduleAck() {
    if (this.ackTimer) return;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = null;
      this.ack();
    }, 1000);
  }

  ack() {
    if (this.last <= this.lastAcked || !this.auth) return;
    const upTo = this.last;
    this.request("ackCursor", { inboxSeq: upTo }).then(
      () => {
        if (upTo > this.lastAcked) this.lastAcked = upTo;
      },
      (e) => {
        if (e instanceof ConfabError) this.emit("error", e);
      },
    );
  }

  // ---- outbox (§8.1, §8.2) ---------------------------------------------------

  loadOutbox() {
    this.outbox.clear();
    try {
      const saved = JSON.parse(this.storage?.getItem(keyOutbox(this.userId)) || "[]");
      for (const e of saved) this.outbox.set(e.clientMsgId, { ...e, error: null });
    } catch {
      // a damaged entry is dropped
    }
    this.emit("outbox", { entries: [...this.outbox.values()] });
  }

  saveOutbox() {
    if (!this.userId) return;
    const list = [...this.outbox.values()].filter((e) => !e.error).map(({ clientMsgId, conversationId, text, createdAt }) => ({ clientMsgId, conversationId, text, createdAt }));
    try {
      this.storage?.setItem(keyOutbox(this.userId), JSON.stringify(list));
    } catch (e) {
      this.emit("error", new Error(`could not save unsent messages: ${e.message}`));
    }
    this.emit("outbox", { entries: [...this.outbox.values()] });
  }

  /**
   * Queues a message. It is sent now if online, else when the session is
   * back, always with the same client_msg_id, until Sent or a 3xx error.
   * Throws ValidationError for text the server would refuse.
   */
  send(conversationId, text) {
    if (!this.auth) throw new Error("not signed in");
    const entry = { clientMsgId: newClientMsgId(), conversationId: String(conversationId), text, createdAt: Date.now(), error: null };
    validateRequest("send", { conversationId: BigInt(entry.conversationId), clientMsgId: entry.clientMsgId, text }, this.limits);
    this.outbox.set(entry.clientMsgId, entry);
    this.saveOutbox();
    if (this.state === "online") this.sendEntry(entry);
    return entry;
  }

  /** Removes a refused message from the outbox. */
  discard(clientMsgId) {
    this.outbox.delete(clientMsgId);
    this.saveOutbox();
  }

  flushOutbox() {
    for (const e of this.outbox.values()) if (!e.error) this.sendEntry(e);
  }

  sendEntry(entry) {
    if (this.outboxInFlight.has(entry.clientMsgId)) return;
    this.outboxInFlight.add(entry.clientMsgId);
    const id = this.connId;
    this.request("send", { conversationId: BigInt(entry.conversationId), clientMsgId: entry.clientMsgId, text: entry.text }).then(
      (sent) => {
        this.outboxInFlight.delete(entry.clientMsgId);
        this.outbox.delete(entry.clientMsgId);
        this.saveOutbox();
        this.emit("sent", { entry, message: sent.message, duplicate: sent.duplicate });
      },
      (e) => {
        this.outboxInFlight.delete(entry.clientMsgId);
        if (e instanceof ConnectionLost) return; // resent after reconnecting
        if (e instanceof ValidationError || (e instanceof ConfabError && e.kind === "fix-request")) {
          entry.error = e;
          this.saveOutbox();
          this.emit("failed", { entry, error: e });
          return;
        }
        if (e instanceof ConfabError && (e.kind === "wait-retry" || e.kind === "backoff-retry")) {
          entry.retries = (entry.retries ?? 0) + 1;
          const delay = Math.max(e.retryAfterMs, jitter(Math.min(1000 * 2 ** entry.retries, 30000)));
          setTimeout(() => {
            if (id === this.connId && this.outbox.has(entry.clientMsgId) && this.state === "online") this.sendEntry(entry);
          }, delay);
          return;
        }
        entry.error = e;
        this.saveOutbox();
        this.emit("failed", { entry, error: e });
      },
    );
  }

  // ---- presence and typing (§9) -------------------------------------------

  async subscribePresence(usernames) {
    const fresh = usernames.filter((u) => !this.presenceSubs.has(u));
    if (fresh.length === 0) return [];
    for (const u of fresh) this.presenceSubs.add(u);
    if (this.state !== "online" && this.state !== "syncing") return [];
    return this.requestPresence(fresh);
  }

  async requestPresence(usernames) {
    const out = [];
    for (let i = 0; i < usernames.length; i += this.limits.maxListItems) {
      const list = await this.request("subscribePresence", { usernames: usernames.slice(i, i + this.limits.maxListItems) });
      for (const p of list.presences) this.emit("presence", p);
      out.push(...list.presences);
    }
    return out;
  }

  resubscribePresence() {
    if (this.presenceSubs.size === 0) return;
    this.requestPresence([...this.presenceSubs]).catch((e) => {
      if (!(e instanceof ConnectionLost)) this.emit("error", e);
    });
  }

  /** Sends a typing notice, at most once per 3 s per conversation (§9.4). */
  typing(conversationId) {
    if (this.state !== "online" || this.goingAway) return;
    const key = String(conversationId);
    const now = Date.now();
    if (now - (this.typingSentAt.get(key) ?? 0) < 3000) return;
    this.typingSentAt.set(key, now);
    try {
      this.sendFrame({ requestId: 0n, typing: { conversationId: BigInt(conversationId) } });
    } catch {
      // typing is best effort
    }
  }

  setStatus(away) {
    return this.request("setStatus", { status: away ? PresenceState.AWAY : PresenceState.ONLINE });
  }
}

export { sleep };
