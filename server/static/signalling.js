// The signalling WebSocket (docs/protocol.md): JSON text frames, requests matched to replies by `id`.

/** A refused request: the server's `error` frame, or a local timeout / lost connection. */
export class SignallingError extends Error {
  constructor(code, message, frame = null) {
    super(message || code);
    this.name = 'SignallingError';
    this.code = code;
    // Seconds until the same request may succeed (`slow_mode`, `rate_limited`), when the server says.
    this.retryAfter = typeof frame?.retry_after === 'number' ? frame.retry_after : null;
  }
}

/** The URL of the node's signalling endpoint for the page at `location`. */
export function signallingUrl(location) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}

export class Signalling {
  #ws = null;
  #nextId = 1;
  #pending = new Map(); // String(id) -> {resolve, reject, timer}
  #handlers = new Map(); // type -> [fn]

  /** Called once with the CloseEvent when an open connection closes. */
  onclose = null;

  /** Open the WebSocket; resolves when it is open. */
  connect(url, timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      this.#ws = ws;
      let opened = false;
      const timer = setTimeout(() => {
        if (!opened) {
          ws.close();
          reject(new SignallingError('timeout', 'The stage server did not answer.'));
        }
      }, timeoutMs);
      ws.onopen = () => {
        opened = true;
        clearTimeout(timer);
        resolve();
      };
      ws.onmessage = (event) => this.#receive(event.data);
      ws.onclose = (event) => {
        clearTimeout(timer);
        if (!opened) {
          reject(new SignallingError('unreachable', 'Could not reach the stage server.'));
          return;
        }
        this.#failPending(new SignallingError('disconnected', 'The connection was closed.'));
        this.onclose?.(event);
      };
    });
  }

  get isOpen() {
    return this.#ws?.readyState === WebSocket.OPEN;
  }

  /** Register `fn` for unsolicited frames of `type` ('*' sees every unsolicited frame). */
  on(type, fn) {
    if (!this.#handlers.has(type)) this.#handlers.set(type, []);
    this.#handlers.get(type).push(fn);
  }

  /** Send a frame that expects no reply. Returns false when the socket is not open. */
  send(frame) {
    if (!this.isOpen) return false;
    this.#ws.send(JSON.stringify(frame));
    return true;
  }

  /** Send a request and resolve with its reply; reject with a SignallingError on an `error` frame. */
  request(type, fields = {}, timeoutMs = 15000) {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      if (!this.send({ type, id, ...fields })) {
        reject(new SignallingError('disconnected', 'Not connected to the stage.'));
        return;
      }
      const timer = setTimeout(() => {
        this.#pending.delete(String(id));
        reject(new SignallingError('timeout', `No answer to ${type}.`));
      }, timeoutMs);
      this.#pending.set(String(id), { resolve, reject, timer });
    });
  }

  close(code = 1000) {
    this.onclose = null;
    this.#failPending(new SignallingError('disconnected', 'The connection was closed.'));
    this.#ws?.close(code);
  }

  #receive(data) {
    if (typeof data !== 'string') return; // we only speak JSON, so the server answers in JSON
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      console.warn('medstage: ignoring a frame that is not JSON');
      return;
    }
    if (frame === null || typeof frame !== 'object') return;
    const pending = frame.id != null ? this.#pending.get(String(frame.id)) : undefined;
    if (pending) {
      this.#pending.delete(String(frame.id));
      clearTimeout(pending.timer);
      if (frame.type === 'error') pending.reject(new SignallingError(frame.code, frame.message, frame));
      else pending.resolve(frame);
      return;
    }
    for (const fn of [...(this.#handlers.get(frame.type) ?? []), ...(this.#handlers.get('*') ?? [])]) {
      try {
        fn(frame);
      } catch (err) {
        console.error(`medstage: handler for ${frame.type} failed`, err);
      }
    }
  }

  #failPending(error) {
    for (const { reject, timer } of this.#pending.values()) {
      clearTimeout(timer);
      reject(error);
    }
    this.#pending.clear();
  }
}
