#!/usr/bin/env node
// Writes the README's screenshots of the browser client (headless Chromium):
// the sign-in form, the chat view, group info, the devices and account
// dialogs and the phone-width layout.
//
//   confabd --data-dir "$(mktemp -d)" --no-quic --no-tcp --http 127.0.0.1:7080 --web-dir web &
//   node web/tests/screenshots.mjs --url http://127.0.0.1:7080 [--out web/tests/screenshots] [--chromium PATH]
//
// Use a server with a fresh data directory: it signs up alice, bob and carol
// (or logs them in, if they exist with this script's password) and writes a
// short conversation, so the pictures show what a person would see. Each
// PNG is checked to stay under 150 KB (they are committed).

import { mkdirSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const args = Object.fromEntries(
  process.argv
    .slice(2)
    .reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1] && !all[i + 1].startsWith("--") ? all[i + 1] : "true"]] : acc), []),
);
if (!args.url) {
  console.error("usage: node web/tests/screenshots.mjs --url http://127.0.0.1:PORT [--out DIR] [--chromium /usr/bin/chromium]");
  process.exit(2);
}
const outDir = resolve(args.out ?? join(dirname(fileURLToPath(import.meta.url)), "screenshots"));
const MAX_BYTES = 150 * 1024;
mkdirSync(outDir, { recursive: true });

let chromium;
try {
  ({ chromium } = await import("playwright-core"));
} catch (e) {
  console.error(`screenshots: cannot load playwright-core (run "npm ci" in web/): ${e.message}`);
  process.exit(2);
}

const password = "screenshots are worth it";
const browser = await chromium.launch({ executablePath: args.chromium ?? "/usr/bin/chromium", headless: true, args: ["--no-sandbox", "--disable-gpu", "--no-first-run"] });
const written = [];

async function user(name, viewport) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1, colorScheme: "light", locale: "en-GB" });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  await page.goto(args.url);
  await page.getByRole("tab", { name: "Sign up" }).click();
  await page.getByLabel("Username", { exact: true }).fill(name);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByLabel("Device name", { exact: true }).fill("Firefox on Linux");
  await page.getByRole("button", { name: "Create account" }).click();
  const taken = page.locator("#auth-error", { hasText: "USERNAME_TAKEN" });
  const signedIn = page.locator("#me-name", { hasText: name });
  await Promise.race([taken.waitFor(), signedIn.waitFor()]);
  if (await taken.isVisible()) {
    await page.getByRole("tab", { name: "Log in" }).click();
    await page.getByRole("button", { name: "Log in" }).click();
    await signedIn.waitFor();
  }
  await page.locator('#conn[data-state="online"]').waitFor();
  return page;
}

async function send(page, text) {
  const box = page.getByLabel("Message", { exact: true });
  await box.fill(text);
  await box.press("Enter");
  await page.locator("#message-list li.msg:not(.pending) .text", { hasText: text }).last().waitFor();
}

async function open(page, name) {
  await page.locator(`.conv-item[aria-label^="${name},"]`).click();
  await page.locator("#conv-title", { hasText: name }).waitFor();
}

async function shot(page, name) {
  const path = join(outDir, `${name}.png`);
  await page.screenshot({ path });
  const bytes = statSync(path).size;
  if (bytes > MAX_BYTES) throw new Error(`${path} is ${bytes} bytes, above ${MAX_BYTES}`);
  written.push(`${path} (${Math.round(bytes / 1024)} KB)`);
}

