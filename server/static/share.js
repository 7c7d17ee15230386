// A screen share: a screen, window or tab captured with getDisplayMedia and published on a peer
// connection of its own (`publish.offer` with `source: "screen"`, docs/protocol.md "Screen sharing"),
// beside the camera. No DOM here: the session owns it and tells the page through its events.

import { CandidateTrickle, waitForGathering } from './peer.js';
import { SignallingError } from './signalling.js';

export class ScreenShare {
  pc = null;
  stream = null; // the captured MediaStream while sharing (or starting)
  state = 'off'; // off | starting | live
  #run = 0; // bumped whenever a share starts or is torn down: a stale start gives up

  /** `onChange()` after every state change; `onNotice(message, code)` for the user. */
  constructor({ onChange, onNotice }) {
    this.onChange = onChange;
    this.onNotice = onNotice;
  }

  /** Capture and publish. `sig`: the session's signalling; `iceServers`: its ICE servers. */
  async start(sig, iceServers) {
    if (this.state !== 'off') return;
    const run = ++this.#run;
    this.#set('starting');
    try {
      // video: the display surface; audio: a tab's sound, when the browser offers it.
      const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: true });
      if (run !== this.#run) {
        for (const track of stream.getTracks()) track.stop();
        return;
      }
      this.stream = stream;
      const pc = new RTCPeerConnection({ iceServers });
      this.pc = pc;
      const trickle = new CandidateTrickle(pc, 'screen', (frame) => sig.send(frame));
      for (const track of stream.getTracks()) {
        if (track.kind === 'video') {
          track.contentHint = 'detail'; // slides and images: sharpness over motion
          // The browser's own "Stop sharing" bar ends the track: the share ends with it.
          track.addEventListener('ended', () => { if (this.stream === stream) this.stop(sig); });
        }
        pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
      }
      await pc.setLocalDescription(await pc.createOffer());
      await waitForGathering(pc);
      if (this.pc !== pc) return;
      const answer = await sig.request('publish.offer', { sdp: trickle.takeSdp(), source: 'screen' });
      if (this.pc !== pc) return;
      await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
      trickle.acknowledged();
      this.#set('live');
    } catch (err) {
      if (run !== this.#run) return;
      this.close();
      this.onNotice(describeShareError(err), err.code ?? err.name);
    }
  }

  /** Stop sharing: tell the server (`publish.stop`, source screen) and release the capture. */
  async stop(sig) {
    if (this.state === 'off') return;
    const reply = this.state === 'live' ? sig?.request('publish.stop', { source: 'screen' }) : null;
    this.close();
    try {
      await reply;
    } catch (err) {
      if (err.code !== 'not_publishing' && err.code !== 'disconnected') this.onNotice(err.message, err.code);
    }
  }

  /** Release everything without a word to the server (it ended the share, or the session ends). */
  close() {
    this.#run += 1;
    this.pc?.close();
    this.pc = null;
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    this.stream = null;
    if (this.state !== 'off') this.#set('off');
  }

  #set(state) {
    this.state = state;
    this.onChange();
  }
}

function describeShareError(err) {
  if (err instanceof SignallingError) {
    if (err.code === 'share_busy') return 'Someone else is sharing their screen: wait until they stop.';
    return err.message;
  }
  if (err.name === 'NotAllowedError') return 'Screen sharing was cancelled or refused.';
  return `Could not share your screen: ${err.message}`;
}
