// DOM components of the stage page: the tile grid and the toasts, and small helpers for the panels.

import { icon } from './icons.js';
import { ROLE_LABELS } from './roles.js';

export function initials(name) {
  const words = String(name ?? '').replace(/^(dr|prof|mr|mrs|ms)\.?\s+/i, '').trim().split(/\s+/);
  const letters = words.filter(Boolean).slice(0, 2).map((word) => [...word][0].toUpperCase());
  return letters.join('') || '?';
}

/** A new element with a class and attributes. */
export function element(tag, className, attributes = {}) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, value);
  return el;
}

export function roleBadge(role) {
  const badge = element('span', `badge badge-${role}`);
  badge.textContent = ROLE_LABELS[role] ?? role;
  return badge;
}

/** Short-lived messages in a polite live region; errors never block the stage. */
export class Toasts {
  constructor(root) {
    this.root = root;
  }

  show(message, { kind = 'error', timeoutMs = 6000, iconName = null } = {}) {
    const toast = element('div', `toast toast-${kind}`, { 'data-testid': 'toast', 'data-kind': kind, role: 'status' });
    toast.innerHTML = icon(iconName ?? (kind === 'error' ? 'alert' : 'check'));
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

  clear() {
    this.root.replaceChildren();
  }
}

const TILE_GAP_PX = 12;

const QUALITY_BARS = { excellent: 3, good: 2, poor: 1, lost: 0 };

/**
 * A connection-quality indicator: three bars (`data-level`), its level and `detail` (figures, when
 * known) in the tooltip. Levels come from participant objects' `quality` (docs/protocol.md).
 */
export function qualityIndicator(level, detail = '', testId = 'quality-indicator') {
  const text = `Connection: ${level}${detail ? ` (${detail})` : ''}`;
  const el = element('span', 'quality', {
    role: 'img', 'aria-label': text, title: text, 'data-level': level, 'data-testid': testId,
  });
  for (let i = 1; i <= 3; i += 1) {
    const bar = element('span', 'quality-bar');
    if (i <= (QUALITY_BARS[level] ?? 0)) bar.classList.add('on');
    el.append(bar);
  }
  return el;
}

/** Figures of a connection report's direction as a tooltip line: loss, RTT, jitter. */
export function figuresText(figures) {
  if (!figures) return '';
  const parts = [];
  if (figures.loss != null) parts.push(`loss ${(100 * figures.loss).toFixed(1)} %`);
  if (figures.rtt_ms != null) parts.push(`RTT ${Math.round(figures.rtt_ms)} ms`);
  if (figures.jitter_ms != null) parts.push(`jitter ${Math.round(figures.jitter_ms)} ms`);
  return parts.join(', ');
}

/** How many columns make `count` 16:9 tiles biggest inside `box` (less its padding). */
export function bestColumns(count, box) {
  if (count <= 1) return 1;
  const style = getComputedStyle(box);
  const width = box.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const height = box.clientHeight - parseFloat(style.paddingTop) - parseFloat(style.paddingBottom);
  if (!(width > 0 && height > 0)) return count <= 4 ? 2 : count <= 9 ? 3 : 4;
  const widths = [];
  for (let cols = 1; cols <= count; cols += 1) {
    const rows = Math.ceil(count / cols);
    widths[cols] = Math.min((width - (cols - 1) * TILE_GAP_PX) / cols, ((height - (rows - 1) * TILE_GAP_PX) / rows) * 16 / 9);
  }
  const biggest = Math.max(...widths.slice(1));
  // Side by side reads better than stacked: take the most columns whose tiles are nearly as big.
  let best = 1;
  for (let cols = 1; cols <= count; cols += 1) if (widths[cols] >= biggest * 0.88) best = cols;
  return best;
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
    // The column count that gives the biggest 16:9 tiles depends on the stage's shape (a phone's
    // stage is wide and short): recomputed when the stage is resized.
    new ResizeObserver(() => this.#layout()).observe(root.parentElement);
  }

  /**
   * items: [{key, participantId, name, role, stream, self, muted: {audio, video},
   *          moderatorMuted: {audio, video}, hasVideo}]
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
    this.#layout();
  }

  #layout() {
    // A screen share on stage: it is shown large, the cameras in a strip beside it (style.css).
    const shares = this.root.querySelectorAll(':scope > .tile-share').length;
    this.root.dataset.layout = shares ? 'share' : 'grid';
    const count = this.#tiles.size;
    const cols = bestColumns(count, this.root.parentElement);
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
    const el = element('figure', item.share ? 'tile tile-share' : 'tile', {
      'data-testid': item.share ? (item.self ? 'tile-self-share' : 'tile-share') : item.self ? 'tile-self' : 'tile',
      'data-participant-id': item.participantId ?? '',
    });
    const video = element('video', 'tile-video');
    video.autoplay = true;
    video.playsInline = true;
    video.muted = Boolean(item.self); // our own microphone (or shared tab) must never play back
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
    tile.el.classList.toggle('tile-self', Boolean(item.self) && !item.share); // a share is not mirrored
    const videoOff = Boolean(item.muted?.video || item.moderatorMuted?.video);
    tile.el.classList.toggle('no-video', !item.hasVideo || videoOff);
    tile.avatar.firstElementChild.textContent = initials(name);

    const label = element('figcaption', 'tile-label');
    const nameEl = element('span', 'tile-name');
    nameEl.textContent = item.self ? `${name} (you)` : name;
    label.append(nameEl);
    if (item.role) label.append(roleBadge(item.role));
    if (item.quality) label.append(qualityIndicator(item.quality, item.qualityDetail ?? '', 'tile-quality'));
    if (item.moderatorMuted?.audio || item.moderatorMuted?.video) {
      const what = [item.moderatorMuted.audio && 'microphone', item.moderatorMuted.video && 'camera']
        .filter(Boolean).join(' and ');
      const text = `${what[0].toUpperCase()}${what.slice(1)} muted by a moderator`;
      const mod = element('span', 'tile-muted tile-muted-mod', {
        role: 'img', 'aria-label': text, title: text, 'data-testid': 'tile-moderator-muted',
      });
      mod.innerHTML = icon('shield');
      label.append(mod);
    }
    if (item.muted?.audio || item.moderatorMuted?.audio) {
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
