// What the browser keeps of a signed-in user between page loads, in
// IndexedDB, so that a reload paints the conversation list and the open
// conversation before the network answers: each conversation's snapshot
// (title, members, read and last seq, last message), the newest messages
// (at most MESSAGES_KEPT, without a hole) of the conversations opened last
// (at most RECENT_KEPT), and the inbox position they were saved at.
//
// The cache never replaces the catch-up: after a reload the session still
// resumes, lists the conversations and syncs the inbox (§8.7), and what
// comes from the server is applied over what came from here (model.js:
// messages keyed by (conversation_id, seq), every update monotonic). No DOM.
//
// One database ("confab-cache"), three stores, every key starting with the
// user id:
//   meta           userId                   -> {userId, username, inboxSeq, recent, savedAt}
//   conversations  [userId, id]             -> {userId, id, rec}
//   messages       [userId, id, seq(20 dig.)] -> {userId, id, seq, m}
// Values are stored as they are (BigInt survives IndexedDB's structured
// clone).
//
// Without IndexedDB (private windows of some browsers, a refused quota) the
// cache says so once (`onError`) or not at all (unavailable from the start)
// and does nothing: the client then works from the network alone.

export const DB_NAME = "confab-cache";
const DB_VERSION = 1;
export const MESSAGES_KEPT = 50;
export const RECENT_KEPT = 20;

const seqKey = (seq) => String(seq).padStart(20, "0");

/** A request's result as a promise. */
const done = (req) =>
  new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error("IndexedDB request failed"));
  });

/** A transaction's end as a promise (resolves on complete). */
const finished = (tx) =>
  new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error ?? new Error("IndexedDB transaction failed"));
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
  });

/** A stable text for comparing records (BigInt as text). */
const signature = (v) => JSON.stringify(v, (_, x) => (typeof x === "bigint" ? `${x}n` : x));

export class ConvCache {
  /**
   * @param {object} [opts]
   * @param {IDBFactory} [opts.indexedDB]  the IndexedDB factory (tests pass fake-indexeddb's)
   * @param {Function} [opts.IDBKeyRange]  its IDBKeyRange
   * @param {string} [opts.name]           the database name
   * @param {Function} [opts.onError]      called once with the error when saving fails
   */
  constructor({ indexedDB = globalThis.indexedDB, IDBKeyRange = globalThis.IDBKeyRange, name = DB_NAME, onError = null } = {}) {
    this.factory = indexedDB && IDBKeyRange ? indexedDB : null;
    this.KeyRange = IDBKeyRange;
    this.name = name;
    this.onError = onError;
    this.dbPromise = null;
    this.unavailable = this.factory ? null : "this browser has no IndexedDB";
    this.writesFailed = null; // the error that stopped saving, if any
    this.chain = Promise.resolve(); // every operation runs after the one before
    this.written = null; // {userId, convs: Map(id -> signature), msgs: Map(id -> Set(seqKey))}
  }

  /** Runs `fn(db)` after every operation queued before it; resolves with its result. */
  run(fn) {
    const next = this.chain.then(async () => {
      const db = await this.db();
      return db ? fn(db) : undefined;
    });
    this.chain = next.catch(() => {});
    return next;
  }

  /**
   * Runs `fn(tx)` in one transaction over the three stores and resolves
   * once it has committed. If `fn` throws, the transaction is aborted:
   * nothing of it is kept.
   */
  async transact(db, mode, fn) {
    const tx = db.transaction(["meta", "conversations", "messages"], mode);
    const end = finished(tx);
    end.catch(() => {}); // awaited below; an abort after a throw is not news
    try {
      const result = await fn(tx);
      // Every write is asked for: commit now rather than when the page goes
      // back to its event loop. The save at pagehide (a reload, closing the
      // tab) is otherwise aborted with the page, and the next load paints
      // an older state (a "Seen" back to "Sent").
      if (mode === "readwrite") {
        try {
          tx.commit?.();
        } catch {
          // already committing
        }
      }
      await end;
      return result;
    } catch (e) {
      try {
        tx.abort();
      } catch {
        // already finished
      }
      throw e;
    }
  }

  /** The open database, or null when IndexedDB cannot be used here. */
  db() {
    if (this.unavailable) return Promise.resolve(null);
    if (!this.dbPromise) {
      this.dbPromise = new Promise((resolve, reject) => {
        let req;
        try {
          req = this.factory.open(this.name, DB_VERSION);
        } catch (e) {
          reject(e);
          return;
        }
        req.onupgradeneeded = () => {
          const db = req.result;
          if (!db.objectStoreNames.contains("meta")) db.createObjectStore("meta", { keyPath: "userId" });
          if (!db.objectStoreNames.contains("conversations")) db.createObjectStore("conversations", { keyPath: ["userId", "id"] });
          if (!db.objectStoreNames.contains("messages")) db.createObjectStore("messages", { keyPath: ["userId", "id", "seq"] });
        };
        req.onsuccess = () => {
          const db = req.result;
          // Another tab upgrading or deleting the database: let it.
          db.onversionchange = () => {
            db.close();
            this.dbPromise = null;
          };
          resolve(db);
        };
        req.onerror = () => reject(req.error ?? new Error("IndexedDB refused to open"));
        req.onblocked = () => reject(new Error("IndexedDB is blocked by another tab"));
        // Some private modes never answer: give up rather than hold every operation.
        setTimeout(() => reject(new Error("IndexedDB did not open within 5 s")), 5000);
      }).catch((e) => {
        this.unavailable = `IndexedDB cannot be used here (${e?.name ?? "Error"}: ${e?.message ?? e})`;
        return null;
      });
    }
    return this.dbPromise;
  }

