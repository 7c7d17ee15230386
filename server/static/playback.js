// The playback page (/r/<session>): the session's composite export, its chapters and markers, and the
// comments replayed as the video plays. Access: a cookie for this session only (HttpOnly, set by
// POST /r/<session>/access from the token the platform's link carries in the URL fragment, which the
// browser never sends and this page removes at once); docs/recording.md, "Playback".

import { hydrateIcons } from './icons.js';

const $ = (id) => document.getElementById(id);
const sessionId = decodeURIComponent(window.location.pathname.split('/')[2] || '');
const base = `/r/${encodeURIComponent(sessionId)}`;
const video = $('playback-video');

// Test hook and debugging aid: what the page loaded and shows.
const state = { sessionId, data: null, error: null, shownComments: 0 };
window.medstagePlayback = state;

const MESSAGES = {
  401: ['This recording needs an access link', 'Open it from the link your organisation gave you.'],
  403: ['This recording is not shared with you', 'Only the session\'s participants, its club\'s members and people given access may watch it.'],
  404: ['No such recording', 'The link may be mistyped, or the recording was deleted.'],
};

function showMessage(title, text = '') {
  $('comments-empty').hidden = true;
  $('message-title').textContent = title;
  $('message-text').textContent = text;
  $('playback-message').hidden = false;
  video.hidden = true;
}

async function problemOf(response) {
  const body = await response.json().catch(() => ({}));
  const known = MESSAGES[response.status];
  const [title, text] = known || ['The recording could not be loaded', body.detail || ''];
  return { status: response.status, code: body.code || null, detail: body.detail || null, title, text };
}

function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const mm = String(Math.floor((s % 3600) / 60)).padStart(h ? 2 : 1, '0');
  const ss = String(s % 60).padStart(2, '0');
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

function seek(t) {
  video.currentTime = t;
  video.play().catch(() => {}); // autoplay refused: the seek still happened, the viewer presses play
}

