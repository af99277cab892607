// web/errortext.js: the sentence a person reads for each error code they can
// cause, phrased for the action (spec/errors.md, PROTOCOL.md §6.6, §6.7, §7.3).

import { test } from "node:test";
import assert from "node:assert/strict";

import { friendlyText, waitText } from "../errortext.js";
import { ERROR_NAMES } from "../proto.js";

test("REFUSED_BY_USER names the other user and what was refused", () => {
  assert.equal(friendlyText("REFUSED_BY_USER", { action: "openDirect", who: "bob" }), "bob doesn't accept new conversations from you.");
  assert.equal(friendlyText("REFUSED_BY_USER", { action: "send", who: "bob" }), "bob doesn't accept messages from you.");
  assert.match(friendlyText("REFUSED_BY_USER", { action: "addMembers", who: "bob" }), /^bob doesn't accept being added to groups by you; nobody was added/);
  assert.match(friendlyText("REFUSED_BY_USER", { action: "addMembers" }), /^Someone you listed .* nobody was added/);
  assert.match(friendlyText("REFUSED_BY_USER", { action: "createGroup", who: "bob" }), /group was not created/);
  assert.equal(friendlyText("REFUSED_BY_USER", { who: "bob" }), "bob doesn't accept this from you.");
  assert.equal(friendlyText("REFUSED_BY_USER", {}), "This user doesn't accept this from you.");
});

test("REFUSED_BY_USER when it is the requester's own block", () => {
  assert.equal(friendlyText("REFUSED_BY_USER", { action: "send", who: "bob", youBlocked: true }), "You have blocked bob. Unblock them to send them messages.");
  assert.equal(friendlyText("REFUSED_BY_USER", { action: "openDirect", who: "bob", youBlocked: true }), "You have blocked bob. Unblock them to message them.");
});

test("password change: wrong current password, weak new one, rate limited with the wait", () => {
  assert.equal(friendlyText("INVALID_CREDENTIALS", { action: "changePassword" }), "Your current password is wrong.");
  assert.equal(friendlyText("INVALID_CREDENTIALS", { action: "login" }), "Wrong username or password.");
  assert.match(friendlyText("INVALID_ARGUMENT", { action: "changePassword" }), /new password is not allowed/);
  assert.equal(friendlyText("RATE_LIMITED", { action: "changePassword", retryAfterMs: 42_300 }), "Too many attempts; try again in 43 seconds.");
  assert.equal(friendlyText("RATE_LIMITED", { action: "changePassword" }), "Too many attempts; try again in a moment.");
  assert.equal(friendlyText("SERVER_BUSY", { retryAfterMs: 900 }), "The server is busy; try again in a second.");
});

test("group refusals say what the role allows", () => {
  assert.match(friendlyText("PERMISSION_DENIED", { action: "removeMember" }), /owners cannot be removed, and admins may remove only members/);
  assert.match(friendlyText("PERMISSION_DENIED", { action: "setRole" }), /only owners change roles/);
  assert.match(friendlyText("PERMISSION_DENIED", { action: "renameGroup" }), /Only owners and admins/);
  assert.equal(friendlyText("PERMISSION_DENIED"), "You may not do that in this group.");
  assert.equal(friendlyText("USER_NOT_FOUND", { action: "setRole", who: "carol" }), "carol is no longer a member of this group.");
  assert.equal(friendlyText("USER_NOT_FOUND", { who: "zed" }), "There is no user called “zed”.");
  assert.equal(friendlyText("TOO_MANY_ITEMS", { action: "setBlocked" }), "Your block list is full; unblock someone first.");
});

test("waitText rounds up to what people say", () => {
  assert.equal(waitText(0), "a second");
  assert.equal(waitText(1000), "a second");
  assert.equal(waitText(1001), "2 seconds");
  assert.equal(waitText(59_000), "59 seconds");
  assert.equal(waitText(60_000), "a minute");
  assert.equal(waitText(61_000), "2 minutes");
  assert.equal(waitText(3_600_000), "an hour");
  assert.equal(waitText(7_200_001), "3 hours");
  assert.equal(waitText(5000n), "5 seconds");
});

test("every code a person can cause has a sentence; session-level ones have none", () => {
  const personal = [201, 202, 203, 204, 301, 302, 303, 310, 311, 312, 313, 314, 315, 316, 320, 321, 322, 400, 401, 402, 500, 501];
  for (const c of personal) assert.ok(friendlyText(ERROR_NAMES[c]), `${ERROR_NAMES[c]} has a sentence`);
  for (const c of [100, 102, 104, 106, 503]) assert.equal(friendlyText(ERROR_NAMES[c]), null);
  assert.equal(friendlyText("ERROR_451 (4xx)"), null);
});
