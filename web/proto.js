// Confab protocol v1: a hand-written protobuf codec for the whole schema of
// spec/confab.proto, written from spec/ alone (PROTOCOL.md §3 and the proto3
// wire format). Plain ES module, no dependencies, runs in browsers and Node.
//
// Values in JavaScript:
//   * messages are plain objects with lowerCamelCase keys (the proto3 JSON
//     names); decode() fills every scalar field with its default, leaves an
//     absent sub-message `undefined`, and sets at most one member of a oneof;
//   * uint64 / int64 are BigInt (identifiers are opaque and may exceed 2^53);
//     encode() also accepts a safe-integer Number for them;
//   * uint32 / enums are Number, bool is Boolean, bytes is Uint8Array,
//     string is a String (invalid UTF-8 on the wire is a decode error);
//   * repeated fields are arrays.
// Use oneofCase(type, obj, oneof) to learn which member of a oneof is set.

// ---------------------------------------------------------------------------
// Schema. Each field: [number, jsonName, type, flag]; flag is "repeated", or
// "oneof:NAME" for a oneof member, or absent. Types are the scalar names
// below, an enum name (ENUMS) or a message name (MESSAGES).
// ---------------------------------------------------------------------------

export const ENUMS = {
  ConversationKind: ["CONVERSATION_KIND_UNSPECIFIED", "CONVERSATION_KIND_DIRECT", "CONVERSATION_KIND_GROUP"],
  MemberRole: ["MEMBER_ROLE_UNSPECIFIED", "MEMBER_ROLE_OWNER", "MEMBER_ROLE_ADMIN", "MEMBER_ROLE_MEMBER"],
  MembershipAction: [
    "MEMBERSHIP_ACTION_UNSPECIFIED",
    "MEMBERSHIP_ACTION_CREATED",
    "MEMBERSHIP_ACTION_ADDED",
    "MEMBERSHIP_ACTION_REMOVED",
    "MEMBERSHIP_ACTION_LEFT",
    "MEMBERSHIP_ACTION_RENAMED",
    "MEMBERSHIP_ACTION_ROLE_CHANGED",
  ],
  PresenceState: ["PRESENCE_STATE_UNSPECIFIED", "PRESENCE_STATE_ONLINE", "PRESENCE_STATE_AWAY", "PRESENCE_STATE_OFFLINE"],
  Audience: ["AUDIENCE_UNSPECIFIED", "AUDIENCE_EVERYONE", "AUDIENCE_CONTACTS", "AUDIENCE_NOBODY"],
};

/** Enum values by name, e.g. ConversationKind.DIRECT === 1. */
function enumObject(name, prefix) {
  const o = {};
  ENUMS[name].forEach((n, i) => (o[n.slice(prefix.length)] = i));
  return Object.freeze(o);
}
export const ConversationKind = enumObject("ConversationKind", "CONVERSATION_KIND_");
export const MemberRole = enumObject("MemberRole", "MEMBER_ROLE_");
export const MembershipAction = enumObject("MembershipAction", "MEMBERSHIP_ACTION_");
export const PresenceState = enumObject("PresenceState", "PRESENCE_STATE_");
export const Audience = enumObject("Audience", "AUDIENCE_");

