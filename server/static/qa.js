// The Q&A tab: ask a question, upvote others once, ordered by votes; moderators mark a question
// answered or dismiss it.

import { icon } from './icons.js';
import { canModerate } from './roles.js';
import { clockTime } from './chat.js';
import { element } from './ui.js';

const MAX_CHARS = 500;

export class QuestionsPanel {
  #session = null;

  /** els: {list, form, input, submit, error} */
  constructor(els, { onError }) {
    this.els = els;
    this.onError = onError;
    els.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.#ask();
    });
    els.input.addEventListener('input', () => this.#updateForm());
    els.input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.#ask();
      }
    });
  }

  attach(session) {
    this.#session = session;
    this.els.input.value = '';
    this.els.error.textContent = '';
    this.render();
  }

  render() {
    const model = this.#session?.model;
    const questions = model?.questionList() ?? [];
    if (questions.length === 0) {
      const empty = element('li', 'panel-empty');
      empty.textContent = 'No questions yet. Ask the speakers something.';
      this.els.list.replaceChildren(empty);
    } else {
      this.els.list.replaceChildren(...questions.map((q) => this.#item(q, model)));
    }
    const muted = Boolean(this.#session?.self?.chat_muted) && !canModerate(this.#session?.role);
    this.els.input.disabled = muted || this.#session?.state !== 'joined';
    this.els.input.placeholder = muted ? 'A moderator has muted you' : 'Ask a question…';
    this.#updateForm();
  }

  #item(question, model) {
    const answered = question.status === 'answered';
    const own = model.isOwn(question);
    const li = element('li', `question${answered ? ' is-answered' : ''}`, {
      'data-testid': 'question', 'data-question-id': question.id, 'data-status': question.status ?? 'open',
      'data-votes': String(question.votes ?? 0),
    });
    const voted = model.hasUpvoted(question.id);
    const vote = element('button', 'vote-button', {
      type: 'button', 'data-testid': 'question-upvote', 'aria-pressed': String(voted),
      'aria-label': voted ? `You upvoted (${question.votes ?? 0} votes)` : `Upvote (${question.votes ?? 0} votes)`,
      title: voted ? 'You upvoted this question' : 'Upvote',
    });
    vote.innerHTML = `${icon('up')}<span class="vote-count" data-testid="question-votes">${question.votes ?? 0}</span>`;
    vote.disabled = voted || answered;
    vote.addEventListener('click', async () => {
      vote.disabled = true;
      try {
        await this.#session.upvote(question.id);
      } catch (err) {
        vote.disabled = false;
        this.onError(err);
      }
    });
    const body = element('div', 'question-body');
    const text = element('p', 'question-text', { 'data-testid': 'question-text' });
    text.textContent = question.text;
    const meta = element('p', 'question-meta');
    meta.textContent = `${own ? 'You' : question.author_name ?? 'Someone'} · ${clockTime(question.at)}`;
    if (answered) {
      const tag = element('span', 'chip chip-success');
      tag.innerHTML = `${icon('check')}Answered`;
      meta.append(tag);
    }
    body.append(text, meta);
    li.append(vote, body);
    if (canModerate(this.#session.role) && !answered) {
      const actions = element('div', 'question-actions');
      actions.append(
        this.#action('Mark answered', 'check', 'question-answer', 'question.answer', question.id),
        this.#action('Dismiss', 'close', 'question-dismiss', 'question.dismiss', question.id),
      );
      li.append(actions);
    }
    return li;
  }

  #action(label, iconName, testid, type, questionId) {
    const button = element('button', 'icon-button', { type: 'button', 'data-testid': testid, 'aria-label': label, title: label });
    button.innerHTML = icon(iconName);
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        await this.#session.command(type, { question_id: questionId });
      } catch (err) {
        button.disabled = false;
        this.onError(err);
      }
    });
    return button;
  }

  #updateForm() {
    const { input, submit } = this.els;
    const text = input.value.trim();
    submit.disabled = input.disabled || !text || input.value.length > MAX_CHARS;
  }

  async #ask() {
    const { input, submit, error } = this.els;
    const text = input.value.trim();
    if (!text || submit.disabled) return;
    submit.disabled = true;
    try {
      await this.#session.command('question.ask', { text });
      input.value = '';
      error.textContent = '';
    } catch (err) {
      const messages = {
        chat_muted: 'A moderator has muted you: you cannot ask questions right now.',
        invalid_message: `A question has 1 to ${MAX_CHARS} characters.`,
        rate_limited: 'You are asking quickly: please wait a moment.',
      };
      error.textContent = messages[err.code] ?? err.message;
      if (err.retryAfter != null) error.textContent += ` Try again in ${Math.ceil(err.retryAfter)} s.`;
    } finally {
      this.#updateForm();
    }
  }
}
