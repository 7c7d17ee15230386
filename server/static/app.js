// The stage page (/s/{id}): join screen, stage, dock, sidebar tabs and end screen. Protocol work lives
// in session.js, stage state in model.js; each sidebar tab is its own module.

import { hydrateIcons, icon } from './icons.js';
import { StageSession } from './session.js';
import { SignallingError } from './signalling.js';
import { ROLES, ROLE_LABELS, canModerate, isAudience } from './roles.js';
import { TileGrid, Toasts, figuresText, qualityIndicator } from './ui.js';
import { PeoplePanel } from './people.js';
import { ChatPanel } from './chat.js';
import { QuestionsPanel } from './qa.js';
import { PollsPanel } from './polls.js';
import { ReactionBar, ReactionLayer } from './reactions.js';
import { StageControls, runAction } from './moderation.js';
import { Dialog } from './dialogs.js';
import { Tabs } from './tabs.js';
import { ConsentPrompt, PrivacyPanel } from './consent.js';
import { RecordingControls, RecordingIndicator } from './recording.js';
import { renderLayerChoice, setUpLayerChoice } from './layers.js';

const STAGE_ID = /^[A-Za-z0-9_-]{1,64}$/;
const NAME_KEY = 'medstage.name';
const IDENTITY_KEY = 'medstage.identity';
const $ = (id) => document.getElementById(id);

const stageId = decodeURIComponent(window.location.pathname.split('/').filter(Boolean)[1] ?? '');
const query = new URLSearchParams(window.location.search);
let ownFigures = ''; // our figures from our own connection report, for the quality indicator's tooltip
const initialRole = ROLES.includes(query.get('role')) ? query.get('role') : 'audience';

const toasts = new Toasts($('toasts'));
const info = (message) => toasts.show(message, { kind: 'info', timeoutMs: 4500 });
const grid = new TileGrid($('grid'), { onSoundBlocked: () => { $('sound-button').hidden = false; } });
const reactionLayer = new ReactionLayer($('reaction-layer'));
let session = null;
let stageTitle = stageId;
let invitationDialog = null;
let lastModeratorMuted = { audio: false, video: false };
let consentPrompt = null; // the open consent prompt: {prompt, promise, session}

/** Test hook: the live objects a test may inspect (e.g. `await medstage.subscriberPc.getStats()`). */
window.medstage = {
  get state() { return session?.state ?? 'idle'; },
  /** While a lost connection comes back by itself: {since, attempt, trying, nextAt, error}, else null. */
  get reconnecting() { return session?.reconnecting ? { ...session.reconnecting } : null; },
  get participantId() { return session?.participantId ?? null; },
  get role() { return session?.role ?? null; },
  get subscriberPc() { return session?.subscriberPc ?? null; },
  get publisherPc() { return session?.publisherPc ?? null; },
  /** Our screen share's own publisher connection while we share (share.js). */
  get screenPc() { return session?.screen.pc ?? null; },
  get marks() { return session?.marks ?? {}; },
  get session() { return session; },
  get model() { return session?.model ?? null; },
  get reactions() { return { ...reactionLayer.received }; },
  /** The participant each subscriber slot currently carries: [{slot, mid, kind, participantId}]. */
  get slots() { return session?.slotOwners() ?? []; },
  /** Recording and consent as the page knows them: {recording, consent, policy, consentOf}. */
  get recording() { return session?.model ? { ...session.model.recording } : null; },
  get consent() { return session?.model ? { ...session.model.consent } : null; },
  // slot, role, consent.* and recording.* events with performance.now() (`at`; the server's is `serverAt`)
  events: [],
};

/**
 * The access token for a (re)join: the one in the link the platform gave (`?token=`), else, on a node
 * in development mode, one it hands out (`POST /api/dev/token`) for this stage, name, role and identity.
 */
let devToken = null; // the last one handed out: reused while the node that hands them out is unreachable

async function accessToken(current) {
  const fromLink = query.get('token');
  if (fromLink) return fromLink;
  let response;
  try {
    // The session's node, which may not be the page's: after its own node died the page goes on
    // through another (session.js), and that one answers (it allows its sibling nodes' origins).
    response = await fetch(`${current.httpUrl}/api/dev/token`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ stage: stageId, name: current.name, role: current.role, identity: current.identity }),
    });
  } catch (err) {
    if (devToken) return devToken; // tokens last hours: the signalling socket decides
    throw err;
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok || !body.token) {
    throw new SignallingError(
      body.code || 'token_missing',
      response.status === 403 ? 'This link has no access token: ask the organiser for your personal link.' : (body.detail || `No access token (${response.status}).`),
    );
  }
  devToken = body.token;
  return body.token;
}

/** Who this browser is across visits (bans apply to it): generated once, kept in localStorage. */
function identity() {
  let id = localStorage.getItem(IDENTITY_KEY);
  if (!id) {
    id = crypto.randomUUID?.() ?? Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
    localStorage.setItem(IDENTITY_KEY, id);
  }
  return id;
}

