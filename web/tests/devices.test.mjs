// web/client.js's device list walk (PROTOCOL.md §6.5): ListDevicesRequest
// pages after the last device of the previous page until has_more is false.

import { test } from "node:test";
import assert from "node:assert/strict";

import { listAllDevices } from "../client.js";

/** A fake Session.request holding `n` devices, answering `pageSize` at most per page. */
function fakeServer(n, pageSize) {
  const devices = Array.from({ length: n }, (_, i) => ({ deviceId: BigInt(10 + i * 3), name: `d${i}`, current: i === 1 }));
  const calls = [];
  const request = async (name, body) => {
    assert.equal(name, "listDevices");
    calls.push(body);
    const after = devices.filter((d) => d.deviceId > body.afterDeviceId);
    const page = after.slice(0, body.limit && body.limit < pageSize ? body.limit : pageSize);
    return { devices: page, hasMore: after.length > page.length };
  };
  return { devices, calls, request };
}

test("walks every page, in order, each after the last id", async () => {
  const s = fakeServer(7, 3);
  const got = await listAllDevices(s.request);
  assert.deepEqual(got.map((d) => d.name), s.devices.map((d) => d.name));
  assert.deepEqual(s.calls.map((c) => c.afterDeviceId), [0n, s.devices[2].deviceId, s.devices[5].deviceId]);
});

test("one page when everything fits; the limit is passed on", async () => {
  const s = fakeServer(2, 100);
  assert.equal((await listAllDevices(s.request)).length, 2);
  assert.equal(s.calls.length, 1);
  const t = fakeServer(5, 100);
  assert.equal((await listAllDevices(t.request, { limit: 2 })).length, 5);
  assert.deepEqual(t.calls.map((c) => c.limit), [2, 2, 2]);
});

test("an empty page with has_more, or one that does not advance, ends the walk", async () => {
  let calls = 0;
  const empty = async () => (calls++, { devices: [], hasMore: true });
  assert.deepEqual(await listAllDevices(empty), []);
  assert.equal(calls, 1);
  calls = 0;
  const stuck = async () => (calls++, { devices: [{ deviceId: 0n, name: "x" }], hasMore: true });
  assert.equal((await listAllDevices(stuck)).length, 1);
  assert.equal(calls, 1);
});

test("errors reach the caller", async () => {
  const failing = async () => {
    throw new Error("DEVICE_REVOKED");
  };
  await assert.rejects(listAllDevices(failing), /DEVICE_REVOKED/);
});
