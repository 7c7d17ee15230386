// Moderation: the actions of the participant menu turned into commands (with a reason prompt where
// one is due), and the stage controls card (start, lock, slow mode, end).

import { confirmDialog, promptDialog } from './dialogs.js';
import { icon } from './icons.js';
import { canModerate, isHost } from './roles.js';

const SLOW_MODES = [[0, 'Off'], [5, '5 s'], [10, '10 s'], [30, '30 s'], [60, '1 min'], [300, '5 min']];

/** Run moderation `action` on `person`; resolves with a confirmation for the user, or null. */
export async function runAction(session, action, person) {
  const id = person.id;
  const name = person.name;
  switch (action) {
    case 'invite':
      await session.command('speaker.invite', { participant_id: id });
      return `Invitation sent to ${name}.`;
    case 'lower-hand':
      await session.command('hand.lower', { participant_id: id });
      return null;
    case 'stop-share':
      await session.command('moderation.stop_share', { participant_id: id });
      return `${name}’s screen share was stopped.`;
    case 'demote':
      await session.command('speaker.demote', { participant_id: id });
      return `${name} is back in the audience.`;
    case 'mute-audio':
    case 'unmute-audio':
    case 'mute-video':
    case 'unmute-video': {
      const muted = action.startsWith('mute');
      const kind = action.endsWith('audio') ? 'audio' : 'video';
      await session.command('moderation.mute', { participant_id: id, kind, muted });
      return null;
    }
    case 'make-moderator':
      await session.command('role.set', { participant_id: id, role: 'moderator' });
      return `${name} is now a moderator.`;
    case 'unmake-moderator':
      await session.command('role.set', { participant_id: id, role: 'audience' });
      return `${name} is no longer a moderator.`;
    case 'chat-mute':
    case 'chat-unmute':
      await session.command('chat.mute', { participant_id: id, muted: action === 'chat-mute' });
      return action === 'chat-mute' ? `${name} is muted in the chat.` : `${name} may write in the chat again.`;
    case 'remove': {
      const reason = await promptDialog({
        title: `Remove ${name}?`, text: 'They are disconnected at once and may rejoin later.',
        label: 'Reason (shown to them, optional)', placeholder: 'e.g. off topic', confirmLabel: 'Remove',
        danger: true, iconName: 'leave', testid: 'remove-dialog',
      });
      if (reason === null) return null;
      await session.command('moderation.remove', { participant_id: id, reason });
      return `${name} was removed.`;
    }
    case 'ban': {
      const reason = await promptDialog({
        title: `Ban ${name}?`, text: 'They are disconnected and cannot come back to this stage.',
        label: 'Reason', placeholder: 'e.g. abusive comments', confirmLabel: 'Ban', danger: true, required: true,
        requiredMessage: 'Please give a reason: it is shown to them and kept with the ban.',
        iconName: 'ban', testid: 'ban-dialog',
      });
      if (reason === null) return null;
      await session.command('moderation.ban', { participant_id: id, reason });
      return `${name} was banned.`;
    }
    default:
      throw new Error(`unknown action ${action}`);
  }
}

/** The stage controls card in the People tab, for the host and moderators. */
export class StageControls {
  #session = null;

  /** els: {root, state, start, lock, slowMode, end}; onError(err), onInfo(message). */
  constructor(els, { onError, onInfo }) {
    this.els = els;
    this.onError = onError;
    this.onInfo = onInfo;
    els.slowMode.replaceChildren(...SLOW_MODES.map(([value, label]) => {
      const option = document.createElement('option');
      option.value = String(value);
      option.textContent = label;
      return option;
    }));
    els.start.addEventListener('click', () => this.#run(els.start, 'stage.start', {}, 'The stage is live.'));
    els.lock.addEventListener('click', () => {
      const locked = !this.#session?.stage?.locked;
      this.#run(els.lock, 'stage.lock', { locked }, locked ? 'The stage is locked: nobody new can join.' : 'The stage is open to new participants.');
    });
    els.slowMode.addEventListener('change', () => {
      const seconds = Number(els.slowMode.value);
      this.#run(els.slowMode, 'chat.slow_mode', { seconds }, seconds ? `Slow mode: one comment every ${seconds} s.` : 'Slow mode is off.');
    });
    els.end.addEventListener('click', async () => {
      const sure = await confirmDialog({
        title: 'End the stage for everyone?', text: 'Everyone is disconnected and the stage cannot be reopened.',
        confirmLabel: 'End stage', danger: true, iconName: 'stop', testid: 'end-dialog',
      });
      if (sure) this.#run(els.end, 'stage.end', {}, null);
    });
  }

  attach(session) {
    this.#session = session;
    this.render();
  }

  render() {
    const session = this.#session;
    const role = session?.role;
    const { root, state, start, lock, slowMode, end } = this.els;
    root.hidden = !(session?.state === 'joined' && canModerate(role));
    if (root.hidden) return;
    const stage = session.stage ?? {};
    const live = stage.state === 'live';
    state.textContent = `${live ? 'Live' : stage.state === 'scheduled' ? 'Scheduled' : stage.state ?? ''}${stage.locked ? ' · Locked' : ''}`;
    state.dataset.state = stage.state ?? '';
    start.hidden = !(isHost(role) && stage.state === 'scheduled');
    end.hidden = !isHost(role);
    lock.setAttribute('aria-pressed', String(Boolean(stage.locked)));
    lock.innerHTML = `${icon(stage.locked ? 'lock' : 'unlock')}<span class="btn-label">${stage.locked ? 'Unlock' : 'Lock'}</span>`;
    lock.title = stage.locked ? 'Let new participants join again' : 'Stop new participants from joining';
    const slow = String(session.model?.slowModeS ?? 0);
    if (![...slowMode.options].some((o) => o.value === slow)) {
      const option = document.createElement('option');
      option.value = slow;
      option.textContent = `${slow} s`;
      slowMode.append(option);
    }
    if (document.activeElement !== slowMode) slowMode.value = slow;
  }

  async #run(control, type, fields, done) {
    control.disabled = true;
    try {
      await this.#session.command(type, fields);
      if (done) this.onInfo(done);
    } catch (err) {
      this.onError(err);
    } finally {
      control.disabled = false;
      this.render();
    }
  }
}
