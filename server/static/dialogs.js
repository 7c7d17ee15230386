// Modal dialogs in the page's own style: confirmations, a reason prompt, the stage invitation.
// Each resolves with the action chosen ('cancel' on Escape or dismissal) and the text typed, if any.

import { icon } from './icons.js';

function element(tag, className, attributes = {}) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, value);
  return el;
}

let nextId = 1;

/**
 * A modal card. `actions`: [{action, label, kind: primary|secondary|danger, icon, testid}];
 * `input`: {label, placeholder, maxLength, required, testid} for a one-line text field.
 */
export class Dialog {
  #resolve = null;
  #overlay = null;
  #previousFocus = null;

  constructor({ title, text = '', iconName = null, tone = 'neutral', input = null, actions, testid = 'dialog',
    dismissible = true }) {
    this.options = { title, text, iconName, tone, input, actions, testid, dismissible };
  }

  /** Show the dialog; resolves with {action, value}. */
  show(root = document.body) {
    const { title, text, iconName, tone, input, actions, testid, dismissible } = this.options;
    const id = `dialog-${nextId++}`;
    const overlay = element('div', 'overlay overlay-dialog', {
      role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': `${id}-title`, 'data-testid': testid,
    });
    const form = element('form', 'card card-center dialog-card');
    form.noValidate = true;
    if (iconName) {
      const mark = element('span', `card-icon card-icon-${tone}`);
      mark.innerHTML = icon(iconName);
      form.append(mark);
    }
    const heading = element('h2', 'card-title', { id: `${id}-title` });
    heading.textContent = title;
    form.append(heading);
    if (text) {
      const body = element('p', 'card-subtitle');
      body.textContent = text;
      form.append(body);
    }
    let field = null;
    if (input) {
      const label = element('label', 'field field-left');
      const caption = element('span', 'field-label');
      caption.textContent = input.label;
      field = element('input', '', {
        type: 'text', maxlength: String(input.maxLength ?? 500), 'data-testid': input.testid ?? `${testid}-input`,
      });
      field.placeholder = input.placeholder ?? '';
      label.append(caption, field);
      form.append(label);
    }
    const error = element('p', 'form-error', { role: 'alert' });
    form.append(error);
    const buttons = element('div', 'card-actions');
    for (const spec of actions) {
      const button = element('button', `btn btn-${spec.kind ?? 'secondary'}`, {
        type: spec.kind === 'primary' || spec.kind === 'danger' ? 'submit' : 'button',
        'data-testid': spec.testid ?? `${testid}-${spec.action}`,
        value: spec.action,
      });
      button.innerHTML = `${spec.icon ? icon(spec.icon) : ''}<span class="btn-label"></span>`;
      button.querySelector('.btn-label').textContent = spec.label;
      if (button.type === 'button') button.addEventListener('click', () => this.#finish(spec.action));
      buttons.append(button);
    }
    form.append(buttons);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const action = event.submitter?.value ?? actions.find((a) => a.kind === 'primary' || a.kind === 'danger')?.action;
      if (input?.required && field && !field.value.trim()) {
        error.textContent = input.requiredMessage ?? `Please fill in “${input.label}”.`;
        field.focus();
        return;
      }
      this.#finish(action, field?.value.trim() ?? '');
    });
    overlay.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && dismissible) {
        event.preventDefault();
        this.#finish('cancel');
      } else if (event.key === 'Tab') {
        // Keep the focus inside the dialog while it is open (it is modal).
        const focusable = [...form.querySelectorAll('input, button')].filter((el) => !el.disabled);
        const first = focusable[0];
        const last = focusable[focusable.length - 1];
        if (event.shiftKey && document.activeElement === first) {
          event.preventDefault();
          last.focus();
        } else if (!event.shiftKey && document.activeElement === last) {
          event.preventDefault();
          first.focus();
        }
      }
    });
    overlay.append(form);
    this.#previousFocus = document.activeElement;
    this.#overlay = overlay;
    root.append(overlay);
    (field ?? buttons.querySelector('.btn-primary, .btn-danger') ?? buttons.querySelector('button'))?.focus();
    return new Promise((resolve) => { this.#resolve = resolve; });
  }

  /** Close without an answer (e.g. the invitation was withdrawn); resolves with 'cancel'. */
  dismiss() {
    this.#finish('cancel');
  }

  get isOpen() {
    return this.#overlay !== null;
  }

  #finish(action, value = '') {
    if (!this.#overlay) return;
    this.#overlay.remove();
    this.#overlay = null;
    if (this.#previousFocus?.isConnected) this.#previousFocus.focus();
    this.#resolve?.({ action, value });
  }
}

/** Ask to confirm something; resolves true when confirmed. */
export async function confirmDialog({ title, text, confirmLabel, danger = false, iconName = 'alert', testid = 'confirm' }) {
  const { action } = await new Dialog({
    title, text, iconName, tone: danger ? 'danger' : 'neutral', testid,
    actions: [
      { action: 'cancel', label: 'Cancel', kind: 'secondary' },
      { action: 'confirm', label: confirmLabel, kind: danger ? 'danger' : 'primary' },
    ],
  }).show();
  return action === 'confirm';
}

/** Ask for a short text (a reason); resolves with the text, or null when cancelled. */
export async function promptDialog({ title, text, label, placeholder, confirmLabel, danger = false, required = false,
  requiredMessage = null, iconName = 'alert', testid = 'prompt' }) {
  const { action, value } = await new Dialog({
    title, text, iconName, tone: danger ? 'danger' : 'neutral', testid,
    input: { label, placeholder, required, requiredMessage, maxLength: 500, testid: `${testid}-input` },
    actions: [
      { action: 'cancel', label: 'Cancel', kind: 'secondary' },
      { action: 'confirm', label: confirmLabel, kind: danger ? 'danger' : 'primary' },
    ],
  }).show();
  return action === 'confirm' ? value : null;
}
