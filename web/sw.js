// The Confab service worker: shows the Web Push notifications the server
// sends while this device is away (spec/PROTOCOL.md §10.3 payload: ids,
// sender, seq, unread count; message text only if the operator enabled
// previews), one per conversation, and opens or focuses the client when one
// is clicked. Registered by push.js.

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

/** The notification for a payload: title, options. */
function notificationFor(p) {
  const from = typeof p.sender_username === "string" && p.sender_username ? p.sender_username : "someone";
  const unread = Number(p.unread_count || 0);
  const title = unread > 1 ? `${unread} unread messages` : `New message from ${from}`;
  let body;
  if (typeof p.preview === "string") body = `${from}: ${p.preview}`;
  else body = unread > 1 ? `The latest from ${from}` : "Open Confab to read it";
  return {
    title,
    options: {
      body,
      icon: "favicon.svg",
      // One notification per conversation: a newer one replaces it.
      tag: p.conversation_id ? `confab-conversation-${p.conversation_id}` : "confab",
      renotify: true,
      timestamp: Number(p.sent_at_ms) || Date.now(),
      data: { conversationId: p.conversation_id ?? null, seq: p.seq ?? null, id: p.id ?? null },
    },
  };
}

async function windows() {
  return self.clients.matchAll({ type: "window", includeUncontrolled: true });
}

self.addEventListener("push", (event) => {
  let p = {};
  try {
    p = event.data ? event.data.json() : {};
  } catch {
    p = {};
  }
  if (p.type !== undefined && p.type !== "message") return; // a kind this client does not know
  event.waitUntil(
    (async () => {
      // The client is open and in front: it has the messages already.
      const focused = (await windows()).find((c) => c.focused && c.visibilityState === "visible");
      if (focused) {
        focused.postMessage({ type: "confab:push", payload: p });
        return;
      }
      const { title, options } = notificationFor(p);
      await self.registration.showNotification(title, options);
    })(),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const conversationId = event.notification.data?.conversationId ?? null;
  event.waitUntil(
    (async () => {
      const scope = self.registration.scope;
      const open = (await windows()).find((c) => c.url.startsWith(scope));
      if (open) {
        await open.focus();
        open.postMessage({ type: "confab:open", conversationId });
        return;
      }
      await self.clients.openWindow(scope);
    })(),
  );
});

// The push service rotated the subscription: make a new one now; the page
// registers it with the server on its next connection (push.js sees a new
// endpoint).
self.addEventListener("pushsubscriptionchange", (event) => {
  const options = event.oldSubscription?.options;
  if (!options) return;
  event.waitUntil(self.registration.pushManager.subscribe(options).catch(() => {}));
});
