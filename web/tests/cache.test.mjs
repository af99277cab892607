// web/cache.js against fake-indexeddb (a complete in-memory IndexedDB):
// what a reload paints from, per user, and that it goes at sign-out.

import { test } from "node:test";
import assert from "node:assert/strict";
import { IDBFactory, IDBKeyRange } from "fake-indexeddb";

import { ConvCache, MESSAGES_KEPT } from "../cache.js";
import { Model } from "../model.js";
import { ConversationKind, MemberRole } from "../proto.js";

const fresh = (opts = {}) => new ConvCache({ indexedDB: new IDBFactory(), IDBKeyRange, ...opts });

const msg = (conv, seq, text = `m${seq}`) => ({ conversationId: BigInt(conv), seq: BigInt(seq), senderId: 2n, senderUsername: "bob", sentAtMs: 1_767_225_600_000n + BigInt(seq), clientMsgId: `c${seq}`, text, membership: undefined });
const rec = (id, extra = {}) => ({
  id: String(id),
  kind: ConversationKind.DIRECT,
  title: "",
  peerUserId: 2n,
  peerUsername: "bob",
  createdAtMs: 5n,
  lastSeq: 3n,
  readSeq: 1n,
  memberCount: 2,
  countSeq: 3n,
  titleSeq: 3n,
  roleSeq: 3n,
  role: MemberRole.MEMBER,
  lastMessage: msg(id, 3),
  activityMs: 1_767_225_600_003n,
  peerReadSeq: 2n,
  ...extra,
});
const range = (conv, from, to) => Array.from({ length: to - from + 1 }, (_, i) => msg(conv, from + i));
const seqsOf = (list) => list.map((m) => Number(m.seq));

test("a saved state loads back: records with their BigInts, messages ascending, the inbox position", async () => {
  const cache = fresh();
  assert.equal(await cache.load("17"), null, "nothing kept yet");
  const ok = await cache.save("17", {
    username: "alice",
    inboxSeq: 42n,
    recent: ["9"],
    conversations: [rec(9), rec(10, { kind: ConversationKind.GROUP, title: "Hike", lastMessage: null })],
    messages: new Map([["9", range(9, 1, 3)]]),
  });
  assert.equal(ok, true);
  const got = await fresh({ indexedDB: cache.factory }).load(17n);
  assert.equal(got.meta.username, "alice");
  assert.equal(got.meta.inboxSeq, 42n);
  assert.deepEqual(got.meta.recent, ["9"]);
  assert.deepEqual(got.conversations.map((c) => c.id).sort(), ["10", "9"]);
  assert.deepEqual(got.conversations.find((c) => c.id === "9"), rec(9));
  assert.deepEqual(seqsOf(got.messages.get("9")), [1, 2, 3]);
  assert.equal(got.messages.get("9")[0].conversationId, 9n);
  assert.equal(got.messages.has("10"), false);
});

test(`at most ${MESSAGES_KEPT} messages per conversation; seq order is numeric, not textual`, async () => {
  const cache = fresh();
  await cache.save("17", { username: "alice", inboxSeq: 1n, conversations: [rec(9)], messages: new Map([["9", range(9, 1, 120)]]) });
  let got = await cache.load("17");
  assert.deepEqual(seqsOf(got.messages.get("9")), Array.from({ length: MESSAGES_KEPT }, (_, i) => 71 + i));
  // Newer messages push the oldest out; 9 < 10 < 100 in key order too.
  await cache.save("17", { username: "alice", inboxSeq: 2n, conversations: [rec(9)], messages: new Map([["9", range(9, 91, 130)]]) });
  got = await cache.load("17");
  assert.deepEqual(seqsOf(got.messages.get("9")), Array.from({ length: 40 }, (_, i) => 91 + i));
  const small = fresh();
  await small.save("17", { username: "alice", inboxSeq: 1n, conversations: [rec(9)], messages: new Map([["9", [msg(9, 9), msg(9, 10), msg(9, 100)]]]) });
  assert.deepEqual(seqsOf((await small.load("17")).messages.get("9")), [9, 10, 100]);
});

