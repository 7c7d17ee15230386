// Roles and what each may do: a mirror of the matrix in docs/protocol.md ("Stages, roles and
// permissions"). The server decides (rooms/roles.py); the client only uses this to show the controls
// a person may use, so a refusal is the exception, not the way to find out.

export const ROLES = ['host', 'moderator', 'speaker', 'audience'];

export const ROLE_LABELS = { host: 'Host', moderator: 'Moderator', speaker: 'Speaker', audience: 'Audience' };

export const EMOJI = ['👏', '❤️', '👍', '😂', '😮', '🎉', '🙏'];

const MODERATING = new Set(['host', 'moderator']);

/** May publish camera and microphone. */
export const canPublish = (role) => role === 'host' || role === 'speaker';

/** May lock the stage, invite and demote, mute, remove, ban, pin, run polls and Q&A. */
export const canModerate = (role) => MODERATING.has(role);

/** Host-only: start and end the stage, make or unmake moderators. */
export const isHost = (role) => role === 'host';

/** May raise a hand and answer an invitation. */
export const isAudience = (role) => role === 'audience';

/**
 * The moderation actions `actorRole` may take on `target` (a participant object), in menu order.
 * Moderators and the host are never removed, banned or chat-muted (the host must first make a
 * moderator audience again).
 */
export function actionsOn(actorRole, target, { invited = false } = {}) {
  if (!canModerate(actorRole) || !target || target.self) return [];
  const actions = [];
  const role = target.role;
  const protectedRole = MODERATING.has(role);
  if (role === 'audience') {
    if (!invited) actions.push('invite');
    if (target.hand_raised) actions.push('lower-hand');
  }
  // A screen share, anyone's: a moderator can end it (moderation.stop_share).
  if (target.sharing?.video || target.sharing?.audio) actions.push('stop-share');
  if (role === 'speaker') {
    actions.push('demote');
    actions.push(target.moderator_muted?.audio ? 'unmute-audio' : 'mute-audio');
    actions.push(target.moderator_muted?.video ? 'unmute-video' : 'mute-video');
  }
  // The host makes an audience member moderator (a speaker must first be moved to the audience).
  if (isHost(actorRole) && role === 'audience') actions.push('make-moderator');
  if (isHost(actorRole) && role === 'moderator') actions.push('unmake-moderator');
  if (!protectedRole) {
    actions.push(target.chat_muted ? 'chat-unmute' : 'chat-mute');
    actions.push('remove', 'ban');
  }
  return actions;
}
