// The viewer's video quality choice: Auto / High / Low / Audio only (docs/protocol.md, `layer.set`).
// Auto lets the server pick by this connection's bandwidth; Audio only stops every speaker's video
// (the sound goes on) until another choice is made.

const $ = (id) => document.getElementById(id);

/** Wire the selector to whichever session is current (`getSession()`). */
export function setUpLayerChoice(getSession) {
  $('layer-select').addEventListener('change', (event) => {
    getSession()?.setLayerPreference(event.target.value);
  });
}

/** Show the selector to a joined participant that receives media; reflect the current choice. */
export function renderLayerChoice(session) {
  const joined = session?.state === 'joined';
  $('layer-choice').hidden = !joined;
  const select = $('layer-select');
  const preference = session?.layerPreference ?? 'auto';
  if (select.value !== preference) select.value = preference;
  $('layer-choice').dataset.preference = preference;
}
