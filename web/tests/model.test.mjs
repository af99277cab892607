// web/model.js's pure helpers: membership lines and the message view's date
// separators (local time; the dates below are built in local time too, so
// the test holds in any time zone).

import { test } from "node:test";
import assert from "node:assert/strict";

import { Model, describeMembership, dateSeparators, dayLabel, dayKey } from "../model.js";
import { ConversationKind, MembershipAction, MemberRole } from "../proto.js";

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