function describeError(err) {
  const messages = {
    not_allowed: 'Your role does not allow that.',
    not_found: 'That no longer exists.',
    not_invited: 'The invitation is no longer valid.',
    hand_not_raised: 'That hand is no longer raised.',
    already_voted: 'You have already voted.',
    poll_closed: 'This poll is closed.',
    stage_full: 'The stage is full: every speaker slot is taken.',
    stage_not_live: 'The stage has not started yet.',
    chat_muted: 'A moderator has muted you in the chat.',
    moderator_muted: 'A moderator muted this; only a moderator can allow it again.',
    timeout: 'The server did not answer. Check your connection.',
    disconnected: 'You are not connected to the stage.',
    consent_required: 'Speaking on this stage needs your consent to record your camera and microphone.',
    policy_mismatch: 'The recording policy has changed. Rejoin the stage to read the new version.',
    no_consent: 'You have not granted anything to withdraw.',
    already_recording: 'The session is already being recorded.',
    not_recording: 'The session is not being recorded.',
  };
  return messages[err?.code] ?? err?.message ?? 'Something went wrong.';
}

const showError = (err) => toasts.show(describeError(err));

// --- the sidebar -----------------------------------------------------------------------------

const people = new PeoplePanel($('participants'), $('participant-count'), {
  onAction: async (action, person) => {
    try {
      const done = await runAction(session, action, person);
      if (done) info(done);
    } catch (err) {
      showError(err);
    }
  },
});
const chat = new ChatPanel({
  list: $('comments'), form: $('comment-form'), input: $('comment-input'), send: $('comment-send'),
  error: $('comment-error'), slowMode: $('slow-mode'), counter: $('comment-counter'),
  banner: $('pinned-banner'), bannerText: $('pinned-text'), bannerAuthor: $('pinned-author'), bannerUnpin: $('pinned-unpin'),
}, { onError: showError });
const questions = new QuestionsPanel({
  list: $('questions'), form: $('question-form'), input: $('question-input'), submit: $('question-submit'), error: $('question-error'),
}, { onError: showError });
const polls = new PollsPanel({
  list: $('polls'), leaderboard: $('leaderboard'), newButton: $('poll-new'), formRoot: $('poll-form-root'), toolbar: $('poll-toolbar'),
}, { onError: showError });
const stageControls = new StageControls({
  root: $('stage-controls'), state: $('stage-state'), start: $('stage-start'), lock: $('stage-lock'),
  slowMode: $('slow-mode-select'), end: $('stage-end'),
}, { onError: showError, onInfo: info });
const recordingControls = new RecordingControls({
  root: $('recording-controls'), status: $('recording-status'), start: $('recording-start'), stop: $('recording-stop'),
  summary: $('consent-summary'),
}, { onError: showError, onInfo: info });
const recordingIndicator = new RecordingIndicator({ root: $('chip-rec'), elapsed: $('rec-elapsed') });
const privacy = new PrivacyPanel({
  getModel: () => (session?.state === 'joined' ? session.model : null),
  give: (scopes) => session.giveConsent(scopes, 'settings'),
  withdraw: () => session.withdrawConsent(),
  onInfo: info,
  onClose: () => $('privacy-button').setAttribute('aria-expanded', 'false'),
});
new ReactionBar($('reaction-bar'), { onReact: (emoji) => session?.react(emoji) });

const tabs = new Tabs({ onSelect: (name) => { if (name === 'chat') $('comments').scrollTop = $('comments').scrollHeight; } });

// --- rendering -------------------------------------------------------------------------------

function setTitle(title) {
  stageTitle = title || stageId;
  $('stage-title').textContent = stageTitle;
  $('stage-id').textContent = stageTitle === stageId ? '' : stageId;
  document.title = `${stageTitle} · medstage`;
}

function setButton(button, iconName, label, ariaLabel = label) {
  button.innerHTML = `${icon(iconName)}<span class="btn-label">${label}</span>`;
  button.setAttribute('aria-label', ariaLabel);
}

