// The landing page (/): create a stage and go to it as host, or open an existing stage by id.

import { hydrateIcons } from './icons.js';

const STAGE_ID = /^[A-Za-z0-9_-]{1,64}$/;
const $ = (id) => document.getElementById(id);

function stagePath(id, role) {
  const path = `/s/${encodeURIComponent(id)}`;
  return role ? `${path}?role=${role}` : path;
}

async function createStage(event) {
  event.preventDefault();
  const title = $('create-title').value.trim();
  const error = $('create-error');
  const button = $('create-button');
  error.textContent = '';
  if (!title) {
    error.textContent = 'Please give the stage a title.';
    $('create-title').focus();
    return;
  }
  button.disabled = true;
  try {
    // Development mode: the node hands out a platform token; otherwise stages come from the platform.
    const minted = await fetch('/api/dev/token', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ admin: true, identity: 'landing-page' }),
    });
    const grant = await minted.json().catch(() => ({}));
    if (!minted.ok || !grant.token) {
      error.textContent = 'This server creates stages through its platform (development mode is off).';
      return;
    }
    const response = await fetch('/api/stages', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json', Authorization: `Bearer ${grant.token}` },
      body: JSON.stringify({ title }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok || !body.id) {
      error.textContent = body.detail || body.title || `The server refused (${response.status}).`;
      return;
    }
    window.location.assign(stagePath(body.id, 'host'));
  } catch {
    error.textContent = 'Could not reach the server. Check your connection and try again.';
  } finally {
    button.disabled = false;
  }
}

function openStage(event) {
  event.preventDefault();
  const id = $('open-id').value.trim();
  if (!STAGE_ID.test(id)) {
    $('open-error').textContent = 'A stage id has 1 to 64 letters, digits, "-" or "_".';
    $('open-id').focus();
    return;
  }
  window.location.assign(stagePath(id));
}

hydrateIcons();
$('create-form').addEventListener('submit', createStage);
$('open-form').addEventListener('submit', openStage);
