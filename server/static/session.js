// One participant's session on a stage: the signalling socket and the two peer connections.
// No DOM here: the page listens to the events this object dispatches and renders them.
//
// Events (CustomEvent, details in parentheses):
//   state       the session state changed (state: idle|connecting|joined|left|disconnected|failed)
//   roster      a participant joined, changed or left
//   slots       a subscriber slot was assigned or released, or got its tracks
//   publishing  the local publication started, stopped or was muted
//   notice      something for the user (message, code)

import { Signalling, SignallingError, signallingUrl } from './signalling.js';
import { CandidateTrickle, waitForGathering } from './peer.js';

export const ROLES = ['host', 'speaker', 'audience'];
const KEEPALIVE_MS = 20000;

export class StageSession extends EventTarget {
  state = 'idle';
  participantId = null;
  self = null; // our participant object as the server last described it
  stage = null;
  participants = new Map(); // id -> participant (the others)
  iceServers = [];
  subscriberPc = null;
  publisherPc = null;
  localStream = null;
  publishing = 'off'; // off | starting | live
  muted = { audio: false, video: false };
  marks = {}; // performance.now() at milestones, for diagnostics and tests

  #sig = null;
  #slots = new Map(); // slot index -> {slot, streamId, media: MediaStream, owners: Map kind -> participant id}
  #midToSlot = new Map();
  #subscriberTrickle = null;
  #publisherTrickle = null;
  #offerChain = Promise.resolve();
  #keepalive = null;

  constructor({ stageId, name, role, url = signallingUrl(window.location) }) {
    super();
    this.stageId = stageId;
    this.name = name;
    this.role = role;
    this.url = url;
  }

  get canPublish() {
    return this.role === 'host' || this.role === 'speaker';
  }

