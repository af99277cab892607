// web/model.js's pure helpers: membership lines and the message view's date
// separators (local time; the dates below are built in local time too, so
// the test holds in any time zone).

import { test } from "node:test";
import assert from "node:assert/strict";

import { Model, describeMembership, dateSeparators, dayLabel, dayKey } from "../model.js";
import { ConversationKind, MembershipAction, MemberRole, PresenceState } from "../proto.js";

const user = (id, username) => ({ userId: BigInt(id), username });
const membership = (action, users, extra = {}) => ({
  conversationId: 9n,
  seq: 1n,
  senderId: 1n,
  senderUsername: "alice",
  membership: { action, users, title: "", role: 0, ...extra },
});

test("created: the creator is not listed among the members", () => {
  const m = membership(MembershipAction.CREATED, [user(1, "alice"), user(2, "bob"), user(3, "carol")]);
  assert.equal(describeMembership(m), "alice created the group with bob, carol");
});

test("created alone: no 'with'", () => {
  assert.equal(describeMembership(membership(MembershipAction.CREATED, [user(1, "alice")])), "alice created the group");
  assert.equal(describeMembership(membership(MembershipAction.CREATED, [])), "alice created the group");
});

test("other membership lines are unchanged", () => {
  assert.equal(describeMembership(membership(MembershipAction.ADDED, [user(3, "carol")])), "alice added carol");
  assert.equal(describeMembership(membership(MembershipAction.LEFT, [user(1, "alice")])), "alice left");
  assert.equal(describeMembership(membership(MembershipAction.RENAMED, [], { title: "Hike" })), "alice renamed the group to “Hike”");
});

const at = (y, mo, d, h = 12, mi = 0) => new Date(y, mo - 1, d, h, mi).getTime();

test("day labels: Today, Yesterday, then the date", () => {
  const now = at(2024, 3, 10, 9, 0);
  assert.equal(dayLabel(at(2024, 3, 10, 0, 1), now), "Today");
  assert.equal(dayLabel(at(2024, 3, 9, 23, 59), now), "Yesterday");
  assert.equal(dayLabel(at(2024, 3, 9, 0, 0), now), "Yesterday");
  assert.equal(dayLabel(at(2024, 3, 8, 23, 59), now), new Date(at(2024, 3, 8, 23, 59)).toLocaleDateString());
  // Across a month and a year boundary.
  assert.equal(dayLabel(at(2023, 12, 31, 22), at(2024, 1, 1, 1)), "Yesterday");
  // BigInt milliseconds (int64 fields) work too.
  assert.equal(dayLabel(BigInt(at(2024, 3, 10, 8)), now), "Today");
});

test("separators: one before the first message of each calendar day", () => {
  const now = at(2024, 3, 10, 18);
  const times = [
    at(2024, 3, 7, 10), // a date
    at(2024, 3, 7, 23, 59),
    at(2024, 3, 9, 0, 0), // Yesterday
    at(2024, 3, 9, 13),
    at(2024, 3, 10, 0, 0), // Today
    at(2024, 3, 10, 17),
  ];
  assert.deepEqual(dateSeparators(times, now), [new Date(times[0]).toLocaleDateString(), null, "Yesterday", null, "Today", null]);
  assert.deepEqual(dateSeparators([], now), []);
  assert.deepEqual(dateSeparators([at(2024, 3, 10, 1)], now), ["Today"]);
});

test("day keys are local calendar days", () => {
  assert.equal(dayKey(at(2024, 3, 10, 0, 0)), dayKey(at(2024, 3, 10, 23, 59)));
  assert.notEqual(dayKey(at(2024, 3, 10, 23, 59)), dayKey(at(2024, 3, 11, 0, 0)));
});