test("a save replaces: conversations and message lists no longer given are removed", async () => {
  const cache = fresh();
  await cache.save("17", { username: "alice", inboxSeq: 1n, conversations: [rec(9), rec(10)], messages: new Map([["9", range(9, 1, 5)], ["10", range(10, 1, 2)]]) });
  // Another instance (another page load) continues from what it read.
  const next = fresh({ indexedDB: cache.factory });
  await next.load("17");
  await next.save("17", { username: "alice", inboxSeq: 2n, conversations: [rec(9, { title: "changed" })], messages: new Map([["9", range(9, 3, 6)]]) });
  const got = await fresh({ indexedDB: cache.factory }).load("17");
  assert.deepEqual(got.conversations.map((c) => c.id), ["9"]);
  assert.equal(got.conversations[0].title, "changed");
  assert.deepEqual(seqsOf(got.messages.get("9")), [3, 4, 5, 6]);
  assert.equal(got.messages.has("10"), false);
  // A save that did not read first starts that user from nothing.
  const blind = fresh({ indexedDB: cache.factory });
  await blind.save("17", { username: "alice", inboxSeq: 3n, conversations: [rec(11)], messages: new Map() });
  const after = await fresh({ indexedDB: cache.factory }).load("17");
  assert.deepEqual(after.conversations.map((c) => c.id), ["11"]);
  assert.equal(after.messages.size, 0);
});

test("per user: another user's state is separate; dropAllBut keeps one user, or none", async () => {
  const cache = fresh();
  await cache.save("17", { username: "alice", inboxSeq: 1n, conversations: [rec(9)], messages: new Map([["9", range(9, 1, 3)]]) });
  await cache.save("170", { username: "zed", inboxSeq: 1n, conversations: [rec(9), rec(12)], messages: new Map([["9", range(9, 1, 2)]]) });
  await cache.save("2", { username: "bob", inboxSeq: 1n, conversations: [rec(9)], messages: new Map([["9", range(9, 1, 1)]]) });
  assert.deepEqual(seqsOf((await cache.load("17")).messages.get("9")), [1, 2, 3], "ids that are prefixes of each other do not mix");
  assert.equal((await cache.load("170")).conversations.length, 2);

  assert.equal(await cache.dropAllBut("170"), true);
  assert.equal(await cache.load("17"), null);
  assert.equal(await cache.load("2"), null);
  const zed = await cache.load("170");
  assert.equal(zed.conversations.length, 2);
  assert.deepEqual(seqsOf(zed.messages.get("9")), [1, 2]);

  assert.equal(await cache.dropAllBut(null), true);
  assert.equal(await cache.load("170"), null);
  // Nothing left in any store.
  const db = await cache.db();
  const tx = db.transaction(["meta", "conversations", "messages"]);
  for (const name of ["meta", "conversations", "messages"]) {
    const n = await new Promise((r) => (tx.objectStore(name).count().onsuccess = (e) => r(e.target.result)));
    assert.equal(n, 0, `${name} is empty`);
  }
});

test("dropUser removes one user's state", async () => {
  const cache = fresh();
  await cache.save("17", { username: "alice", inboxSeq: 1n, conversations: [rec(9)], messages: new Map([["9", range(9, 1, 3)]]) });
  await cache.save("18", { username: "carol", inboxSeq: 1n, conversations: [rec(9)], messages: new Map() });
  await cache.dropUser("17");
  assert.equal(await cache.load("17"), null);
  assert.notEqual(await cache.load("18"), null);
});

test("operations run in the order they were asked: a drop right after a save leaves nothing", async () => {
  const cache = fresh();
  const saved = cache.save("17", { username: "alice", inboxSeq: 1n, conversations: [rec(9)], messages: new Map([["9", range(9, 1, 3)]]) });
  const dropped = cache.dropAllBut(null);
  assert.deepEqual(await Promise.all([saved, dropped]), [true, true]);
  assert.equal(await cache.load("17"), null);
});

