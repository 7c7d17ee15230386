// Consent to recording (docs/protocol.md, "Consent and recording"): the prompt a person answers before
// anything about them may be recorded (on joining a stage that may record, when recording starts, when
// speaking needs it), and the Privacy panel where they see, change or withdraw their decision.
// The server keeps every answer as a consent record; these dialogs only ask and show.

import { icon } from './icons.js';
import { SCOPES } from './model.js';
import { element } from './ui.js';

export const SCOPE_TEXT = {
  media: {
    label: 'Record my camera and microphone',
    hint: 'While you are on stage. Without it you may still speak live.',
    short: 'camera and microphone',
    icon: 'camera',
  },
  comments: {
    label: 'Record my comments, questions and votes',
    hint: 'Without it they are kept as anonymous placeholders.',
    short: 'comments, questions and votes',
    icon: 'chat',
  },
  share: {
    label: 'Share the recording with attendees',
    hint: 'Attendees of this session may watch it afterwards.',
    short: 'sharing with attendees',
    icon: 'users',
  },
};

const DECISIONS = {
  granted: { label: 'Consent given', tone: 'granted', icon: 'shieldCheck' },
  changed: { label: 'Consent given', tone: 'granted', icon: 'shieldCheck' },
  declined: { label: 'Declined', tone: 'declined', icon: 'shieldOff' },
  withdrawn: { label: 'Withdrawn', tone: 'withdrawn', icon: 'shieldOff' },
};

const METHODS = {
  join_prompt: 'when you joined',
  recording_prompt: 'when recording started',
  settings: 'in Privacy settings',
  invitation: 'when you were invited to speak',
  withdrawal: 'by withdrawing',
};

/** "camera and microphone, and comments, questions and votes" */
export function describeScopes(scopes) {
  const parts = SCOPES.filter((scope) => scopes.includes(scope)).map((scope) => SCOPE_TEXT[scope].short);
  if (parts.length <= 1) return parts[0] ?? '';
  return `${parts.slice(0, -1).join(', ')} and ${parts[parts.length - 1]}`;
}

/** How a decision reads in a badge or a status line: {label, tone, icon, text}. */
export function describeDecision(mine) {
  if (!mine) {
    return { label: 'Not decided', tone: 'none', icon: 'shieldQuestion', text: 'You have not decided yet.' };
  }
  const spec = DECISIONS[mine.decision] ?? (mine.scopes?.length ? DECISIONS.granted : DECISIONS.declined);
  const scopes = mine.scopes ?? [];
  let text;
  if (scopes.length) text = `You allow recording of your ${describeScopes(scopes)}.`;
  else if (mine.decision === 'withdrawn') text = 'You withdrew your consent: nothing more about you is recorded.';
  else text = 'Nothing about you is recorded.';
  if (scopes.length && !scopes.includes('share')) text += ' The recording is not shared with attendees.';
  return { ...spec, text };
}

function formatTime(seconds) {
  if (typeof seconds !== 'number') return '';
  const date = new Date(seconds * 1000);
  const sameDay = date.toDateString() === new Date().toDateString();
  const time = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return sameDay ? time : `${date.toLocaleDateString()} ${time}`;
}

/** The three scope checkboxes, in a fieldset; `testid` prefixes each box's data-testid. */
function scopeFieldset({ legend, checked = [], required = [], testid, onChange, compact = false }) {
  const fieldset = element('fieldset', `consent-scopes${compact ? ' is-compact' : ''}`);
  const caption = element('legend', 'consent-legend');
  caption.textContent = legend;
  fieldset.append(caption);
  const boxes = new Map();
  for (const scope of SCOPES) {
    const text = SCOPE_TEXT[scope];
    const label = element('label', 'consent-scope', { 'data-scope': scope });
    const box = element('input', '', { type: 'checkbox', name: scope, 'data-testid': `${testid}-${scope}` });
    box.checked = checked.includes(scope);
    box.addEventListener('change', () => onChange?.());
    const mark = element('span', 'consent-scope-icon', { 'aria-hidden': 'true' });
    mark.innerHTML = icon(text.icon);
    const words = element('span', 'consent-scope-text');
    const strong = element('span', 'consent-scope-label');
    strong.textContent = text.label;
    if (required.includes(scope)) {
      const tag = element('span', 'consent-required-tag');
      tag.textContent = 'Needed to speak';
      strong.append(tag);
    }
    words.append(strong);
    if (!compact) {
      const hint = element('span', 'consent-scope-hint');
      hint.textContent = text.hint;
      words.append(hint);
    }
    label.append(box, mark, words);
    fieldset.append(label);
    boxes.set(scope, box);
  }
  return { fieldset, boxes, selected: () => SCOPES.filter((scope) => boxes.get(scope).checked) };
}

