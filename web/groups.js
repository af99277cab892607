// Who may do what in a group (PROTOCOL.md §7.3), so the UI offers only the
// actions the server would allow. The server checks again; a refusal it
// sends anyway is shown. No DOM, no network.

import { MemberRole } from "./proto.js";

const { OWNER, ADMIN, MEMBER } = MemberRole;

/** "Owner", "Admin", "Member". */
export function roleLabel(role) {
  return { [OWNER]: "Owner", [ADMIN]: "Admin", [MEMBER]: "Member" }[role] ?? "Member";
}

/** Owners and admins add members and rename the group. */
export function canManage(role) {
  return role === OWNER || role === ADMIN;
}

/**
 * What the user `meId` (whose role is `myRole`) may do to `target` (a
 * Member of `members`, the group's MemberList):
 * `remove` — owners remove anyone but owners, admins only members, nobody
 * themselves (they leave); `roles` — the roles the user may give the target
 * (owner only; another owner's role is theirs alone; an owner steps down
 * only while another owner remains).
 */
export function memberActions(myRole, meId, target, members) {
  const self = target.userId === meId;
  const remove = !self && ((myRole === OWNER && target.role !== OWNER) || (myRole === ADMIN && target.role === MEMBER));
  let roles = [];
  if (myRole === OWNER) {
    if (!self && target.role !== OWNER) roles = [OWNER, ADMIN, MEMBER].filter((r) => r !== target.role);
    if (self && members.some((m) => m.userId !== meId && m.role === OWNER)) roles = [ADMIN, MEMBER];
  }
  return { remove, roles };
}

const byTenure = (a, b) => (a.joinedAtMs !== b.joinedAtMs ? (a.joinedAtMs < b.joinedAtMs ? -1 : 1) : a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0);

/**
 * Who becomes owner when `meId` leaves (§7.3): null unless they are the
 * last owner and others remain; then the longest-standing admin, else the
 * longest-standing member (earliest joined_at_ms, then lowest user_id).
 */
export function nextOwner(members, meId) {
  const me = members.find((m) => m.userId === meId);
  if (!me || me.role !== OWNER) return null;
  const others = members.filter((m) => m.userId !== meId);
  if (others.length === 0 || others.some((m) => m.role === OWNER)) return null;
  const admins = others.filter((m) => m.role === ADMIN).sort(byTenure);
  return admins[0] ?? [...others].sort(byTenure)[0];
}

/** Members for display: owners, then admins, then members, each by tenure. */
export function sortMembers(members) {
  const rank = (r) => ({ [OWNER]: 0, [ADMIN]: 1 })[r] ?? 2;
  return [...members].sort((a, b) => rank(a.role) - rank(b.role) || byTenure(a, b));
}
