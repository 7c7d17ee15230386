// The Polls tab: poll cards (vote, your ballot, results as bars, quiz feedback), the quiz
// leaderboard, and for moderators the create-poll form and open / close controls.

import { icon } from './icons.js';
import { canModerate } from './roles.js';
import { element } from './ui.js';

const MIN_OPTIONS = 2;
const MAX_OPTIONS = 10;
const DURATIONS = [[null, 'When I close it'], [30, 'After 30 seconds'], [60, 'After 1 minute'], [120, 'After 2 minutes'],
  [300, 'After 5 minutes'], [600, 'After 10 minutes']];

/** Counts as an array indexed by option, whatever shape the server sent ([3, 1] or {"0": 3, "1": 1}). */
export function countsOf(results, optionCount) {
  const counts = new Array(optionCount).fill(0);
  const raw = results?.counts;
  if (Array.isArray(raw)) raw.forEach((n, i) => { if (i < optionCount) counts[i] = Number(n) || 0; });
  else if (raw && typeof raw === 'object') for (const [i, n] of Object.entries(raw)) if (Number(i) < optionCount) counts[Number(i)] = Number(n) || 0;
  return counts;
}

function countdownText(secondsLeft) {
  if (secondsLeft <= 0) return 'Closing…';
  const s = Math.ceil(secondsLeft);
  return `Closes in ${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

export class PollsPanel {
  #session = null;
  #selection = new Map(); // poll id -> Set of option indexes picked but not yet sent
  #busy = new Set(); // poll ids with a request in flight
  #timer = null;

  /** els: {list, leaderboard, newButton, formRoot, toolbar}; onError(err) shows a refusal. */
  constructor(els, { onError }) {
    this.els = els;
    this.onError = onError;
    this.form = new PollForm(els.formRoot, {
      onSubmit: (spec, openNow) => this.#create(spec, openNow),
      onClose: () => { els.newButton.hidden = !canModerate(this.#session?.role); els.newButton.focus(); },
    });
    els.newButton.addEventListener('click', () => {
      els.newButton.hidden = true;
      this.form.show();
    });
    this.#timer = setInterval(() => this.#tick(), 1000);
  }

  attach(session) {
    this.#session = session;
    this.#selection.clear();
    this.#busy.clear();
    this.form.hide();
    this.render();
  }

  render() {
    const session = this.#session;
    const model = session?.model;
    const moderator = canModerate(session?.role);
    this.els.toolbar.hidden = !moderator;
    if (!moderator) this.form.hide();
    this.els.newButton.hidden = !moderator || this.form.visible;
    const polls = model?.pollList() ?? [];
    if (polls.length === 0) {
      const empty = element('li', 'panel-empty', { 'data-testid': 'polls-empty' });
      empty.textContent = moderator ? 'No polls yet. Create one to ask the room.' : 'No polls yet. They will appear here.';
      this.els.list.replaceChildren(empty);
    } else {
      this.els.list.replaceChildren(...polls.map((poll) => this.#card(poll, model, moderator)));
    }
    this.#renderLeaderboard(model);
    this.#tick();
  }

  #card(poll, model, moderator) {
    const li = element('li', `poll-card poll-${poll.status}`, { 'data-testid': 'poll', 'data-poll-id': poll.id, 'data-status': poll.status });
    const head = element('div', 'poll-head');
    const chip = element('span', `chip chip-${poll.status}`, { 'data-testid': 'poll-status' });
    chip.textContent = { open: 'Live', draft: 'Draft', closed: 'Closed' }[poll.status] ?? poll.status;
    head.append(chip);
    if (poll.status === 'open' && typeof poll.closes_at === 'number') {
      head.append(element('span', 'poll-countdown', { 'data-closes-at': String(poll.closes_at) }));
    }
    const kind = element('span', 'poll-kind');
    kind.textContent = [poll.multiple ? 'Several answers' : 'One answer', poll.anonymous === false ? 'Named' : 'Anonymous',
      poll.quiz ? 'Quiz' : null].filter(Boolean).join(' · ');
    head.append(kind);
    const question = element('h3', 'poll-question', { 'data-testid': 'poll-question' });
    question.textContent = poll.question;
    li.append(head, question);

    const ballot = model.ballot(poll.id);
    const hasResults = Boolean(poll.results?.counts) && typeof poll.results.counts === 'object';
    // Live counts: moderators, or everyone when the poll has public results (zeros until a vote).
    const live = poll.status === 'open' && (moderator || poll.public_results);
    if (poll.status === 'open' && !ballot && !moderator) li.append(this.#voteForm(poll));
    if (poll.status === 'draft') li.append(this.#optionList(poll));
    if (hasResults || live || poll.status === 'closed') li.append(this.#results(poll, ballot));
    else if (poll.status === 'open' && ballot) {
      const note = element('p', 'poll-note');
      note.textContent = 'Results will be shown when the poll closes.';
      li.append(note);
    }
    if (ballot) li.append(this.#yourBallot(poll, ballot));
    if (moderator && poll.voters && Object.keys(poll.voters).length) li.append(this.#voters(poll));
    const quiz = model.quiz.get(poll.id);
    if (quiz) {
      const result = element('p', `poll-quiz ${quiz.correct ? 'is-right' : 'is-wrong'}`, {
        'data-testid': 'poll-quiz-result', 'data-correct': String(quiz.correct), 'data-score': String(quiz.score ?? ''),
      });
      result.innerHTML = icon(quiz.correct ? 'check' : 'close');
      const words = element('span');
      words.textContent = `${quiz.correct ? 'Correct!' : 'Not this time.'} Your score: ${quiz.score ?? 0}`;
      result.append(words);
      li.append(result);
    }
    if (moderator) {
      const actions = element('div', 'poll-actions');
      if (poll.status === 'draft') actions.append(this.#control('Open poll', 'play', 'poll-open', 'btn-primary', 'poll.open', poll.id));
      if (poll.status === 'open') actions.append(this.#control('Close poll', 'stop', 'poll-close', 'btn-secondary', 'poll.close', poll.id));
      if (actions.childElementCount) li.append(actions);
    }
    return li;
  }

  #voteForm(poll) {
    const form = element('form', 'poll-options', { 'data-testid': 'poll-vote-form' });
    const picked = this.#selection.get(poll.id) ?? new Set();
    poll.options.forEach((text, index) => {
      const label = element('label', 'poll-option');
      const input = element('input', '', {
        type: poll.multiple ? 'checkbox' : 'radio', name: `poll-${poll.id}`, value: String(index),
        'data-testid': 'poll-choice', 'data-option': String(index),
      });
      input.checked = picked.has(index);
      input.addEventListener('change', () => {
        const set = poll.multiple ? new Set(this.#selection.get(poll.id) ?? []) : new Set();
        if (input.checked) set.add(index);
        else set.delete(index);
        this.#selection.set(poll.id, set);
        submit.disabled = set.size === 0 || this.#busy.has(poll.id);
      });
      const span = element('span', 'poll-option-text');
      span.textContent = text;
      label.append(input, span);
      form.append(label);
    });
    const submit = element('button', 'btn btn-primary btn-small', { type: 'submit', 'data-testid': 'poll-vote' });
    submit.innerHTML = `${icon('check')}<span class="btn-label">Vote</span>`;
    submit.disabled = picked.size === 0 || this.#busy.has(poll.id);
    form.append(submit);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const choices = [...(this.#selection.get(poll.id) ?? [])].sort((a, b) => a - b);
      if (choices.length === 0) return;
      this.#busy.add(poll.id);
      submit.disabled = true;
      try {
        await this.#session.vote(poll.id, choices);
        this.#selection.delete(poll.id);
      } catch (err) {
        if (err.code === 'already_voted') this.#session.model.recordBallot(poll.id, choices);
        this.onError(err);
      } finally {
        this.#busy.delete(poll.id);
        this.render();
      }
    });
    return form;
  }

  #optionList(poll) {
    const list = element('ol', 'poll-plain-options');
    poll.options.forEach((text, index) => {
      const item = element('li', poll.correct?.includes?.(index) ? 'is-correct' : '');
      item.textContent = text;
      list.append(item);
    });
    return list;
  }

  #results(poll, ballot) {
    const counts = countsOf(poll.results, poll.options.length);
    const ballots = Number(poll.results?.ballots ?? counts.reduce((a, b) => a + b, 0)) || 0;
    const correct = poll.results?.correct ?? poll.correct ?? [];
    const top = Math.max(...counts);
    const list = element('ol', 'poll-results', { 'data-testid': 'poll-results', 'data-ballots': String(ballots) });
    poll.options.forEach((text, index) => {
      const n = counts[index];
      const share = ballots > 0 ? Math.round((n / ballots) * 100) : 0;
      const isCorrect = poll.status === 'closed' && correct.includes(index);
      const mine = ballot?.includes(index);
      const item = element('li', `poll-result${n === top && n > 0 ? ' is-top' : ''}${isCorrect ? ' is-correct' : ''}${mine ? ' is-mine' : ''}`, {
        'data-testid': 'poll-result', 'data-option': String(index), 'data-count': String(n),
      });
      const label = element('div', 'poll-result-label');
      const name = element('span', 'poll-result-text');
      name.textContent = text;
      if (isCorrect) name.insertAdjacentHTML('afterbegin', icon('check'));
      const figure = element('span', 'poll-result-count', { 'data-testid': 'poll-result-count' });
      figure.textContent = `${n} · ${share}%`;
      label.append(name, figure);
      const bar = element('div', 'poll-bar', { role: 'presentation' });
      const fill = element('span');
      fill.style.width = `${share}%`;
      bar.append(fill);
      item.append(label, bar);
      list.append(item);
    });
    const wrap = element('div', 'poll-results-wrap');
    const total = element('p', 'poll-note', { 'data-testid': 'poll-ballots', 'data-ballots': String(ballots) });
    total.textContent = `${ballots} ${ballots === 1 ? 'vote' : 'votes'}${poll.status === 'open' ? ' so far' : ''}`;
    wrap.append(list, total);
    return wrap;
  }

  #yourBallot(poll, ballot) {
    const p = element('p', 'poll-voted', { 'data-testid': 'poll-voted' });
    p.innerHTML = icon('check');
    const words = element('span');
    const picked = ballot.map((i) => poll.options[i]).filter((t) => t !== undefined);
    words.textContent = `Your vote: ${picked.join(', ')}`;
    p.append(words);
    return p;
  }

  /** Named polls: who chose what (sent to moderators only, in `poll.voters`). */
  #voters(poll) {
    const details = element('details', 'poll-voters', { 'data-testid': 'poll-voters' });
    const summary = element('summary');
    summary.textContent = `Ballots by person (${Object.keys(poll.voters).length})`;
    const list = element('ul');
    for (const [participantId, choices] of Object.entries(poll.voters)) {
      const item = element('li', '', { 'data-participant-id': participantId });
      const name = participantId === this.#session.participantId
        ? this.#session.name
        : this.#session.participants.get(participantId)?.name ?? 'Someone who left';
      item.textContent = `${name}: ${choices.map((i) => poll.options[i]).join(', ')}`;
      list.append(item);
    }
    details.append(summary, list);
    return details;
  }

  #control(label, iconName, testid, kind, type, pollId) {
    const button = element('button', `btn btn-small ${kind}`, { type: 'button', 'data-testid': testid });
    button.innerHTML = `${icon(iconName)}<span class="btn-label">${label}</span>`;
    button.disabled = this.#busy.has(pollId);
    button.addEventListener('click', async () => {
      this.#busy.add(pollId);
      button.disabled = true;
      try {
        await this.#session.command(type, { poll_id: pollId });
      } catch (err) {
        this.onError(err);
      } finally {
        this.#busy.delete(pollId);
        button.disabled = false;
      }
    });
    return button;
  }

  #renderLeaderboard(model) {
    const entries = model?.leaderboard ?? [];
    const root = this.els.leaderboard;
    root.hidden = entries.length === 0;
    if (!entries.length) return;
    const heading = element('h3', 'panel-subheading');
    heading.innerHTML = `${icon('trophy')}<span>Leaderboard</span>`;
    const list = element('ol', 'leaderboard');
    entries.forEach((entry, index) => {
      const self = entry.participant_id === this.#session.participantId;
      const item = element('li', `leaderboard-entry${self ? ' is-self' : ''}`, {
        'data-testid': 'leaderboard-entry', 'data-participant-id': entry.participant_id ?? '', 'data-score': String(entry.score),
      });
      const rank = element('span', 'leaderboard-rank');
      rank.textContent = String(index + 1);
      const name = element('span', 'leaderboard-name');
      name.textContent = self ? `${entry.name} (you)` : entry.name;
      const score = element('span', 'leaderboard-score');
      score.textContent = String(entry.score);
      item.append(rank, name, score);
      list.append(item);
    });
    root.replaceChildren(heading, list);
  }

  #tick() {
    const model = this.#session?.model;
    if (!model) return;
    for (const el of this.els.list.querySelectorAll('.poll-countdown[data-closes-at]')) {
      el.textContent = countdownText(Number(el.dataset.closesAt) - model.serverNow());
    }
  }

  async #create(spec, openNow) {
    const reply = await this.#session.command('poll.create', spec);
    if (openNow && reply.poll_id) await this.#session.command('poll.open', { poll_id: reply.poll_id });
  }
}

/** The moderator's create-poll form (question, 2–10 options, kind, duration, quiz answers). */
class PollForm {
  visible = false;

  constructor(root, { onSubmit, onClose }) {
    this.root = root;
    this.onSubmit = onSubmit;
    this.onClose = onClose;
    this.#build();
    this.hide();
  }

  show() {
    this.reset();
    this.visible = true;
    this.root.hidden = false;
    this.question.focus();
  }

  hide() {
    this.visible = false;
    this.root.hidden = true;
  }

  reset() {
    this.question.value = '';
    this.options.replaceChildren();
    this.#addOption();
    this.#addOption();
    for (const box of [this.multiple, this.publicResults, this.quiz]) box.checked = false;
    this.anonymous.checked = true;
    this.duration.value = '';
    this.error.textContent = '';
    this.#sync();
  }

  #build() {
    const form = element('form', 'poll-form', { 'data-testid': 'poll-form', 'aria-label': 'New poll' });
    form.noValidate = true;
    const title = element('h3', 'panel-subheading');
    title.innerHTML = `${icon('poll')}<span>New poll</span>`;
    const questionField = element('label', 'field');
    questionField.innerHTML = '<span class="field-label">Question</span>';
    this.question = element('input', '', { type: 'text', maxlength: '500', 'data-testid': 'poll-question-input', placeholder: 'e.g. First-line therapy?' });
    questionField.append(this.question);

    const optionsField = element('fieldset', 'poll-form-options');
    const legend = element('legend', 'field-label');
    legend.textContent = 'Options';
    this.options = element('div', 'poll-form-option-list');
    this.addButton = element('button', 'btn btn-ghost btn-small', { type: 'button', 'data-testid': 'poll-option-add' });
    this.addButton.innerHTML = `${icon('plus')}<span class="btn-label">Add option</span>`;
    this.addButton.addEventListener('click', () => this.#addOption(true));
    optionsField.append(legend, this.options, this.addButton);

    const toggles = element('div', 'poll-form-toggles');
    const toggle = (testid, label) => {
      const wrap = element('label', 'toggle');
      const box = element('input', '', { type: 'checkbox', 'data-testid': testid });
      const text = element('span');
      text.textContent = label;
      wrap.append(box, text);
      toggles.append(wrap);
      return box;
    };
    this.multiple = toggle('poll-multiple', 'Several answers allowed');
    this.anonymous = toggle('poll-anonymous', 'Anonymous ballots');
    this.publicResults = toggle('poll-public-results', 'Live results for everyone');
    this.quiz = toggle('poll-quiz', 'Quiz: mark the correct answers');
    this.quiz.addEventListener('change', () => this.#sync());

    const durationField = element('label', 'field');
    durationField.innerHTML = '<span class="field-label">Closes</span>';
    this.duration = element('select', '', { 'data-testid': 'poll-duration' });
    for (const [value, label] of DURATIONS) {
      const option = element('option', '', { value: value === null ? '' : String(value) });
      option.textContent = label;
      this.duration.append(option);
    }
    durationField.append(this.duration);

    this.error = element('p', 'form-error', { role: 'alert', 'data-testid': 'poll-form-error' });
    const actions = element('div', 'poll-form-actions');
    const cancel = element('button', 'btn btn-ghost btn-small', { type: 'button', 'data-testid': 'poll-cancel' });
    cancel.textContent = 'Cancel';
    cancel.addEventListener('click', () => { this.hide(); this.onClose(); });
    const draft = element('button', 'btn btn-secondary btn-small', { type: 'submit', value: 'draft', 'data-testid': 'poll-save-draft' });
    draft.textContent = 'Save draft';
    const open = element('button', 'btn btn-primary btn-small', { type: 'submit', value: 'open', 'data-testid': 'poll-create-open' });
    open.innerHTML = `${icon('play')}<span class="btn-label">Open now</span>`;
    actions.append(cancel, draft, open);
    form.append(title, questionField, optionsField, toggles, durationField, this.error, actions);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.#submit(event.submitter?.value === 'draft' ? false : true, [draft, open]);
    });
    this.root.replaceChildren(form);
  }

  #addOption(focus = false) {
    if (this.options.childElementCount >= MAX_OPTIONS) return;
    const row = element('div', 'poll-form-option');
    const correct = element('input', 'poll-correct', { type: 'checkbox', 'data-testid': 'poll-correct', 'aria-label': 'Correct answer', title: 'Correct answer' });
    const input = element('input', '', { type: 'text', maxlength: '200', 'data-testid': 'poll-option-input' });
    const remove = element('button', 'icon-button', { type: 'button', 'data-testid': 'poll-option-remove', 'aria-label': 'Remove option', title: 'Remove option' });
    remove.innerHTML = icon('close');
    remove.addEventListener('click', () => {
      row.remove();
      this.#sync();
    });
    row.append(correct, input, remove);
    this.options.append(row);
    this.#sync();
    if (focus) input.focus();
  }

  #sync() {
    const rows = [...this.options.children];
    rows.forEach((row, index) => {
      row.querySelector('input[type="text"]').placeholder = `Option ${index + 1}`;
      row.querySelector('.poll-correct').hidden = !this.quiz.checked;
      row.querySelector('.icon-button').hidden = rows.length <= MIN_OPTIONS;
    });
    this.addButton.hidden = rows.length >= MAX_OPTIONS;
  }

  async #submit(openNow, buttons) {
    const question = this.question.value.trim();
    const rows = [...this.options.children];
    const options = rows.map((row) => row.querySelector('input[type="text"]').value.trim());
    const correct = rows.map((row, i) => (row.querySelector('.poll-correct').checked ? i : -1)).filter((i) => i >= 0);
    const fail = (message, focus) => {
      this.error.textContent = message;
      focus?.focus();
    };
    if (!question) return fail('Please write the question.', this.question);
    const blank = rows.find((row, i) => !options[i]);
    if (blank) return fail('Please fill in every option, or remove the empty ones.', blank.querySelector('input[type="text"]'));
    if (options.length < MIN_OPTIONS) return fail(`A poll needs at least ${MIN_OPTIONS} options.`);
    if (this.quiz.checked && correct.length === 0) return fail('Mark at least one correct answer for the quiz.');
    const spec = {
      question, options, multiple: this.multiple.checked, anonymous: this.anonymous.checked,
      public_results: this.publicResults.checked, quiz: this.quiz.checked, correct: this.quiz.checked ? correct : [],
    };
    if (this.duration.value) spec.duration_s = Number(this.duration.value);
    this.error.textContent = '';
    for (const b of buttons) b.disabled = true;
    try {
      await this.onSubmit(spec, openNow);
      this.hide();
      this.onClose();
    } catch (err) {
      this.error.textContent = err.message || 'The poll could not be created.';
    } finally {
      for (const b of buttons) b.disabled = false;
    }
  }
}