const B = "oneof:body";
export const MESSAGES = {
  ClientFrame: [
    [1, "requestId", "uint64"],
    [10, "hello", "Hello", B],
    [11, "signup", "SignupRequest", B],
    [12, "login", "LoginRequest", B],
    [13, "resume", "ResumeRequest", B],
    [14, "logout", "LogoutRequest", B],
    [15, "listDevices", "ListDevicesRequest", B],
    [16, "revokeDevice", "RevokeDeviceRequest", B],
    [17, "revokeOtherDevices", "RevokeOtherDevicesRequest", B],
    [18, "changePassword", "ChangePasswordRequest", B],
    [20, "openDirect", "OpenDirectRequest", B],
    [21, "createGroup", "CreateGroupRequest", B],
    [22, "addMembers", "AddMembersRequest", B],
    [23, "removeMember", "RemoveMemberRequest", B],
    [24, "leaveGroup", "LeaveGroupRequest", B],
    [25, "renameGroup", "RenameGroupRequest", B],
    [26, "listConversations", "ListConversationsRequest", B],
    [27, "listMembers", "ListMembersRequest", B],
    [28, "setRole", "SetRoleRequest", B],
    [29, "getConversation", "GetConversationRequest", B],
    [30, "send", "SendRequest", B],
    [31, "sync", "SyncRequest", B],
    [32, "ackCursor", "AckCursorRequest", B],
    [33, "history", "HistoryRequest", B],
    [34, "markRead", "MarkReadRequest", B],
    [35, "readReceipts", "ReadReceiptsRequest", B],
    [40, "subscribePresence", "SubscribePresenceRequest", B],
    [41, "unsubscribePresence", "UnsubscribePresenceRequest", B],
    [42, "setStatus", "SetStatusRequest", B],
    [43, "typing", "TypingNotice", B],
    [50, "registerPush", "RegisterPushRequest", B],
    [51, "unregisterPush", "UnregisterPushRequest", B],
    [60, "ping", "PingRequest", B],
    [70, "setBlocked", "SetBlockedRequest", B],
    [71, "listBlocked", "ListBlockedRequest", B],
    [72, "getPrivacy", "GetPrivacyRequest", B],
    [73, "setPrivacy", "SetPrivacyRequest", B],
    [74, "searchUsers", "SearchUsersRequest", B],
  ],
  ServerFrame: [
    [1, "requestId", "uint64"],
    [10, "welcome", "Welcome", B],
    [11, "error", "Error", B],
    [12, "done", "Done", B],
    [13, "authOk", "AuthOk", B],
    [14, "deviceList", "DeviceList", B],
    [15, "conversation", "Conversation", B],
    [16, "conversationList", "ConversationList", B],
    [17, "memberList", "MemberList", B],
    [18, "sent", "Sent", B],
    [19, "syncPage", "SyncPage", B],
    [20, "historyPage", "HistoryPage", B],
    [21, "readState", "ReadState", B],
    [22, "readReceiptList", "ReadReceiptList", B],
    [23, "presenceList", "PresenceList", B],
    [24, "pushRegistered", "PushRegistered", B],
    [25, "pong", "Pong", B],
    [26, "blockedList", "BlockedList", B],
    [27, "privacySettings", "PrivacySettings", B],
    [28, "userList", "UserList", B],
    [40, "event", "InboxEvent", B],
    [41, "presence", "Presence", B],
    [42, "typing", "TypingEvent", B],
    [43, "readReceipt", "ReadReceipt", B],
    [44, "goAway", "GoAway", B],
  ],
  Hello: [
    [1, "versions", "uint32", "repeated"],
    [2, "capabilities", "string", "repeated"],
    [3, "clientName", "string"],
  ],
  Welcome: [
    [1, "version", "uint32"],
    [2, "capabilities", "string", "repeated"],
    [3, "limits", "Limits"],
    [4, "heartbeatIntervalMs", "uint32"],
    [5, "serverTimeMs", "int64"],
    [6, "serverName", "string"],
    [7, "vapidPublicKey", "string"],
  ],
  Limits: [
    [1, "maxFrameBytes", "uint32"],
    [2, "maxMessageChars", "uint32"],
    [3, "maxGroupMembers", "uint32"],
    [4, "maxPageSize", "uint32"],
    [5, "maxInFlight", "uint32"],
    [6, "sendRatePerSec", "uint32"],
    [7, "sendBurst", "uint32"],
    [8, "requestRatePerSec", "uint32"],
    [9, "requestBurst", "uint32"],
    [10, "maxPresenceSubscriptions", "uint32"],
    [11, "maxListItems", "uint32"],
    [12, "maxDevices", "uint32"],
    [13, "maxBlocked", "uint32"],
  ],
  SignupRequest: [
    [1, "username", "string"],
    [2, "password", "string"],
    [3, "deviceName", "string"],
  ],
  LoginRequest: [
    [1, "username", "string"],
    [2, "password", "string"],
    [3, "deviceName", "string"],
  ],
  ResumeRequest: [[1, "token", "string"]],
  LogoutRequest: [],
  ListDevicesRequest: [
    [1, "afterDeviceId", "uint64"],
    [2, "limit", "uint32"],
  ],
  RevokeDeviceRequest: [[1, "deviceId", "uint64"]],
  RevokeOtherDevicesRequest: [],
  ChangePasswordRequest: [
    [1, "currentPassword", "string"],
    [2, "newPassword", "string"],
    [3, "revokeOtherDevices", "bool"],
  ],
  AuthOk: [
    [1, "userId", "uint64"],
    [2, "username", "string"],
    [3, "deviceId", "uint64"],
    [4, "token", "string"],
    [5, "cursor", "uint64"],
    [6, "inboxHead", "uint64"],
    [7, "pushDropped", "PushTargetDropped"],
  ],
  Device: [
    [1, "deviceId", "uint64"],
    [2, "name", "string"],
    [3, "createdAtMs", "int64"],
    [4, "lastSeenMs", "int64"],
    [5, "online", "bool"],
    [6, "current", "bool"],
  ],
  DeviceList: [
    [1, "devices", "Device", "repeated"],
    [2, "hasMore", "bool"],
  ],
  SetBlockedRequest: [
    [1, "username", "string"],
    [2, "blocked", "bool"],
  ],
  ListBlockedRequest: [
    [1, "afterUsername", "string"],
    [2, "limit", "uint32"],
  ],
  BlockedUser: [
    [1, "username", "string"],
    [2, "blockedAtMs", "int64"],
  ],
  BlockedList: [
    [1, "users", "BlockedUser", "repeated"],
    [2, "hasMore", "bool"],
  ],
  GetPrivacyRequest: [],
  SetPrivacyRequest: [
    [1, "directMessages", "Audience"],
    [2, "groupInvites", "Audience"],
    [3, "search", "Audience"],
  ],
  PrivacySettings: [
    [1, "directMessages", "Audience"],
    [2, "groupInvites", "Audience"],
    [3, "search", "Audience"],
  ],
  SearchUsersRequest: [
    [1, "prefix", "string"],
    [2, "limit", "uint32"],
  ],
  UserResult: [[1, "username", "string"]],
  UserList: [
    [1, "users", "UserResult", "repeated"],
    [2, "hasMore", "bool"],
  ],
  OpenDirectRequest: [[1, "username", "string"]],
  CreateGroupRequest: [
    [1, "title", "string"],
    [2, "usernames", "string", "repeated"],
  ],
  AddMembersRequest: [
    [1, "conversationId", "uint64"],
    [2, "usernames", "string", "repeated"],
  ],
  RemoveMemberRequest: [
    [1, "conversationId", "uint64"],
    [2, "username", "string"],
  ],
  LeaveGroupRequest: [[1, "conversationId", "uint64"]],
  RenameGroupRequest: [
    [1, "conversationId", "uint64"],
    [2, "title", "string"],
  ],
  ListConversationsRequest: [
    [1, "limit", "uint32"],
    [2, "activeBeforeMs", "int64"],
    [3, "beforeConversationId", "uint64"],
  ],
  GetConversationRequest: [[1, "conversationId", "uint64"]],
  SetRoleRequest: [
    [1, "conversationId", "uint64"],
    [2, "username", "string"],
    [3, "role", "MemberRole"],
  ],
  ListMembersRequest: [[1, "conversationId", "uint64"]],
  Conversation: [
    [1, "conversationId", "uint64"],
    [2, "kind", "ConversationKind"],
    [3, "title", "string"],
    [4, "peerUserId", "uint64"],
    [5, "peerUsername", "string"],
    [6, "createdAtMs", "int64"],
    [7, "lastSeq", "uint64"],
    [8, "readSeq", "uint64"],
    [9, "unreadCount", "uint64"],
    [10, "lastMessage", "Message"],
    [11, "memberCount", "uint32"],
    [12, "activityMs", "int64"],
    [13, "role", "MemberRole"],
  ],
  ConversationList: [
    [1, "conversations", "Conversation", "repeated"],
    [2, "hasMore", "bool"],
  ],
  Member: [
    [1, "userId", "uint64"],
    [2, "username", "string"],
    [3, "role", "MemberRole"],
    [4, "joinedAtMs", "int64"],
  ],
  MemberList: [
    [1, "conversationId", "uint64"],
    [2, "members", "Member", "repeated"],
  ],
  SendRequest: [
    [1, "conversationId", "uint64"],
    [2, "clientMsgId", "string"],
    [3, "text", "string"],
  ],
  Message: [
    [1, "conversationId", "uint64"],
    [2, "seq", "uint64"],
    [3, "senderId", "uint64"],
    [4, "senderUsername", "string"],
    [5, "sentAtMs", "int64"],
    [6, "clientMsgId", "string"],
    [10, "text", "string", "oneof:content"],
    [11, "membership", "MembershipChange", "oneof:content"],
  ],
  MembershipChange: [
    [1, "action", "MembershipAction"],
    [2, "users", "UserRef", "repeated"],
    [3, "title", "string"],
    [4, "role", "MemberRole"],
  ],
  UserRef: [
    [1, "userId", "uint64"],
    [2, "username", "string"],
  ],
  Sent: [
    [1, "message", "Message"],
    [2, "duplicate", "bool"],
  ],
  SyncRequest: [
    [1, "after", "uint64"],
    [2, "limit", "uint32"],
  ],
  SyncPage: [
    [1, "events", "InboxEvent", "repeated"],
    [2, "inboxHead", "uint64"],
    [3, "hasMore", "bool"],
  ],
  AckCursorRequest: [[1, "inboxSeq", "uint64"]],
  InboxEvent: [
    [1, "inboxSeq", "uint64"],
    [10, "message", "Message", "oneof:event"],
    [11, "read", "ReadState", "oneof:event"],
    [12, "joined", "Conversation", "oneof:event"],
    [13, "left", "ConversationLeft", "oneof:event"],
  ],
  ConversationLeft: [
    [1, "conversationId", "uint64"],
    [2, "seq", "uint64"],
  ],
  HistoryRequest: [
    [1, "conversationId", "uint64"],
    [2, "beforeSeq", "uint64"],
    [3, "afterSeq", "uint64"],
    [4, "limit", "uint32"],
    [5, "oldestFirst", "bool"],
  ],
  HistoryPage: [
    [1, "conversationId", "uint64"],
    [2, "messages", "Message", "repeated"],
    [3, "hasMore", "bool"],
  ],
  MarkReadRequest: [
    [1, "conversationId", "uint64"],
    [2, "seq", "uint64"],
  ],
  ReadState: [
    [1, "conversationId", "uint64"],
    [2, "readSeq", "uint64"],
    [3, "unreadCount", "uint64"],
    [4, "lastSeq", "uint64"],
  ],
  ReadReceiptsRequest: [[1, "conversationId", "uint64"]],
  ReadReceipt: [
    [1, "conversationId", "uint64"],
    [2, "userId", "uint64"],
    [3, "username", "string"],
    [4, "readSeq", "uint64"],
  ],
  ReadReceiptList: [
    [1, "conversationId", "uint64"],
    [2, "receipts", "ReadReceipt", "repeated"],
  ],
  SubscribePresenceRequest: [[1, "usernames", "string", "repeated"]],
  UnsubscribePresenceRequest: [[1, "usernames", "string", "repeated"]],
  SetStatusRequest: [[1, "status", "PresenceState"]],
  Presence: [
    [1, "userId", "uint64"],
    [2, "username", "string"],
    [3, "state", "PresenceState"],
    [4, "lastSeenMs", "int64"],
  ],
  PresenceList: [[1, "presences", "Presence", "repeated"]],
  TypingNotice: [[1, "conversationId", "uint64"]],
  TypingEvent: [
    [1, "conversationId", "uint64"],
    [2, "userId", "uint64"],
    [3, "username", "string"],
    [4, "expiresInMs", "uint32"],
  ],
  RegisterPushRequest: [
    [1, "webPush", "WebPushTarget", "oneof:target"],
    [2, "webhook", "WebhookTarget", "oneof:target"],
  ],
  WebPushTarget: [
    [1, "endpoint", "string"],
    [2, "p256dh", "bytes"],
    [3, "auth", "bytes"],
  ],
  WebhookTarget: [[1, "url", "string"]],
  UnregisterPushRequest: [],
  PushRegistered: [[1, "webhookSecret", "bytes"]],
  PushTargetDropped: [
    [1, "droppedAtMs", "int64"],
    [2, "httpStatus", "uint32"],
  ],
  PingRequest: [[1, "nonce", "uint64"]],
  Pong: [
    [1, "nonce", "uint64"],
    [2, "serverTimeMs", "int64"],
  ],
  Done: [],
  Error: [
    [1, "code", "uint32"],
    [2, "message", "string"],
    [3, "retryAfterMs", "uint64"],
    [4, "fatal", "bool"],
  ],
  GoAway: [
    [1, "code", "uint32"],
    [2, "message", "string"],
    [3, "reconnectAfterMs", "uint64"],
  ],
};

