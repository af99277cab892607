// The browser codec (web/proto.js) against every golden vector in
// spec/vectors/, following spec/vectors/README.md: framing, decode (compared
// as canonical proto3 JSON), encode (byte for byte), and JSON -> bytes; plus
// the invalid vectors a client-side codec can judge (framing and parse
// stages) and the validate-stage vectors through web/validate.js.
//
// Run: node --test web/tests/

import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { decode, encode, delimit, readDelimited, toJSON, fromJSON, DecodeError, clientBody, effectiveLimits } from "../proto.js";
import { validateRequest, ValidationError } from "../validate.js";

const here = dirname(fileURLToPath(import.meta.url));
const vectorsDir = join(here, "..", "..", "spec", "vectors");

const hex = (bytes) => Buffer.from(bytes).toString("hex");
const unhex = (s) => new Uint8Array(Buffer.from(s, "hex"));

function load(folder) {
  const dir = join(vectorsDir, folder);
  return readdirSync(dir)
    .filter((f) => f.endsWith(".json"))
    .sort()
    .map((f) => ({ file: `${folder}/${f}`, ...JSON.parse(readFileSync(join(dir, f), "utf8")) }));
}

const client = load("client");
const server = load("server");
const invalid = load("invalid");

test("the vector folders are not empty", () => {
  assert.ok(client.length > 0, "no client vectors");
  assert.ok(server.length > 0, "no server vectors");
  assert.ok(invalid.length > 0, "no invalid vectors");
});

for (const v of [...client, ...server]) {
  test(`valid ${v.file}`, () => {
    const type = v.message.replace(/^confab\.v1\./, "");
    assert.ok(type === "ClientFrame" || type === "ServerFrame", `unexpected message type ${v.message}`);
    const wire = unhex(v.hex);

    // 1. Framing: one delimited frame that consumes everything.
    const framed = readDelimited(wire);
    assert.ok(framed, "incomplete frame");
    assert.equal(framed.consumed, wire.length, "the frame does not consume the whole vector");

    // 2. Decode, compared as canonical JSON.
    const decoded = decode(type, framed.payload);
    assert.deepEqual(toJSON(type, decoded), v.json);

    // 3. Encode the decoded frame: byte for byte when reencode is true.
    const reencoded = encode(type, decoded);
    if (v.reencode) {
      assert.equal(hex(delimit(reencoded)), v.hex);
    } else {
      // Unknown fields were skipped: the result is shorter and decodes the same.
      assert.ok(reencoded.length < framed.payload.length, "an unknown field survived re-encoding");
      assert.deepEqual(toJSON(type, decode(type, reencoded)), v.json);
    }

    // 4. JSON -> bytes: the payload (reencode) or the bytes of step 3.
    const fromJson = encode(type, fromJSON(type, v.json));
    assert.equal(hex(fromJson), v.reencode ? hex(framed.payload) : hex(reencoded));
  });
}

// What a server recovers from a damaged frame (PROTOCOL.md §3 (b)): the last
// complete field 1 of wire type varint before the point of failure.
function recoverRequestId(payload) {
  let pos = 0;
  let id = 0n;
  const varint = () => {
    let v = 0n;
    for (let i = 0; i < 10; i++) {
      if (pos >= payload.length) return null;
      const b = payload[pos++];
      v |= BigInt(b & 0x7f) << BigInt(7 * i);
      if (b < 0x80) return v;
    }
    return null;
  };
  while (pos < payload.length) {
    const tag = varint();
    if (tag === null) break;
    const wire = Number(tag & 7n);
    const field = tag >> 3n;
    if (wire === 0) {
      const v = varint();
      if (v === null) break;
      if (field === 1n) id = v;
    } else if (wire === 2) {
      const len = varint();
      if (len === null || pos + Number(len) > payload.length) break;
      pos += Number(len);
    } else if (wire === 1 || wire === 5) {
      const n = wire === 1 ? 8 : 4;
      if (pos + n > payload.length) break;
      pos += n;
    } else break;
  }
  return id;
}

for (const v of invalid) {
  test(`invalid ${v.file} (${v.expect.stage}, ${v.expect.name})`, () => {
    assert.equal(v.direction, "client");
    const wire = unhex(v.hex);
    // Every frame sent before it is a valid ClientFrame.
    for (const a of v.after ?? []) {
      const f = readDelimited(unhex(a), v.max_frame_bytes);
      assert.ok(f && f.consumed === a.length / 2, "an `after` frame is not one complete frame");
      decode("ClientFrame", f.payload);
    }
    switch (v.expect.stage) {
      case "framing":
        assert.throws(() => readDelimited(wire, v.max_frame_bytes), DecodeError, "the length prefix was not rejected");
        break;
      case "parse": {
        const f = readDelimited(wire, v.max_frame_bytes);
        assert.ok(f, "the frame is incomplete");
        assert.throws(() => decode("ClientFrame", f.payload), DecodeError, "the damaged frame decoded");
        assert.equal(String(recoverRequestId(f.payload)), v.expect.request_id);
        break;
      }
      case "session": {
        // Parses (or, before the handshake, need not): a client codec has
        // nothing to reject here, but a well-formed one must decode the frame.
        const f = readDelimited(wire, v.max_frame_bytes);
        assert.ok(f, "the frame is incomplete");
        let frame = null;
        try {
          frame = decode("ClientFrame", f.payload);
        } catch (e) {
          assert.ok(e instanceof DecodeError);
          assert.equal(v.expect.code, 104, "only a first frame may be malformed at the session stage");
        }
        if (frame && v.expect.code === 102) assert.equal(clientBody(frame), null, "UNKNOWN_REQUEST needs an absent body");
        if (frame && v.expect.code === 106) assert.equal(frame.requestId, 0n);
        break;
      }
      case "validate": {
        const f = readDelimited(wire, v.max_frame_bytes);
        const frame = decode("ClientFrame", f.payload);
        assert.equal(String(frame.requestId), v.expect.request_id);
        const body = clientBody(frame);
        assert.ok(body, "no body");
        let err = null;
        try {
          validateRequest(body, frame[body], effectiveLimits());
        } catch (e) {
          err = e;
        }
        assert.ok(err instanceof ValidationError, `web/validate.js accepted ${body}`);
        assert.equal(err.code, v.expect.code, err.message);
        break;
      }
      default:
        assert.fail(`unknown stage ${v.expect.stage}`);
    }
  });
}
