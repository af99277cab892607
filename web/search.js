// Finding people as they type (PROTOCOL.md §6.9): which text is worth a
// search, and a debounced searcher that shows only the answer to the latest
// text (an answer to older text that arrives late is dropped).

import { normalizeUsername } from "./validate.js";

/** A search prefix: 2–32 characters of the username alphabet, the first a letter or digit. */
const PREFIX = /^[a-z0-9][a-z0-9_.-]{1,31}$/;
/** Wait this long after the last keystroke before asking the server. */
export const SEARCH_DELAY_MS = 250;
/** At most this many matches are shown. */
export const SEARCH_LIMIT = 8;

/** The prefix to search for what the user typed (trimmed, lowercased, no leading "@"), or null when it cannot be one. */
export function searchPrefix(typed) {
  const p = normalizeUsername(String(typed ?? "")).replace(/^@/, "");
  return PREFIX.test(p) ? p : null;
}

/**
 * Debounced search. `search(prefix)` asks the server (a Promise of a
 * UserList); `show(result)` gets `{ prefix, users, hasMore }`, `{ prefix,
 * error }`, or `{ prefix: null, users: [], hasMore: false }` when the text
 * is no prefix (the list is cleared at once, without waiting).
 */
export class Searcher {
  constructor({ search, show, delayMs = SEARCH_DELAY_MS, setTimer = (f, ms) => setTimeout(f, ms), clearTimer = (t) => clearTimeout(t) }) {
    // Called as plain functions: a browser's setTimeout refuses another `this`.
    Object.assign(this, { search, show, delayMs, setTimer, clearTimer });
    this.timer = null;
    this.generation = 0;
    this.last = null;
  }

  /** The text in the box changed. */
  typed(text) {
    const prefix = searchPrefix(text);
    if (prefix !== null && prefix === this.last) return; // e.g. a trailing space
    this.cancel();
    this.last = prefix;
    const generation = this.generation;
    if (prefix === null) {
      this.show({ prefix: null, users: [], hasMore: false });
      return;
    }
    const setTimer = this.setTimer;
    this.timer = setTimer(async () => {
      this.timer = null;
      let result;
      try {
        const list = await this.search(prefix);
        result = { prefix, users: (list.users ?? []).map((u) => u.username), hasMore: Boolean(list.hasMore) };
      } catch (error) {
        result = { prefix, error };
      }
      if (generation === this.generation) this.show(result);
    }, this.delayMs);
  }

  /** Forget the pending search and any answer still to come (the box was emptied or a user picked). */
  cancel() {
    const clearTimer = this.clearTimer;
    if (this.timer !== null) clearTimer(this.timer);
    this.timer = null;
    this.generation += 1;
    this.last = null;
  }
}