function renderStage() {
  const items = [];
  if (session?.localStream && session.publishing === 'live') {
    items.push({
      key: 'self',
      participantId: session.participantId,
      name: session.name,
      role: session.role,
      stream: session.localStream,
      self: true,
      muted: session.muted,
      moderatorMuted: session.moderatorMuted,
      hasVideo: session.localStream.getVideoTracks().length > 0,
      quality: session.self?.quality,
      qualityDetail: ownFigures,
    });
  }
  const shares = [];
  if (session?.screen.stream && session.screen.state === 'live') {
    shares.push({
      key: 'self:screen',
      participantId: session.participantId,
      name: `${session.name}’s screen`,
      stream: session.screen.stream,
      self: true,
      share: true,
      hasVideo: true,
    });
  }
  for (const tile of session?.remoteTiles() ?? []) {
    const share = tile.source === 'screen';
    const name = tile.participant?.name;
    (share ? shares : items).push({
      key: `${tile.participantId}:${tile.source}`,
      participantId: tile.participantId,
      name: share ? `${name || 'Participant'}’s screen` : name,
      role: share ? null : tile.participant?.role,
      stream: tile.stream,
      muted: share ? tile.participant?.share_muted : tile.participant?.muted,
      moderatorMuted: share ? null : tile.participant?.moderator_muted,
      hasVideo: tile.kinds.includes('video'),
      quality: share ? null : tile.participant?.quality,
      share,
    });
  }
  // A share is shown large, first, and the cameras small beside it (ui.js, TileGrid).
  items.unshift(...shares);
  grid.render(items);
  $('empty').hidden = items.length > 0;
  const joined = session?.state === 'joined';
  const mayPublish = session?.canPublish && joined;
  const scheduled = session?.stage?.state === 'scheduled';
  let title = 'Nobody is on stage yet';
  let text = 'The session will appear here as soon as a speaker goes on stage.';
  if (scheduled) {
    title = 'The stage has not started yet';
    text = session?.role === 'host' ? 'Press “Start stage” in the People tab when you are ready.' : 'The host will start it shortly.';
  } else if (mayPublish && session.publishing === 'starting') {
    title = 'Starting your camera…';
    text = 'Your camera and microphone go live in a moment.';
  } else if (mayPublish) {
    title = 'You are not on stage yet';
    text = 'Press “Go on stage” to share your camera and microphone with the audience.';
  } else if (joined && isAudience(session.role)) {
    text = 'The session will appear here as soon as a speaker goes on stage. Raise your hand to ask to speak.';
  }
  $('empty-title').textContent = title;
  $('empty-text').textContent = text;
}

function renderRoster() {
  if (!session || session.state !== 'joined') {
    people.render([], { role: 'audience', hands: [], invited: new Set() });
    return;
  }
  const live = session.publishing === 'live';
  const tracks = session.localStream?.getTracks() ?? [];
  const self = {
    ...(session.self ?? {}),
    id: session.participantId,
    name: session.name,
    role: session.role,
    self: true,
    publishing: {
      audio: live && tracks.some((t) => t.kind === 'audio'),
      video: live && tracks.some((t) => t.kind === 'video'),
    },
    muted: session.muted,
  };
  const model = session.model;
  let consent = null;
  if (canModerate(session.role) && model?.mayRecord) {
    consent = new Map(model.consentOf);
    if (model.consent.mine) consent.set(session.participantId, model.consent.mine);
  }
  people.render([self, ...session.participants.values()], {
    role: session.role,
    hands: model?.hands ?? [],
    invited: new Set(model?.invitations.keys() ?? []),
    consent,
    // Moderators: each person's quality links to their connection report (docs/console.md).
    report: canModerate(session.role) ? (id) => reportUrl(id, true) : null,
  });
}

function renderControls() {
  const joined = session?.state === 'joined';
  const publishing = session?.publishing ?? 'off';
  const live = joined && publishing === 'live';
  $('dock').hidden = !joined;
  renderLayerChoice(session);
  const publish = $('publish-button');
  publish.hidden = !(joined && session.canPublish && publishing !== 'live');
  publish.disabled = publishing === 'starting';
  publish.querySelector('.btn-label').textContent = publishing === 'starting' ? 'Starting camera…' : 'Go on stage';
  for (const id of ['mic-button', 'camera-button', 'stop-button']) $(id).hidden = !live;
  const share = $('share-button');
  const sharing = session?.screen.state ?? 'off';
  share.hidden = !(joined && session.canPublish && typeof navigator.mediaDevices?.getDisplayMedia === 'function');
  share.disabled = sharing === 'starting';
  share.setAttribute('aria-pressed', String(sharing === 'live'));
  share.classList.toggle('is-sharing', sharing === 'live');
  if (sharing === 'live') setButton(share, 'stop', 'Stop sharing');
  else setButton(share, 'screen', sharing === 'starting' ? 'Starting share…' : 'Share screen');
  if (live) {
    const forced = session.moderatorMuted;
    for (const [id, kind, on, off, noun] of [['mic-button', 'audio', 'mic', 'micOff', 'microphone'], ['camera-button', 'video', 'camera', 'cameraOff', 'camera']]) {
      const button = $(id);
      const muted = session.muted[kind] || forced[kind];
      button.setAttribute('aria-pressed', String(muted));
      if (kind === 'audio') setButton(button, muted ? off : on, muted ? 'Unmute' : 'Mute', muted ? 'Unmute microphone' : 'Mute microphone');
      else setButton(button, muted ? off : on, muted ? 'Start video' : 'Stop video');
      // A moderator's mute: the speaker cannot lift it (the server would refuse with moderator_muted).
      if (forced[kind]) {
        button.setAttribute('aria-disabled', 'true');
        button.title = `A moderator muted your ${noun}. Only a moderator can allow it again.`;
        button.classList.add('is-forced');
      } else {
        button.removeAttribute('aria-disabled');
        button.title = button.getAttribute('aria-label');
        button.classList.remove('is-forced');
      }
    }
  }
  const hand = $('hand-button');
  hand.hidden = !(joined && isAudience(session.role));
  if (!hand.hidden) {
    const raised = session.model?.hands.includes(session.participantId) ?? false;
    hand.setAttribute('aria-pressed', String(raised));
    setButton(hand, 'hand', raised ? 'Lower hand' : 'Raise hand');
    hand.classList.toggle('is-raised', raised);
  }
}

