// The Chat tab (comments with history, delete and pin), the pinned-comment banner on the stage, and
// the composer with slow mode and the server's refusals (slow_mode, rate_limited) shown inline.

import { icon } from './icons.js';
import { canModerate } from './roles.js';
import { element, initials } from './ui.js';

const MAX_CHARS = 500;
const NEAR_BOTTOM_PX = 80;

export function clockTime(at) {
  if (typeof at !== 'number') return '';
  return new Date(at * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

export function seconds(value) {
  const s = Math.max(1, Math.ceil(value));
  return s < 90 ? `${s} s` : `${Math.round(s / 60)} min`;
}

/** A countdown shown in `el` ("… in 7 s"); calls `done` at zero. One per panel. */
export class Countdown {
  #timer = null;

  start(el, secondsLeft, render, done) {
    this.stop();
    const until = performance.now() + secondsLeft * 1000;
    const tick = () => {
      const left = (until - performance.now()) / 1000;
      if (left <= 0) {
        this.stop();
        done();
        return;
      }
      el.textContent = render(seconds(left));
    };
    tick();
    this.#timer = setInterval(tick, 250);
  }

  stop() {
    clearInterval(this.#timer);
    this.#timer = null;
  }

  get running() {
    return this.#timer !== null;
  }
}

export class ChatPanel {
  #session = null;
  #cooldown = new Countdown();
  #items = new Map(); // comment id -> {signature, li}

  /** els: {list, form, input, send, error, slowMode, counter, banner, bannerText, bannerAuthor, bannerUnpin} */
  constructor(els, { onError }) {
    this.els = els;
    this.onError = onError;
    els.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.#post();
    });
    els.input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.#post();
      }
    });
    els.input.addEventListener('input', () => this.#updateComposer());
    els.bannerUnpin.addEventListener('click', () => this.#pin(null));
  }

  attach(session) {
    this.#session = session;
    this.#items.clear();
    this.els.list.replaceChildren();
    this.#cooldown.stop();
    this.els.error.textContent = '';
    this.els.input.value = '';
    this.render();
  }

  /** The comments were replaced wholesale (back after a lost connection): rebuild every item, keep the draft. */
  reload() {
    this.#items.clear();
    this.els.list.replaceChildren();
    this.render();
  }

  render() {
    this.#renderList();
    this.#renderPinned();
    this.#renderComposerState();
  }

  // Items are kept by comment id and only changed ones are rebuilt, so the list's live region
  // announces a new comment, not the whole history again.
  #renderList() {
    const { list } = this.els;
    const model = this.#session?.model;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < NEAR_BOTTOM_PX;
    if (!model || model.comments.length === 0) {
      this.#items.clear();
      const empty = element('li', 'panel-empty', { 'data-testid': 'comments-empty' });
      empty.textContent = 'No comments yet. Say hello to the room.';
      list.replaceChildren(empty);
      return;
    }
    const moderator = canModerate(this.#session.role);
    const next = new Map();
    for (const comment of model.comments) {
      const signature = `${model.pinned?.id === comment.id}|${moderator}`;
      const kept = this.#items.get(comment.id);
      next.set(comment.id, kept?.signature === signature ? kept : { signature, li: this.#item(comment, model) });
    }
    for (const child of [...list.children]) {
      const id = child.dataset.commentId;
      if (!id || next.get(id)?.li !== child) child.remove();
    }
    let index = 0;
    for (const { li } of next.values()) {
      const here = list.children[index] ?? null;
      if (here !== li) list.insertBefore(li, here);
      index += 1;
    }
    this.#items = next;
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  #item(comment, model) {
    const own = model.isOwn(comment);
    const pinned = model.pinned?.id === comment.id;
    const li = element('li', `comment${own ? ' is-own' : ''}${pinned ? ' is-pinned' : ''}`, {
      'data-testid': 'comment', 'data-comment-id': comment.id,
    });
    const avatar = element('span', 'comment-avatar', { 'aria-hidden': 'true' });
    avatar.textContent = initials(comment.author_name);
    const body = element('div', 'comment-body');
    const meta = element('p', 'comment-meta');
    const author = element('span', 'comment-author');
    author.textContent = own ? `${comment.author_name} (you)` : comment.author_name;
    const time = element('time', 'comment-time');
    time.textContent = clockTime(comment.at);
    meta.append(author, time);
    if (pinned) {
      const tag = element('span', 'comment-pinned-tag');
      tag.innerHTML = `${icon('pin')}Pinned`;
      meta.append(tag);
    }
    const text = element('p', 'comment-text', { 'data-testid': 'comment-text' });
    text.textContent = comment.text;
    body.append(meta, text);
    li.append(avatar, body);
    const role = this.#session.role;
    const actions = element('div', 'comment-actions');
    if (canModerate(role)) {
      actions.append(this.#action(pinned ? 'Unpin' : 'Pin', 'pin', pinned ? 'comment-unpin' : 'comment-pin',
        () => this.#pin(pinned ? null : comment.id)));
    }
    if (own || canModerate(role)) {
      actions.append(this.#action('Delete', 'trash', 'comment-delete', () => this.#delete(comment.id)));
    }
    if (actions.childElementCount) li.append(actions);
    return li;
  }

  #action(label, iconName, testid, onClick) {
    const button = element('button', 'icon-button', { type: 'button', 'data-testid': testid, 'aria-label': label, title: label });
    button.innerHTML = icon(iconName);
    button.addEventListener('click', onClick);
    return button;
  }

  #renderPinned() {
    const pinned = this.#session?.model?.pinned;
    const { banner, bannerText, bannerAuthor, bannerUnpin } = this.els;
    banner.hidden = !pinned;
    if (!pinned) return;
    bannerAuthor.textContent = pinned.author_name ?? '';
    bannerText.textContent = pinned.text ?? '';
    bannerUnpin.hidden = !canModerate(this.#session.role);
  }

  #renderComposerState() {
    const session = this.#session;
    const model = session?.model;
    const { slowMode, input } = this.els;
    const exempt = canModerate(session?.role);
    const slow = model?.slowModeS ?? 0;
    slowMode.hidden = slow <= 0;
    slowMode.innerHTML = `${icon('clock')}<span></span>`;
    slowMode.lastElementChild.textContent = `Slow mode: one comment every ${seconds(slow)}${exempt ? ' (moderators are exempt)' : ''}`;
    const muted = Boolean(session?.self?.chat_muted) && !exempt;
    input.disabled = muted || session?.state !== 'joined';
    input.placeholder = muted ? 'A moderator has muted you in the chat' : 'Write a comment…';
    if (muted) this.#showError('A moderator has muted you in the chat.');
    else if (this.els.error.dataset.code === 'chat_muted') this.#clearError();
    this.#updateComposer();
  }

  #updateComposer() {
    const { input, send, counter } = this.els;
    const length = input.value.trim().length;
    const left = MAX_CHARS - input.value.length;
    counter.hidden = left > 100;
    counter.textContent = String(left);
    counter.classList.toggle('is-over', left < 0);
    send.disabled = input.disabled || length === 0 || left < 0 || this.#cooldown.running;
  }

  async #post() {
    const { input } = this.els;
    const text = input.value.trim();
    if (!text || this.els.send.disabled) return;
    this.els.send.disabled = true;
    try {
      await this.#session.command('comment.post', { text });
      input.value = '';
      this.#clearError();
      const slow = this.#session.model?.slowModeS ?? 0;
      if (slow > 0 && !canModerate(this.#session.role)) this.#wait(slow, 'Slow mode: next comment in');
    } catch (err) {
      this.#refused(err);
    } finally {
      this.#updateComposer();
    }
  }

  #refused(err) {
    if ((err.code === 'slow_mode' || err.code === 'rate_limited') && err.retryAfter != null) {
      const lead = err.code === 'slow_mode' ? 'Slow mode is on: you can post again in' : 'You are posting quickly: try again in';
      this.#wait(err.retryAfter, lead, err.code);
      return;
    }
    const messages = {
      chat_muted: 'A moderator has muted you in the chat.',
      slow_mode: 'Slow mode is on: please wait a moment.',
      rate_limited: 'You are posting quickly: please wait a moment.',
      invalid_message: `A comment has 1 to ${MAX_CHARS} characters.`,
    };
    this.#showError(messages[err.code] ?? err.message, err.code);
  }

  #wait(secondsLeft, lead, code = 'cooldown') {
    const { error } = this.els;
    error.dataset.code = code;
    error.classList.toggle('is-soft', code === 'cooldown');
    this.#cooldown.start(error, secondsLeft, (left) => `${lead} ${left}.`, () => {
      this.#clearError();
      this.#updateComposer();
    });
    this.#updateComposer();
  }

  #showError(message, code = '') {
    this.#cooldown.stop();
    this.els.error.textContent = message;
    this.els.error.dataset.code = code;
    this.els.error.classList.remove('is-soft');
  }

  #clearError() {
    this.#cooldown.stop();
    this.els.error.textContent = '';
    this.els.error.dataset.code = '';
  }

  async #delete(commentId) {
    try {
      await this.#session.command('comment.delete', { comment_id: commentId });
    } catch (err) {
      this.onError(err);
    }
  }

  async #pin(commentId) {
    try {
      await this.#session.command('comment.pin', { comment_id: commentId });
    } catch (err) {
      this.onError(err);
    }
  }
}
