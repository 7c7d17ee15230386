// The stage page (/s/{id}): join screen, stage, controls. Protocol work lives in session.js.

import { hydrateIcons, icon } from './icons.js';
import { ROLES, StageSession } from './session.js';
import { ParticipantList, TileGrid, Toasts } from './ui.js';

const STAGE_ID = /^[A-Za-z0-9_-]{1,64}$/;
const NAME_KEY = 'medstage.name';
const $ = (id) => document.getElementById(id);

const stageId = decodeURIComponent(window.location.pathname.split('/').filter(Boolean)[1] ?? '');
const query = new URLSearchParams(window.location.search);
const initialRole = ROLES.includes(query.get('role')) ? query.get('role') : 'audience';

const toasts = new Toasts($('toasts'));
const grid = new TileGrid($('grid'), { onSoundBlocked: () => { $('sound-button').hidden = false; } });
const people = new ParticipantList($('participants'), $('participant-count'));
let session = null;
let stageTitle = stageId;

/** Test hook: the live objects a test may inspect (e.g. `await medstage.subscriberPc.getStats()`). */
window.medstage = {
  get state() { return session?.state ?? 'idle'; },
  get participantId() { return session?.participantId ?? null; },
  get subscriberPc() { return session?.subscriberPc ?? null; },
  get publisherPc() { return session?.publisherPc ?? null; },
  get marks() { return session?.marks ?? {}; },
  get session() { return session; },
};

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
      hasVideo: session.localStream.getVideoTracks().length > 0,
    });
  }
  for (const tile of session?.remoteTiles() ?? []) {
    items.push({
      key: tile.participantId,
      participantId: tile.participantId,
      name: tile.participant?.name,
      role: tile.participant?.role,
      stream: tile.stream,
      muted: tile.participant?.muted,
      hasVideo: tile.kinds.includes('video'),
    });
  }
  grid.render(items);
  $('empty').hidden = items.length > 0;
  const mayPublish = session?.canPublish && session.state === 'joined';
  $('empty-title').textContent = mayPublish ? 'You are not on stage yet' : 'Nobody is on stage yet';
  $('empty-text').textContent = mayPublish
    ? 'Press “Go on stage” to share your camera and microphone with the audience.'
    : 'The session will appear here as soon as a speaker goes on stage.';
}

function renderRoster() {
  if (!session || session.state !== 'joined') {
    people.render([]);
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
  people.render([self, ...session.participants.values()]);
}

function renderControls() {
  const joined = session?.state === 'joined';
  const publishing = session?.publishing ?? 'off';
  const live = joined && publishing === 'live';
  $('dock').hidden = !joined;
  const publish = $('publish-button');
  publish.hidden = !(joined && session.canPublish && publishing !== 'live');
  publish.disabled = publishing === 'starting';
  publish.querySelector('.btn-label').textContent = publishing === 'starting' ? 'Starting camera…' : 'Go on stage';
  for (const id of ['mic-button', 'camera-button', 'stop-button']) $(id).hidden = !live;
  if (live) {
    const { audio, video } = session.muted;
    const mic = $('mic-button');
    mic.setAttribute('aria-pressed', String(audio));
    setButton(mic, audio ? 'micOff' : 'mic', audio ? 'Unmute' : 'Mute', audio ? 'Unmute microphone' : 'Mute microphone');
    const camera = $('camera-button');
    camera.setAttribute('aria-pressed', String(video));
    setButton(camera, video ? 'cameraOff' : 'camera', video ? 'Start video' : 'Stop video');
  }
}

const CONNECTION_LABELS = {
  idle: 'Not connected', connecting: 'Connecting…', joined: 'Connected', leaving: 'Leaving…',
  left: 'Left', disconnected: 'Disconnected', failed: 'Not connected',
};

function renderState() {
  const state = session?.state ?? 'idle';
  const connection = $('connection');
  connection.dataset.state = state;
  connection.textContent = CONNECTION_LABELS[state] ?? state;
  document.body.dataset.state = state;
  $('join-screen').hidden = !(state === 'idle' || state === 'failed' || (state === 'connecting' && !session?.rejoining));
  $('join-button').disabled = state === 'connecting';
  const ended = state === 'disconnected' || state === 'left';
  $('ended-screen').hidden = !ended;
  if (ended) {
    const left = state === 'left';
    $('ended-heading').textContent = left ? 'You left the stage' : 'Disconnected';
    $('ended-text').textContent = left
      ? 'Thank you for attending. You can rejoin at any time.'
      : 'The connection to the stage was interrupted. Check your network, then rejoin.';
    $('ended-icon').innerHTML = icon(left ? 'leave' : 'offline');
    $('rejoin-button').focus();
  }
  if (state === 'joined' && session.stage?.title) setTitle(session.stage.title);
  renderStage();
  renderRoster();
  renderControls();
}

function joinErrorMessage(err) {
  switch (err.code) {
    case 'stage_not_found':
      return 'This stage has not been opened yet. Check the link, or wait for the host to open it.';
    case 'stage_ended':
      return 'This stage has ended.';
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
  $('sound-button').hidden = true;
  $('join-error').textContent = '';
  const current = new StageSession({ stageId, name, role });
  current.marks.joinClicked = clickedAt;
  current.rejoining = rejoining;
  session = current;
  const onlyCurrent = (fn) => (event) => { if (session === current) fn(event); };
  current.addEventListener('state', onlyCurrent(renderState));
  current.addEventListener('roster', onlyCurrent(() => { renderRoster(); renderStage(); }));
  current.addEventListener('slots', onlyCurrent(renderStage));
  current.addEventListener('publishing', onlyCurrent(() => { renderControls(); renderStage(); renderRoster(); }));
  current.addEventListener('notice', onlyCurrent((event) => toasts.show(event.detail.message)));
  try {
    await current.join();
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

async function loadStageInfo() {
  if (!STAGE_ID.test(stageId)) return;
  try {
    const response = await fetch(`/api/stages/${encodeURIComponent(stageId)}`, { headers: { Accept: 'application/json' } });
    if (response.ok) {
      const info = await response.json();
      setTitle(info.title);
      $('join-stage').textContent = info.title && info.title !== stageId ? `${info.title} · ${stageId}` : `Stage ${stageId}`;
    } else if (response.status === 404) {
      $('join-stage').textContent = `Stage ${stageId} has not been opened yet. Joining as host opens it.`;
    }
  } catch {
    // The join itself will report an unreachable server.
  }
}

function setUpControls() {
  $('publish-button').addEventListener('click', () => session?.publish());
  $('mic-button').addEventListener('click', () => session?.setMuted('audio', !session.muted.audio));
  $('camera-button').addEventListener('click', () => session?.setMuted('video', !session.muted.video));
  $('stop-button').addEventListener('click', () => session?.stopPublishing());
  $('leave-button').addEventListener('click', () => session?.leave());
  $('sound-button').addEventListener('click', () => {
    grid.enableSound();
    $('sound-button').hidden = true;
  });
  $('rejoin-button').addEventListener('click', () => {
    if (session) join(session.name, session.role, { rejoining: true });
  });
  window.addEventListener('pagehide', () => session?.abandon());
}

hydrateIcons();
setTitle(stageId);
setUpJoinForm();
setUpControls();
renderState();
loadStageInfo();