test("without IndexedDB the cache does nothing, and says nothing", async () => {
  for (const cache of [
    new ConvCache({ indexedDB: undefined, IDBKeyRange: undefined }),
    new ConvCache({
      indexedDB: {
        open() {
          throw new DOMException("The user denied permission to access the database.", "SecurityError");
        },
      },
      IDBKeyRange,
    }),
  ]) {
    let told = 0;
    cache.onError = () => told++;
    assert.equal(await cache.load("17"), null);
    assert.equal(await cache.save("17", { username: "a", inboxSeq: 1n, conversations: [rec(9)], messages: new Map() }), false);
    assert.equal(await cache.dropAllBut(null), true);
    assert.equal(told, 0);
    assert.match(cache.unavailable, /IndexedDB/);
  }
});

test("a failed save (a value IndexedDB refuses, like a full quota) is reported once; what was kept stays whole", async () => {
  const errors = [];
  const cache = fresh({ onError: (e) => errors.push(e) });
  await cache.save("17", { username: "alice", inboxSeq: 1n, conversations: [rec(9)], messages: new Map([["9", range(9, 1, 3)]]) });
  // A function cannot be stored (DataCloneError): the transaction fails as a whole.
  const bad = { ...rec(10), title: () => "no" };
  assert.equal(await cache.save("17", { username: "alice", inboxSeq: 2n, conversations: [rec(9, { title: "new" }), bad], messages: new Map([["9", range(9, 1, 4)]]) }), false);
  assert.equal(await cache.save("17", { username: "alice", inboxSeq: 3n, conversations: [rec(9)], messages: new Map() }), false, "no more saves");
  assert.equal(errors.length, 1);
  assert.equal(errors[0].name, "DataCloneError");
  const got = await fresh({ indexedDB: cache.factory }).load("17");
  assert.equal(got.meta.inboxSeq, 1n, "the first save, untouched");
  assert.equal(got.conversations[0].title, "");
  assert.deepEqual(seqsOf(got.messages.get("9")), [1, 2, 3]);
});

test("model -> cache -> model: a reload paints the same list and messages", async () => {
  const model = new Model();
  model.setMe({ userId: 17n, username: "alice" });
  model.applyConversation({ conversationId: 9n, kind: ConversationKind.DIRECT, title: "", peerUserId: 2n, peerUsername: "bob", createdAtMs: 1n, lastSeq: 60n, readSeq: 58n, memberCount: 2, role: MemberRole.MEMBER, lastMessage: msg(9, 60), activityMs: 0n });
  model.applyConversation({ conversationId: 10n, kind: ConversationKind.GROUP, title: "Hike", peerUserId: 0n, peerUsername: "", createdAtMs: 1n, lastSeq: 4n, readSeq: 4n, memberCount: 3, role: MemberRole.OWNER, lastMessage: msg(10, 4), activityMs: 0n });
  model.applyHistory({ conversationId: 9n, messages: range(9, 1, 60), hasMore: false }, { older: false });
  const cache = fresh();
  const convs = model.sortedConversations();
  await cache.save("17", {
    username: "alice",
    inboxSeq: 80n,
    recent: ["9"],
    conversations: convs.map((c) => model.cacheRecord(c)),
    messages: new Map([["9", model.cacheMessages(model.conversations.get("9"), MESSAGES_KEPT)]]),
  });

  const got = await fresh({ indexedDB: cache.factory }).load("17");
  const reloaded = new Model();
  reloaded.setMe({ userId: 17n, username: "alice" });
  for (const r of got.conversations) reloaded.restoreConversation(r, got.messages.get(r.id) ?? []);
  assert.deepEqual(
    reloaded.sortedConversations().map((c) => [c.id, reloaded.nameOf(c), reloaded.unread(c)]),
    convs.map((c) => [c.id, model.nameOf(c), model.unread(c)]),
  );
  const dm = reloaded.conversations.get("9");
  assert.deepEqual(seqsOf(reloaded.messagesOf(dm)), Array.from({ length: 50 }, (_, i) => 11 + i));
  // Sync replays and a newest page later change nothing twice.
  reloaded.applyInbox({ inboxSeq: 81n, message: msg(9, 60) });
  reloaded.applyInbox({ inboxSeq: 82n, message: msg(9, 61) });
  reloaded.applyHistory({ conversationId: 9n, messages: range(9, 12, 61), hasMore: true }, { older: false });
  assert.deepEqual(seqsOf(reloaded.messagesOf(dm)), Array.from({ length: 51 }, (_, i) => 11 + i));
});
