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
  leave: '<path d="M14 4h4a2 2 0 0 1 2 2v12a2 2 0 0 1-2 2h-4M9.5 16.5 5 12l4.5-4.5M5 12h10"/>',
  volume: '<path d="M4 9.5h3.5L12 5.5v13l-4.5-4H4z"/><path d="M15.5 9a4.5 4.5 0 0 1 0 6M18.2 6.5a8 8 0 0 1 0 11"/>',
  users: '<circle cx="9" cy="8" r="3.5"/><path d="M2.5 20a6.5 6.5 0 0 1 13 0M15.5 4.6a3.5 3.5 0 0 1 0 6.8M17.5 14a6 6 0 0 1 4 6"/>',
  rejoin: '<path d="M20 12a8 8 0 1 1-2.4-5.7M20 4v5h-5"/>',
  offline: '<path d="M2 8.8a15 15 0 0 1 4.4-2.6M10.5 5.1A15 15 0 0 1 22 8.8M5 12.6a10 10 0 0 1 5.1-2.6'
    + 'M19 12.6a10 10 0 0 0-2.6-1.8M8.5 16.1a5 5 0 0 1 7 0M12 20h.01M3 3l18 18"/>',
  close: '<path d="M6 6l12 12M18 6 6 18"/>',
  plus: '<path d="M12 5v14M5 12h14"/>',
  arrow: '<path d="M5 12h14M13 6l6 6-6 6"/>',
  alert: '<circle cx="12" cy="12" r="9"/><path d="M12 7.5v5.5M12 16.5h.01"/>',
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