test("member count: an added user's joined snapshot already counts the ADDED that brought them in", () => {
  const model = new Model();
  model.setMe({ userId: 3n, username: "carol" });
  const snapshot = (lastSeq, memberCount) => ({ conversationId: 9n, kind: ConversationKind.GROUP, title: "g", peerUserId: 0n, peerUsername: "", createdAtMs: 1n, lastSeq, readSeq: lastSeq, memberCount, role: MemberRole.MEMBER, activityMs: 1n });
  const event = (seq, action, users) => ({ message: { ...membership(action, users), seq } });
  model.applyInbox({ joined: snapshot(3n, 3) });
  model.applyInbox(event(3n, MembershipAction.ADDED, [user(3, "carol")]));
  const c = model.conversations.get("9");
  assert.equal(c.memberCount, 3);
  // Later changes count; a replay of one does not count again.
  model.applyInbox(event(4n, MembershipAction.ADDED, [user(4, "dave"), user(5, "erin")]));
  model.applyInbox(event(4n, MembershipAction.ADDED, [user(4, "dave"), user(5, "erin")]));
  assert.equal(c.memberCount, 5);
  model.applyInbox(event(5n, MembershipAction.LEFT, [user(4, "dave")]));
  model.applyInbox(event(6n, MembershipAction.REMOVED, [user(5, "erin")]));
  assert.equal(c.memberCount, 3);
  // An older snapshot (a list fetched before those changes) does not undo them; a newer one wins.
  model.applyConversation(snapshot(4n, 5));
  assert.equal(c.memberCount, 3);
  model.applyConversation(snapshot(7n, 4));
  assert.equal(c.memberCount, 4);
});

// ---- older history and the cache ----------------------------------------------

const msg = (seq, text = `m${seq}`, extra = {}) => ({ conversationId: 9n, seq: BigInt(seq), senderId: 2n, senderUsername: "bob", sentAtMs: 1000n + BigInt(seq), clientMsgId: `c${seq}`, text, ...extra });
const groupSnapshot = (lastSeq, extra = {}) => ({
  conversationId: 9n,
  kind: ConversationKind.GROUP,
  title: "Hike",
  peerUserId: 0n,
  peerUsername: "",
  createdAtMs: 1n,
  lastSeq: BigInt(lastSeq),
  readSeq: 0n,
  memberCount: 3,
  role: MemberRole.MEMBER,
  lastMessage: null,
  activityMs: 1n,
  ...extra,
});

test("an older page of history does not undo a newer rename or role change", () => {
  const model = new Model();
  model.setMe({ userId: 1n, username: "alice" });
  model.applyConversation(groupSnapshot(20, { title: "Now", role: MemberRole.ADMIN }));
  // Seq 5 renamed it to "Before", seq 6 made alice a member: both older than the snapshot.
  model.applyHistory(
    {
      conversationId: 9n,
      messages: [
        { ...msg(5), text: undefined, membership: { action: MembershipAction.RENAMED, users: [], title: "Before", role: 0 } },
        { ...msg(6), text: undefined, membership: { action: MembershipAction.ROLE_CHANGED, users: [user(1, "alice")], title: "", role: MemberRole.MEMBER } },
      ],
      hasMore: true,
    },
    { older: true },
  );
  const c = model.conversations.get("9");
  assert.equal(c.title, "Now");
  assert.equal(c.role, MemberRole.ADMIN);
  // A newer one does apply.
  model.applyInbox({ inboxSeq: 1n, message: { ...msg(21), text: undefined, membership: { action: MembershipAction.RENAMED, users: [], title: "Later", role: 0 } } });
  assert.equal(c.title, "Later");
  // And an older snapshot does not undo it either.
  model.applyConversation(groupSnapshot(20, { title: "Now" }));
  assert.equal(c.title, "Later");
});