function renderChips() {
  const joined = session?.state === 'joined';
  const stage = session?.stage;
  const state = $('chip-state');
  state.hidden = !joined || !stage?.state;
  if (!state.hidden) {
    state.textContent = { live: 'Live', scheduled: 'Scheduled', ended: 'Ended' }[stage.state] ?? stage.state;
    state.className = `chip chip-${stage.state}`;
  }
  $('chip-locked').hidden = !joined || !stage?.locked;
  const role = $('chip-role');
  role.hidden = !joined;
  if (joined) {
    role.textContent = `You: ${ROLE_LABELS[session.role] ?? session.role}`;
    role.className = `chip chip-role badge-${session.role}`;
  }
  if (joined && stage?.title) setTitle(stage.title);
  const quality = $('chip-quality');
  const level = joined ? session.self?.quality : null;
  quality.hidden = !level;
  quality.replaceChildren(...(level ? [qualityIndicator(level, ownFigures, 'self-quality')] : []));
  renderRecording();
}

// --- connection quality ----------------------------------------------------------------------

/** A participant's connection report (docs/protocol.md): the person and moderators may read it. */
function reportUrl(participantId, withToken = false) {
  const token = query.get('token') || devToken;
  const url = `${session.httpUrl}/api/stages/${encodeURIComponent(stageId)}/participants/${encodeURIComponent(participantId)}/connection`;
  return withToken && token ? `${url}?access_token=${encodeURIComponent(token)}` : url;
}

