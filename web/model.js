// The client's view of one user's conversations, built from
// ListConversations, History and inbox events. No DOM, no network.
//
// Every update is idempotent and monotonic (PROTOCOL.md §8.4): messages are
// keyed by (conversation_id, seq), read markers and last_seq only move
// forward, so a conversation snapshot, a sync replay and a live event can
// arrive in any order and give the same state.

import { ConversationKind, MembershipAction, MemberRole } from "./proto.js";

const maxBig = (a, b) => (a > b ? a : b);

export class Model {
  constructor() {
    this.listeners = new Set();
    this.reset();
  }

  reset() {
    this.me = null; // {userId: BigInt, username}
    this.conversations = new Map(); // id string -> conversation record
    this.presence = new Map(); // username -> Presence
    this.typing = new Map(); // conv id -> Map(username -> expiresAt)
  }

  onChange(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
  changed(what) {
    for (const fn of this.listeners) fn(what);
  }

  setMe(auth) {
    this.me = { userId: auth.userId, username: auth.username };
  }

  /** The record for conversation `id` (a string), creating a placeholder. */
  conv(id) {
    const key = String(id);
    let c = this.conversations.get(key);
    if (!c) {
      c = {
        id: key,
        conversationId: BigInt(key),
        kind: ConversationKind.UNSPECIFIED,
        title: "",
        peerUserId: 0n,
        peerUsername: "",
        createdAtMs: 0n,
        lastSeq: 0n,
        readSeq: 0n,
        memberCount: 0,
        countSeq: 0n, // the seq member_count is as of (a snapshot's last_seq, or a membership change)
        titleSeq: 0n, // the seq the title is as of (a snapshot's last_seq, or a RENAMED)
        roleSeq: 0n, // the seq this user's role is as of (a snapshot's last_seq, or a ROLE_CHANGED)
        role: MemberRole.UNSPECIFIED,
        lastMessage: null,
        activityMs: 0n,
        messages: new Map(), // seq string -> Message
        historyLoaded: false, // the newest page was fetched
        hasOlder: true, // older messages may exist before the oldest held
        peerReadSeq: 0n, // direct: how far the other member has read
        receipts: new Map(), // username -> read_seq (groups, fetched)
        known: false, // a snapshot (list, get, joined) was applied
        left: false,
      };
      this.conversations.set(key, c);
    }
    return c;
  }

  /** Applies a Conversation snapshot (list, get, open, joined). */
  applyConversation(s) {
    const c = this.conv(s.conversationId);
    c.kind = s.kind;
    c.peerUserId = s.peerUserId;
    c.peerUsername = s.peerUsername;
    c.createdAtMs = s.createdAtMs;
    // An older snapshot than the changes already applied does not undo them.
    if (s.lastSeq >= c.countSeq) {
      c.memberCount = s.memberCount;
      c.countSeq = s.lastSeq;
    }
    if (s.lastSeq >= c.titleSeq) {
      c.title = s.title;
      c.titleSeq = s.lastSeq;
    }
    if (s.lastSeq >= c.roleSeq) {
      c.role = s.role;
      c.roleSeq = s.lastSeq;
    }
    c.lastSeq = maxBig(c.lastSeq, s.lastSeq);
    c.readSeq = maxBig(c.readSeq, s.readSeq);
    if (s.lastMessage) this.addMessage(s.lastMessage, { fromSnapshot: true });
    c.activityMs = maxBig(c.activityMs, s.activityMs || s.createdAtMs);
    c.known = true;
    c.left = false;
    this.changed({ conversation: c.id });
    return c;
  }

  /**
   * Adds a message (text or membership). Returns true when it was new.
   * `fromSnapshot`: only a conversation's last_message, not part of the
   * contiguous range held (used for the preview only).
   */
  addMessage(m, { fromSnapshot = false } = {}) {
    const c = this.conv(m.conversationId);
    const key = String(m.seq);
    const isNew = !c.messages.has(key);
    if (!fromSnapshot) c.messages.set(key, m);
    if (!c.lastMessage || m.seq >= c.lastMessage.seq) c.lastMessage = m;
    c.lastSeq = maxBig(c.lastSeq, m.seq);
    c.activityMs = maxBig(c.activityMs, m.sentAtMs);
    // Storing a message moves its sender's read marker to it (§8.10).
    if (this.me && m.senderId === this.me.userId) c.readSeq = maxBig(c.readSeq, m.seq);
    if (m.membership) this.applyMembership(c, m);
    // A message from a typing user ends their indicator (§9.4).
    this.typing.get(c.id)?.delete(m.senderUsername);
    return isNew && !fromSnapshot;
  }

  applyMembership(c, m) {
    const ch = m.membership;
    // Older history (a page of older messages, the cache) does not undo a
    // newer rename or role.
    switch (ch.action) {
      case MembershipAction.RENAMED:
        if (ch.title && m.seq > c.titleSeq) {
          c.title = ch.title;
          c.titleSeq = m.seq;
        }
        break;
      case MembershipAction.ROLE_CHANGED:
        if (this.me && ch.users.some((u) => u.userId === this.me.userId) && m.seq > c.roleSeq) {
          c.role = ch.role;
          c.roleSeq = m.seq;
        }
        break;
      default:
        break;
    }
  }

  /** Applies one inbox event (§8.3). */
  applyInbox(e) {
    if (e.message) {
      const m = e.message;
      const c = this.conv(m.conversationId);
      this.addMessage(m);
      // A change the count already includes (the snapshot of a "joined"
      // event is taken after the ADDED that brought this user in) is not counted twice.
      if (m.membership && m.seq > c.countSeq) {
        c.countSeq = m.seq;
        const a = m.membership.action;
        if (a === MembershipAction.ADDED) c.memberCount += m.membership.users.length;
        if (a === MembershipAction.REMOVED) c.memberCount = Math.max(0, c.memberCount - m.membership.users.length);
        if (a === MembershipAction.LEFT) c.memberCount = Math.max(0, c.memberCount - 1);
      }
      this.changed({ conversation: c.id, message: m });
    } else if (e.read) {
      this.applyReadState(e.read);
    } else if (e.joined) {
      this.applyConversation(e.joined);
      this.changed({ joined: String(e.joined.conversationId) });
    } else if (e.left) {
      const c = this.conv(e.left.conversationId);
      c.left = true;
      this.changed({ conversation: c.id, left: true });
    }
  }

  applyReadState(r) {
    const c = this.conv(r.conversationId);
    c.readSeq = maxBig(c.readSeq, r.readSeq);
    c.lastSeq = maxBig(c.lastSeq, r.lastSeq);
    this.changed({ conversation: c.id, read: true });
  }

  applyReceipt(r) {
    const c = this.conv(r.conversationId);
    if (this.me && r.userId === this.me.userId) {
      c.readSeq = maxBig(c.readSeq, r.readSeq);
    } else {
      c.receipts.set(r.username, maxBig(c.receipts.get(r.username) ?? 0n, r.readSeq));
      if (c.kind === ConversationKind.DIRECT) c.peerReadSeq = maxBig(c.peerReadSeq, r.readSeq);
    }
    this.changed({ conversation: c.id, receipt: true });
  }

  /** Applies a HistoryPage; `older`: it was a before_seq page. */
  applyHistory(page, { older }) {
    const c = this.conv(page.conversationId);
    if (!older && page.messages.length > 0) {
      // The newest page: what is held below it must join it without a hole
      // (messages from the cache, or live before the conversation was
      // opened); what does not is dropped, and paging fetches it again.
      const first = page.messages[0].seq;
      const pageSeqs = new Set(page.messages.map((m) => String(m.seq)));
      let s = first - 1n;
      while (s > 0n && c.messages.has(String(s))) s--;
      for (const [k, m] of c.messages) if (m.seq <= s && !pageSeqs.has(k)) c.messages.delete(k);
    }
    for (const m of page.messages) this.addMessage(m);
    if (older || !c.historyLoaded) c.hasOlder = page.hasMore && page.messages.length > 0;
    if (page.messages.length > 0 && page.messages[0].seq <= 1n) c.hasOlder = false;
    c.historyLoaded = true;
    this.changed({ conversation: c.id, history: true });
  }

  // ---- the cache (cache.js) ------------------------------------------------

  /** The part of conversation `c` kept on the device: its snapshot fields. */
  cacheRecord(c) {
    const { id, kind, title, peerUserId, peerUsername, createdAtMs, lastSeq, readSeq, memberCount, countSeq, titleSeq, roleSeq, role, lastMessage, activityMs, peerReadSeq } = c;
    return { id, kind, title, peerUserId, peerUsername, createdAtMs, lastSeq, readSeq, memberCount, countSeq, titleSeq, roleSeq, role, lastMessage, activityMs, peerReadSeq };
  }

  /**
   * The newest messages held for `c`, at most `max`, without a hole: the
   * run that ends at the newest one held.
   */
  cacheMessages(c, max) {
    const all = this.messagesOf(c);
    const out = [];
    for (let i = all.length - 1; i >= 0 && out.length < max; i--) {
      if (out.length && all[i].seq !== out[0].seq - 1n) break;
      out.unshift(all[i]);
    }
    return out;
  }

  /**
   * Restores a conversation and its newest messages from the cache. The
   * history counts as not loaded: opening it fetches the newest page.
   */
  restoreConversation(rec, messages = []) {
    const c = this.conv(rec.id);
    Object.assign(c, this.cacheRecord(rec), { conversationId: BigInt(rec.id), known: true, left: false, historyLoaded: false, hasOlder: true });
    for (const m of messages) this.addMessage(m);
    this.changed({ conversation: c.id });
    return c;
  }

  /**
   * The server's whole conversation list after a start from the cache: a
   * conversation it does not list is no longer one of the user's, and one
   * whose cached messages go beyond the server's last_seq (its data is not
   * what was cached, §8.5) starts again from nothing. The snapshots are
   * then applied.
   */
  reconcileList(snapshots) {
    const listed = new Map(snapshots.map((s) => [String(s.conversationId), s]));
    for (const [id, c] of this.conversations) {
      const s = listed.get(id);
      if (!s || c.lastSeq > s.lastSeq) this.conversations.delete(id);
    }
    for (const s of snapshots) this.applyConversation(s);
    this.changed({ list: true });
  }

  applyPresence(p) {
    this.presence.set(p.username, p);
    this.changed({ presence: p.username });
  }

  /**
   * The connection is gone: what is known of everyone's presence is from
   * before, and nobody tells us of changes until the re-subscription after
   * reconnecting answers (each answer replaces its entry). Until then an
   * entry is stale.
   */
  markPresenceStale() {
    for (const [u, p] of this.presence) if (!p.stale) this.presence.set(u, { ...p, stale: true });
    this.changed({ presence: null });
  }

  applyTyping(t, now = Date.now()) {
    if (this.me && t.userId === this.me.userId) return;
    const key = String(t.conversationId);
    if (!this.typing.has(key)) this.typing.set(key, new Map());
    this.typing.get(key).set(t.username, now + (t.expiresInMs || 6000));
    this.changed({ conversation: key, typing: true });
  }

  /** Usernames typing in conversation `id` now. Expired entries are dropped. */
  typingIn(id, now = Date.now()) {
    const m = this.typing.get(String(id));
    if (!m) return [];
    for (const [u, at] of m) if (at <= now) m.delete(u);
    return [...m.keys()];
  }

  unread(c) {
    return c.lastSeq > c.readSeq ? c.lastSeq - c.readSeq : 0n;
  }

  /** Messages held for `c`, ascending by seq. */
  messagesOf(c) {
    return [...c.messages.values()].sort((a, b) => (a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0));
  }

  oldestSeq(c) {
    let min = null;
    for (const m of c.messages.values()) if (min === null || m.seq < min) min = m.seq;
    return min;
  }

  /** Current conversations, most recently active first (§7.4). */
  sortedConversations() {
    return [...this.conversations.values()]
      .filter((c) => c.known && !c.left)
      .sort((a, b) => (a.activityMs !== b.activityMs ? (a.activityMs > b.activityMs ? -1 : 1) : a.conversationId > b.conversationId ? -1 : 1));
  }

  /** A conversation's display name. */
  nameOf(c) {
    if (c.kind === ConversationKind.DIRECT) return c.peerUsername || "(direct)";
    return c.title || "(untitled group)";
  }

  findDirect(username) {
    for (const c of this.conversations.values()) if (c.kind === ConversationKind.DIRECT && c.peerUsername === username) return c;
    return null;
  }
}

/** A one-line description of a membership change, for the message list and previews. */
export function describeMembership(m) {
  const ch = m.membership;
  const who = m.senderUsername || "someone";
  const names = ch.users.map((u) => u.username).join(", ");
  switch (ch.action) {
    case MembershipAction.CREATED: {
      // CREATED lists every initial member, the creator first (§7.3): "with"
      // names the others only.
      const others = ch.users.filter((u) => u.userId !== m.senderId && u.username !== m.senderUsername).map((u) => u.username);
      return `${who} created the group${others.length ? ` with ${others.join(", ")}` : ""}`;
    }
    case MembershipAction.ADDED:
      return `${who} added ${names}`;
    case MembershipAction.REMOVED:
      return `${who} removed ${names}`;
    case MembershipAction.LEFT:
      return `${who} left`;
    case MembershipAction.RENAMED:
      return `${who} renamed the group to “${ch.title}”`;
    case MembershipAction.ROLE_CHANGED: {
      const role = { 1: "owner", 2: "admin", 3: "member" }[ch.role] ?? "a new role";
      return `${names} ${ch.users.length === 1 ? "is" : "are"} now ${role}`;
    }
    default:
      return `${who} changed the group`;
  }
}

// ---------------------------------------------------------------------------
// Date separators in the message view
// ---------------------------------------------------------------------------

/** The local calendar day of `ms` ("2024-3-10"): equal for two times of one day. */
export function dayKey(ms) {
  const d = new Date(Number(ms));
  return `${d.getFullYear()}-${d.getMonth() + 1}-${d.getDate()}`;
}

/** "Today", "Yesterday" or the local date of `ms`, seen from `now`. */
export function dayLabel(ms, now = Date.now()) {
  const key = dayKey(ms);
  if (key === dayKey(now)) return "Today";
  // The calendar's yesterday, not now − 24 h: days around a DST change are 23 or 25 h long.
  const y = new Date(Number(now));
  y.setDate(y.getDate() - 1);
  if (key === dayKey(y.getTime())) return "Yesterday";
  return new Date(Number(ms)).toLocaleDateString();
}

/**
 * The separators for a list of times in ascending order (sent_at_ms of the
 * messages shown): for each index, the label of the line to put before it
 * (its first message of a local calendar day) or null.
 */
export function dateSeparators(times, now = Date.now()) {
  let last = null;
  return times.map((ms) => {
    const key = dayKey(ms);
    if (key === last) return null;
    last = key;
    return dayLabel(ms, now);
  });
}