const SCALAR_WIRE = { uint64: 0, int64: 0, uint32: 0, bool: 0, string: 2, bytes: 2 };
const PACKABLE = new Set(["uint64", "int64", "uint32", "bool"]);

/** Per message: fields by number and by name, and its oneofs. Built once. */
const INDEX = {};
for (const [name, fields] of Object.entries(MESSAGES)) {
  const byNumber = new Map();
  const byName = new Map();
  const oneofs = new Map();
  for (const [number, jsonName, type, flag] of fields) {
    const f = {
      number,
      name: jsonName,
      type,
      repeated: flag === "repeated",
      oneof: flag && flag.startsWith("oneof:") ? flag.slice(6) : null,
      kind: type in SCALAR_WIRE ? "scalar" : type in ENUMS ? "enum" : type in MESSAGES ? "message" : null,
    };
    if (f.kind === null) throw new Error(`proto.js schema: ${name}.${jsonName} has unknown type ${type}`);
    byNumber.set(number, f);
    byName.set(jsonName, f);
    if (f.oneof) {
      if (!oneofs.has(f.oneof)) oneofs.set(f.oneof, []);
      oneofs.get(f.oneof).push(f);
    }
  }
  INDEX[name] = { name, fields: [...byNumber.values()].sort((a, b) => a.number - b.number), byNumber, byName, oneofs };
}