test("the newest page keeps what joins it and drops what is held below a hole", () => {
  const model = new Model();
  model.setMe({ userId: 1n, username: "alice" });
  model.applyConversation(groupSnapshot(100));
  const c = model.conversations.get("9");
  // From the cache: 40..50, and 58..60 (joins the page below).
  for (let s = 40; s <= 50; s++) model.addMessage(msg(s));
  for (let s = 58; s <= 60; s++) model.addMessage(msg(s));
  model.applyHistory({ conversationId: 9n, messages: Array.from({ length: 40 }, (_, i) => msg(61 + i)), hasMore: true }, { older: false });
  const seqs = model.messagesOf(c).map((m) => Number(m.seq));
  assert.deepEqual(seqs, Array.from({ length: 43 }, (_, i) => 58 + i), "58..100, contiguous; 40..50 dropped");
  assert.equal(model.oldestSeq(c), 58n, "paging goes on from 58");
});

test("cache records: the newest run of messages without a hole, restored as not loaded", () => {
  const model = new Model();
  model.setMe({ userId: 1n, username: "alice" });
  model.applyConversation(groupSnapshot(30, { readSeq: 25n, memberCount: 4 }));
  const c = model.conversations.get("9");
  for (const s of [1, 2, 3, 10, 11, 12, 13, 14]) model.addMessage(msg(s));
  assert.deepEqual(model.cacheMessages(c, 50).map((m) => Number(m.seq)), [10, 11, 12, 13, 14]);
  assert.deepEqual(model.cacheMessages(c, 3).map((m) => Number(m.seq)), [12, 13, 14]);
  const rec = model.cacheRecord(c);
  assert.equal(rec.messages, undefined, "no Maps in the record");

  const other = new Model();
  other.setMe({ userId: 1n, username: "alice" });
  const r = other.restoreConversation(structuredClone(rec), model.cacheMessages(c, 50));
  assert.equal(r.known, true);
  assert.equal(r.historyLoaded, false);
  assert.equal(r.title, "Hike");
  assert.equal(r.memberCount, 4);
  assert.equal(other.unread(r), 5n);
  assert.deepEqual(other.messagesOf(r).map((m) => Number(m.seq)), [10, 11, 12, 13, 14]);
  assert.equal(other.sortedConversations().length, 1);
});

test("reconcileList: conversations the server no longer lists go, and so does one the server is behind on", () => {
  const model = new Model();
  model.setMe({ userId: 1n, username: "alice" });
  const a = { ...groupSnapshot(10), conversationId: 9n };
  const b = { ...groupSnapshot(10), conversationId: 10n, title: "Gone" };
  const d = { ...groupSnapshot(50), conversationId: 11n, title: "Rolled back" };
  for (const s of [a, b, d]) model.restoreConversation({ ...model.cacheRecord(model.conv(s.conversationId)), ...s, id: String(s.conversationId) });
  model.addMessage({ ...msg(50), conversationId: 11n });
  model.reconcileList([{ ...a, lastSeq: 12n, title: "Renamed" }, { ...d, lastSeq: 20n }]);
  assert.deepEqual([...model.conversations.keys()].sort(), ["11", "9"]);
  assert.equal(model.conversations.get("9").title, "Renamed");
  const rolled = model.conversations.get("11");
  assert.equal(rolled.lastSeq, 20n, "not the cached 50");
  assert.equal(rolled.messages.size, 0, "the cached messages beyond the server's are gone");
});

test("presence: stale once the connection went, fresh again with the next answer", () => {
  const model = new Model();
  model.applyPresence({ username: "bob", state: PresenceState.ONLINE, lastSeenMs: 0n });
  model.markPresenceStale();
  assert.equal(model.presence.get("bob").stale, true);
  assert.equal(model.presence.get("bob").state, PresenceState.ONLINE); // what was last known is kept
  model.markPresenceStale(); // again (every state change while offline): still the same entry
  assert.equal(model.presence.get("bob").stale, true);
  model.applyPresence({ username: "bob", state: PresenceState.ONLINE, lastSeenMs: 0n });
  assert.equal(model.presence.get("bob").stale, undefined);
});
