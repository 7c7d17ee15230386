// DOM components of the stage page: the tile grid, the participant list and the toasts.

import { icon } from './icons.js';

const ROLE_LABELS = { host: 'Host', speaker: 'Speaker', audience: 'Audience' };

export function initials(name) {
  const words = String(name ?? '').replace(/^(dr|prof|mr|mrs|ms)\.?\s+/i, '').trim().split(/\s+/);
  const letters = words.filter(Boolean).slice(0, 2).map((word) => [...word][0].toUpperCase());
  return letters.join('') || '?';
}

function element(tag, className, attributes = {}) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, value);
  return el;
}

function roleBadge(role) {
  const badge = element('span', `badge badge-${role}`);
  badge.textContent = ROLE_LABELS[role] ?? role;
  return badge;
}

/** Short-lived messages in a polite live region; errors never block the stage. */
export class Toasts {
  constructor(root) {
    this.root = root;
  }

  show(message, { kind = 'error', timeoutMs = 6000 } = {}) {
    const toast = element('div', `toast toast-${kind}`, { 'data-testid': 'toast', role: 'status' });
    toast.innerHTML = icon(kind === 'error' ? 'alert' : 'volume');
    const text = element('p', 'toast-text');
    text.textContent = message;
    const close = element('button', 'toast-close', { type: 'button', 'aria-label': 'Dismiss' });
    close.innerHTML = icon('close');
    toast.append(text, close);
    const dismiss = () => toast.remove();
    close.addEventListener('click', dismiss);
    setTimeout(dismiss, timeoutMs);
    this.root.append(toast);
    while (this.root.children.length > 4) this.root.firstElementChild.remove();
  }
}

/**
 * The stage: one tile per visible participant, keyed by participant id. Tiles are kept across
 * renders so a <video> is never re-created (that would restart playback and flash).
 */
export class TileGrid {
  #tiles = new Map(); // key -> {el, video, stream}
  #soundBlocked = false;

  constructor(root, { onSoundBlocked }) {
    this.root = root;
    this.onSoundBlocked = onSoundBlocked;
  }

  /**
   * items: [{key, participantId, name, role, stream, self, muted: {audio, video}, hasVideo}]
   * in display order.
   */
  render(items) {
    const keep = new Set(items.map((item) => item.key));
    for (const [key, tile] of this.#tiles) {
      if (!keep.has(key)) {
        tile.video.srcObject = null;
        tile.el.remove();
        this.#tiles.delete(key);
      }
    }
    items.forEach((item, index) => {
      const tile = this.#tiles.get(item.key) ?? this.#create(item);
      this.#update(tile, item);
      // Move a tile only when it is out of place: a detached <video> pauses.
      const here = this.root.children[index] ?? null;
      if (here !== tile.el) this.root.insertBefore(tile.el, here);
    });
    const count = items.length;
    const cols = count <= 1 ? 1 : count <= 4 ? 2 : count <= 9 ? 3 : 4;
    this.root.style.setProperty('--cols', String(cols));
    this.root.style.setProperty('--rows', String(Math.max(1, Math.ceil(count / cols))));
    this.root.dataset.count = String(count);
  }

  /** After a user gesture: unmute every remote tile and play it. */
  enableSound() {
    this.#soundBlocked = false;
    for (const tile of this.#tiles.values()) {
      if (tile.self) continue;
      tile.video.muted = false;
      tile.video.play().catch(() => {});
    }
  }

  clear() {
    this.render([]);
  }

