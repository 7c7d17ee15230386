// Inline SVG icons (24-unit grid, 2px round strokes, currentColor): no icon font, no request.

const paths = {
  logo: '<rect x="2" y="2" width="20" height="20" rx="6" fill="currentColor" stroke="none"/>'
    + '<path d="M5.5 12.5h3l1.8-4 3.2 8 1.8-4h3.2" stroke="#fff"/>',
  mic: '<rect x="9" y="3" width="6" height="11" rx="3"/><path d="M5.5 11a6.5 6.5 0 0 0 13 0M12 17.5V21M8.5 21h7"/>',
  micOff: '<path d="M15 10V6a3 3 0 0 0-5.7-1.3M9 9v2a3 3 0 0 0 4.9 2.3"/>'
    + '<path d="M18.5 11a6.5 6.5 0 0 1-1 3.4M5.5 11a6.5 6.5 0 0 0 10.4 5.2M12 17.5V21M8.5 21h7M3 3l18 18"/>',
  camera: '<rect x="2.5" y="6" width="13" height="12" rx="2.5"/><path d="M15.5 10.2 21 7v10l-5.5-3.2z"/>',
  cameraOff: '<path d="M9 6h4a2.5 2.5 0 0 1 2.5 2.5v3.3M15.5 15.5A2.5 2.5 0 0 1 13 18H5a2.5 2.5 0 0 1-2.5-2.5v-7A2.5 2.5 0 0 1 5 6"/>'
    + '<path d="M17 11.3 21 9v8.5M3 3l18 18"/>',
  stage: '<circle cx="12" cy="12" r="2"/><path d="M8.5 15.5a5 5 0 0 1 0-7M15.5 8.5a5 5 0 0 1 0 7'
    + 'M5.6 18.4a9 9 0 0 1 0-12.8M18.4 5.6a9 9 0 0 1 0 12.8"/>',
  stop: '<rect x="6" y="6" width="12" height="12" rx="2.5"/>',
  screen: '<rect x="2.5" y="4" width="19" height="13" rx="2"/><path d="M8 21h8M12 17v4M12 13.5V7.5M9 10l3-3 3 3"/>',
  leave: '<path d="M14 4h4a2 2 0 0 1 2 2v12a2 2 0 0 1-2 2h-4M9.5 16.5 5 12l4.5-4.5M5 12h10"/>',
  volume: '<path d="M4 9.5h3.5L12 5.5v13l-4.5-4H4z"/><path d="M15.5 9a4.5 4.5 0 0 1 0 6M18.2 6.5a8 8 0 0 1 0 11"/>',
  users: '<circle cx="9" cy="8" r="3.5"/><path d="M2.5 20a6.5 6.5 0 0 1 13 0M15.5 4.6a3.5 3.5 0 0 1 0 6.8M17.5 14a6 6 0 0 1 4 6"/>',
  rejoin: '<path d="M20 12a8 8 0 1 1-2.4-5.7M20 4v5h-5"/>',
  offline: '<path d="M2 8.8a15 15 0 0 1 4.4-2.6M10.5 5.1A15 15 0 0 1 22 8.8M5 12.6a10 10 0 0 1 5.1-2.6'
    + 'M19 12.6a10 10 0 0 0-2.6-1.8M8.5 16.1a5 5 0 0 1 7 0M12 20h.01M3 3l18 18"/>',
  close: '<path d="M6 6l12 12M18 6 6 18"/>',
  plus: '<path d="M12 5v14M5 12h14"/>',
  arrow: '<path d="M5 12h14M13 6l6 6-6 6"/>',
  hand: '<path d="M8 13V5.5a1.5 1.5 0 0 1 3 0V11M11 10.5v-6a1.5 1.5 0 0 1 3 0v6M14 10.5V6a1.5 1.5 0 0 1 3 0v7'
    + 'M8 12.5l-.9-1.6a1.6 1.6 0 0 0-2.8 1.6L7.5 18a5 5 0 0 0 4.4 3h.6a4.5 4.5 0 0 0 4.5-4.5V13"/>',
  chat: '<path d="M20 12.5a7.5 7.5 0 0 1-11 6.6L4 20.5l1.4-4.6A7.5 7.5 0 1 1 20 12.5z"/>',
  question: '<circle cx="12" cy="12" r="9"/><path d="M9.5 9.5a2.5 2.5 0 1 1 3.6 2.2c-.7.4-1.1.9-1.1 1.6v.4M12 17h.01"/>',
  poll: '<path d="M5 20V13M12 20V5M19 20v-9"/>',
  more: '<circle cx="5.5" cy="12" r="1.2" fill="currentColor"/><circle cx="12" cy="12" r="1.2" fill="currentColor"/>'
    + '<circle cx="18.5" cy="12" r="1.2" fill="currentColor"/>',
  pin: '<path d="M9 3.5h6M10 3.5v6L7 13.5h10l-3-4v-6M12 13.5V21"/>',
  trash: '<path d="M4.5 6.5h15M9.5 6.5V4.5h5v2M6.5 6.5l1 13h9l1-13M10.5 10.5v5.5M13.5 10.5v5.5"/>',
  lock: '<rect x="5" y="10.5" width="14" height="10" rx="2"/><path d="M8 10.5V8a4 4 0 0 1 8 0v2.5"/>',
  unlock: '<rect x="5" y="10.5" width="14" height="10" rx="2"/><path d="M8 10.5V8a4 4 0 0 1 7.7-1.5"/>',
  shield: '<path d="M12 3 5 6v5.5c0 4.4 2.9 8 7 9.5 4.1-1.5 7-5.1 7-9.5V6z"/>',
  check: '<path d="M5 12.5 10 17.5 19 7"/>',
  clock: '<circle cx="12" cy="12" r="9"/><path d="M12 7v5l3 2"/>',
  trophy: '<path d="M8 4h8v5a4 4 0 0 1-8 0zM8 6H4.5v1.5A3 3 0 0 0 8 10.5M16 6h3.5v1.5a3 3 0 0 1-3.5 3M12 13v4M8.5 20.5h7M9.5 17h5v3.5h-5z"/>',
  send: '<path d="M4 12 20 4l-5 16-3.5-6.5zM11.5 13.5 20 4"/>',
  up: '<path d="M12 19V5M6 11l6-6 6 6"/>',
  play: '<path d="M7 4.5v15l12-7.5z"/>',
  ban: '<circle cx="12" cy="12" r="9"/><path d="M5.6 5.6l12.8 12.8"/>',
  userPlus: '<circle cx="9" cy="8" r="3.5"/><path d="M2.5 20a6.5 6.5 0 0 1 13 0M19 8v6M16 11h6"/>',
  userMinus: '<circle cx="9" cy="8" r="3.5"/><path d="M2.5 20a6.5 6.5 0 0 1 13 0M16 11h6"/>',
  chatOff: '<path d="M20 12.5a7.5 7.5 0 0 1-1.2 4.1M16.3 18.6A7.5 7.5 0 0 1 9 19.1L4 20.5l1.4-4.6A7.5 7.5 0 0 1 7.7 6.4M11 5.1a7.5 7.5 0 0 1 1.5-.1M3 3l18 18"/>',
  smile: '<circle cx="12" cy="12" r="9"/><path d="M8.5 14a4 4 0 0 0 7 0M9 9.5h.01M15 9.5h.01"/>',
  alert: '<circle cx="12" cy="12" r="9"/><path d="M12 7.5v5.5M12 16.5h.01"/>',
  rec: '<circle cx="12" cy="12" r="9"/><circle cx="12" cy="12" r="4.5" fill="currentColor" stroke="none"/>',
  shieldCheck: '<path d="M12 3 5 6v5.5c0 4.4 2.9 8 7 9.5 4.1-1.5 7-5.1 7-9.5V6z"/><path d="m9 12 2.2 2.2L15.5 10"/>',
  shieldOff: '<path d="M12 3 5 6v5.5c0 4.4 2.9 8 7 9.5 4.1-1.5 7-5.1 7-9.5V6z"/><path d="M9.5 9.5l5 5M14.5 9.5l-5 5"/>',
  shieldQuestion: '<path d="M12 3 5 6v5.5c0 4.4 2.9 8 7 9.5 4.1-1.5 7-5.1 7-9.5V6z"/><path d="M10.2 10a1.9 1.9 0 1 1 2.6 1.8c-.5.2-.8.6-.8 1.1v.3M12 15.8h.01"/>',
  document: '<path d="M7 3h7l4 4v14H7z"/><path d="M14 3v4h4M9.5 11.5h5M9.5 15h5"/>',
};

/** The SVG markup of icon `name`, decorative (hidden from assistive technology). */
export function icon(name, className = 'icon') {
  const body = paths[name];
  if (!body) throw new Error(`unknown icon ${name}`);
  return `<svg class="${className}" viewBox="0 0 24 24" width="20" height="20" fill="none" `
    + 'stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" '
    + `aria-hidden="true" focusable="false">${body}</svg>`;
}

/** Put the icons named in `data-icon` attributes under `root` in place (static HTML uses this). */
export function hydrateIcons(root = document) {
  for (const el of root.querySelectorAll('[data-icon]')) {
    el.insertAdjacentHTML('afterbegin', icon(el.dataset.icon));
    el.classList.add('icon-slot');
    el.removeAttribute('data-icon');
  }
}
