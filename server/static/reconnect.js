// When the signalling connection comes back by itself, and how soon (docs/protocol.md, "WebSocket
// close codes"). No socket and no timer here: the session asks these rules, then waits and dials itself.

/**
 * Close codes after which the client reconnects: the node or the network went away, not the person.
 * Every other code is final (1000 left or stage ended, 1008 and 4004 banned, 4003 removed, 1009 ...).
 */
export const RECONNECT_CODES = new Set([
  1001, // the node is going away (shutting down)
  1006, // abnormal: no close frame (node crashed, network lost, no answer to our ping)
  1011, // server fault
  1012, // service restart, or the relay to the stage's node was lost (that node died, Redis is down)
  1013, // try again later (node draining, or our outbox overflowed)
  4010, // the stage moved to another node: the same URL reaches its new host
  4012, // the media worker holding our receiving connection stopped: join again for a new one
]);

/** Refusals of `join` that end the session for good instead of trying again. */
export const FINAL_JOIN_ERRORS = new Set(['banned', 'stage_ended']);

export const BACKOFF_INITIAL_MS = 500;
export const BACKOFF_MAX_MS = 8000;

/** Whether a connection closed with `code` is tried again. */
export function reconnects(code) {
  return RECONNECT_CODES.has(code);
}

/**
 * Exponential backoff with "equal jitter": the n-th wait is drawn in [d/2, d], d = min(max, initial × 2^n).
 * The jitter spreads the clients of a node that died, so they do not all dial its successor at once.
 */
export class Backoff {
  #step = 0;

  constructor({ initialMs = BACKOFF_INITIAL_MS, maxMs = BACKOFF_MAX_MS, random = Math.random } = {}) {
    this.initialMs = initialMs;
    this.maxMs = maxMs;
    this.random = random;
  }

  /** The next wait, in milliseconds. */
  next() {
    const ceiling = Math.min(this.maxMs, this.initialMs * 2 ** this.#step);
    if (ceiling < this.maxMs) this.#step += 1;
    return ceiling / 2 + this.random() * (ceiling / 2);
  }

  reset() {
    this.#step = 0;
  }
}

/**
 * After a failed attempt to come back: `{wait}` (ms) before the next one, or `{final}` to stop
 * (`banned`, `ended`, or `closed`: the socket closed with a final code). `err` is the attempt's
 * SignallingError (`unreachable` when the socket did not open); `closeCode` how its socket closed, if
 * it opened. A `retry_after` from the server (say `stage_unavailable` while another node takes the
 * stage over) is its word on when to try again, so it replaces the backoff.
 */
export function afterFailure(err, closeCode, backoff) {
  if (FINAL_JOIN_ERRORS.has(err?.code)) return { final: err.code === 'banned' ? 'banned' : 'ended' };
  if (typeof err?.retryAfter === 'number') return { wait: Math.max(100, err.retryAfter * 1000) };
  if (closeCode !== null && closeCode !== undefined && !reconnects(closeCode)) return { final: 'closed' };
  return { wait: backoff.next() };
}

/**
 * Where the next attempt dials after one that could not reach `current` (a signalling URL, ws:// or
 * wss://). `home` is the URL the session started with (the page's own node, as the browser reached
 * it); `nodes` the live nodes' public URLs (`joined.nodes`, `nodes` frames). With fewer than two nodes
 * there is nowhere else to go: `home`. Otherwise the candidate after `current` in [home, ...nodes],
 * round the list: any node reaches any stage (it relays to the stage's host, or takes the stage
 * over), so the next live one will do. `home` stays a candidate because a node's advertised URL may
 * not be the name the browser knows it by (a node without MEDSTAGE_PUBLIC_URL advertises 127.0.0.1).
 */
export function nextNode(current, home, nodes) {
  const others = [...new Set((nodes ?? []).map(nodeSignallingUrl).filter(Boolean))];
  if (others.length < 2) return home;
  const candidates = [...new Set([home, ...others])];
  const here = candidates.indexOf(current);
  return candidates[(here + 1) % candidates.length];
}

/** A node's signalling URL from its public URL (`http://host:port` → `ws://host:port/ws`); null if not http(s). */
export function nodeSignallingUrl(publicUrl) {
  let url;
  try {
    url = new URL(String(publicUrl));
  } catch {
    return null;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
  const base = url.pathname.replace(/\/+$/, '');
  return `${url.protocol === 'https:' ? 'wss:' : 'ws:'}//${url.host}${base}/ws`;
}

/** The HTTP base of the node behind a signalling URL (`ws://host:port/ws` → `http://host:port`). */
export function nodeHttpUrl(signallingUrl) {
  const url = new URL(signallingUrl);
  const base = url.pathname.replace(/\/ws$/, '').replace(/\/+$/, '');
  return `${url.protocol === 'wss:' ? 'https:' : 'http:'}//${url.host}${base}`;
}

/** Whether a failed attempt never reached a node (no socket opened): time to try another one. */
export function unreachable(err, closeCode) {
  return (closeCode === null || closeCode === undefined) && (err?.code === 'unreachable' || err?.code === 'timeout');
}