  #create(item) {
    const el = element('figure', 'tile', {
      'data-testid': item.self ? 'tile-self' : 'tile',
      'data-participant-id': item.participantId ?? '',
    });
    const video = element('video', 'tile-video');
    video.autoplay = true;
    video.playsInline = true;
    video.muted = Boolean(item.self); // our own microphone must never play back
    const avatar = element('div', 'tile-avatar', { 'aria-hidden': 'true' });
    avatar.append(element('span'));
    const label = element('figcaption', 'tile-label');
    el.append(video, avatar, label);
    // Until the first frame is rendered the tile shows the initials, not a black rectangle.
    el.classList.add('is-waiting');
    const shown = () => el.classList.remove('is-waiting');
    video.addEventListener('loadeddata', shown);
    video.addEventListener('resize', shown);
    const tile = { el, video, avatar, label, stream: null, self: Boolean(item.self) };
    this.#tiles.set(item.key, tile);
    return tile;
  }

  #update(tile, item) {
    const name = item.name || 'Participant';
    tile.el.setAttribute('aria-label', item.self ? `${name} (you)` : name);
    tile.el.dataset.participantId = item.participantId ?? '';
    tile.el.classList.toggle('tile-self', Boolean(item.self));
    tile.el.classList.toggle('no-video', !item.hasVideo || Boolean(item.muted?.video));
    tile.avatar.firstElementChild.textContent = initials(name);

    const label = element('figcaption', 'tile-label');
    const nameEl = element('span', 'tile-name');
    nameEl.textContent = item.self ? `${name} (you)` : name;
    label.append(nameEl);
    if (item.role) label.append(roleBadge(item.role));
    if (item.muted?.audio) {
      const mic = element('span', 'tile-muted', { role: 'img', 'aria-label': 'Microphone muted' });
      mic.innerHTML = icon('micOff');
      label.append(mic);
    }
    tile.label.replaceWith(label);
    tile.label = label;

    if (tile.stream !== item.stream) {
      tile.stream = item.stream;
      tile.video.srcObject = item.stream;
      this.#play(tile);
    }
  }

  #play(tile) {
    if (!tile.self && this.#soundBlocked) tile.video.muted = true;
    tile.video.play().catch((err) => {
      if (err.name !== 'NotAllowedError' || tile.self) return; // AbortError: a newer source replaced it
      // The browser refuses sound without a user gesture: play muted, offer to enable sound.
      tile.video.muted = true;
      tile.video.play().catch(() => {});
      this.#soundBlocked = true;
      this.onSoundBlocked?.();
    });
  }
}

/** The people present, with role badges and publishing / mute state. */
export class ParticipantList {
  constructor(root, countEl) {
    this.root = root;
    this.countEl = countEl;
  }

  /** people: [{id, name, role, publishing, muted, self}] */
  render(people) {
    const order = { host: 0, speaker: 1, audience: 2 };
    const sorted = [...people].sort((a, b) => (order[a.role] ?? 3) - (order[b.role] ?? 3)
      || Number(Boolean(b.self)) - Number(Boolean(a.self))
      || String(a.name).localeCompare(String(b.name)));
    const items = sorted.map((person) => this.#item(person));
    this.root.replaceChildren(...items);
    this.countEl.textContent = String(people.length);
  }

  #item(person) {
    const li = element('li', 'person', { 'data-testid': 'participant', 'data-participant-id': person.id ?? '' });
    const avatar = element('span', 'person-avatar', { 'aria-hidden': 'true' });
    avatar.textContent = initials(person.name);
    const live = person.publishing?.audio || person.publishing?.video;
    if (live) avatar.classList.add('is-live');
    const text = element('span', 'person-text');
    const name = element('span', 'person-name');
    name.textContent = person.name;
    const status = element('span', 'person-status');
    const activity = live ? 'On stage' : person.role === 'audience' ? 'Watching' : 'Off stage';
    status.textContent = person.self ? `You · ${activity}` : activity;
    text.append(name, status);
    const flags = element('span', 'person-flags');
    flags.append(roleBadge(person.role));
    if (live && person.muted?.audio) flags.append(this.#flag('micOff', 'Microphone muted'));
    if (live && person.muted?.video) flags.append(this.#flag('cameraOff', 'Camera off'));
    li.append(avatar, text, flags);
    return li;
  }

  #flag(name, label) {
    const flag = element('span', 'person-flag', { role: 'img', 'aria-label': label, title: label });
    flag.innerHTML = icon(name);
    return flag;
  }
}