/** A token in the fragment (#token=...): exchanged for the session's cookie, then dropped from the URL. */
async function exchangeToken() {
  const params = new URLSearchParams(window.location.hash.slice(1));
  const token = params.get('token');
  if (!token) return null;
  window.history.replaceState(null, '', window.location.pathname + window.location.search);
  const response = await fetch(`${base}/access`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}` },
    credentials: 'same-origin',
  });
  return response.ok ? null : problemOf(response);
}

function pollDetail(poll) {
  if (!poll.counts) return poll.options.join(' · ');
  const correct = new Set(poll.correct || []);
  const parts = poll.options.map((option, i) => `${correct.has(i) ? '✓ ' : ''}${option}: ${poll.counts[i] ?? 0}`);
  return `${parts.join(' · ')} (${poll.ballots} ${poll.ballots === 1 ? 'vote' : 'votes'})`;
}

function renderMarkers(markers) {
  const list = $('markers');
  list.replaceChildren();
  for (const marker of markers) {
    const item = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'playback-marker';
    button.dataset.testid = 'playback-marker';
    button.dataset.kind = marker.kind;
    button.dataset.t = String(marker.t);
    const time = document.createElement('span');
    time.className = 'playback-marker-time';
    time.textContent = clock(marker.t);
    const label = document.createElement('span');
    label.className = 'playback-marker-label';
    label.textContent = marker.label;
    if (marker.poll) {
      const detail = document.createElement('span');
      detail.className = 'playback-marker-detail';
      detail.textContent = pollDetail(marker.poll);
      label.append(detail);
    } else if (marker.question) {
      const detail = document.createElement('span');
      detail.className = 'playback-marker-detail';
      detail.textContent = `${marker.question.author_name} · ${marker.question.votes} up`;
      label.append(detail);
    }
    button.append(time, label);
    button.addEventListener('click', () => seek(marker.t));
    item.append(button);
    list.append(item);
  }
}

function renderChapters(chapters) {
  const nav = $('chapters');
  nav.replaceChildren();
  for (const chapter of chapters) {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'playback-chapter';
    button.dataset.testid = 'playback-chapter-button';
    button.dataset.t = String(chapter.t);
    button.textContent = `${clock(chapter.t)} ${chapter.title}`;
    button.addEventListener('click', () => seek(chapter.t));
    nav.append(button);
  }
  nav.hidden = chapters.length < 2;
}

function commentItem(comment) {
  const item = document.createElement('li');
  item.className = 'comment';
  item.dataset.testid = 'playback-comment';
  item.dataset.id = comment.id;
  item.dataset.t = String(comment.t);
  const body = document.createElement('div');
  body.className = 'comment-body';
  const meta = document.createElement('div');
  meta.className = 'comment-meta';
  const author = document.createElement('span');
  author.className = 'comment-author';
  author.textContent = comment.author_name;
  const when = document.createElement('span');
  when.textContent = clock(comment.t);
  meta.append(author, when);
  const text = document.createElement('p');
  text.className = 'comment-text';
  text.textContent = comment.text;
  body.append(meta, text);
  item.append(body);
  return item;
}

/** The comments posted up to the playhead, in order: appended while playing, cut back on a seek. */
function followPlayhead() {
  const data = state.data;
  if (!data) return;
  const now = video.currentTime;
  const due = data.comments.findIndex((c) => c.t > now);
  const count = due === -1 ? data.comments.length : due;
  const list = $('comments');
  while (list.children.length > count) list.lastElementChild.remove();
  for (let i = list.children.length; i < count; i += 1) list.append(commentItem(data.comments[i]));
  if (count > state.shownComments) list.lastElementChild?.scrollIntoView({ block: 'nearest' });
  state.shownComments = count;
  $('comments-empty').hidden = count > 0;
  let current = null;
  for (const button of $('chapters').children) {
    const starts = Number(button.dataset.t) <= now;
    if (starts) current = button;
    button.classList.remove('is-current');
  }
  current?.classList.add('is-current');
  const chip = $('chip-chapter');
  chip.hidden = !current;
  if (current) chip.textContent = data.chapters[[...$('chapters').children].indexOf(current)].title;
}

async function main() {
  hydrateIcons();
  const refused = await exchangeToken();
  if (refused) {
    state.error = refused;
    showMessage(refused.title, refused.text);
    return;
  }
  const response = await fetch(`${base}/playback.json`, { credentials: 'same-origin' });
  if (!response.ok) {
    state.error = await problemOf(response);
    showMessage(state.error.title, state.error.text);
    return;
  }
  const data = await response.json();
  state.data = data;
  document.title = `${data.title || 'Recording'} · medstage`;
  $('playback-title').textContent = data.title || 'Recording';
  $('playback-id').textContent = data.session_id;
  renderChapters(data.chapters);
  renderMarkers(data.markers);
  followPlayhead();
  if (!data.video_ready) {
    showMessage('The recording is being prepared', 'Its video is not ready yet: come back later.');
    return;
  }
  $('playback-message').hidden = true;
  video.hidden = false;
  for (const event of ['timeupdate', 'seeked', 'seeking', 'loadedmetadata']) {
    video.addEventListener(event, followPlayhead);
  }
  video.addEventListener('error', explainVideoError);
  video.src = data.video_url;
}

/** The video stopped loading: most likely the cookie expired (or access was revoked) mid-talk. */
async function explainVideoError() {
  const response = await fetch(`${base}/playback.json`, { credentials: 'same-origin' }).catch(() => null);
  if (response && !response.ok) {
    state.error = await problemOf(response);
    showMessage(state.error.title, state.error.text);
  } else {
    state.error = { title: 'The video could not be played', text: video.error?.message || '' };
    showMessage(state.error.title, state.error.text);
  }
}

// A link opened on the page already open only changes its fragment: start again with its token.
window.addEventListener('hashchange', () => {
  if (new URLSearchParams(window.location.hash.slice(1)).has('token')) window.location.reload();
});

main().catch((error) => {
  state.error = { title: 'The recording could not be loaded', text: String(error) };
  showMessage(state.error.title);
});
