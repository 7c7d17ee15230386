// The sidebar's tabs (People, Chat, Q&A, Polls): ARIA tabs with arrow keys, and unread badges for
// what arrived while another tab was shown.

export class Tabs {
  current = 'people';
  #unread = { chat: 0, qa: 0, polls: 0 };

  constructor({ onSelect }) {
    this.onSelect = onSelect;
    this.tabs = [...document.querySelectorAll('[role="tab"]')];
    for (const tab of this.tabs) {
      tab.addEventListener('click', () => this.select(tab.dataset.tab));
      tab.addEventListener('keydown', (event) => {
        const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
        if (!step) return;
        const index = (this.tabs.indexOf(tab) + step + this.tabs.length) % this.tabs.length;
        this.select(this.tabs[index].dataset.tab, true);
      });
    }
  }

  select(name, focus = false) {
    this.current = name;
    for (const tab of this.tabs) {
      const selected = tab.dataset.tab === name;
      tab.setAttribute('aria-selected', String(selected));
      tab.tabIndex = selected ? 0 : -1;
      document.getElementById(tab.getAttribute('aria-controls')).hidden = !selected;
      if (selected && focus) tab.focus();
    }
    if (name in this.#unread) this.#unread[name] = 0;
    this.#renderBadges();
    this.onSelect?.(name);
  }

  /** Something new arrived in `name` while another tab is shown. */
  bump(name) {
    if (this.current === name) return;
    this.#unread[name] += 1;
    this.#renderBadges();
  }

  reset() {
    this.#unread = { chat: 0, qa: 0, polls: 0 };
    this.#renderBadges();
  }

  #renderBadges() {
    for (const [name, count] of Object.entries(this.#unread)) {
      const badge = document.querySelector(`[data-testid="badge-${name}"]`);
      badge.hidden = count === 0;
      badge.textContent = count > 99 ? '99+' : String(count);
    }
  }
}