  /** Connect and join; resolves once `joined` arrived, rejects (state "failed") if refused. */
  async join() {
    this.#setState('connecting');
    const sig = new Signalling();
    this.#sig = sig;
    sig.on('subscriber.offer', (frame) => {
      this.#offerChain = this.#offerChain.then(() => this.#answerSubscriber(frame));
    });
    sig.on('slot.assigned', (frame) => this.#slotAssigned(frame));
    sig.on('slot.released', (frame) => this.#slotReleased(frame));
    sig.on('participant.joined', ({ participant }) => this.#upsert(participant));
    sig.on('participant.updated', ({ participant }) => this.#upsert(participant));
    sig.on('participant.left', ({ participant_id: id }) => this.#removeParticipant(id));
    sig.on('error', (frame) => this.#notice(frame.message || frame.code, frame.code));
    try {
      await sig.connect(this.url);
      sig.onclose = (event) => this.#closed(event);
      const joined = await sig.request('join', { stage: this.stageId, name: this.name, role: this.role });
      this.marks.joined = performance.now();
      this.participantId = joined.participant.id;
      this.self = joined.participant;
      this.stage = joined.stage;
      this.iceServers = Array.isArray(joined.ice_servers) ? joined.ice_servers : [];
      for (const participant of joined.participants ?? []) this.participants.set(participant.id, participant);
      this.#keepalive = setInterval(() => this.#sig?.request('ping').catch(() => {}), KEEPALIVE_MS);
      this.#setState('joined');
      this.#emit('roster');
    } catch (err) {
      this.#teardown();
      this.#setState('failed');
      throw err;
    }
  }

  /** The remote tiles to show: one per participant that owns a slot, with that slot's stream. */
  remoteTiles() {
    const tiles = new Map();
    for (const slot of this.#slots.values()) {
      const owner = slot.owners.get('video') ?? slot.owners.get('audio');
      if (!owner || tiles.has(owner)) continue;
      tiles.set(owner, {
        participantId: owner,
        participant: this.participants.get(owner) ?? null,
        slot: slot.slot,
        stream: slot.media,
        kinds: [...slot.owners.keys()],
      });
    }
    return [...tiles.values()];
  }

  /** Start camera and microphone and publish them on a new publisher connection. */
  async publish() {
    if (!this.canPublish || this.publishing !== 'off' || this.state !== 'joined') return;
    this.#setPublishing('starting');
    try {
      this.localStream = await openCameraAndMicrophone();
      const pc = new RTCPeerConnection({ iceServers: this.iceServers });
      this.publisherPc = pc;
      this.#publisherTrickle = new CandidateTrickle(pc, 'publisher', (frame) => this.#sig?.send(frame));
      for (const track of this.localStream.getTracks()) {
        pc.addTransceiver(track, { direction: 'sendonly', streams: [this.localStream] });
      }
      await pc.setLocalDescription(await pc.createOffer());
      await waitForGathering(pc);
      const answer = await this.#sig.request('publish.offer', { sdp: this.#publisherTrickle.takeSdp() });
      if (this.publisherPc !== pc) return; // stopped meanwhile
      await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
      this.#publisherTrickle.acknowledged();
      this.muted = { audio: false, video: false };
      this.marks.published = performance.now();
      this.#setPublishing('live');
    } catch (err) {
      this.#closePublisher();
      this.#setPublishing('off');
      this.#notice(describePublishError(err), err.code ?? err.name);
    }
  }

  /** Mute or unmute our `kind` ("audio" | "video") track. */
  async setMuted(kind, muted) {
    if (this.publishing !== 'live') return;
    for (const track of this.localStream?.getTracks() ?? []) if (track.kind === kind) track.enabled = !muted;
    this.muted = { ...this.muted, [kind]: muted };
    this.#emit('publishing');
    try {
      await this.#sig.request('publish.mute', { kind, muted });
    } catch (err) {
      this.#notice(err.message, err.code);
    }
  }

  /** Stop publishing: tell the server, and release camera and microphone at once. */
  async stopPublishing() {
    if (this.publishing === 'off') return;
    const reply = this.#sig?.request('publish.stop');
    this.#closePublisher();
    this.#setPublishing('off');
    try {
      await reply;
    } catch (err) {
      if (err.code !== 'not_publishing' && err.code !== 'disconnected') this.#notice(err.message, err.code);
    }
  }

  /** Leave the stage (the server replies `left` and closes the socket). */
  async leave() {
    if (this.state !== 'joined') {
      this.#teardown();
      return;
    }
    this.#setState('leaving');
    try {
      await this.#sig.request('leave', {}, 3000);
    } catch {
      // Leaving anyway: closing the socket ends our presence too.
    }
    this.#teardown();
    this.#setState('left');
  }

  /** Close everything without a word to the server (page unload). */
  abandon() {
    this.#sig?.send({ type: 'leave' });
    this.#teardown();
  }

  async #answerSubscriber({ sdp, slots }) {
    try {
      if (!this.subscriberPc) this.#createSubscriber();
      const pc = this.subscriberPc;
      this.#defineSlots(slots ?? []);
      this.marks.subscriberOffer = performance.now();
      await pc.setRemoteDescription({ type: 'offer', sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      await waitForGathering(pc);
      await this.#sig.request('subscriber.answer', { sdp: this.#subscriberTrickle.takeSdp() });
      this.#subscriberTrickle.acknowledged();
      this.marks.subscriberReady = performance.now();
    } catch (err) {
      if (err instanceof SignallingError && err.code === 'disconnected') return;
      this.#notice(`Could not receive the stage: ${err.message}`, err.code);
    }
  }

  #createSubscriber() {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.subscriberPc = pc;
    this.#subscriberTrickle = new CandidateTrickle(pc, 'subscriber', (frame) => this.#sig?.send(frame));
    pc.addEventListener('track', (event) => {
      const mid = event.transceiver?.mid;
      let index = this.#midToSlot.get(mid);
      if (index === undefined) {
        const match = /^slot-(\d+)$/.exec(event.streams[0]?.id ?? '');
        if (match) index = Number(match[1]);
      }
      const slot = this.#slotAt(index);
      if (!slot) return;
      for (const old of slot.media.getTracks()) if (old.kind === event.track.kind) slot.media.removeTrack(old);
      slot.media.addTrack(event.track);
      this.#emit('slots');
    });
    pc.addEventListener('connectionstatechange', () => {
      if (pc.connectionState === 'failed') this.#notice('The media connection failed. Try rejoining.', 'ice_failed');
    });
  }

  #defineSlots(slots) {
    for (const { slot, stream, audio_mid: audioMid, video_mid: videoMid } of slots) {
      const existing = this.#slotAt(slot);
      if (existing) existing.streamId = stream;
      this.#midToSlot.set(String(audioMid), slot);
      this.#midToSlot.set(String(videoMid), slot);
    }
  }

  #slotAt(index, create = true) {
    if (index === undefined || index === null || Number.isNaN(index)) return null;
    if (!this.#slots.has(index) && create) {
      this.#slots.set(index, { slot: index, streamId: `slot-${index}`, media: new MediaStream(), owners: new Map() });
    }
    return this.#slots.get(index) ?? null;
  }

  #slotAssigned({ slot, mid, kind, participant_id: owner }) {
    const index = slot ?? this.#midToSlot.get(String(mid));
    const entry = this.#slotAt(index);
    if (!entry) return;
    entry.owners.set(kind, owner);
    if (this.marks.firstSlotAssigned === undefined) this.marks.firstSlotAssigned = performance.now();
    this.#emit('slots');
  }

  #slotReleased({ slot, mid, kind, participant_id: owner }) {
    const index = slot ?? this.#midToSlot.get(String(mid));
    const entry = this.#slotAt(index, false);
    if (!entry) return;
    if (owner === undefined || entry.owners.get(kind) === owner) entry.owners.delete(kind);
    this.#emit('slots');
  }

  #upsert(participant) {
    if (!participant?.id) return;
    if (participant.id === this.participantId) {
      this.self = participant;
    } else {
      this.participants.set(participant.id, participant);
    }
    this.#emit('roster');
  }

  #removeParticipant(id) {
    this.participants.delete(id);
    let changed = false;
    for (const slot of this.#slots.values()) {
      for (const [kind, owner] of slot.owners) {
        if (owner === id) {
          slot.owners.delete(kind);
          changed = true;
        }
      }
    }
    this.#emit('roster');
    if (changed) this.#emit('slots');
  }

