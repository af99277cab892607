// web/search.js: what is worth a search, the debounce, and late answers to
// older text being dropped (PROTOCOL.md §6.9).

import { test } from "node:test";
import assert from "node:assert/strict";

import { Searcher, searchPrefix } from "../search.js";
import { validateRequest, ValidationError } from "../validate.js";

test("a prefix is 2-32 username characters, lowercased, without a leading @", () => {
  assert.equal(searchPrefix("Al"), "al");
  assert.equal(searchPrefix("  @BoB "), "bob");
  assert.equal(searchPrefix("a.b-c_"), "a.b-c_");
  assert.equal(searchPrefix("x".repeat(32)), "x".repeat(32));
  for (const no of ["", "a", "@a", "_al", "a b", "al!", "é", "x".repeat(33), null, undefined]) {
    assert.equal(searchPrefix(no), null, String(no));
  }
});

test("searchUsers requests are checked like the server does", () => {
  validateRequest("searchUsers", { prefix: "al", limit: 8 });
  assert.throws(() => validateRequest("searchUsers", { prefix: "a", limit: 8 }), ValidationError);
  assert.throws(() => validateRequest("searchUsers", { prefix: "Al", limit: 8 }), ValidationError);
});

/** Timers run by hand: `fire()` runs the pending one. */
function fakeTimers() {
  let pending = null;
  return {
    setTimer: (f, ms) => (pending = { f, ms }),
    clearTimer: (t) => {
      if (pending === t) pending = null;
    },
    get pending() {
      return pending;
    },
    async fire() {
      const p = pending;
      pending = null;
      await p.f();
    },
  };
}

test("one search after the typing stops, for the latest text only", async () => {
  const timers = fakeTimers();
  const asked = [];
  const shown = [];
  const s = new Searcher({
    search: async (prefix) => (asked.push(prefix), { users: [{ username: `${prefix}ice` }], hasMore: prefix === "al" }),
    show: (r) => shown.push(r),
    delayMs: 250,
    ...timers,
  });
  s.typed("a");
  assert.deepEqual(shown, [{ prefix: null, users: [], hasMore: false }], "too short: cleared at once, nothing asked");
  s.typed("al");
  s.typed("al "); // the same prefix: no new search
  s.typed("ALI");
  assert.equal(timers.pending.ms, 250);
  await timers.fire();
  assert.deepEqual(asked, ["ali"], "keystrokes within the delay make one request");
  assert.deepEqual(shown.at(-1), { prefix: "ali", users: ["aliice"], hasMore: false });
});

test("an answer to older text that arrives late is dropped; errors are shown", async () => {
  const timers = fakeTimers();
  const shown = [];
  let answer;
  const s = new Searcher({ search: () => new Promise((r) => (answer = r)), show: (r) => shown.push(r), ...timers });
  s.typed("al");
  const running = timers.fire();
  s.typed("bo"); // typed while "al" is on its way
  answer({ users: [{ username: "alice" }], hasMore: false });
  await running;
  assert.deepEqual(shown, [], "the answer for 'al' is not shown");
  s.cancel();
  assert.equal(timers.pending, null, "cancel drops the pending search");

  const failing = new Searcher({ search: async () => Promise.reject(new Error("FEATURE_UNAVAILABLE")), show: (r) => shown.push(r), ...timers });
  failing.typed("al");
  await timers.fire();
  assert.equal(shown.at(-1).prefix, "al");
  assert.equal(shown.at(-1).error.message, "FEATURE_UNAVAILABLE");
});

test("the default timers are called as plain functions (a browser's setTimeout refuses another this)", async () => {
  const shown = [];
  const s = new Searcher({ search: async () => ({ users: [], hasMore: false }), show: (r) => shown.push(r), delayMs: 1 });
  s.setTimer = function (f, ms) {
    assert.notEqual(this, s, "not called as a method of the searcher");
    return setTimeout(f, ms);
  };
  s.typed("al");
  await new Promise((r) => setTimeout(r, 30));
  assert.deepEqual(shown, [{ prefix: "al", users: [], hasMore: false }]);
});
