// web/proto.js carries the schema as a hand-written table. This test reads
// spec/confab.proto and checks that the table is exactly the schema: every
// message, field (number, name, type, repeated, oneof) and enum value, both
// ways, so a field added to the spec cannot be forgotten here.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { MESSAGES, ENUMS, ERROR_NAMES } from "../proto.js";

const here = dirname(fileURLToPath(import.meta.url));
const source = readFileSync(join(here, "..", "..", "spec", "confab.proto"), "utf8");

const camel = (s) => s.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());

/** A small parser for the subset of proto3 that confab.proto uses. */
function parseProto(text) {
  const code = text.replace(/\/\/[^\n]*/g, "").replace(/\/\*[\s\S]*?\*\//g, "");
  const tokens = code.match(/[A-Za-z_][A-Za-z0-9_.]*|\d+|[{}=;]/g);
  const messages = {};
  const enums = {};
  let i = 0;
  const next = () => tokens[i++];
  const expect = (t) => assert.equal(next(), t, `confab.proto: expected "${t}" near token ${i}`);
  while (i < tokens.length) {
    const t = next();
    if (t === "syntax" || t === "package" || t === "option" || t === "import") {
      while (next() !== ";");
    } else if (t === "=" || t === ";") {
      // stray tokens of `syntax = "proto3";` (the string itself is not a token)
    } else if (t === "message") {
      const name = next();
      expect("{");
      const fields = [];
      let oneof = null;
      for (;;) {
        let f = next();
        if (f === "}") {
          if (oneof) {
            oneof = null;
            continue;
          }
          break;
        }
        if (f === "oneof") {
          oneof = next();
          expect("{");
          continue;
        }
        let repeated = false;
        if (f === "repeated") {
          repeated = true;
          f = next();
        }
        const fname = next();
        expect("=");
        const number = Number(next());
        expect(";");
        fields.push({ number, name: camel(fname), type: f, repeated, oneof });
      }
      messages[name] = fields;
    } else if (t === "enum") {
      const name = next();
      expect("{");
      const values = [];
      for (;;) {
        const v = next();
        if (v === "}") break;
        expect("=");
        values[Number(next())] = v;
        expect(";");
      }
      enums[name] = values;
    } else {
      assert.fail(`confab.proto: unexpected token "${t}"`);
    }
  }
  return { messages, enums };
}

const spec = parseProto(source);

test("confab.proto parses into messages and enums", () => {
  assert.ok(Object.keys(spec.messages).length > 50);
  assert.ok(Object.keys(spec.enums).length >= 4);
});

test("every message of confab.proto is in proto.js and nothing else", () => {
  assert.deepEqual(Object.keys(MESSAGES).sort(), Object.keys(spec.messages).sort());
});

for (const [name, fields] of Object.entries(spec.messages)) {
  test(`message ${name} matches confab.proto`, () => {
    const mine = (MESSAGES[name] ?? []).map(([number, jsonName, type, flag]) => ({
      number,
      name: jsonName,
      type,
      repeated: flag === "repeated",
      oneof: flag && flag.startsWith("oneof:") ? flag.slice(6) : null,
    }));
    const byNumber = (a, b) => a.number - b.number;
    assert.deepEqual(mine.sort(byNumber), [...fields].sort(byNumber));
  });
}

test("every enum of confab.proto is in proto.js with the same values", () => {
  assert.deepEqual(ENUMS, spec.enums);
});

test("every error code of spec/errors.md has its name in proto.js", () => {
  const table = readFileSync(join(here, "..", "..", "spec", "errors.md"), "utf8");
  const rows = [...table.matchAll(/^\|\s*(\d{3})\s*\|\s*([A-Z_]+)\s*\|/gm)].map((m) => [Number(m[1]), m[2]]);
  assert.ok(rows.length >= 30, `only ${rows.length} codes found in errors.md`);
  for (const [code, name] of rows) assert.equal(ERROR_NAMES[code], name, `code ${code}`);
});
