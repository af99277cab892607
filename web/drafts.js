// Unsent composer drafts, per user and per conversation, in localStorage so
// that a reload (or a crash of the tab) does not lose what was being typed.
// No DOM, no network.
//
// One key per conversation ("confab.draft.<username>/<conversation_id>"):
// a keystroke rewrites only its own draft, not every draft of the user. "/"
// cannot occur in a username (§6.1), so one user's prefix never matches
// another's ("bob/" is not a prefix of "bob.x/...").

const PREFIX = "confab.draft.";
const keyPrefix = (username) => `${PREFIX}${username}/`;

export class Drafts {
  /**
   * @param {Storage|null} storage  localStorage (tests pass a fake)
   * @param {string} username       whose drafts these are
   */
  constructor(storage, username) {
    this.storage = storage;
    this.prefix = keyPrefix(username);
    // Also kept in memory: a full or refused storage (private mode, quota)
    // must not lose a draft while the page lives.
    this.memory = new Map();
  }

  /** The draft of conversation `id` ("" when none). */
  get(id) {
    id = String(id);
    if (this.memory.has(id)) return this.memory.get(id);
    try {
      return this.storage?.getItem(this.prefix + id) ?? "";
    } catch {
      return "";
    }
  }

  /** Stores the draft of conversation `id`; "" (sent or erased) removes it. */
  set(id, text) {
    id = String(id);
    if (text) this.memory.set(id, text);
    else this.memory.delete(id);
    try {
      if (text) this.storage?.setItem(this.prefix + id, text);
      else this.storage?.removeItem(this.prefix + id);
    } catch {
      // Best effort: the memory copy still holds it until the page goes away.
    }
  }

  /** Removes every draft of this user (sign-out). */
  clear() {
    this.memory.clear();
    dropDrafts(this.storage, this.prefix.slice(PREFIX.length, -1));
  }
}

/** Removes every stored draft of `username`. */
export function dropDrafts(storage, username) {
  if (!storage || !username) return;
  const prefix = keyPrefix(username);
  try {
    const keys = [];
    for (let i = 0; i < storage.length; i++) {
      const k = storage.key(i);
      if (k && k.startsWith(prefix)) keys.push(k);
    }
    for (const k of keys) storage.removeItem(k);
  } catch {
    // storage unavailable: nothing was stored either
  }
}
