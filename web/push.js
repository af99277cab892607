// Web Push for the browser client (spec/PROTOCOL.md §10): registers the
// service worker (sw.js), subscribes through the browser's PushManager with
// the server's VAPID key (Welcome.vapid_public_key), and sends
// RegisterPushRequest{web_push} so the server can notify this device while
// it is away. The notification itself is shown by sw.js.
//
// Usage (after AuthOk, with a connected client.js Session):
//
//   import { enablePush } from "./push.js";
//   session.on("auth", ({ auth }) =>
//     enablePush(session, session.welcome?.vapidPublicKey, { renew: !!auth.pushDropped }).catch(() => {}));
//
// enablePush never prompts for permission unless asked to (askPermission),
// because browsers only allow that from a user gesture: call it once more
// from a button's click handler with { askPermission: true }.

const CACHE_KEY = (deviceId) => `confab.push.${deviceId}`;

/** Whether this browser can do Web Push at all. */
export function pushSupported(win = globalThis) {
  return !!(win.navigator?.serviceWorker && win.PushManager && win.Notification);
}

/** base64url (no padding) → Uint8Array. */
export function fromBase64Url(s) {
  const b64 = s.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(s.length / 4) * 4, "=");
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function sameBytes(a, b) {
  if (!a || !b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Subscribes this browser and registers the subscription as this device's
 * push target.
 *
 * @param {object} session         a connected, authenticated client.js Session
 * @param {string} vapidPublicKey  Welcome.vapid_public_key (base64url); empty: the server offers no Web Push
 * @param {object} [opts]
 * @param {boolean} [opts.askPermission=false] ask for notification permission if not decided yet (needs a user gesture)
 * @param {boolean} [opts.renew=false]  drop the current subscription and make a new one (pass AuthOk.push_dropped)
 * @param {string}  [opts.swUrl="sw.js"] the service worker script, relative to the page
 * @param {object}  [opts.win=globalThis] the window (tests inject one)
 * @returns {Promise<string>} "registered", "unchanged", "unavailable" (no VAPID key),
 *          "unsupported" (no service workers / Push API), "denied" or "default" (no permission)
 */
export async function enablePush(session, vapidPublicKey, opts = {}) {
  const { askPermission = false, renew = false, swUrl = "sw.js", win = globalThis } = opts;
  if (!vapidPublicKey) return "unavailable";
  if (!pushSupported(win)) return "unsupported";
  const N = win.Notification;
  let permission = N.permission;
  if (permission === "default" && askPermission) permission = await N.requestPermission();
  if (permission !== "granted") return permission === "denied" ? "denied" : "default";

  const nav = win.navigator;
  await nav.serviceWorker.register(swUrl);
  const registration = await nav.serviceWorker.ready;
  const key = fromBase64Url(vapidPublicKey);
  let sub = await registration.pushManager.getSubscription();
  if (sub) {
    const current = sub.options?.applicationServerKey ? new Uint8Array(sub.options.applicationServerKey) : null;
    // A subscription made for another server key (the server's VAPID key
    // changed) or one the server reported gone cannot be used again.
    if (renew || (current && !sameBytes(current, key))) {
      await sub.unsubscribe().catch(() => {});
      sub = null;
    }
  }
  if (!sub) sub = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });

  const deviceId = session.auth ? String(session.auth.deviceId) : "";
  const storage = win.localStorage;
  if (!renew && deviceId && storage?.getItem(CACHE_KEY(deviceId)) === sub.endpoint) return "unchanged";
  const p256dh = new Uint8Array(sub.getKey("p256dh"));
  const auth = new Uint8Array(sub.getKey("auth"));
  await session.request("registerPush", { webPush: { endpoint: sub.endpoint, p256dh, auth } });
  if (deviceId) storage?.setItem(CACHE_KEY(deviceId), sub.endpoint);
  return "registered";
}

/**
 * Stops Web Push for this device: UnregisterPushRequest, then drops the
 * browser's subscription.
 */
export async function disablePush(session, opts = {}) {
  const { win = globalThis } = opts;
  if (session.auth && session.ws) await session.request("unregisterPush", {});
  if (session.auth) win.localStorage?.removeItem(CACHE_KEY(String(session.auth.deviceId)));
  if (!pushSupported(win)) return;
  const registration = await win.navigator.serviceWorker.getRegistration();
  const sub = await registration?.pushManager.getSubscription();
  await sub?.unsubscribe();
}