function policyBlock(policy, { open = true, testid }) {
  const details = element('details', 'consent-policy', { 'data-testid': testid });
  details.open = open;
  const summary = element('summary', 'consent-policy-summary');
  summary.innerHTML = `${icon('document')}<span>Recording policy</span>`;
  const version = element('span', 'consent-version', { 'data-testid': `${testid}-version` });
  version.textContent = `Version ${policy.version ?? '—'}`;
  summary.append(version);
  const text = element('div', 'consent-policy-text', { tabindex: '0', 'data-testid': `${testid}-text` });
  for (const paragraph of String(policy.text || 'The host has not published a policy text.').split(/\n\s*\n/)) {
    const p = element('p');
    p.textContent = paragraph.trim();
    text.append(p);
  }
  details.append(summary, text);
  return details;
}

/** Focus stays in `overlay` while it is open (it is modal); Escape calls onEscape, if any. */
function trapFocus(overlay, onEscape = null) {
  overlay.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      event.preventDefault();
      onEscape?.();
      return;
    }
    if (event.key !== 'Tab') return;
    const focusable = [...overlay.querySelectorAll('input, button, summary, [tabindex="0"]')]
      .filter((el) => !el.disabled && el.offsetParent !== null);
    const first = focusable[0];
    const last = focusable[focusable.length - 1];
    if (event.shiftKey && document.activeElement === first) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && document.activeElement === last) {
      event.preventDefault();
      first.focus();
    }
  });
}

const PROMPT_TEXT = {
  join_prompt: {
    title: 'This session may be recorded',
    text: 'Before you enter the stage, please decide what may be recorded about you.',
  },
  recording_prompt: {
    title: 'Recording has started',
    text: 'This session is being recorded now. Please decide what may be recorded about you.',
  },
  invitation: {
    title: 'Consent to speak on this stage',
    text: 'Speakers on this stage are recorded only with their consent: to go on stage, allow recording of your camera and microphone.',
  },
};

/**
 * The consent prompt: a modal the person must answer (no Escape, no close button). `answer(scopes)`
 * sends the decision and rejects with the server's refusal, which is shown in the dialog.
 * `show()` resolves with the scopes granted ([] declined), or null when dismissed by the page.
 */
export class ConsentPrompt {
  #overlay = null;
  #resolve = null;
  #previousFocus = null;

  constructor({ policy, method, stageTitle = '', recording = false, answer }) {
    this.options = { policy, method, stageTitle, recording, answer };
  }

  get method() {
    return this.options.method;
  }

