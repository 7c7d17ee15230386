// RTCPeerConnection helpers shared by the subscriber and the publisher connection.

// On a LAN host candidates are gathered in a few milliseconds; STUN/TURN can take seconds. The SDP
// waits at most this long and carries what was gathered; later candidates are trickled.
export const GATHERING_WAIT_MS = 800;

/** Resolve when ICE gathering of `pc` completes, or after `maxMs`, whichever is first. */
export function waitForGathering(pc, maxMs = GATHERING_WAIT_MS) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (complete) => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve(complete);
    };
    const check = () => {
      if (pc.iceGatheringState === 'complete') done(true);
    };
    const timer = setTimeout(() => done(false), maxMs);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/**
 * Sends the local ICE candidates of one connection (`pcName`: "publisher" | "subscriber").
 *
 * Candidates gathered before the SDP is taken travel inside it. Later ones are held until the server
 * has acknowledged that SDP (it cannot add a candidate to a connection without a description), then
 * sent as `ice.candidate`; `candidate: null` ends them.
 */
export class CandidateTrickle {
  #sdpTaken = false;
  #acknowledged = false;
  #ended = false;
  #queue = [];

  constructor(pc, pcName, send) {
    this.pc = pc;
    this.pcName = pcName;
    this.send = send;
    pc.addEventListener('icecandidate', (event) => {
      if (!this.#sdpTaken) return; // it is in the local description we are about to send
      if (event.candidate && !event.candidate.candidate) return; // Chromium's per-generation end marker
      this.#push(event.candidate ? {
        candidate: event.candidate.candidate,
        sdpMid: event.candidate.sdpMid,
        sdpMLineIndex: event.candidate.sdpMLineIndex,
      } : null);
    });
  }

  /** The local SDP to send now; candidates gathered from here on are trickled. */
  takeSdp() {
    this.#sdpTaken = true;
    if (this.pc.iceGatheringState === 'complete') this.#push(null);
    return this.pc.localDescription.sdp;
  }

  /** The server applied our SDP: send what was held back, and everything later at once. */
  acknowledged() {
    this.#acknowledged = true;
    for (const candidate of this.#queue.splice(0)) this.#sendOne(candidate);
  }

  #push(candidate) {
    if (this.#ended) return;
    if (candidate === null) this.#ended = true;
    if (this.#acknowledged) this.#sendOne(candidate);
    else this.#queue.push(candidate);
  }

  #sendOne(candidate) {
    this.send({ type: 'ice.candidate', pc: this.pcName, candidate });
  }
}

/** Addresses of the selected candidate pair of `pc` (from getStats), or null before ICE connects. */
export async function selectedCandidatePair(pc) {
  const stats = await pc.getStats();
  let pairId = null;
  stats.forEach((report) => {
    if (report.type === 'transport' && report.selectedCandidatePairId) pairId = report.selectedCandidatePairId;
  });
  const pair = pairId ? stats.get(pairId) : null;
  if (!pair) return null;
  const local = stats.get(pair.localCandidateId);
  const remote = stats.get(pair.remoteCandidateId);
  return {
    state: pair.state,
    local: local?.address ?? local?.ip ?? null,
    remote: remote?.address ?? remote?.ip ?? null,
  };
}
