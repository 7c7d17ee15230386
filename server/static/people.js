// The People tab: raised hands in queue order, who is on stage, the audience, and for moderators a
// menu of actions on each person (the server enforces the same rules; see roles.js).

import { consentBadge } from './consent.js';
import { icon } from './icons.js';
import { actionsOn, canModerate } from './roles.js';
import { element, initials, qualityIndicator, roleBadge } from './ui.js';

const ACTIONS = {
  invite: { label: 'Invite to stage', icon: 'userPlus' },
  'lower-hand': { label: 'Lower hand', icon: 'hand' },
  demote: { label: 'Move to audience', icon: 'userMinus' },
  'stop-share': { label: 'Stop screen share', icon: 'stop' },
  'mute-audio': { label: 'Mute microphone', icon: 'micOff' },
  'unmute-audio': { label: 'Allow microphone', icon: 'mic' },
  'mute-video': { label: 'Turn off camera', icon: 'cameraOff' },
  'unmute-video': { label: 'Allow camera', icon: 'camera' },
  'make-moderator': { label: 'Make moderator', icon: 'shield' },
  'unmake-moderator': { label: 'Remove moderator role', icon: 'shield' },
  'chat-mute': { label: 'Mute in chat', icon: 'chatOff' },
  'chat-unmute': { label: 'Allow in chat', icon: 'chat' },
  remove: { label: 'Remove from stage', icon: 'leave', danger: true },
  ban: { label: 'Ban…', icon: 'ban', danger: true },
};

const STAGE_ORDER = { host: 0, moderator: 1, speaker: 2 };

/**
 * Renders `people` ([{id, name, role, publishing, muted, moderator_muted, chat_muted, hand_raised, self}])
 * and calls `onAction(action, person)` when a moderator picks an action.
 */
export class PeoplePanel {
  #menu = null; // {el, personId, anchor}
  #people = new Map();
  #view = { role: 'audience', hands: [], invited: new Set(), consent: null };