  show(root = document.body) {
    const { policy, method, stageTitle, recording, answer } = this.options;
    let words = PROMPT_TEXT[method] ?? PROMPT_TEXT.join_prompt;
    if (method === 'join_prompt' && recording) {
      words = { ...words, title: 'This session is being recorded' };
    }
    const overlay = element('div', 'overlay overlay-dialog overlay-consent', {
      role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': 'consent-title', 'aria-describedby': 'consent-text',
      'data-testid': 'consent-dialog', 'data-method': method,
    });
    const form = element('form', 'card consent-card');
    form.noValidate = true;

    const head = element('div', 'consent-head');
    const mark = element('span', `card-icon card-icon-rec${recording ? ' is-recording' : ''}`);
    mark.innerHTML = icon('rec');
    const titles = element('div', 'consent-titles');
    const heading = element('h2', 'card-title', { id: 'consent-title' });
    heading.textContent = words.title;
    const sub = element('p', 'consent-sub');
    sub.textContent = stageTitle || 'medstage';
    titles.append(heading, sub);
    head.append(mark, titles);

    const intro = element('p', 'consent-intro', { id: 'consent-text' });
    intro.textContent = words.text;

    const required = method === 'invitation' ? ['media'] : [];
    const agree = element('button', 'btn btn-primary', { type: 'submit', 'data-testid': 'consent-agree', value: 'agree' });
    agree.innerHTML = `${icon('check')}<span class="btn-label">Agree to selected</span>`;
    const decline = element('button', 'btn btn-secondary', { type: 'button', 'data-testid': 'consent-decline' });
    decline.innerHTML = '<span class="btn-label">Decline all</span>';
    const scopes = scopeFieldset({
      legend: 'What may be recorded about you', required, testid: 'consent-scope',
      onChange: () => { agree.disabled = scopes.selected().length === 0; },
    });
    agree.disabled = true;

    const foot = element('p', 'consent-foot');
    foot.innerHTML = `${icon('shield')}<span>You can change or withdraw your decision at any time under <strong>Privacy</strong>. Declining does not stop you from following the session.</span>`;
    const error = element('p', 'form-error', { role: 'alert', 'data-testid': 'consent-error' });
    const actions = element('div', 'card-actions consent-actions');
    actions.append(decline, agree);
    form.append(head, intro, policyBlock(policy, { open: true, testid: 'consent-policy' }), scopes.fieldset, foot, error, actions);

    const send = async (granted) => {
      error.textContent = '';
      for (const button of [agree, decline]) button.disabled = true;
      overlay.setAttribute('aria-busy', 'true');
      try {
        await answer(granted);
        this.#finish(granted);
      } catch (err) {
        error.textContent = err?.message || 'Your answer could not be saved. Please try again.';
        decline.disabled = false;
        agree.disabled = scopes.selected().length === 0;
        overlay.removeAttribute('aria-busy');
      }
    };
    decline.addEventListener('click', () => send([]));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      if (scopes.selected().length) send(scopes.selected());
    });
    trapFocus(overlay); // must be answered: Escape does nothing

    overlay.append(form);
    this.#previousFocus = document.activeElement;
    this.#overlay = overlay;
    root.append(overlay);
    scopes.boxes.get(SCOPES[0]).focus();
    return new Promise((resolve) => { this.#resolve = resolve; });
  }

  get isOpen() {
    return this.#overlay !== null;
  }

  /** Recording started or stopped while the prompt is open: say so (the question stays the same). */
  setRecording(recording) {
    if (!this.#overlay || this.options.method !== 'join_prompt') return;
    this.#overlay.querySelector('.card-icon-rec')?.classList.toggle('is-recording', recording);
    const title = this.#overlay.querySelector('#consent-title');
    if (title) title.textContent = recording ? 'This session is being recorded' : PROMPT_TEXT.join_prompt.title;
  }

  /** Close without an answer (the session ended); resolves with null. */
  dismiss() {
    this.#finish(null);
  }

  #finish(result) {
    if (!this.#overlay) return;
    this.#overlay.remove();
    this.#overlay = null;
    if (this.#previousFocus?.isConnected) this.#previousFocus.focus();
    this.#resolve?.(result);
  }
}

/**
 * The Privacy panel: the person's current decision, the policy, and the means to change or withdraw
 * it. `give(scopes)` and `withdraw()` send the commands; the panel re-renders from the model as the
 * server's `consent.recorded` arrives (`render()`).
 */
export class PrivacyPanel {
  #overlay = null;
  #els = null;
  #dirty = false;
  #busy = false;

  constructor({ getModel, give, withdraw, onInfo, onClose }) {
    this.getModel = getModel;
    this.give = give;
    this.withdraw = withdraw;
    this.onInfo = onInfo;
    this.onClose = onClose;
  }

  get isOpen() {
    return this.#overlay !== null;
  }

  open() {
    if (this.#overlay) return;
    const model = this.getModel();
    if (!model) return;
    const overlay = element('div', 'overlay overlay-dialog overlay-privacy', {
      role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': 'privacy-title', 'data-testid': 'privacy-panel',
    });
    overlay.addEventListener('pointerdown', (event) => { if (event.target === overlay) this.close(); });
    const card = element('div', 'card privacy-card');

    const head = element('div', 'privacy-head');
    const title = element('h2', 'card-title', { id: 'privacy-title' });
    title.innerHTML = `${icon('shield')}<span>Privacy and recording</span>`;
    const close = element('button', 'icon-button', { type: 'button', 'aria-label': 'Close', title: 'Close', 'data-testid': 'privacy-close' });
    close.innerHTML = icon('close');
    close.addEventListener('click', () => this.close());
    head.append(title, close);

    const recording = element('p', 'privacy-recording', { 'data-testid': 'privacy-recording' });
    const status = element('section', 'consent-status', { 'data-testid': 'consent-status', 'aria-live': 'polite' });

    const form = element('form', 'privacy-form');
    form.noValidate = true;
    const save = element('button', 'btn btn-primary btn-small', { type: 'submit', 'data-testid': 'privacy-save' });
    save.innerHTML = `${icon('check')}<span class="btn-label">Save changes</span>`;
    const withdraw = element('button', 'btn btn-danger-outline btn-small', { type: 'button', 'data-testid': 'privacy-withdraw' });
    withdraw.innerHTML = `${icon('shieldOff')}<span class="btn-label">Withdraw consent</span>`;
    const scopes = scopeFieldset({
      legend: 'Change what may be recorded', testid: 'privacy-scope', checked: model.myScopes, compact: true,
      onChange: () => {
        this.#dirty = true;
        this.#renderButtons();
      },
    });
    const error = element('p', 'form-error', { role: 'alert', 'data-testid': 'privacy-error' });
    const actions = element('div', 'privacy-actions');
    actions.append(withdraw, save);
    form.append(scopes.fieldset, error, actions);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.#run(async () => {
        const granted = scopes.selected();
        await this.give(granted);
        this.onInfo?.(granted.length ? `Saved: you allow recording of your ${describeScopes(granted)}.`
          : 'Saved: nothing about you is recorded.');
      });
    });
    withdraw.addEventListener('click', () => this.#run(async () => {
      await this.withdraw();
      this.onInfo?.('You withdrew your consent. Nothing more about you is recorded.');
    }));

    const note = element('p', 'privacy-note');
    note.textContent = 'Every decision is kept with its time and the policy version, as evidence of what you agreed to. '
      + 'Withdrawing stops the recording of your camera and microphone within a second; what was recorded before stays.';

    card.append(head, recording, status, policyBlock(model.policy, { open: false, testid: 'privacy-policy' }), form, note);
    overlay.append(card);
    trapFocus(overlay, () => this.close());
    this.#overlay = overlay;
    this.#els = { recording, status, scopes, save, withdraw, error };
    this.#dirty = false;
    document.body.append(overlay);
    this.render();
    close.focus();
  }

  close() {
    if (!this.#overlay) return;
    this.#overlay.remove();
    this.#overlay = null;
    this.#els = null;
    this.onClose?.();
  }

  /** Show the model's current decision (after a `consent.recorded`, a recording start or stop...). */
  render() {
    if (!this.#overlay) return;
    const model = this.getModel();
    if (!model) {
      this.close();
      return;
    }
    const { recording, status, scopes } = this.#els;
    const rec = model.recording;
    recording.dataset.active = String(rec.active);
    recording.innerHTML = `${icon('rec')}<span></span>`;
    recording.lastElementChild.textContent = rec.mode === 'off' ? 'This stage is never recorded.'
      : rec.active ? 'This session is being recorded now.'
        : rec.mode === 'auto' ? 'This session is recorded automatically while it is live.'
          : 'This session is not being recorded now. The host or a moderator may start a recording.';

    const mine = model.consent.mine;
    const described = describeDecision(mine);
    status.dataset.decision = mine?.decision ?? 'none';
    const badge = element('span', `consent-badge consent-${described.tone}`, { 'data-testid': 'consent-status-label' });
    badge.innerHTML = `${icon(described.icon)}<span></span>`;
    badge.lastElementChild.textContent = described.label;
    const text = element('p', 'consent-status-text', { 'data-testid': 'consent-status-text' });
    text.textContent = described.text;
    const meta = element('p', 'consent-status-meta');
    if (mine) {
      const how = METHODS[mine.method] ? ` ${METHODS[mine.method]}` : '';
      meta.textContent = `Since ${formatTime(mine.at)}${how} · policy ${model.consent.policyVersion ?? model.policy.version ?? '—'}`;
    } else {
      meta.textContent = `Policy ${model.policy.version ?? '—'}`;
    }
    status.dataset.scopes = (mine?.scopes ?? []).join(' ');
    const top = element('div', 'consent-status-top');
    top.append(badge, meta);
    status.replaceChildren(top, text);
    if (!this.#dirty) {
      for (const [scope, box] of scopes.boxes) box.checked = (mine?.scopes ?? []).includes(scope);
    }
    this.#renderButtons();
  }

  #renderButtons() {
    const { save, withdraw, scopes } = this.#els;
    const model = this.getModel();
    const mine = model?.consent.mine;
    const current = (mine?.scopes ?? []).join();
    const chosen = scopes.selected().join();
    save.disabled = this.#busy || (Boolean(mine) && chosen === current);
    save.querySelector('.btn-label').textContent = mine ? 'Save changes' : 'Save decision';
    withdraw.disabled = this.#busy || !(mine?.scopes ?? []).length;
    withdraw.title = withdraw.disabled && !this.#busy ? 'You have not granted anything to withdraw.' : '';
  }

  async #run(work) {
    if (this.#busy || !this.#els) return;
    this.#busy = true;
    this.#els.error.textContent = '';
    this.#renderButtons();
    try {
      await work();
      this.#dirty = false;
    } catch (err) {
      if (this.#els) this.#els.error.textContent = err?.message || 'That did not work. Please try again.';
    } finally {
      this.#busy = false;
      this.render();
    }
  }
}

/** A small badge for a person's consent in the People tab (moderators). */
export function consentBadge(record) {
  const described = describeDecision(record);
  const scopes = record?.scopes ?? [];
  const label = scopes.length ? `Recording consent: ${describeScopes(scopes)}`
    : record?.decision === 'withdrawn' ? 'Withdrew recording consent' : 'Declined recording';
  const badge = element('span', `person-flag consent-flag consent-${described.tone}`, {
    role: 'img', 'aria-label': label, title: label, 'data-testid': 'consent-badge', 'data-decision': record?.decision ?? 'none',
  });
  badge.innerHTML = icon(described.icon);
  return badge;
}
