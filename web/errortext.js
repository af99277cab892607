// What a person reads when the server (or validate.js, with the code the
// server would use) refuses something they did: one sentence per error code
// of spec/errors.md that a person can cause, phrased for the action it
// answered. No DOM; app.js shows it next to the code name and the server's
// own message (never parsed: errors.md).

/** "3 seconds", "2 minutes": a retry_after_ms as people say it (rounded up). */
export function waitText(ms) {
  const s = Math.max(1, Math.ceil(Number(ms || 0) / 1000));
  if (s < 60) return s === 1 ? "a second" : `${s} seconds`;
  const m = Math.ceil(s / 60);
  if (m < 60) return m === 1 ? "a minute" : `${m} minutes`;
  const h = Math.ceil(m / 60);
  return h === 1 ? "an hour" : `${h} hours`;
}

/**
 * The friendly text for error `code` (its name, e.g. "REFUSED_BY_USER"), or
 * null when there is nothing better to say than the server's message.
 *
 * `action`: the request refused ("openDirect", "createGroup", "addMembers",
 *   "send", "login", "signup", "changePassword", "setBlocked",
 *   "setPrivacy", "removeMember", "setRole", "renameGroup", "leaveGroup").
 * `who`: the one user the request named (a DM's peer, a single name in a
 *   list), when there is exactly one.
 * `youBlocked`: the requester has `who` on their own block list.
 * `retryAfterMs`: the Error frame's retry_after_ms.
 */
export function friendlyText(code, { action = "", who = "", youBlocked = false, retryAfterMs = 0 } = {}) {
  const wait = retryAfterMs ? waitText(retryAfterMs) : "a moment";
  switch (code) {
    case "INVALID_CREDENTIALS":
      return action === "changePassword" ? "Your current password is wrong." : "Wrong username or password.";
    case "INVALID_TOKEN":
      return "This sign-in is no longer valid; log in again.";
    case "USERNAME_TAKEN":
      return "That username is taken.";
    case "DEVICE_REVOKED":
      return "This device was signed out from another one.";
    case "INVALID_ARGUMENT":
      if (action === "changePassword") return "The new password is not allowed: use at least 8 characters, not your username, not one character repeated, not a run like “12345678”, and not a common password.";
      if (action === "signup") return "Check the username and password rules.";
      return null;
    case "MESSAGE_TOO_LONG":
      return "The message is too long; shorten or split it.";
    case "EMPTY_MESSAGE":
      return "The message is empty.";
    case "TOO_MANY_ITEMS":
      if (action === "setBlocked") return "Your block list is full; unblock someone first.";
      return "Too many names at once; split them into smaller batches.";
    case "USER_NOT_FOUND":
      if (action === "setRole") return who ? `${who} is no longer a member of this group.` : "That user is no longer a member of this group.";
      return who ? `There is no user called “${who}”.` : "There is no user with that name.";
    case "CONVERSATION_NOT_FOUND":
      return "You are no longer a member of this conversation.";
    case "DEVICE_NOT_FOUND":
      return "That device is already signed out.";
    case "PERMISSION_DENIED":
      if (action === "setRole") return "Your role does not allow this change: only owners change roles, and an owner's role can be changed only by that owner (who steps down only while another owner remains).";
      if (action === "removeMember") return "Your role does not allow removing them: owners cannot be removed, and admins may remove only members.";
      if (action === "renameGroup") return "Only owners and admins can rename this group.";
      if (action === "addMembers") return "Only owners and admins can add members.";
      return "You may not do that in this group.";
    case "NOT_A_GROUP":
      return "That is a direct conversation, not a group.";
    case "CANNOT_MESSAGE_SELF":
      return "That is you.";
    case "FEATURE_UNAVAILABLE":
      return "This server does not offer that.";
    case "GROUP_FULL":
      return "The group would be too large.";
    case "TOO_MANY_DEVICES":
      return "This account has as many devices as it may. Sign out on one of them, or sign every other device out from one that is signed in.";
    case "REFUSED_BY_USER":
      return refusedText(action, who, youBlocked);
    case "RATE_LIMITED":
      if (action === "changePassword" || action === "login") return `Too many attempts; try again in ${wait}.`;
      return `Too many requests; try again in ${wait}.`;
    case "TOO_MANY_IN_FLIGHT":
      return "Too many requests at once; wait a moment.";
    case "SERVER_BUSY":
      return `The server is busy; try again in ${wait}.`;
    case "INTERNAL":
      return "Something went wrong on the server; check whether it was done before trying again.";
    case "UNAVAILABLE":
      return "The server cannot save changes right now; nothing was changed. Try again shortly.";
    default:
      return null;
  }
}

// REFUSED_BY_USER (§6.6, §6.7): a block in either direction, or the other
// user's privacy settings; deliberately not said which. Sends are refused
// only by a block (a setting never closes a DM that exists).
function refusedText(action, who, youBlocked) {
  if (youBlocked && who) {
    const verb = { send: "send them messages", openDirect: "message them", createGroup: "add them to a group", addMembers: "add them to a group" }[action] ?? "do that";
    return `You have blocked ${who}. Unblock them to ${verb}.`;
  }
  const name = who || "This user";
  switch (action) {
    case "openDirect":
      return `${name} doesn't accept new conversations from you.`;
    case "send":
      return `${who || "They"} doesn't accept messages from you.`;
    case "createGroup":
      return who ? `${who} doesn't accept being added to groups by you, so the group was not created.` : "Someone you listed doesn't accept being added to groups by you, so the group was not created.";
    case "addMembers":
      return who ? `${who} doesn't accept being added to groups by you; nobody was added.` : "Someone you listed doesn't accept being added to groups by you; nobody was added.";
    default:
      return `${name} doesn't accept this from you.`;
  }
}