  constructor(root, countEl, { onAction }) {
    this.root = root;
    this.countEl = countEl;
    this.onAction = onAction;
    document.addEventListener('pointerdown', (event) => {
      if (this.#menu && !this.#menu.el.contains(event.target) && !this.#menu.anchor.contains(event.target)) this.closeMenu();
    });
    document.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && this.#menu) {
        const { anchor } = this.#menu;
        this.closeMenu();
        anchor.focus();
      }
    });
  }

  /**
   * people: everyone including us; view: {role (ours), hands (queue), invited (Set of ids),
   * consent (moderators: Map participant id -> last consent decision seen, or null)}.
   */
  render(people, view) {
    this.#view = view;
    this.#people = new Map(people.map((p) => [p.id, p]));
    const hands = view.hands.map((id) => this.#people.get(id)).filter(Boolean);
    const onStage = people.filter((p) => p.role in STAGE_ORDER)
      .sort((a, b) => STAGE_ORDER[a.role] - STAGE_ORDER[b.role] || byName(a, b));
    const audience = people.filter((p) => !(p.role in STAGE_ORDER)).sort(byName);
    const sections = [];
    if (hands.length) sections.push(this.#section('hands', 'Raised hands', hands.map((p, i) => this.#handRow(p, i + 1))));
    sections.push(this.#section('stage', 'On stage', onStage.map((p) => this.#row(p))));
    sections.push(this.#section('audience', 'Audience', audience.map((p) => this.#row(p))));
    this.root.replaceChildren(...sections);
    this.countEl.textContent = String(people.length);
    if (this.#menu) {
      // Keep an open menu as it is unless what may be done to that person changed.
      const person = this.#people.get(this.#menu.personId);
      const anchor = this.root.querySelector(`[data-menu-for="${CSS.escape(this.#menu.personId)}"]`);
      const actions = person ? actionsOn(view.role, person, { invited: view.invited.has(person.id) }).join() : '';
      if (!person || !anchor) this.closeMenu();
      else if (actions !== this.#menu.actions) this.#openMenu(anchor, person);
      else {
        this.#menu.anchor = anchor;
        anchor.setAttribute('aria-expanded', 'true');
      }
    }
  }

  closeMenu() {
    this.#menu?.el.remove();
    this.#menu?.anchor.setAttribute('aria-expanded', 'false');
    this.#menu = null;
  }

  #section(key, title, rows) {
    const section = element('section', `people-section people-${key}`, { 'data-testid': `people-${key}` });
    const heading = element('h3', 'people-heading');
    heading.textContent = title;
    const count = element('span', 'people-heading-count');
    count.textContent = String(rows.length);
    heading.append(count);
    const list = element('ul', 'people');
    if (rows.length) list.append(...rows);
    else {
      const empty = element('li', 'people-empty');
      empty.textContent = key === 'stage' ? 'Nobody is on stage yet.' : 'Nobody here yet.';
      list.append(empty);
    }
    section.append(heading, list);
    return section;
  }

  #handRow(person, position) {
    const li = element('li', 'person person-hand', { 'data-testid': 'hand', 'data-participant-id': person.id });
    const badge = element('span', 'hand-position', { 'aria-label': `Position ${position}` });
    badge.textContent = String(position);
    const text = element('span', 'person-text');
    const name = element('span', 'person-name');
    name.textContent = person.self ? `${person.name} (you)` : person.name;
    const status = element('span', 'person-status');
    const invited = this.#view.invited.has(person.id);
    status.textContent = invited ? 'Invited, waiting for an answer' : 'Wants to speak';
    text.append(name, status);
    li.append(badge, text);
    if (canModerate(this.#view.role) && !person.self) {
      const actions = element('span', 'person-actions');
      if (!invited) actions.append(this.#quick('invite', 'Invite', 'userPlus', person, 'hand-invite'));
      actions.append(this.#quick('lower-hand', 'Lower', 'hand', person, 'hand-lower', true));
      li.append(actions);
    }
    return li;
  }

  #quick(action, label, iconName, person, testid, iconOnly = false) {
    const button = element('button', `btn btn-small ${iconOnly ? 'btn-ghost btn-icon' : 'btn-primary'}`, {
      type: 'button', 'data-testid': testid, 'aria-label': `${ACTIONS[action].label}: ${person.name}`, title: ACTIONS[action].label,
    });
    button.innerHTML = icon(iconName) + (iconOnly ? '' : `<span class="btn-label">${label}</span>`);
    button.addEventListener('click', () => this.onAction(action, person));
    return button;
  }

  #row(person) {
    const li = element('li', 'person', { 'data-testid': 'participant', 'data-participant-id': person.id ?? '', 'data-role': person.role });
    const avatar = element('span', 'person-avatar', { 'aria-hidden': 'true' });
    avatar.textContent = initials(person.name);
    const live = person.publishing?.audio || person.publishing?.video;
    if (live) avatar.classList.add('is-live');
    const text = element('span', 'person-text');
    const name = element('span', 'person-name');
    name.textContent = person.name;
    const status = element('span', 'person-status');
    status.textContent = this.#status(person, live);
    text.append(name, status);
    const flags = element('span', 'person-flags');
    flags.append(roleBadge(person.role));
    if (person.hand_raised || this.#view.hands.includes(person.id)) flags.append(flag('hand', 'Hand raised', 'flag-hand'));
    const modMuted = person.moderator_muted ?? {};
    if (modMuted.audio || modMuted.video) flags.append(flag('shield', 'Muted by a moderator', 'flag-mod'));
    if (live && (person.muted?.audio || modMuted.audio)) flags.append(flag('micOff', 'Microphone muted'));
    if (live && (person.muted?.video || modMuted.video)) flags.append(flag('cameraOff', 'Camera off'));
    if (person.sharing?.video) flags.append(flag('screen', 'Sharing their screen', 'flag-share'));
    if (person.chat_muted) flags.append(flag('chatOff', 'Muted in chat'));
    if (person.quality) {
      const indicator = qualityIndicator(person.quality, '', 'participant-quality');
      if (this.#view.report) {
        // Moderators: the level opens the person's troubleshooting report (docs/operations.md).
        const link = element('a', 'quality-link', {
          href: this.#view.report(person.id), target: '_blank', rel: 'noopener',
          'data-testid': 'participant-report', title: `${indicator.title}: open the connection report`,
        });
        link.append(indicator);
        flags.append(link);
      } else {
        flags.append(indicator);
      }
    }
    const consent = this.#view.consent?.get(person.id);
    if (consent) flags.append(consentBadge(consent));
    li.append(avatar, text, flags);
    const actions = actionsOn(this.#view.role, person, { invited: this.#view.invited.has(person.id) });
    if (actions.length) {
      const more = element('button', 'btn btn-ghost btn-icon btn-small person-menu-button', {
        type: 'button', 'data-testid': 'participant-menu-button', 'data-menu-for': person.id,
        'aria-haspopup': 'menu', 'aria-expanded': 'false', 'aria-label': `Actions for ${person.name}`, title: 'Actions',
      });
      more.innerHTML = icon('more');
      more.addEventListener('click', () => {
        if (this.#menu?.personId === person.id) this.closeMenu();
        else this.#openMenu(more, this.#people.get(person.id) ?? person);
      });
      li.append(more);
    }
    return li;
  }

  #status(person, live) {
    const parts = [];
    if (person.self) parts.push('You');
    if (live) parts.push('On stage');
    else if (this.#view.invited.has(person.id)) parts.push('Invited');
    else if (person.role === 'audience') parts.push('Watching');
    else if (person.role === 'moderator') parts.push('Moderating');
    else parts.push('Off stage');
    return parts.join(' · ');
  }

  #openMenu(anchor, person) {
    this.#menu?.el.remove();
    const actions = actionsOn(this.#view.role, person, { invited: this.#view.invited.has(person.id) });
    if (!actions.length) {
      this.closeMenu();
      return;
    }
    const menu = element('div', 'menu', { role: 'menu', 'data-testid': 'participant-menu', 'aria-label': `Actions for ${person.name}` });
    const title = element('p', 'menu-title');
    title.textContent = person.name;
    menu.append(title);
    for (const action of actions) {
      const spec = ACTIONS[action];
      if (action === 'remove') menu.append(element('hr', 'menu-separator'));
      const item = element('button', `menu-item${spec.danger ? ' menu-item-danger' : ''}`, {
        type: 'button', role: 'menuitem', 'data-testid': `action-${action}`,
      });
      item.innerHTML = `${icon(spec.icon)}<span></span>`;
      item.lastElementChild.textContent = spec.label;
      item.addEventListener('click', () => {
        this.closeMenu();
        this.onAction(action, person);
      });
      menu.append(item);
    }
    menu.addEventListener('keydown', (event) => {
      const items = [...menu.querySelectorAll('.menu-item')];
      const at = items.indexOf(document.activeElement);
      const to = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: items.length - 1 }[event.key];
      if (to === undefined) return;
      event.preventDefault();
      items[(to + items.length) % items.length]?.focus();
    });
    document.body.append(menu);
    const box = anchor.getBoundingClientRect();
    const width = menu.offsetWidth;
    const height = menu.offsetHeight;
    const left = Math.max(8, Math.min(box.right - width, window.innerWidth - width - 8));
    const below = box.bottom + 4;
    const top = below + height > window.innerHeight - 8 ? Math.max(8, box.top - height - 4) : below;
    menu.style.left = `${left}px`;
    menu.style.top = `${top}px`;
    anchor.setAttribute('aria-expanded', 'true');
    const focusFirst = !this.#menu || this.#menu.personId !== person.id;
    this.#menu = { el: menu, personId: person.id, anchor, actions: actions.join() };
    if (focusFirst) menu.querySelector('.menu-item')?.focus();
  }
}

function byName(a, b) {
  return Number(Boolean(b.self)) - Number(Boolean(a.self)) || String(a.name).localeCompare(String(b.name));
}

function flag(name, label, extra = '') {
  const el = element('span', `person-flag ${extra}`.trim(), { role: 'img', 'aria-label': label, title: label });
  el.innerHTML = icon(name);
  return el;
}
