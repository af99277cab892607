// web/drafts.js: composer drafts per user and conversation in a Storage.

import { test } from "node:test";
import assert from "node:assert/strict";

import { Drafts, dropDrafts } from "../drafts.js";

/** The parts of the Web Storage API drafts.js uses, key()/length included. */
class MemoryStorage {
  constructor() {
    this.m = new Map();
  }
  get length() {
    return this.m.size;
  }
  key(i) {
    return [...this.m.keys()][i] ?? null;
  }
  getItem(k) {
    return this.m.has(k) ? this.m.get(k) : null;
  }
  setItem(k, v) {
    this.m.set(k, String(v));
  }
  removeItem(k) {
    this.m.delete(k);
  }
}

test("a draft survives a new Drafts (a reload) and is per conversation", () => {
  const storage = new MemoryStorage();
  const a = new Drafts(storage, "alice");
  a.set("12", "hello wor");
  a.set(34n, "other");
  const again = new Drafts(storage, "alice");
  assert.equal(again.get("12"), "hello wor");
  assert.equal(again.get("34"), "other");
  assert.equal(again.get("56"), "");
});

test("sending (an empty draft) removes it from storage", () => {
  const storage = new MemoryStorage();
  const d = new Drafts(storage, "alice");
  d.set("12", "hi");
  d.set("12", "");
  assert.equal(d.get("12"), "");
  assert.equal(storage.length, 0);
});

test("drafts are per user; sign-out drops only that user's", () => {
  const storage = new MemoryStorage();
  storage.setItem("confab.token", "t");
  new Drafts(storage, "bob").set("1", "bob's");
  new Drafts(storage, "bob.x").set("1", "bob.x's"); // "bob" is a prefix of the name, not of the key
  const alice = new Drafts(storage, "alice");
  alice.set("1", "alice's");
  alice.set("2", "more");
  alice.clear();
  assert.equal(new Drafts(storage, "alice").get("1"), "");
  assert.equal(new Drafts(storage, "bob").get("1"), "bob's");
  dropDrafts(storage, "bob");
  assert.equal(new Drafts(storage, "bob").get("1"), "");
  assert.equal(new Drafts(storage, "bob.x").get("1"), "bob.x's");
  assert.equal(storage.getItem("confab.token"), "t");
});

test("a storage that refuses writes keeps the draft in memory", () => {
  const storage = new MemoryStorage();
  storage.setItem = () => {
    throw new Error("QuotaExceededError");
  };
  const d = new Drafts(storage, "alice");
  d.set("1", "kept");
  assert.equal(d.get("1"), "kept");
  assert.doesNotThrow(() => new Drafts(null, "alice").set("1", "x"));
  assert.doesNotThrow(() => dropDrafts(null, "alice"));
});
