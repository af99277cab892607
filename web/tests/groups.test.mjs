// web/groups.js: which group controls the UI offers for which role
// (PROTOCOL.md §7.3), and who inherits ownership when the last owner leaves.

import { test } from "node:test";
import assert from "node:assert/strict";

import { canManage, memberActions, nextOwner, roleLabel, sortMembers } from "../groups.js";
import { MemberRole } from "../proto.js";

const { OWNER, ADMIN, MEMBER } = MemberRole;
const m = (userId, role, joinedAtMs = userId * 10) => ({ userId: BigInt(userId), username: `u${userId}`, role, joinedAtMs: BigInt(joinedAtMs) });

test("owners and admins manage (add, rename); members do not", () => {
  assert.equal(canManage(OWNER), true);
  assert.equal(canManage(ADMIN), true);
  assert.equal(canManage(MEMBER), false);
  assert.equal(canManage(MemberRole.UNSPECIFIED), false);
  assert.deepEqual([OWNER, ADMIN, MEMBER, 0].map(roleLabel), ["Owner", "Admin", "Member", "Member"]);
});

test("an owner removes admins and members, never owners or themselves, and sets their roles", () => {
  const members = [m(1, OWNER), m(2, OWNER), m(3, ADMIN), m(4, MEMBER)];
  const [me, coOwner, admin, member] = members;
  assert.deepEqual(memberActions(OWNER, 1n, admin, members), { remove: true, roles: [OWNER, MEMBER] });
  assert.deepEqual(memberActions(OWNER, 1n, member, members), { remove: true, roles: [OWNER, ADMIN] });
  // Owners are peers: another owner's role is theirs alone.
  assert.deepEqual(memberActions(OWNER, 1n, coOwner, members), { remove: false, roles: [] });
  // Stepping down: only while another owner remains.
  assert.deepEqual(memberActions(OWNER, 1n, me, members), { remove: false, roles: [ADMIN, MEMBER] });
  const alone = [m(1, OWNER), m(3, ADMIN)];
  assert.deepEqual(memberActions(OWNER, 1n, alone[0], alone), { remove: false, roles: [] });
});

test("an admin removes only members and changes no roles", () => {
  const members = [m(1, OWNER), m(2, ADMIN), m(3, ADMIN), m(4, MEMBER)];
  assert.deepEqual(memberActions(ADMIN, 2n, members[0], members), { remove: false, roles: [] });
  assert.deepEqual(memberActions(ADMIN, 2n, members[1], members), { remove: false, roles: [] });
  assert.deepEqual(memberActions(ADMIN, 2n, members[2], members), { remove: false, roles: [] });
  assert.deepEqual(memberActions(ADMIN, 2n, members[3], members), { remove: true, roles: [] });
});

test("a member may do nothing to anyone", () => {
  const members = [m(1, OWNER), m(2, ADMIN), m(3, MEMBER), m(4, MEMBER)];
  for (const t of members) assert.deepEqual(memberActions(MEMBER, 3n, t, members), { remove: false, roles: [] });
});

test("leaving: ownership passes to the longest-standing admin, else member", () => {
  assert.equal(nextOwner([m(1, OWNER), m(2, MEMBER), m(3, ADMIN), m(4, ADMIN, 5)], 1n).userId, 4n);
  assert.equal(nextOwner([m(1, OWNER), m(3, MEMBER, 7), m(2, MEMBER, 7)], 1n).userId, 2n); // same time: lowest user_id
  assert.equal(nextOwner([m(1, OWNER), m(2, OWNER), m(3, ADMIN)], 1n), null); // another owner remains
  assert.equal(nextOwner([m(1, OWNER)], 1n), null); // the last member
  assert.equal(nextOwner([m(1, OWNER), m(2, ADMIN)], 2n), null); // not an owner
});

test("members listed owners first, then admins, then members, each by tenure", () => {
  const sorted = sortMembers([m(5, MEMBER), m(4, ADMIN), m(1, MEMBER), m(3, OWNER), m(2, ADMIN)]);
  assert.deepEqual(sorted.map((x) => x.userId), [3n, 2n, 4n, 1n, 5n]);
});
