// Client-side field rules of PROTOCOL.md §6.1, §8.1, §8.8, §9.3, §10 and §12,
// checked before a request is sent (client checklist item 8), so the user
// gets a precise message at once instead of a round trip. The server checks
// the same rules again; a request that passes here may still be refused.

import { ErrorCode, PresenceState, MemberRole, Audience, charCount, effectiveLimits } from "./proto.js";

/** A refused field: the code the server would answer with, and why. */
export class ValidationError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "ValidationError";
    this.code = code;
  }
}

const fail = (code, message) => {
  throw new ValidationError(code, message);
};
const invalid = (message) => fail(ErrorCode.INVALID_ARGUMENT, message);

// Cc: U+0000–U+001F and U+007F–U+009F.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const USERNAME = /^[a-z0-9][a-z0-9_.-]{2,31}$/;
const utf8Length = (s) => new TextEncoder().encode(s).length;

/** What users type, as the spec wants it sent: trimmed and lowercased (§6.1). */
export function normalizeUsername(s) {
  return s.trim().toLowerCase();
}

export function checkUsername(u, what = "username") {
  if (typeof u !== "string" || !USERNAME.test(u)) {
    invalid(`${what} "${u}" must be 3–32 characters of a–z, 0–9, "_", "." or "-", starting with a letter or digit, lowercase`);
  }
}

export function checkPassword(p, { signup }) {
  const n = utf8Length(p);
  const min = signup ? 8 : 1;
  if (n < min || n > 1024) invalid(signup ? "password must be 8 to 1024 bytes" : "password must be 1 to 1024 bytes");
}

// The most common leaked passwords of 8 bytes or more: the list the server
// refuses at signup and password change (confab-protocol validate.rs, §6.1).
const COMMON_PASSWORDS = new Set(
  (
    "password password1 password12 password123 passw0rd 12345678 123456789 1234567890 0123456789 87654321 " +
    "987654321 11111111 00000000 qwertyui qwertyuiop qwerty123 qwerty12 1q2w3e4r 1q2w3e4r5t 1qaz2wsx zaq12wsx " +
    "asdfghjkl asdfasdf iloveyou sunshine princess football baseball superman starwars whatever trustno1 letmein1 " +
    "welcome1 abc12345 abcd1234 aa123456 12341234 11223344 q1w2e3r4 changeme computer internet master12 michael1 " +
    "jennifer shadow12 monkey12 dragon12 charlie1 1234qwer qazwsxedc zxcvbnm1 zxcvbnm123 passpass"
  ).split(" "),
);

/**
 * A new password (signup, password change) beyond its length (§6.1): not
 * the username, not one character repeated, not a run of consecutive ASCII
 * characters up or down, not one of the most common leaked passwords.
 */
export function checkNewPassword(p, username = "") {
  checkPassword(p, { signup: true });
  const lower = p.toLowerCase();
  if (username && lower === username.toLowerCase()) invalid("the password must not be your username");
  const chars = [...p];
  if (chars.every((c) => c === chars[0])) invalid("the password must not be one character repeated");
  if (/^[\x00-\x7f]*$/.test(lower)) {
    const codes = [...lower].map((c) => c.charCodeAt(0));
    const run = (step) => codes.every((c, i) => i === 0 || c - codes[i - 1] === step);
    if (run(1) || run(-1)) invalid("the password must not be a run of consecutive characters");
  }
  if (COMMON_PASSWORDS.has(lower)) invalid("the password is one of the most common passwords; choose another");
}

export function checkDeviceName(d) {
  const n = charCount(d);
  if (n < 1 || n > 64 || CONTROL.test(d)) invalid("device name must be 1 to 64 characters with no control characters");
}

export function checkTitle(t) {
  const n = charCount(t);
  if (n < 1 || n > 128 || CONTROL.test(t)) invalid("group title must be 1 to 128 characters with no control characters");
}

export function checkClientMsgId(id) {
  if (typeof id !== "string" || !/^[\x21-\x7e]{1,64}$/.test(id)) invalid("client_msg_id must be 1 to 64 printable ASCII bytes");
}

export function checkText(text, limits) {
  if (text.length === 0) fail(ErrorCode.EMPTY_MESSAGE, "the message is empty");
  const n = charCount(text);
  if (n > limits.maxMessageChars) {
    fail(ErrorCode.MESSAGE_TOO_LONG, `the message has ${n.toLocaleString("en")} characters; the limit is ${limits.maxMessageChars.toLocaleString("en")}`);
  }
}