function messageIndex(type) {
  const m = INDEX[type];
  if (!m) throw new TypeError(`unknown message type ${type}`);
  return m;
}

/** Which member of oneof `oneof` is set in `obj` (a `type`), or null. */
export function oneofCase(type, obj, oneof) {
  const members = messageIndex(type).oneofs.get(oneof);
  if (!members) throw new TypeError(`${type} has no oneof ${oneof}`);
  if (!obj) return null;
  for (const f of members) if (obj[f.name] !== undefined) return f.name;
  return null;
}

/** The `body` member name of a ClientFrame / ServerFrame, or null. */
export const clientBody = (frame) => oneofCase("ClientFrame", frame, "body");
export const serverBody = (frame) => oneofCase("ServerFrame", frame, "body");

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/** A decode failure: the bytes are not a valid encoded message. */
export class DecodeError extends Error {
  constructor(message, offset) {
    super(`${message} (at byte ${offset})`);
    this.name = "DecodeError";
    this.offset = offset;
  }
}

// ---------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const U64_MAX = (1n << 64n) - 1n;
const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;

class Writer {
  constructor() {
    this.buf = new Uint8Array(64);
    this.len = 0;
  }
  ensure(n) {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const b = new Uint8Array(size);
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
  }
  byte(b) {
    this.ensure(1);
    this.buf[this.len++] = b;
  }
  bytes(b) {
    this.ensure(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
  /** Unsigned varint of a Number in [0, 2^53) or a BigInt in [0, 2^64). */
  varint(v) {
    if (typeof v === "number") {
      while (v > 0x7f) {
        this.byte((v % 128) | 0x80);
        v = Math.floor(v / 128);
      }
      this.byte(v);
      return;
    }
    while (v > 0x7fn) {
      this.byte(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    this.byte(Number(v));
  }
  tag(number, wire) {
    this.varint(number * 8 + wire);
  }
  finish() {
    return this.buf.slice(0, this.len);
  }
}

function bigintOf(v, type, where) {
  let b;
  if (typeof v === "bigint") b = v;
  else if (typeof v === "number" && Number.isSafeInteger(v)) b = BigInt(v);
  else if (typeof v === "string" && /^-?\d+$/.test(v)) b = BigInt(v);
  else throw new TypeError(`${where}: ${type} needs a BigInt or a safe integer, got ${typeof v} ${String(v)}`);
  if (type === "uint64" && (b < 0n || b > U64_MAX)) throw new RangeError(`${where}: ${b} is out of uint64 range`);
  if (type === "int64" && (b < I64_MIN || b > I64_MAX)) throw new RangeError(`${where}: ${b} is out of int64 range`);
  return b;
}

function isDefault(f, v) {
  if (v === undefined || v === null) return true;
  if (f.kind === "message") return false;
  switch (f.type) {
    case "uint64":
    case "int64":
      return bigintOf(v, f.type, f.name) === 0n;
    case "uint32":
      return v === 0;
    case "bool":
      return v === false;
    case "string":
      return v === "";
    case "bytes":
      return v.length === 0;
    default:
      return v === 0; // enum
  }
}

function writeScalarValue(w, f, v, where) {
  switch (f.type) {
    case "uint64":
      w.varint(bigintOf(v, "uint64", where));
      return;
    case "int64":
      w.varint(BigInt.asUintN(64, bigintOf(v, "int64", where)));
      return;
    case "uint32":
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`${where}: ${v} is not a uint32`);
      w.varint(v);
      return;
    case "bool":
      if (typeof v !== "boolean") throw new TypeError(`${where}: expected a boolean`);
      w.varint(v ? 1 : 0);
      return;
    case "string": {
      if (typeof v !== "string") throw new TypeError(`${where}: expected a string`);
      const b = utf8Encoder.encode(v);
      w.varint(b.length);
      w.bytes(b);
      return;
    }
    case "bytes":
      if (!(v instanceof Uint8Array)) throw new TypeError(`${where}: expected a Uint8Array`);
      w.varint(v.length);
      w.bytes(v);
      return;
    default: {
      // enum: int32; negative values are sign-extended to 10 bytes.
      if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) throw new RangeError(`${where}: ${v} is not an enum value`);
      w.varint(v >= 0 ? v : BigInt.asUintN(64, BigInt(v)));
    }
  }
}

function writeMessage(w, type, obj, path) {
  const m = messageIndex(type);
  if (obj === null || typeof obj !== "object") throw new TypeError(`${path}: expected a ${type} object`);
  for (const key of Object.keys(obj)) {
    if (!m.byName.has(key) && obj[key] !== undefined) throw new TypeError(`${path}: ${type} has no field "${key}"`);
  }
  for (const [oneof, members] of m.oneofs) {
    const set = members.filter((f) => obj[f.name] !== undefined && obj[f.name] !== null);
    if (set.length > 1) throw new TypeError(`${path}: oneof ${oneof} has several members set (${set.map((f) => f.name).join(", ")})`);
  }
  for (const f of m.fields) {
    const v = obj[f.name];
    const where = `${path}.${f.name}`;
    if (f.repeated) {
      if (v === undefined || v === null) continue;
      if (!Array.isArray(v)) throw new TypeError(`${where}: expected an array`);
      if (v.length === 0) continue;
      if (f.kind === "enum" || PACKABLE.has(f.type)) {
        const inner = new Writer();
        v.forEach((x, i) => writeScalarValue(inner, f, x, `${where}[${i}]`));
        const bytes = inner.finish();
        w.tag(f.number, 2);
        w.varint(bytes.length);
        w.bytes(bytes);
      } else {
        v.forEach((x, i) => writeField(w, f, x, `${where}[${i}]`));
      }
      continue;
    }
    if (f.oneof) {
      if (v === undefined || v === null) continue; // a set oneof member is always encoded
    } else if (isDefault(f, v)) {
      continue;
    }
    writeField(w, f, v, where);
  }
}

function writeField(w, f, v, where) {
  if (f.kind === "message") {
    const inner = new Writer();
    writeMessage(inner, f.type, v, where);
    const bytes = inner.finish();
    w.tag(f.number, 2);
    w.varint(bytes.length);
    w.bytes(bytes);
    return;
  }
  w.tag(f.number, f.kind === "enum" ? 0 : SCALAR_WIRE[f.type]);
  writeScalarValue(w, f, v, where);
}

/** Encodes `obj` as message `type`; fields in field-number order, defaults omitted. */
export function encode(type, obj) {
  const w = new Writer();
  writeMessage(w, type, obj, type);
  return w.finish();
}

// ---------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------

class Reader {
  constructor(buf, start = 0, end = buf.length) {
    this.buf = buf;
    this.pos = start;
    this.end = end;
  }
  /** A varint as BigInt (up to 10 bytes, value < 2^64). */
  varint64() {
    const start = this.pos;
    let lo = 0;
    let shift = 0;
    // Fast path: the first 4 bytes (28 bits) as a Number.
    for (let i = 0; i < 4; i++) {
      if (this.pos >= this.end) throw new DecodeError("truncated varint", start);
      const b = this.buf[this.pos++];
      lo |= (b & 0x7f) << shift;
      if (b < 0x80) return BigInt(lo >>> 0);
      shift += 7;
    }
    let v = BigInt(lo >>> 0);
    let bshift = 28n;
    for (let i = 4; i < 10; i++) {
      if (this.pos >= this.end) throw new DecodeError("truncated varint", start);
      const b = this.buf[this.pos++];
      if (i === 9 && b > 1) throw new DecodeError("varint overflows 64 bits", start);
      v |= BigInt(b & 0x7f) << bshift;
      if (b < 0x80) return v;
      bshift += 7n;
    }
    throw new DecodeError("varint longer than 10 bytes", start);
  }
  /** A varint used as a length or tag: must fit a safe Number. */
  varintNumber() {
    const start = this.pos;
    const v = this.varint64();
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new DecodeError("length or tag too large", start);
    return Number(v);
  }
  skip(n) {
    if (n > this.end - this.pos) throw new DecodeError("field runs past the end of its message", this.pos);
    this.pos += n;
  }
  lengthDelimited() {
    const len = this.varintNumber();
    const start = this.pos;
    this.skip(len);
    return [start, this.pos];
  }
}

/** Skips one unknown field's value of wire type `wire` (groups included). */
function skipField(r, number, wire, depth) {
  switch (wire) {
    case 0:
      r.varint64();
      return;
    case 1:
      r.skip(8);
      return;
    case 2:
      r.lengthDelimited();
      return;
    case 5:
      r.skip(4);
      return;
    case 3: {
      if (depth > 64) throw new DecodeError("groups nested too deeply", r.pos);
      for (;;) {
        if (r.pos >= r.end) throw new DecodeError("unterminated group", r.pos);
        const tag = r.varintNumber();
        const n = Math.floor(tag / 8);
        const w = tag & 7;
        if (n === 0) throw new DecodeError("field number 0", r.pos);
        if (w === 4) {
          if (n !== number) throw new DecodeError("mismatched end-group", r.pos);
          return;
        }
        skipField(r, n, w, depth + 1);
      }
    }
    case 4:
      throw new DecodeError("unexpected end-group", r.pos);
    default:
      throw new DecodeError(`invalid wire type ${wire}`, r.pos);
  }
}

function defaultValue(f) {
  if (f.repeated) return [];
  if (f.kind === "message" || f.oneof) return undefined;
  if (f.kind === "enum") return 0;
  switch (f.type) {
    case "uint64":
    case "int64":
      return 0n;
    case "uint32":
      return 0;
    case "bool":
      return false;
    case "string":
      return "";
    case "bytes":
      return new Uint8Array(0);
  }
  return undefined;
}

function readScalar(r, f) {
  switch (f.type) {
    case "uint64":
      return r.varint64();
    case "int64":
      return BigInt.asIntN(64, r.varint64());
    case "uint32":
      return Number(BigInt.asUintN(32, r.varint64()));
    case "bool":
      return r.varint64() !== 0n;
    case "string": {
      const [s, e] = r.lengthDelimited();
      try {
        return utf8Decoder.decode(r.buf.subarray(s, e));
      } catch {
        throw new DecodeError(`invalid UTF-8 in string field ${f.name}`, s);
      }
    }
    case "bytes": {
      const [s, e] = r.lengthDelimited();
      return r.buf.slice(s, e);
    }
    default:
      // enum (int32): open, unknown values are kept as numbers.
      return Number(BigInt.asIntN(32, r.varint64()));
  }
}

function readMessage(r, type, end, depth) {
  if (depth > 100) throw new DecodeError("messages nested too deeply", r.pos);
  const m = messageIndex(type);
  const obj = {};
  for (const f of m.fields) obj[f.name] = defaultValue(f);
  while (r.pos < end) {
    const tagPos = r.pos;
    const tag = r.varintNumber();
    const number = Math.floor(tag / 8);
    const wire = tag & 7;
    if (number === 0) throw new DecodeError("field number 0", tagPos);
    const f = m.byNumber.get(number);
    if (!f) {
      skipField(r, number, wire, 0);
      if (r.pos > end) throw new DecodeError("field runs past the end of its message", tagPos);
      continue;
    }
    const packable = f.kind === "enum" || PACKABLE.has(f.type);
    if (f.repeated && packable && wire === 2) {
      const [s, e] = r.lengthDelimited();
      const inner = new Reader(r.buf, s, e);
      while (inner.pos < e) obj[f.name].push(readScalar(inner, f));
      continue;
    }
    const expected = f.kind === "message" ? 2 : f.kind === "enum" ? 0 : SCALAR_WIRE[f.type];
    if (wire !== expected) throw new DecodeError(`wrong wire type ${wire} for ${type}.${f.name}`, tagPos);
    let value;
    if (f.kind === "message") {
      const [s, e] = r.lengthDelimited();
      const inner = new Reader(r.buf, s, e);
      const existing = f.repeated ? undefined : obj[f.name];
      value = readMessage(inner, f.type, e, depth + 1);
      // A non-repeated message field seen twice is merged (protobuf rule).
      if (existing) value = mergeMessage(f.type, existing, value);
    } else {
      value = readScalar(r, f);
    }
    if (f.repeated) {
      obj[f.name].push(value);
    } else {
      if (f.oneof) for (const g of m.oneofs.get(f.oneof)) if (g !== f) obj[g.name] = undefined;
      obj[f.name] = value;
    }
  }
  if (r.pos !== end) throw new DecodeError("field runs past the end of its message", r.pos);
  return obj;
}

/** Protobuf merge of two decoded values of one type: b's set fields win, repeated concatenate. */
function mergeMessage(type, a, b) {
  const m = messageIndex(type);
  const out = { ...a };
  for (const f of m.fields) {
    const v = b[f.name];
    if (f.repeated) out[f.name] = [...a[f.name], ...v];
    else if (f.kind === "message" && v !== undefined && a[f.name] !== undefined) out[f.name] = mergeMessage(f.type, a[f.name], v);
    else if (f.oneof ? v !== undefined : !isDefault(f, v)) {
      if (f.oneof) for (const g of m.oneofs.get(f.oneof)) if (g !== f) out[g.name] = undefined;
      out[f.name] = v;
    }
  }
  return out;
}

/** Decodes `bytes` (a Uint8Array, ArrayBuffer or view) as message `type`. Throws DecodeError. */
export function decode(type, bytes) {
  const buf = toBytes(bytes);
  const r = new Reader(buf);
  return readMessage(r, type, buf.length, 0);
}

function toBytes(bytes) {
  if (bytes instanceof Uint8Array) return bytes;
  if (bytes instanceof ArrayBuffer) return new Uint8Array(bytes);
  if (ArrayBuffer.isView(bytes)) return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  throw new TypeError("decode needs a Uint8Array or ArrayBuffer");
}

// ---------------------------------------------------------------------------
// Framing (PROTOCOL.md §3). WebSocket messages carry no length prefix; these
// are for QUIC/TCP byte streams and for the golden vectors, which include it.
// ---------------------------------------------------------------------------

export const DEFAULT_MAX_FRAME_BYTES = 524288;

/** Prefixes `payload` with its length as a shortest-form varint. */
export function delimit(payload) {
  const w = new Writer();
  w.varint(payload.length);
  w.bytes(payload);
  return w.finish();
}

/**
 * Reads one length-delimited frame from the start of `bytes`.
 * Returns {payload, consumed}, or null when more bytes are needed. Throws
 * DecodeError as soon as the length is known to exceed `maxFrameBytes` (even
 * from a partial varint) or the varint is longer than 10 bytes.
 */
export function readDelimited(bytes, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES) {
  const buf = toBytes(bytes);
  let len = 0n;
  let i = 0;
  for (;;) {
    if (i >= 10) throw new DecodeError("frame length varint longer than 10 bytes", 0);
    if (i >= buf.length) return null;
    const b = buf[i];
    len |= BigInt(b & 0x7f) << BigInt(7 * i);
    i++;
    if (len > BigInt(maxFrameBytes)) throw new DecodeError(`frame length above max_frame_bytes (${maxFrameBytes})`, 0);
    if (b < 0x80) break;
  }
  const n = Number(len);
  if (buf.length - i < n) return null;
  return { payload: buf.subarray(i, i + n), consumed: i + n };
}

export const encodeClientFrame = (frame) => encode("ClientFrame", frame);
export const decodeServerFrame = (bytes) => decode("ServerFrame", bytes);
export const encodeServerFrame = (frame) => encode("ServerFrame", frame);
export const decodeClientFrame = (bytes) => decode("ClientFrame", bytes);

// ---------------------------------------------------------------------------
// Canonical proto3 JSON (what spec/vectors/ uses). Handy for logs and tools.
// ---------------------------------------------------------------------------

function b64encode(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}
function b64decode(s) {
  const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/"));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function scalarToJSON(f, v) {
  if (f.kind === "enum") return ENUMS[f.type][v] ?? v;
  switch (f.type) {
    case "uint64":
    case "int64":
      return String(v);
    case "bytes":
      return b64encode(v);
    default:
      return v;
  }
}

/** The canonical proto3 JSON value of a decoded (or hand-built) message. */
export function toJSON(type, obj) {
  const m = messageIndex(type);
  const out = {};
  for (const f of m.fields) {
    const v = obj[f.name];
    if (f.repeated) {
      if (v && v.length) out[f.name] = v.map((x) => (f.kind === "message" ? toJSON(f.type, x) : scalarToJSON(f, x)));
    } else if (f.kind === "message") {
      if (v !== undefined && v !== null) out[f.name] = toJSON(f.type, v);
    } else if (f.oneof ? v !== undefined && v !== null : !isDefault(f, v)) {
      out[f.name] = scalarToJSON(f, v);
    }
  }
  return out;
}

function scalarFromJSON(f, v, where) {
  if (f.kind === "enum") {
    if (typeof v === "number") return v;
    const i = ENUMS[f.type].indexOf(v);
    if (i < 0) throw new TypeError(`${where}: unknown ${f.type} value ${v}`);
    return i;
  }
  switch (f.type) {
    case "uint64":
    case "int64":
      return bigintOf(v, f.type, where);
    case "uint32":
      return typeof v === "string" ? Number(v) : v;
    case "bytes":
      return b64decode(v);
    default:
      return v;
  }
}

/** Parses canonical proto3 JSON into the object form encode() takes. */
export function fromJSON(type, json) {
  const m = messageIndex(type);
  const out = {};
  for (const [key, v] of Object.entries(json)) {
    const f = m.byName.get(key);
    const where = `${type}.${key}`;
    if (!f) throw new TypeError(`${where}: no such field`);
    if (f.repeated) out[key] = v.map((x, i) => (f.kind === "message" ? fromJSON(f.type, x) : scalarFromJSON(f, x, `${where}[${i}]`)));
    else if (f.kind === "message") out[key] = fromJSON(f.type, v);
    else out[key] = scalarFromJSON(f, v, where);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Error codes (spec/errors.md)
// ---------------------------------------------------------------------------

export const ERROR_NAMES = Object.freeze({
  100: "MALFORMED_FRAME",
  101: "FRAME_TOO_LARGE",
  102: "UNKNOWN_REQUEST",
  103: "UNSUPPORTED_VERSION",
  104: "HANDSHAKE_REQUIRED",
  105: "INVALID_STATE",
  106: "INVALID_REQUEST_ID",
  107: "HANDSHAKE_TIMEOUT",
  108: "HEARTBEAT_TIMEOUT",
  109: "PROTOCOL_VIOLATION",
  110: "AUTH_TIMEOUT",
  200: "UNAUTHENTICATED",
  201: "INVALID_CREDENTIALS",
  202: "INVALID_TOKEN",
  203: "USERNAME_TAKEN",
  204: "DEVICE_REVOKED",
  300: "INVALID_ARGUMENT",
  301: "MESSAGE_TOO_LONG",
  302: "EMPTY_MESSAGE",
  303: "TOO_MANY_ITEMS",
  310: "USER_NOT_FOUND",
  311: "CONVERSATION_NOT_FOUND",
  312: "DEVICE_NOT_FOUND",
  313: "PERMISSION_DENIED",
  314: "NOT_A_GROUP",
  315: "CANNOT_MESSAGE_SELF",
  316: "FEATURE_UNAVAILABLE",
  320: "GROUP_FULL",
  321: "TOO_MANY_DEVICES",
  322: "REFUSED_BY_USER",
  400: "RATE_LIMITED",
  401: "TOO_MANY_IN_FLIGHT",
  402: "SERVER_BUSY",
  500: "INTERNAL",
  501: "UNAVAILABLE",
  502: "SHUTTING_DOWN",
  503: "RESYNC_REQUIRED",
});

/** Code constants by name, e.g. ErrorCode.INVALID_TOKEN === 202. */
export const ErrorCode = Object.freeze(Object.fromEntries(Object.entries(ERROR_NAMES).map(([c, n]) => [n, Number(c)])));

/** "RATE_LIMITED", or for an unknown code e.g. "ERROR_451 (4xx)". */
export function errorName(code) {
  return ERROR_NAMES[code] ?? `ERROR_${code} (${Math.floor(code / 100)}xx)`;
}

/**
 * What a client does about a code, by its range (errors.md): "no-retry"
 * (1xx, 2xx), "fix-request" (3xx), "wait-retry" (4xx), "backoff-retry" (5xx).
 */
export function errorClass(code) {
  const h = Math.floor(code / 100);
  if (h === 1 || h === 2) return "no-retry";
  if (h === 3) return "fix-request";
  if (h === 4) return "wait-retry";
  if (h === 5) return "backoff-retry";
  return "no-retry";
}

// ---------------------------------------------------------------------------
// Defaults (PROTOCOL.md §12, §4.2)
// ---------------------------------------------------------------------------

export const DEFAULT_LIMITS = Object.freeze({
  maxFrameBytes: 524288,
  maxMessageChars: 100000,
  maxGroupMembers: 100,
  maxPageSize: 100,
  maxInFlight: 128,
  sendRatePerSec: 50,
  sendBurst: 100,
  requestRatePerSec: 200,
  requestBurst: 400,
  maxPresenceSubscriptions: 1000,
  maxListItems: 100,
  maxDevices: 100,
});
export const DEFAULT_HEARTBEAT_MS = 20000;

/** Welcome.limits with every 0 / absent field replaced by its default. */
export function effectiveLimits(limits) {
  const out = { ...DEFAULT_LIMITS };
  if (limits) for (const k of Object.keys(DEFAULT_LIMITS)) if (limits[k]) out[k] = limits[k];
  return Object.freeze(out);
}

/** Characters as the spec counts them: Unicode scalar values (§1). */
export function charCount(s) {
  let n = 0;
  for (const _ of s) n++;
  return n;
}