  /**
   * What is kept for `userId`: {meta, conversations: [rec], messages:
   * Map(id -> [Message] ascending)}, or null (nothing kept, or no IndexedDB).
   */
  load(userId) {
    userId = String(userId);
    return this.run((db) => this.transact(db, "readonly", async (tx) => {
      const user = this.KeyRange.bound([userId], [userId, []]);
      const [meta, convs, msgs] = await Promise.all([
        done(tx.objectStore("meta").get(userId)),
        done(tx.objectStore("conversations").getAll(user)),
        done(tx.objectStore("messages").getAll(user)),
      ]);
      const written = { userId, convs: new Map(), msgs: new Map() };
      for (const c of convs) written.convs.set(c.id, signature(c.rec));
      const messages = new Map();
      for (const row of msgs) {
        // Keys are in (id, seq) order: each list comes out ascending.
        if (!messages.has(row.id)) messages.set(row.id, []);
        messages.get(row.id).push(row.m);
        if (!written.msgs.has(row.id)) written.msgs.set(row.id, new Set());
        written.msgs.get(row.id).add(row.seq);
      }
      this.written = written;
      if (!meta) return null;
      return { meta, conversations: convs.map((c) => c.rec), messages };
    })).then(
      (r) => r ?? null,
      () => null, // a cache that cannot be read is a cache that is empty
    );
  }

  /**
   * Stores the state of `userId` (replacing what was kept): `conversations`
   * (records, see Model.cacheRecord), `messages` (Map id -> Messages, only
   * for the conversations whose messages are kept), `recent`, `inboxSeq`.
   * Only what changed since the last save is written, in one transaction.
   */
  save(userId, { username, inboxSeq, recent = [], conversations, messages }) {
    userId = String(userId);
    if (this.writesFailed) return Promise.resolve(false);
    return this.run((db) => this.transact(db, "readwrite", async (tx) => {
      if (this.writesFailed) return false;
      const metaStore = tx.objectStore("meta");
      const convStore = tx.objectStore("conversations");
      const msgStore = tx.objectStore("messages");
      let w = this.written;
      if (!w || w.userId !== userId) {
        // Not read first: start from nothing.
        convStore.delete(this.KeyRange.bound([userId], [userId, []]));
        msgStore.delete(this.KeyRange.bound([userId], [userId, []]));
        w = { userId, convs: new Map(), msgs: new Map() };
      }
      const next = { userId, convs: new Map(), msgs: new Map() };
      metaStore.put({ userId, username, inboxSeq, recent: recent.slice(0, RECENT_KEPT), savedAt: Date.now() });
      for (const rec of conversations) {
        const sig = signature(rec);
        next.convs.set(rec.id, sig);
        if (w.convs.get(rec.id) !== sig) convStore.put({ userId, id: rec.id, rec });
      }
      for (const id of w.convs.keys()) if (!next.convs.has(id)) convStore.delete([userId, id]);
      for (const [id, list] of messages) {
        const had = w.msgs.get(id) ?? new Set();
        const keep = new Set();
        for (const m of list.slice(-MESSAGES_KEPT)) {
          const seq = seqKey(m.seq);
          keep.add(seq);
          if (!had.has(seq)) msgStore.put({ userId, id, seq, m });
        }
        for (const seq of had) if (!keep.has(seq)) msgStore.delete([userId, id, seq]);
        next.msgs.set(id, keep);
      }
      for (const id of w.msgs.keys()) if (!messages.has(id)) msgStore.delete(this.KeyRange.bound([userId, id], [userId, id, []]));
      return next;
    })).then((next) => {
      if (!next) return false; // no IndexedDB here
      this.written = next;
      return true;
    }, (e) => {
      // Quota, a private window refusing writes, a value it cannot clone:
      // stop saving (said once); what is kept is still whole (one transaction).
      this.written = null;
      if (!this.writesFailed) {
        this.writesFailed = e;
        this.onError?.(e);
      }
      return false;
    });
  }

  /**
   * Removes what is kept of every user but `keepUserId` (null: of every
   * user). Sign-out, a revoked device and another user signing in call it.
   * Resolves true when done (or there was nothing to remove).
   */
  dropAllBut(keepUserId = null) {
    const keep = keepUserId === null ? null : String(keepUserId);
    if (this.written && this.written.userId !== keep) this.written = null;
    return this.run((db) => this.transact(db, "readwrite", (tx) => {
      for (const name of ["meta", "conversations", "messages"]) {
        const store = tx.objectStore(name);
        if (keep === null) {
          store.clear();
        } else if (name === "meta") {
          store.delete(this.KeyRange.upperBound(keep, true));
          store.delete(this.KeyRange.lowerBound(keep, true));
        } else {
          store.delete(this.KeyRange.upperBound([keep], true));
          store.delete(this.KeyRange.lowerBound([keep, []], true));
        }
      }
      return true;
    })).then(
      (r) => r ?? true,
      () => false,
    );
  }

  /** Removes what is kept of `userId` (its data no longer matches the server's, §8.5). */
  dropUser(userId) {
    userId = String(userId);
    if (this.written?.userId === userId) this.written = null;
    return this.run((db) => this.transact(db, "readwrite", (tx) => {
      tx.objectStore("meta").delete(userId);
      tx.objectStore("conversations").delete(this.KeyRange.bound([userId], [userId, []]));
      tx.objectStore("messages").delete(this.KeyRange.bound([userId], [userId, []]));
      return true;
    })).then(
      (r) => r ?? true,
      () => false,
    );
  }

  /** Resolves once every operation queued so far is done. */
  idle() {
    return this.chain.then(() => {});
  }
}