let failed = null;
try {
  // The sign-in form, as a new visitor sees it (the device name is the browser's).
  const visitor = await (await browser.newContext({ viewport: { width: 1100, height: 700 }, deviceScaleFactor: 1, colorScheme: "light", locale: "en-GB" })).newPage();
  await visitor.goto(args.url);
  await visitor.getByRole("button", { name: "Log in" }).waitFor();
  await visitor.getByLabel("Username", { exact: true }).fill("alice");
  await shot(visitor, "sign-in");
  await visitor.context().close();

  const alice = await user("alice", { width: 1100, height: 700 });
  const bob = await user("bob", { width: 390, height: 780 });
  const carol = await user("carol", { width: 1100, height: 700 });

  // A direct conversation.
  await alice.getByLabel("Message a user").fill("bob");
  await alice.getByRole("button", { name: "Open" }).click();
  await alice.locator("#conv-title", { hasText: "bob" }).waitFor();
  await send(alice, "Hi Bob! Are we still on for Saturday?");
  await open(bob, "alice");
  await send(bob, "Yes! Leaving at 8 from the station.");
  await send(bob, "I'll bring the map and some snacks");
  await alice.locator("#message-list .text", { hasText: "snacks" }).waitFor();
  await send(alice, "Perfect. I'll ask Carol too.");
  await bob.locator("#message-list .text", { hasText: "ask Carol" }).waitFor();

  // A group.
  await alice.getByRole("button", { name: "New group…" }).click();
  await alice.getByLabel("Group name", { exact: true }).fill("Weekend hike");
  await alice.getByLabel("Members", { exact: true }).fill("bob, carol");
  await alice.getByRole("button", { name: "Create" }).click();
  await alice.locator("#conv-title", { hasText: "Weekend hike" }).waitFor();
  await send(alice, "Saturday, 8:00 at the station. Who's in?");
  await open(carol, "Weekend hike");
  await send(carol, "Count me in!");
  await bob.getByRole("button", { name: "Back to conversations" }).click();
  await open(bob, "Weekend hike");
  await send(bob, "Me too. Forecast says sunny");
  await alice.locator("#message-list .text", { hasText: "sunny" }).waitFor();
  await alice.locator("#message-list li.msg .status", { hasText: "Seen by" }).waitFor();

  // The chat view: the DM open, the group unread-free in the list.
  await open(alice, "bob");
  await alice.locator("#message-list li.msg .status", { hasText: "Seen" }).waitFor();
  await shot(alice, "chat");

  await open(alice, "Weekend hike");
  await alice.getByRole("button", { name: "Group info…" }).click();
  await alice.locator('#member-list .member[data-username="carol"]').waitFor();
  await shot(alice, "group-info");
  await alice.getByRole("dialog", { name: "Group info" }).getByRole("button", { name: "Close" }).click();

  // Alice's phone signs in too: the devices dialog lists both.
  const phone = await (await browser.newContext({ viewport: { width: 390, height: 780 }, deviceScaleFactor: 1, colorScheme: "light", locale: "en-GB" })).newPage();
  await phone.goto(args.url);
  await phone.getByRole("tab", { name: "Log in" }).click();
  await phone.getByLabel("Username", { exact: true }).fill("alice");
  await phone.getByLabel("Password", { exact: true }).fill(password);
  await phone.getByLabel("Device name", { exact: true }).fill("Alice's phone");
  await phone.getByRole("button", { name: "Log in" }).click();
  await phone.locator('#conn[data-state="online"]').waitFor();
  await alice.getByRole("button", { name: "Devices" }).click();
  const devices = alice.getByRole("dialog", { name: "Devices" });
  await devices.locator(".device", { hasText: "Alice's phone" }).filter({ hasText: "online now" }).waitFor();
  await devices.locator("#devices-status", { hasText: "1 other device is signed in." }).waitFor();
  await shot(alice, "devices");
  await devices.getByRole("button", { name: "Close" }).click();

  await alice.getByRole("button", { name: "Account" }).click();
  const account = alice.getByRole("dialog", { name: "Account" });
  await account.locator('input[name="privacy-dm"][value="EVERYONE"]:checked').waitFor();
  await account.locator("#blocked-status", { hasText: "You have not blocked anyone." }).waitFor();
  await shot(alice, "account");
  await account.getByRole("button", { name: "Close" }).click();

  // Phone width: the open conversation, then the list.
  await bob.locator("#message-list .text", { hasText: "sunny" }).waitFor();
  await shot(bob, "phone-chat");
  await bob.getByRole("button", { name: "Back to conversations" }).click();
  await bob.locator('.conv-item[aria-label^="alice,"]').waitFor();
  await shot(bob, "phone-list");
} catch (e) {
  failed = e;
}
await browser.close().catch(() => {});
if (failed) {
  console.error(`screenshots: FAILED: ${failed.stack || failed.message}`);
  process.exit(1);
}
for (const w of written) console.log(`wrote ${w}`);