/** Our connection report (GET …/participants/{pid}/connection: the person may read their own). */
async function refreshOwnFigures() {
  const token = query.get('token') || devToken;
  if (!session || session.state !== 'joined' || !token || !session.participantId) return;
  try {
    const response = await fetch(reportUrl(session.participantId), { headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' } });
    if (!response.ok) return;
    const report = await response.json();
    const parts = [report.down && `down: ${figuresText(report.down.figures)}`, report.up && `up: ${figuresText(report.up.figures)}`];
    const text = parts.filter((p) => p && !p.endsWith(': ')).join('; ');
    if (text !== ownFigures) {
      ownFigures = text;
      renderChips();
      renderStage();
    }
  } catch {
    // a figure for a tooltip: the next round tries again
  }
}
setInterval(refreshOwnFigures, 10000);

/** The REC indicator, the Privacy button and the moderators' recording card. */
function renderRecording() {
  const joined = session?.state === 'joined';
  const model = joined ? session.model : null;
  recordingIndicator.render(model);
  const button = $('privacy-button');
  button.hidden = !(model?.mayRecord);
  if (!button.hidden) {
    const mine = model.consent.mine;
    button.dataset.decision = mine?.decision ?? 'none';
    button.title = mine ? 'Your recording consent: see or change it' : 'You have not decided about recording yet';
  }
  recordingControls.render();
  privacy.render();
}

const CONNECTION_LABELS = {
  idle: 'Not connected', connecting: 'Connecting…', joined: 'Connected', leaving: 'Leaving…',
  left: 'Left', disconnected: 'Disconnected', ended: 'Ended', failed: 'Not connected', reconnecting: 'Reconnecting…',
};

let reconnectTicker = null; // re-renders the banner's countdown every second while reconnecting

/** A lost connection that comes back by itself: a banner over the stage (not a modal), with a countdown. */
function renderReconnecting() {
  const reconnecting = session?.reconnecting;
  const screen = $('ended-screen');
  const banner = Boolean(reconnecting) && session.state === 'disconnected';
  screen.classList.toggle('is-banner', banner);
  screen.setAttribute('role', banner ? 'status' : 'dialog');
  screen.setAttribute('aria-modal', String(!banner));
  if (banner && !reconnectTicker) reconnectTicker = setInterval(renderReconnecting, 1000);
  if (!banner) {
    clearInterval(reconnectTicker);
    reconnectTicker = null;
    return false;
  }
  const seconds = reconnecting.nextAt ? Math.ceil((reconnecting.nextAt - Date.now()) / 1000) : 0;
  const when = reconnecting.trying || seconds <= 0 ? 'Trying now…' : `Next try in ${seconds} s.`;
  // A refusal is worth showing (the stage is moving, not opened again yet...); a node not answering is not.
  const error = reconnecting.error;
  const refused = error?.code && !['unreachable', 'disconnected', 'timeout'].includes(error.code) ? joinErrorMessage(error) : '';
  screen.hidden = false;
  screen.dataset.reason = 'reconnecting';
  $('ended-heading').textContent = 'Reconnecting…';
  $('ended-text').textContent = `The connection to the stage was interrupted; medstage reconnects by itself. ${when}`;
  $('ended-icon').innerHTML = icon('rejoin');
  const reason = $('ended-reason');
  reason.hidden = !refused;
  reason.textContent = refused;
  const button = $('rejoin-button');
  button.hidden = false;
  button.querySelector('.btn-label').textContent = 'Reconnect now';
  button.disabled = Boolean(reconnecting.trying);
  return true;
}

function renderEndScreen(state) {
  const shown = state === 'disconnected' || state === 'left' || state === 'ended';
  if (renderReconnecting()) return;
  $('ended-screen').hidden = !shown;
  $('rejoin-button').disabled = false;
  $('rejoin-button').querySelector('.btn-label').textContent = 'Rejoin';
  if (!shown) return;
  const end = state === 'ended' ? session.end : null;
  const screens = {
    left: ['leave', 'You left the stage', 'Thank you for attending. You can rejoin at any time.', true],
    disconnected: ['offline', 'Disconnected', 'The connection to the stage was interrupted. Check your network, then rejoin.', true],
    ended: ['stage', 'The stage has ended', 'Thank you for attending. The host has closed this session.', false],
    removed: ['leave', 'You were removed from the stage', 'A moderator removed you from this session. You may rejoin.', true],
    banned: ['ban', 'You were banned from this stage', 'A moderator banned you from this session: you cannot rejoin it.', false],
  };
  toasts.clear(); // the end screen says what happened; older notices would only cover it
  const [iconName, heading, text, mayRejoin] = screens[end?.kind ?? state];
  $('ended-screen').dataset.reason = end?.kind ?? state;
  $('ended-heading').textContent = heading;
  $('ended-text').textContent = text;
  $('ended-icon').innerHTML = icon(iconName);
  const reason = $('ended-reason');
  reason.hidden = !end?.reason;
  reason.textContent = end?.reason ? `Reason: ${end.reason}` : '';
  $('rejoin-button').hidden = !mayRejoin;
  ($('rejoin-button').hidden ? $('ended-screen').querySelector('a.btn') : $('rejoin-button')).focus();
}

function renderState() {
  const state = session?.state ?? 'idle';
  const shown = session?.reconnecting && state === 'disconnected' ? 'reconnecting' : state;
  const connection = $('connection');
  connection.dataset.state = shown;
  connection.textContent = CONNECTION_LABELS[shown] ?? shown;
  document.body.dataset.state = state;
  document.body.dataset.role = session?.role ?? '';
  $('join-screen').hidden = !(state === 'idle' || state === 'failed' || (state === 'connecting' && !session?.rejoining));
  $('join-button').disabled = state === 'connecting';
  renderEndScreen(state);
  if (state !== 'joined') {
    closeInvitation();
    closeConsentPrompt();
    privacy.close();
  }
  renderAll();
}

function renderAll() {
  renderChips();
  renderStage();
  renderRoster();
  renderControls();
  stageControls.render();
  chat.render();
  questions.render();
  polls.render();
}

// --- invitation ------------------------------------------------------------------------------

function nameOf(participantId, fallback) {
  if (participantId && participantId === session?.participantId) return session.name;
  return session?.participants.get(participantId)?.name ?? fallback;
}

function syncInvitation() {
  const invitation = session?.model?.invitation;
  if (!invitation || session.state !== 'joined' || !isAudience(session.role)) {
    closeInvitation();
    return;
  }
  if (invitationDialog || consentPrompt) return; // after the consent prompt is answered

  const who = invitation.byName ?? nameOf(invitation.by, 'A moderator');
  const dialog = new Dialog({
    title: `${who} invites you on stage`,
    text: 'Your camera and microphone will go live as soon as you accept. You can stop presenting at any time.',
    iconName: 'stage', tone: 'accent', testid: 'invitation-dialog', dismissible: false,
    actions: [
      { action: 'decline', label: 'Decline', kind: 'secondary', testid: 'invitation-decline' },
      { action: 'accept', label: 'Accept and go on stage', kind: 'primary', icon: 'camera', testid: 'invitation-accept' },
    ],
  });
  invitationDialog = dialog;
  const current = session;
  dialog.show().then(async ({ action }) => {
    if (invitationDialog === dialog) invitationDialog = null;
    if (action === 'cancel' || current !== session) return; // withdrawn or closed by us
    try {
      await current.answerInvitation(action === 'accept');
      if (action === 'accept') info('You are joining the stage: starting your camera and microphone.');
    } catch (err) {
      if (err.code === 'consent_required' && action === 'accept') acceptWithConsent(current);
      else showError(err);
    }
  });
}

/** The stage lets people speak only with consent to record their media: ask, then accept again. */
async function acceptWithConsent(current) {
  const scopes = await askConsent('invitation');
  if (current !== session || current.state !== 'joined' || !current.model?.invitation) return;
  if (scopes?.includes('media')) {
    try {
      await current.answerInvitation(true);
      info('You are joining the stage: starting your camera and microphone.');
    } catch (err) {
      showError(err);
    }
  } else if (scopes) {
    toasts.show('Speaking on this stage needs your consent to record your camera and microphone. You may still decline the invitation.');
    syncInvitation(); // the invitation is still open: answer it again
  }
}

// --- consent and recording -------------------------------------------------------------------

/** Keep the stage out of reach (focus, clicks, screen readers) while the consent prompt is open. */
function setStageInert(inert) {
  for (const el of [document.querySelector('.topbar'), document.querySelector('.layout')]) {
    if (el) el.inert = inert;
  }
}

/**
 * Show the consent prompt (`method`: join_prompt, recording_prompt, invitation) unless one is open;
 * resolves with the scopes granted ([] declined), or null if the session ended first.
 */
function askConsent(method) {
  if (consentPrompt && consentPrompt.session === session) return consentPrompt.promise;
  closeConsentPrompt();
  const current = session;
  const model = current.model;
  closeInvitation();
  privacy.close();
  const prompt = new ConsentPrompt({
    policy: model.policy,
    method,
    stageTitle,
    recording: model.recording.active,
    answer: async (scopes) => {
      try {
        await current.giveConsent(scopes, method);
      } catch (err) {
        throw new Error(describeError(err));
      }
    },
  });
  setStageInert(true);
  const promise = prompt.show().then((scopes) => {
    if (consentPrompt?.prompt === prompt) {
      consentPrompt = null;
      setStageInert(false);
    }
    if (scopes && current === session) {
      info(scopes.length ? 'Thank you. You can change your decision at any time under Privacy.'
        : 'Nothing about you will be recorded. You can change this at any time under Privacy.');
      syncInvitation();
    }
    return scopes;
  });
  consentPrompt = { prompt, promise, session: current };
  return promise;
}

function closeConsentPrompt() {
  const open = consentPrompt;
  consentPrompt = null;
  setStageInert(false);
  open?.prompt.dismiss();
}

/** Ask when the stage may record and we have not decided, or when the server asks (recording started). */
function syncConsent() {
  const model = session?.model;
  if (session?.state !== 'joined' || !model) return;
  if (model.needsConsent) {
    askConsent(model.consentRequest ? 'recording_prompt' : 'join_prompt');
  } else if (model.consentRequest) {
    model.consentRequest = null; // already decided meanwhile (another tab, a reconnect)
  }
}

function onRecordingEvent(frame) {
  const me = session.participantId;
  if (frame.type === 'recording.started') {
    if (frame.by === me) info('Recording started. Everyone sees the REC indicator.');
    else if (frame.by) info(`${nameOf(frame.by, 'A moderator')} started recording this session.`);
    else info('Recording started automatically.');
  } else if (frame.type === 'recording.stopped') {
    if (frame.reason) toasts.show(`Recording stopped: ${frame.reason}. The stage goes on.`, { timeoutMs: 10000, iconName: 'rec' });
    else if (frame.by === me) info('Recording stopped.');
    else info('Recording stopped.');
  }
}

function closeInvitation() {
  const dialog = invitationDialog;
  invitationDialog = null;
  dialog?.dismiss();
}

// --- session events --------------------------------------------------------------------------

function onModel({ areas, frame }) {
  const has = (area) => areas.includes(area);
  if (has('stage')) {
    renderChips();
    stageControls.render();
    renderStage();
  }
  if (has('chat') || has('pinned')) chat.render();
  if (has('chat')) stageControls.render();
  if (has('questions')) questions.render();
  if (has('hands') || has('invitations')) {
    renderRoster();
    renderControls();
    syncInvitation();
  }
  if (has('polls') || has('leaderboard')) polls.render();
  if (has('recording') || has('consent')) {
    renderRecording();
    if (has('recording')) consentPrompt?.prompt.setRecording(session.model.recording.active);
    if (has('consent')) renderRoster();
    if (has('consent') || !frame) syncConsent();
  }
  if (!frame) return;
  if (frame.type.startsWith('consent.') || frame.type.startsWith('recording.')) {
    window.medstage.events.push({ ...frame, serverAt: frame.at, at: performance.now() });
  }
  switch (frame.type) {
    case 'comment.posted': tabs.bump('chat'); break;
    case 'question.asked': tabs.bump('qa'); break;
    case 'poll.opened':
      tabs.bump('polls');
      if (!canModerate(session.role)) info(`New poll: ${frame.poll?.question ?? ''}`);
      break;
    case 'quiz.result': tabs.bump('polls'); break;
    case 'recording.started':
    case 'recording.stopped':
      onRecordingEvent(frame);
      break;
    case 'invitation.answered':
      if (frame.participant_id !== session.participantId && canModerate(session.role)) {
        const who = nameOf(frame.participant_id, 'The participant');
        info(frame.accepted ? `${who} accepted and is joining the stage.` : `${who} declined the invitation.`);
      }
      break;
    default: break;
  }
}

function onRole({ from, to }) {
  window.medstage.events.push({ type: 'role', from, to, at: performance.now() });
  if (to === 'audience' && (from === 'speaker' || from === 'host')) {
    info('A moderator moved you back to the audience. Your camera and microphone are off.');
  } else if (to === 'audience' && from === 'moderator') {
    info('You are no longer a moderator.');
  } else if (to === 'moderator') {
    info('You are now a moderator of this stage.');
  }
  renderAll();
  syncInvitation();
}

function onNotice({ message, code, kind }) {
  if (code === 'consent_required' && session?.canPublish) {
    // Publishing while the stage records needs consent to record our media: ask, then go on stage.
    const current = session;
    askConsent('recording_prompt').then((scopes) => {
      if (current !== session) return;
      if (scopes?.includes('media')) current.publish();
      else if (scopes) toasts.show('Going on stage while this session is recorded needs your consent to record your camera and microphone.');
    });
    return;
  }
  if (kind === 'info') info(message);
  else toasts.show(message);
}

function onRoster() {
  const forced = session.moderatorMuted;
  for (const kind of ['audio', 'video']) {
    if (forced[kind] !== lastModeratorMuted[kind] && session.publishing === 'live') {
      const noun = kind === 'audio' ? 'microphone' : 'camera';
      info(forced[kind] ? `A moderator muted your ${noun}.` : `A moderator allowed your ${noun} again.`);
    }
  }
  lastModeratorMuted = forced;
  renderRoster();
  renderStage();
  renderControls();
  chat.render();
  questions.render();
}

/** Back after a lost connection: the session rebuilt its lists from the new `joined`; so do the panels. */
function onRejoined() {
  lastModeratorMuted = session.moderatorMuted;
  chat.reload();
  polls.attach(session);
  info('Reconnected to the stage.');
}

function joinErrorMessage(err) {
  switch (err.code) {
    case 'stage_not_found':
      return 'This stage has not been opened yet. Check the link, or wait for the host to open it.';
    case 'stage_ended':
      return 'This stage has ended.';
    case 'stage_locked':
      return 'The stage is locked: nobody new can join right now. Try again later.';
    case 'banned':
      return 'You have been banned from this stage.';
    case 'token_expired':
      return 'Your access link has expired: ask the organiser for a new one.';
    case 'token_missing':
    case 'token_invalid':
      return 'This link does not carry a valid access token: ask the organiser for your personal link.';
    case 'token_wrong_stage':
      return 'Your access link is for another stage.';
    case 'identity_revoked':
      return 'Your access has been revoked.';
    case 'club_private':
      return 'This stage belongs to a private club: you need an invitation link.';
    case 'invite_invalid':
      return 'This invitation link is not valid any more: ask the organiser for a new one.';
    case 'not_allowed':
      return err.message || 'You may not join with this role.';
    default:
      return err.message || 'Could not join the stage.';
  }
}

async function join(name, role, { rejoining = false } = {}) {
  const clickedAt = performance.now();
  session?.abandon();
  grid.clear();
  closeInvitation();
  $('sound-button').hidden = true;
  $('join-error').textContent = '';
  const current = new StageSession({
    stageId, name, role, identity: identity(), getToken: accessToken, invite: query.get('invite'),
    forceRelay: query.get('relay') === '1',
  });
  current.marks.joinClicked = clickedAt;
  current.rejoining = rejoining;
  session = current;
  lastModeratorMuted = { audio: false, video: false };
  tabs.reset();
  chat.attach(current);
  questions.attach(current);
  polls.attach(current);
  stageControls.attach(current);
  recordingControls.attach(current);
  const onlyCurrent = (fn) => (event) => { if (session === current) fn(event.detail); };
  current.addEventListener('state', onlyCurrent(renderState));
  current.addEventListener('reconnecting', onlyCurrent(renderState));
  current.addEventListener('rejoined', onlyCurrent(onRejoined));
  current.addEventListener('roster', onlyCurrent(onRoster));
  current.addEventListener('slots', onlyCurrent(renderStage));
  current.addEventListener('layers', onlyCurrent(() => renderLayerChoice(session)));
  current.addEventListener('publishing', onlyCurrent(() => { renderControls(); renderStage(); renderRoster(); }));
  current.addEventListener('sharing', onlyCurrent(() => { renderControls(); renderStage(); }));
  current.addEventListener('role', onlyCurrent(onRole));
  current.addEventListener('model', onlyCurrent(onModel));
  current.addEventListener('reactions', onlyCurrent(({ counts }) => reactionLayer.show(counts)));
  current.addEventListener('slot', onlyCurrent((detail) => window.medstage.events.push({ ...detail, at: performance.now() })));
  current.addEventListener('notice', onlyCurrent(onNotice));
  try {
    await current.join();
    syncConsent();
    syncInvitation();
  } catch (err) {
    if (session !== current) return;
    current.rejoining = false;
    renderState();
    $('join-error').textContent = joinErrorMessage(err);
    if (rejoining) toasts.show(joinErrorMessage(err));
  }
}

function setUpJoinForm() {
  const form = $('join-form');
  const nameInput = $('join-name');
  const roleSelect = $('join-role');
  nameInput.value = localStorage.getItem(NAME_KEY) ?? '';
  roleSelect.value = initialRole;
  $('join-stage').textContent = `Stage ${stageId}`;
  if (!STAGE_ID.test(stageId)) {
    $('join-error').textContent = 'This link does not name a valid stage.';
    $('join-button').disabled = true;
    return;
  }
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const name = nameInput.value.trim();
    if (!name) {
      $('join-error').textContent = 'Please enter your name.';
      nameInput.focus();
      return;
    }
    localStorage.setItem(NAME_KEY, name);
    const role = roleSelect.value;
    const url = new URL(window.location.href);
    url.searchParams.set('role', role);
    window.history.replaceState(null, '', url);
    join(name, role);
  });
  if (!nameInput.value) nameInput.focus();
}

