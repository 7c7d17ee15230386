// Recording on the stage page: the REC indicator everyone sees in the top bar while a recording runs
// (recording.started ... recording.stopped), and for the host and moderators the recording card in
// the People tab (start, stop, and the consent summary of the people present).

import { icon } from './icons.js';
import { canModerate } from './roles.js';
import { element } from './ui.js';

/** 75 -> "01:15", 3675 -> "1:01:15". */
export function formatElapsed(seconds) {
  const total = Math.max(0, Math.floor(seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const mm = String(m).padStart(2, '0');
  const ss = String(s).padStart(2, '0');
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

/** Seconds since the recording started on the server's clock, or null when unknown. */
function elapsedOf(model) {
  const started = model?.recording.startedAt;
  return typeof started === 'number' ? Math.max(0, model.serverNow() - started) : null;
}

/** The top bar's red dot, "REC" and elapsed time, shown whenever the stage records. */
export class RecordingIndicator {
  #timer = null;
  #model = null;

  /** els: {root, elapsed} */
  constructor(els) {
    this.els = els;
  }

  /** `model` is the StageModel while joined, else null. */
  render(model) {
    this.#model = model;
    const active = Boolean(model?.recording.active);
    const { root } = this.els;
    root.hidden = !active;
    root.dataset.sessionId = active ? model.recording.sessionId ?? '' : '';
    if (active && !this.#timer) this.#timer = setInterval(() => this.#tick(), 1000);
    if (!active && this.#timer) {
      clearInterval(this.#timer);
      this.#timer = null;
    }
    this.#tick();
  }

  #tick() {
    const { root, elapsed } = this.els;
    const seconds = this.#model?.recording.active ? elapsedOf(this.#model) : null;
    elapsed.hidden = seconds === null;
    elapsed.textContent = seconds === null ? '' : formatElapsed(seconds);
    const label = seconds === null ? 'Recording' : `Recording for ${formatElapsed(seconds)}`;
    root.setAttribute('aria-label', label);
    root.title = 'This session is being recorded. Privacy: what is recorded about you.';
  }
}

/** The host's and moderators' recording card: Start / Stop, and who consented. */
export class RecordingControls {
  #session = null;
  #busy = false;

  /** els: {root, status, start, stop, summary}; onError(err), onInfo(message). */
  constructor(els, { onError, onInfo }) {
    this.els = els;
    this.onError = onError;
    this.onInfo = onInfo;
    els.start.addEventListener('click', () => this.#run('recording.start'));
    els.stop.addEventListener('click', () => this.#run('recording.stop'));
  }

  attach(session) {
    this.#session = session;
    this.render();
  }

  render() {
    const session = this.#session;
    const model = session?.model;
    const { root, status, start, stop, summary } = this.els;
    root.hidden = !(session?.state === 'joined' && canModerate(session.role) && model?.mayRecord);
    if (root.hidden) return;
    const recording = model.recording;
    const live = session.stage?.state === 'live';
    root.dataset.active = String(recording.active);
    status.innerHTML = `${icon('rec')}<span></span>`;
    status.lastElementChild.textContent = recording.active ? 'In progress'
      : recording.mode === 'auto' ? 'Off · starts by itself when live' : 'Not recording';
    start.hidden = recording.active;
    stop.hidden = !recording.active;
    start.disabled = this.#busy || !live;
    stop.disabled = this.#busy;
    start.title = live ? 'Start recording this session. Everyone sees that it is recorded.' : 'Start the stage first.';

    const counts = model.consent.summary;
    summary.hidden = !counts;
    if (counts) {
      const parts = [['granted', 'consented'], ['declined', 'declined'], ['none', 'not decided']].map(([key, words]) => {
        const part = element('span', `consent-count consent-count-${key}`, { 'data-testid': `consent-summary-${key}` });
        const number = element('strong');
        number.textContent = String(counts[key] ?? 0);
        part.append(number, ` ${words}`);
        return part;
      });
      const lead = element('span', 'consent-summary-lead');
      lead.innerHTML = `${icon('shieldCheck')}<span>Consent</span>`;
      summary.replaceChildren(lead, ...parts);
      summary.setAttribute('aria-label',
        `Consent to recording: ${counts.granted ?? 0} consented, ${counts.declined ?? 0} declined, ${counts.none ?? 0} not decided`);
    }
  }

  async #run(type) {
    if (this.#busy || !this.#session) return;
    this.#busy = true;
    this.render();
    try {
      await this.#session.command(type);
    } catch (err) {
      // Someone else started or stopped it meanwhile: the events bring the page up to date.
      if (err.code === 'already_recording') this.onInfo('The session is already being recorded.');
      else if (err.code === 'not_recording') this.onInfo('The recording had already stopped.');
      else this.onError(err);
    } finally {
      this.#busy = false;
      this.render();
    }
  }
}
