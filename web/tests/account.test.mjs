// The account pieces without a browser: the block list walk over
// ListBlockedRequest pages (§6.7), the new-password rules of §6.1 that
// validate.js checks before a signup or ChangePasswordRequest is sent, and
// the other account requests' field rules.

import { test } from "node:test";
import assert from "node:assert/strict";

import { listAllBlocked } from "../client.js";
import { checkNewPassword, validateRequest, ValidationError } from "../validate.js";
import { Audience, ErrorCode } from "../proto.js";

/** A fake Session.request holding `n` blocked users (in account-creation order), `pageSize` per page. */
function fakeServer(n, pageSize) {
  // Not alphabetical: the server orders by account creation, the client follows names.
  const users = Array.from({ length: n }, (_, i) => ({ username: `u${(n - i).toString().padStart(3, "0")}`, blockedAtMs: BigInt(1000 + i) }));
  const calls = [];
  const request = async (name, body) => {
    assert.equal(name, "listBlocked");
    calls.push(body);
    const start = body.afterUsername ? users.findIndex((u) => u.username === body.afterUsername) + 1 : 0;
    const rest = users.slice(start);
    const page = rest.slice(0, body.limit && body.limit < pageSize ? body.limit : pageSize);
    return { users: page, hasMore: rest.length > page.length };
  };
  return { users, calls, request };
}

test("block list: walks every page, each after the last username", async () => {
  const s = fakeServer(7, 3);
  const got = await listAllBlocked(s.request);
  assert.deepEqual(got.map((u) => u.username), s.users.map((u) => u.username));
  assert.deepEqual(s.calls.map((c) => c.afterUsername), ["", s.users[2].username, s.users[5].username]);
});

test("block list: empty, and one page when everything fits", async () => {
  const empty = fakeServer(0, 3);
  assert.deepEqual(await listAllBlocked(empty.request), []);
  assert.equal(empty.calls.length, 1);
  const s = fakeServer(2, 100);
  assert.equal((await listAllBlocked(s.request, { limit: 50 })).length, 2);
  assert.deepEqual(s.calls, [{ afterUsername: "", limit: 50 }]);
});

test("block list: a server that says has_more on an empty or repeating page does not loop", async () => {
  let n = 0;
  const emptyMore = async () => (n++, { users: [], hasMore: true });
  assert.deepEqual(await listAllBlocked(emptyMore), []);
  assert.equal(n, 1);
  let m = 0;
  const same = async () => (m++, { users: [{ username: "bob", blockedAtMs: 1n }], hasMore: true });
  assert.equal((await listAllBlocked(same)).length, 2);
  assert.equal(m, 2);
});

const refused = (fn) => {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ValidationError);
    assert.equal(e.code, ErrorCode.INVALID_ARGUMENT);
    return e.message;
  }
  assert.fail("accepted");
};

test("new passwords: the rules of §6.1", () => {
  assert.match(refused(() => checkNewPassword("short")), /8 to 1024/);
  assert.match(refused(() => checkNewPassword("Alice123", "alice123")), /username/);
  assert.match(refused(() => checkNewPassword("aaaaaaaaaa")), /repeated/);
  assert.match(refused(() => checkNewPassword("12345678")), /consecutive|common/);
  assert.match(refused(() => checkNewPassword("hgfedcba")), /consecutive/);
  assert.match(refused(() => checkNewPassword("abcdefghij")), /consecutive/);
  assert.match(refused(() => checkNewPassword("PassWord123")), /common/);
  assert.match(refused(() => checkNewPassword("iloveyou")), /common/);
  for (const ok of ["correct horse battery staple", "a whole new passphrase", "ééééééé1", "Tr0ub4dor&3", "zyxwvut0"]) checkNewPassword(ok, "alice");
  // Counted in UTF-8 bytes: four 2-byte characters are 8 bytes.
  checkNewPassword("éàüö");
});

test("signup checks the new-password rules with the username", () => {
  const body = (password) => ({ username: "alice", password, deviceName: "d" });
  assert.match(refused(() => validateRequest("signup", body("Alice"))), /8 to 1024/);
  validateRequest("signup", body("ALICEalice"));
  assert.match(refused(() => validateRequest("signup", { ...body(""), username: "alicealice", password: "AliceAlice" })), /username/);
});

test("changePassword, setBlocked, listBlocked, setPrivacy field rules", () => {
  const cp = (currentPassword, newPassword) => validateRequest("changePassword", { currentPassword, newPassword, revokeOtherDevices: false });
  cp("x", "a whole new passphrase");
  assert.match(refused(() => cp("", "a whole new passphrase")), /current password/);
  assert.match(refused(() => cp("old", "password1")), /common/);
  validateRequest("setBlocked", { username: "bob", blocked: true });
  assert.throws(() => validateRequest("setBlocked", { username: "Bob", blocked: true }), ValidationError);
  validateRequest("listBlocked", { afterUsername: "", limit: 0 });
  assert.throws(() => validateRequest("listBlocked", { afterUsername: "B!", limit: 0 }), ValidationError);
  validateRequest("setPrivacy", { directMessages: Audience.NOBODY, groupInvites: Audience.CONTACTS });
  validateRequest("setPrivacy", { directMessages: Audience.UNSPECIFIED, groupInvites: Audience.NOBODY });
  assert.match(refused(() => validateRequest("setPrivacy", { directMessages: Audience.CONTACTS, groupInvites: Audience.UNSPECIFIED })), /EVERYONE or NOBODY/);
});