  #closePublisher() {
    this.publisherPc?.close();
    this.publisherPc = null;
    this.#publisherTrickle = null;
    for (const track of this.localStream?.getTracks() ?? []) track.stop();
    this.localStream = null;
    this.muted = { audio: false, video: false };
  }

  #closed(event) {
    const wasLeaving = this.state === 'leaving' || this.state === 'left';
    this.#teardown();
    if (!wasLeaving) {
      this.closeCode = event.code;
      this.#setState('disconnected');
    }
  }

  #teardown() {
    clearInterval(this.#keepalive);
    this.#keepalive = null;
    if (this.#sig) {
      this.#sig.onclose = null;
      this.#sig.close();
    }
    this.#closePublisher();
    if (this.publishing !== 'off') this.#setPublishing('off');
    this.subscriberPc?.close();
    for (const slot of this.#slots.values()) slot.owners.clear();
    this.#emit('slots');
  }

  #setState(state) {
    this.state = state;
    this.#emit('state', { state });
  }

  #setPublishing(publishing) {
    this.publishing = publishing;
    this.#emit('publishing', { publishing });
  }

  #notice(message, code) {
    this.#emit('notice', { message, code });
  }

  #emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** Camera and microphone, falling back to whichever of the two exists. */
async function openCameraAndMicrophone() {
  const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  const video = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
  try {
    return await navigator.mediaDevices.getUserMedia({ audio, video });
  } catch (err) {
    if (err.name !== 'NotFoundError' && err.name !== 'OverconstrainedError') throw err;
  }
  try {
    return await navigator.mediaDevices.getUserMedia({ video });
  } catch {
    return navigator.mediaDevices.getUserMedia({ audio });
  }
}

function describePublishError(err) {
  if (err instanceof SignallingError) return err.message;
  if (err.name === 'NotAllowedError') return 'Camera and microphone access was refused.';
  if (err.name === 'NotFoundError') return 'No camera or microphone was found.';
  if (err.name === 'NotReadableError') return 'The camera or microphone is in use by another application.';
  return `Could not go on stage: ${err.message}`;
}