/**
 * A token to read the stage before joining (`GET /api/stages/{id}` needs one like every `/api` call): the
 * link's, else, in development mode, an audience token for this stage; null without either (a node with
 * API keys and a link without a token: the join says so).
 */
async function readToken() {
  const fromLink = query.get('token');
  if (fromLink) return fromLink;
  const response = await fetch('/api/dev/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify({ stage: stageId, role: 'audience', identity: identity() }),
  });
  const body = await response.json().catch(() => ({}));
  return response.ok && body.token ? body.token : null;
}

async function loadStageInfo() {
  if (!STAGE_ID.test(stageId)) return;
  try {
    const token = await readToken();
    if (!token) return;
    const response = await fetch(`/api/stages/${encodeURIComponent(stageId)}`, {
      headers: { Accept: 'application/json', Authorization: `Bearer ${token}` },
    });
    if (response.ok) {
      const stageInfo = await response.json();
      setTitle(stageInfo.title);
      $('join-stage').textContent = stageInfo.title && stageInfo.title !== stageId ? `${stageInfo.title} · ${stageId}` : `Stage ${stageId}`;
    } else if (response.status === 404) {
      $('join-stage').textContent = `Stage ${stageId} has not been opened yet. Joining as host opens it.`;
    }
  } catch {
    // The join itself will report an unreachable server.
  }
}

