// Reactions: a bar of the seven emoji the server accepts, and the aggregated `reactions` of the last
// second floating up over the stage (one bubble per emoji, with its count).

import { EMOJI } from './roles.js';
import { element } from './ui.js';

const LABELS = { '👏': 'Applause', '❤️': 'Love', '👍': 'Thumbs up', '😂': 'Laughter', '😮': 'Surprise', '🎉': 'Celebrate', '🙏': 'Thanks' };
const MAX_BUBBLES = 24;

export class ReactionBar {
  constructor(root, { onReact }) {
    root.replaceChildren(...EMOJI.map((emoji, index) => {
      const button = element('button', 'reaction-button', {
        type: 'button', 'data-testid': `reaction-${index}`, 'data-emoji': emoji, 'aria-label': LABELS[emoji], title: LABELS[emoji],
      });
      button.textContent = emoji;
      button.addEventListener('click', () => {
        onReact(emoji);
        button.classList.remove('is-sent');
        void button.offsetWidth; // restart the pulse animation
        button.classList.add('is-sent');
      });
      return button;
    }));
  }
}

export class ReactionLayer {
  constructor(root) {
    this.root = root;
    this.received = {}; // emoji -> total seen, for tests and diagnostics
  }

  /** counts: {"👏": 12, "❤️": 3} over the last second. */
  show(counts) {
    for (const [emoji, count] of Object.entries(counts)) {
      if (!EMOJI.includes(emoji) || !(count > 0)) continue;
      this.received[emoji] = (this.received[emoji] ?? 0) + count;
      const bubble = element('span', 'reaction-float', { 'data-testid': 'reaction-float', 'data-emoji': emoji, 'data-count': String(count) });
      bubble.textContent = emoji;
      if (count > 1) {
        const times = element('small', 'reaction-count');
        times.textContent = `×${count}`;
        bubble.append(times);
      }
      // Bigger bursts float a little larger; each starts at a random place along the right edge.
      bubble.style.setProperty('--x', `${Math.round(Math.random() * 70)}px`);
      bubble.style.setProperty('--scale', String(Math.min(1.6, 1 + Math.log10(count) * 0.4)));
      bubble.addEventListener('animationend', () => bubble.remove());
      this.root.append(bubble);
      setTimeout(() => bubble.remove(), 4000); // in case animations are off
      while (this.root.childElementCount > MAX_BUBBLES) this.root.firstElementChild.remove();
    }
  }
}