function checkList(names, limits, { allowEmpty }) {
  if (!allowEmpty && names.length === 0) invalid("the list of usernames is empty");
  if (names.length > limits.maxListItems) fail(ErrorCode.TOO_MANY_ITEMS, `at most ${limits.maxListItems} usernames per request (got ${names.length})`);
  for (const n of names) checkUsername(n);
}

const isHttpsUrl = (s) => {
  try {
    return new URL(s).protocol === "https:";
  } catch {
    return false;
  }
};

/**
 * Checks a request body (the ClientFrame `body` member `name` with value
 * `body`) against the field rules and `limits` (Welcome.limits, defaults for
 * 0). Throws ValidationError; returns nothing when the request may be sent.
 */
export function validateRequest(name, body, limits = effectiveLimits()) {
  switch (name) {
    case "signup":
      checkUsername(body.username);
      checkNewPassword(body.password, body.username);
      checkDeviceName(body.deviceName);
      return;
    case "login":
      checkUsername(body.username);
      checkPassword(body.password, { signup: false });
      checkDeviceName(body.deviceName);
      return;
    case "resume":
      if (charCount(body.token) > 256) fail(ErrorCode.INVALID_TOKEN, "token longer than 256 characters");
      return;
    case "openDirect":
    case "setBlocked":
      checkUsername(body.username);
      return;
    case "listBlocked":
      if (body.afterUsername) checkUsername(body.afterUsername, "after_username");
      return;
    case "searchUsers":
      // The username rules, from 2 characters (§6.9).
      if (typeof body.prefix !== "string" || !/^[a-z0-9][a-z0-9_.-]{1,31}$/.test(body.prefix)) {
        invalid(`prefix "${body.prefix}" must be 2–32 characters of a–z, 0–9, "_", "." or "-", starting with a letter or digit, lowercase`);
      }
      return;
    case "changePassword": {
      const n = utf8Length(body.currentPassword);
      if (n < 1 || n > 1024) invalid("the current password must be 1 to 1024 bytes");
      checkNewPassword(body.newPassword);
      return;
    }
    case "setPrivacy":
      // Direct conversations know no contacts (§6.7).
      if (body.directMessages === Audience.CONTACTS) invalid("direct_messages may be EVERYONE or NOBODY");
      if (body.search === Audience.CONTACTS) invalid("search may be EVERYONE or NOBODY");
      return;
    case "createGroup":
      checkTitle(body.title);
      checkList(body.usernames, limits, { allowEmpty: true });
      return;
    case "addMembers":
      checkList(body.usernames, limits, { allowEmpty: false });
      return;
    case "removeMember":
    case "setRole":
      checkUsername(body.username);
      if (name === "setRole" && ![MemberRole.OWNER, MemberRole.ADMIN, MemberRole.MEMBER].includes(body.role)) {
        invalid("role must be OWNER, ADMIN or MEMBER");
      }
      return;
    case "renameGroup":
      checkTitle(body.title);
      return;
    case "send":
      checkClientMsgId(body.clientMsgId);
      checkText(body.text, limits);
      return;
    case "history":
      if (BigInt(body.beforeSeq ?? 0) !== 0n && BigInt(body.afterSeq ?? 0) !== 0n) invalid("history: set before_seq or after_seq, not both");
      return;
    case "subscribePresence":
    case "unsubscribePresence":
      checkList(body.usernames, limits, { allowEmpty: true });
      return;
    case "setStatus":
      if (body.status !== PresenceState.ONLINE && body.status !== PresenceState.AWAY) invalid("status must be ONLINE or AWAY");
      return;
    case "registerPush": {
      const t = body.webPush ?? body.webhook;
      if (!t) invalid("register_push needs a web_push or webhook target");
      if (body.webPush) {
        const w = body.webPush;
        if (!isHttpsUrl(w.endpoint)) invalid("web push endpoint must be an https URL");
        if (!(w.p256dh instanceof Uint8Array) || w.p256dh.length !== 65 || w.p256dh[0] !== 0x04) invalid("p256dh must be a 65-byte uncompressed P-256 point");
        if (!(w.auth instanceof Uint8Array) || w.auth.length !== 16) invalid("auth must be 16 bytes");
      } else if (!/^https?:\/\//.test(body.webhook.url)) {
        invalid("webhook url must be an http(s) URL");
      }
      return;
    }
    default:
      return;
  }
}