async function toggleHand() {
  const raised = session?.model?.hands.includes(session.participantId);
  const button = $('hand-button');
  button.disabled = true;
  try {
    await session.command(raised ? 'hand.lower' : 'hand.raise');
    if (!raised) info('Your hand is raised. A moderator may invite you on stage.');
  } catch (err) {
    if (err.code !== 'hand_not_raised') showError(err);
  } finally {
    button.disabled = false;
  }
}

function toggleMute(kind) {
  if (!session) return;
  if (session.moderatorMuted[kind]) {
    toasts.show(`A moderator muted your ${kind === 'audio' ? 'microphone' : 'camera'}. Only a moderator can allow it again.`);
    return;
  }
  session.setMuted(kind, !session.muted[kind]);
}

function setUpControls() {
  $('publish-button').addEventListener('click', () => session?.publish());
  $('mic-button').addEventListener('click', () => toggleMute('audio'));
  $('camera-button').addEventListener('click', () => toggleMute('video'));
  $('stop-button').addEventListener('click', () => session?.stopPublishing());
  $('share-button').addEventListener('click', () => {
    if (!session) return;
    if (session.screen.state === 'live') session.stopSharing();
    else session.shareScreen();
  });
  $('hand-button').addEventListener('click', toggleHand);
  $('leave-button').addEventListener('click', () => session?.leave());
  setUpLayerChoice(() => session);
  $('privacy-button').addEventListener('click', () => {
    privacy.open();
    $('privacy-button').setAttribute('aria-expanded', String(privacy.isOpen));
  });
  $('sound-button').addEventListener('click', () => {
    grid.enableSound();
    $('sound-button').hidden = true;
  });
  $('rejoin-button').addEventListener('click', () => {
    if (session?.reconnecting) session.reconnectNow();
    else if (session) join(session.name, session.end ? initialRoleFor(session) : session.role, { rejoining: true });
  });
  window.addEventListener('pagehide', () => session?.abandon());
  window.addEventListener('online', () => session?.reconnectNow());
}

/** After a removal, come back with the role one joined with at first, not one granted since. */
function initialRoleFor(ended) {
  return ended.joinedAs ?? ended.role;
}

hydrateIcons();
setTitle(stageId);
setUpJoinForm();
setUpControls();
renderState();
loadStageInfo();
