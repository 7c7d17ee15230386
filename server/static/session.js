// One participant's session on a stage: the signalling socket and the two peer connections.
// No DOM here: the page listens to the events this object dispatches and renders them.
//
// Events (CustomEvent, details in parentheses):
//   nodes       the list of live nodes changed (nodes: their public URLs)
//   state       the session state changed (state: idle|connecting|joined|leaving|left|disconnected|ended|failed)
//   reconnecting  the connection was lost and comes back by itself: waiting or dialling (see `reconnecting`)
//   rejoined    back on the stage after a lost connection: everything was rebuilt from the new `joined`
//   roster      a participant joined, changed or left
//   slots       a subscriber slot was assigned or released, or got its tracks
//   slot        one slot.assigned or slot.released (type, slot, kind, mid, participantId)
//   publishing  the local publication started, stopped or was muted
//   sharing     our screen share started or stopped (state: off|starting|live; see share.js)
//   role        our own role changed (from, to)
//   model       stage events changed the model (areas: see model.js AREAS, frame)
//   reactions   aggregated reactions of the last second (counts)
//   notice      something for the user (message, code, kind: error|info)

import { Signalling, SignallingError, signallingUrl } from './signalling.js';
import { Backoff, afterFailure, nextNode, nodeHttpUrl, reconnects, unreachable } from './reconnect.js';
import { CandidateTrickle, waitForGathering } from './peer.js';
import { AREAS, StageModel } from './model.js';
import { canModerate, canPublish } from './roles.js';
import { ScreenShare } from './share.js';

const KEEPALIVE_MS = 20000;
// A node that died without closing (power, network) leaves the socket open: no pong in this time
// counts as a lost connection (1006), and the session reconnects.
const KEEPALIVE_TIMEOUT_MS = 10000;
const CLOSE_ABNORMAL = 1006;
const CLOSE_REMOVED = 4003;
const CLOSE_BANNED = 4004;

export class StageSession extends EventTarget {
  state = 'idle'; // idle | connecting | joined | leaving | left | disconnected | ended | failed
  participantId = null;
  self = null; // our participant object as the server last described it
  stage = null;
  participants = new Map(); // id -> participant (the others)
  iceServers = [];
  iceTransportPolicy = 'all'; // 'relay': TURN-relayed candidates only (joined, or the page's ?relay=1)
  forceRelay = false;
  subscriberPc = null;
  publisherPc = null;
  localStream = null;
  publishing = 'off'; // off | starting | live
  muted = { audio: false, video: false }; // our own mutes; a moderator's are in self.moderator_muted
  model = null; // StageModel once joined
  end = null; // why the server ended our session: {kind: removed|banned|ended, reason, by}
  marks = {}; // performance.now() at milestones, for diagnostics and tests
  // While a lost connection comes back by itself (the state is then "disconnected"):
  // {since, attempt, trying, nextAt (Date.now() of the next attempt, null while trying), error}, else null.
  reconnecting = null;
  rejoins = 0; // how many times the session came back after a lost connection
  // The live nodes' public URLs (`joined.nodes`, kept fresh by `nodes` frames): where the session goes
  // when its own node cannot be reached, the page's own included (see #reconnect).
  nodes = [];

  // Our screen share, on a publisher connection of its own (share.js).
  screen = new ScreenShare({
    onChange: () => this.#emit('sharing', { state: this.screen.state }),
    onNotice: (message, code) => this.#notice(message, code),
  });

  #sig = null;
  // slot index -> {slot, streamId, media: MediaStream, owners: Map kind -> participant id,
  //                source: "camera" | "screen" (whose publication the pair carries)}
  #slots = new Map();
  #midToSlot = new Map();
  #subscriberTrickle = null;
  #publisherTrickle = null;
  #offerChain = Promise.resolve();
  #keepalive = null;
  #publishRun = 0; // bumped whenever a publication starts or is torn down: stale starts give up
  #reconnectRun = 0; // bumped when reconnection starts or stops: a stale loop gives up
  #wake = null; // ends the current wait between two attempts early
  #attemptClose = null; // how the socket of the attempt in progress closed, if it did
  #resume = null; // what to restore after a rejoin: {publish, muted}

  constructor({ stageId, name, role, identity = null, url = signallingUrl(window.location), getToken = null, invite = null, forceRelay = false }) {
    super();
    this.forceRelay = forceRelay; // ?relay=1: troubleshooting and tests, whatever the node says
    this.invite = invite; // a private club's invite code, from the link (`?invite=`)
    this.layerPreference = 'auto'; // `layer.set`: kept across rejoins
    this.getToken = getToken; // async (session) => access token; asked again at every (re)join
    this.stageId = stageId;
    this.name = name;
    this.role = role;
    this.joinedAs = role;
    this.identity = identity;
    this.url = url; // the node this session dials now (another one after its own was unreachable)
    this.home = url; // the page's own node, as the browser reached it
  }

  /** The HTTP base of the node this session talks to (token requests go there, not to the page's origin). */
  get httpUrl() {
    return nodeHttpUrl(this.url);
  }

  get canPublish() {
    return canPublish(this.role);
  }

  /** What a moderator muted on our publication ({audio, video}). */
  get moderatorMuted() {
    return { audio: Boolean(this.self?.moderator_muted?.audio), video: Boolean(this.self?.moderator_muted?.video) };
  }

  /** Connect and join; resolves once `joined` arrived, rejects (state "failed") if refused. */
  async join() {
    this.#setState('connecting');
    try {
      await this.#enter();
    } catch (err) {
      this.#teardown();
      this.#setState('failed');
      throw err;
    }
    this.#setState('joined');
    this.#emit('roster');
    this.#emit('model', { areas: [...AREAS] });
  }

  /** Ask again at once instead of waiting for the next attempt (a click, the browser back online). */
  reconnectNow() {
    if (this.reconnecting && !this.reconnecting.trying) this.#wake?.();
  }

  /** Open a signalling connection, join the stage and load what `joined` says; the state is the caller's. */
  async #enter() {
    const sig = new Signalling();
    this.#sig = sig;
    this.#attemptClose = null;
    this.#listen(sig);
    await sig.connect(this.url);
    sig.onclose = (event) => this.#closed(sig, event);
    const fields = { stage: this.stageId, name: this.name, role: this.role };
    if (this.identity) fields.identity = this.identity;
    if (this.getToken) fields.token = await this.getToken(this);
    if (this.invite) fields.invite = this.invite;
    const joined = await sig.request('join', fields);
    if (this.#sig !== sig) throw new SignallingError('disconnected', 'The connection was closed.');
    this.marks.joined = performance.now();
    this.#load(joined);
    this.#keepalive = setInterval(() => this.#ping(sig), KEEPALIVE_MS);
  }

  // Frames of an older connection (one we gave up on) are ignored.
  #listen(sig) {
    const on = (type, fn) => sig.on(type, (frame) => { if (this.#sig === sig) fn(frame); });
    on('subscriber.offer', (frame) => {
      this.#offerChain = this.#offerChain.then(() => this.#answerSubscriber(sig, frame));
    });
    on('slot.assigned', (frame) => this.#slotAssigned(frame));
    on('slot.released', (frame) => this.#slotReleased(frame));
    on('share.stopped', () => {
      // A moderator ended our share: the server has released it already.
      if (this.screen.state === 'off') return;
      this.screen.close();
      this.#notice('A moderator stopped your screen share.', 'share_stopped', 'info');
    });
    on('participant.joined', ({ participant }) => this.#upsert(participant));
    on('participant.updated', ({ participant }) => this.#upsert(participant));
    on('participant.left', ({ participant_id: id }) => this.#removeParticipant(id));
    on('participant.removed', (frame) => this.#removed(frame));
    on('stage.ended', () => { this.end ??= { kind: 'ended', reason: '', by: null }; });
    on('reactions', ({ counts }) => this.#emit('reactions', { counts: counts ?? {} }));
    on('nodes', ({ nodes }) => this.#setNodes(nodes));
    on('error', (frame) => this.#notice(frame.message || frame.code, frame.code));
    on('*', (frame) => {
      const areas = this.model?.apply(frame) ?? [];
      if (areas.length === 0) return;
      if (areas.includes('stage')) this.stage = this.model.stage;
      this.#emit('model', { areas, frame });
    });
  }

  /** Everything we know about the stage comes from `joined`: after a rejoin nothing older is kept. */
  #load(joined) {
    this.participantId = joined.participant.id;
    this.self = joined.participant;
    this.role = joined.participant.role ?? this.role;
    this.model = new StageModel(this.participantId);
    this.model.load(joined);
    this.stage = this.model.stage;
    this.iceServers = Array.isArray(joined.ice_servers) ? joined.ice_servers : [];
    this.iceTransportPolicy = this.forceRelay || joined.ice_transport_policy === 'relay' ? 'relay' : 'all';
    this.#setNodes(joined.nodes);
    this.participants = new Map();
    for (const participant of joined.participants ?? []) this.participants.set(participant.id, participant);
  }

  /** What both peer connections are created with: the servers and policy of the latest `joined`. */
  #rtcConfiguration() {
    return { iceServers: this.iceServers, iceTransportPolicy: this.iceTransportPolicy };
  }

  #setNodes(nodes) {
    if (!Array.isArray(nodes)) return; // a server without several nodes: keep what we know
    this.nodes = nodes.filter((url) => typeof url === 'string');
    this.#emit('nodes', { nodes: [...this.nodes] });
  }

  #ping(sig) {
    sig.request('ping', {}, KEEPALIVE_TIMEOUT_MS).catch((err) => {
      if (err.code !== 'timeout' || this.#sig !== sig || this.state !== 'joined') return;
      sig.close();
      this.#closed(sig, { code: CLOSE_ABNORMAL, reason: 'no answer to ping' });
    });
  }

  /**
   * Send a stage command (docs/protocol.md, "Commands common fields") and resolve with its reply;
   * rejects with a SignallingError (`code`, `retryAfter`) when refused.
   */
  command(type, fields = {}) {
    if (!this.#sig || this.state !== 'joined') {
      return Promise.reject(new SignallingError('disconnected', 'Not connected to the stage.'));
    }
    return this.#sig.request(type, { stage: this.stageId, ...fields });
  }

  /** Send an ephemeral reaction (no reply is expected). */
  react(emoji) {
    if (this.state === 'joined') this.#sig?.send({ type: 'reaction.send', stage: this.stageId, emoji });
  }

  /** Vote in a poll and remember our ballot (events to everyone do not carry it). */
  async vote(pollId, choices) {
    await this.command('poll.vote', { poll_id: pollId, choices });
    this.model.recordBallot(pollId, choices);
    this.#emit('model', { areas: ['polls'] });
  }

  /** Upvote a question once. */
  async upvote(questionId) {
    try {
      await this.command('question.upvote', { question_id: questionId });
    } catch (err) {
      if (err.code !== 'already_voted') throw err;
    }
    this.model.markUpvoted(questionId);
    this.#emit('model', { areas: ['questions'] });
  }

  /**
   * Accept or decline the invitation to go on stage. A `consent_required` refusal keeps the invitation
   * open: the page asks for consent, then accepts again.
   */
  async answerInvitation(accept) {
    try {
      await this.command(accept ? 'invitation.accept' : 'invitation.decline');
    } catch (err) {
      if (err.code !== 'consent_required') this.#invitationAnswered();
      throw err;
    }
    this.#invitationAnswered();
  }

  #invitationAnswered() {
    if (this.model) this.model.invitation = null;
    this.#emit('model', { areas: ['invitations'] });
  }

  /** Our decision about recording (`scopes` may be empty: declined), under the policy we were shown. */
  async giveConsent(scopes, method) {
    const version = this.model?.policy.version ?? this.model?.consent.policyVersion;
    const reply = await this.command('consent.give', { scopes: [...scopes], policy_version: version, method });
    this.#consentAnswered({ scopes, method, recordId: reply.record_id });
    return reply;
  }

  /** Take back every scope we granted. */
  async withdrawConsent() {
    const reply = await this.command('consent.withdraw');
    this.#consentAnswered({ scopes: [], method: 'withdrawal', recordId: reply.record_id, withdrawn: true });
    return reply;
  }

  // The reply comes just before our `consent.recorded`: the page must not ask again in between.
  #consentAnswered(answer) {
    if (this.model?.consentAnswered(answer)) this.#emit('model', { areas: ['consent'] });
  }

  /** Which participant each subscriber slot carries now: [{slot, kind, mid, participantId, source}]. */
  slotOwners() {
    const owners = [];
    for (const entry of this.#slots.values()) {
      for (const [kind, participantId] of entry.owners) {
        const source = entry.source ?? 'camera';
        owners.push({ slot: entry.slot, kind, mid: entry.mids?.[kind] ?? null, participantId, source });
      }
    }
    return owners;
  }

  /** The remote tiles to show: one per participant and source (camera, screen share) that owns a
   *  slot, with that slot's stream. */
  remoteTiles() {
    const tiles = new Map();
    for (const slot of this.#slots.values()) {
      const owner = slot.owners.get('video') ?? slot.owners.get('audio');
      const source = slot.source ?? 'camera';
      const key = `${owner}:${source}`;
      if (!owner || tiles.has(key)) continue;
      tiles.set(key, {
        participantId: owner,
        participant: this.participants.get(owner) ?? null,
        slot: slot.slot,
        source,
        stream: slot.media,
        kinds: [...slot.owners.keys()],
      });
    }
    return [...tiles.values()];
  }

  /** Share a screen, window or tab beside the camera (host and speakers). */
  async shareScreen() {
    if (!this.canPublish || this.state !== 'joined') return;
    await this.screen.start(this.#sig, this.iceServers);
  }

  /** Stop our screen share. */
  async stopSharing() {
    await this.screen.stop(this.#sig);
  }

  /**
   * Start camera and microphone and publish them on a new publisher connection. `muted` ({audio, video})
   * publishes those tracks muted from the first frame (coming back after a lost connection).
   */
  async publish({ muted = null } = {}) {
    if (!this.canPublish || this.publishing !== 'off' || this.state !== 'joined') return;
    const run = ++this.#publishRun;
    const sig = this.#sig;
    this.#setPublishing('starting');
    try {
      const stream = await openCameraAndMicrophone();
      if (run !== this.#publishRun || !this.canPublish || this.state !== 'joined') {
        for (const track of stream.getTracks()) track.stop(); // demoted or left while the camera started
        return;
      }
      this.localStream = stream;
      const pc = new RTCPeerConnection(this.#rtcConfiguration());
      this.publisherPc = pc;
      const trickle = new CandidateTrickle(pc, 'publisher', (frame) => { if (this.#sig === sig) sig.send(frame); });
      this.#publisherTrickle = trickle;
      for (const track of this.localStream.getTracks()) {
        if (muted?.[track.kind]) track.enabled = false;
        addPublishTransceiver(pc, track, this.localStream);
      }
      await pc.setLocalDescription(await pc.createOffer());
      await waitForGathering(pc);
      if (this.publisherPc !== pc) return; // stopped or torn down meanwhile
      const answer = await sig.request('publish.offer', { sdp: trickle.takeSdp() });
      if (this.publisherPc !== pc) return;
      await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
      if (this.publisherPc !== pc) return;
      await temporalFallback(pc, answer.sdp);
      trickle.acknowledged();
      this.muted = { audio: Boolean(muted?.audio), video: Boolean(muted?.video) };
      this.marks.published = performance.now();
      this.#setPublishing('live');
      for (const kind of ['audio', 'video']) {
        if (this.muted[kind]) sig.request('publish.mute', { kind, muted: true }).catch((err) => this.#notice(err.message, err.code));
      }
    } catch (err) {
      if (run !== this.#publishRun) return; // torn down meanwhile (demoted, stopped, left)
      this.#closePublisher();
      this.#setPublishing('off');
      this.#notice(describePublishError(err), err.code ?? err.name);
    }
  }

  /**
   * The video this viewer wants (docs/protocol.md, `layer.set`): "auto" (the server picks by the
   * connection's bandwidth), "high", "low" or "audio" (no video at all, the sound goes on).
   */
  async setLayerPreference(preference) {
    this.layerPreference = preference;
    this.#emit('layers');
    if (!this.#sig || this.state !== 'joined') return;
    try {
      await this.#sig.request('layer.set', { preference });
    } catch (err) {
      this.#notice(err.message, err.code);
    }
  }

  /** Mute or unmute our `kind` ("audio" | "video") track. */
  async setMuted(kind, muted) {
    if (this.publishing !== 'live') return;
    if (!muted && this.moderatorMuted[kind]) {
      this.#notice(`A moderator muted your ${kind === 'audio' ? 'microphone' : 'camera'}.`, 'moderator_muted');
      return;
    }
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
    this.#stopReconnecting();
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
    this.#stopReconnecting();
    this.#sig?.send({ type: 'leave' });
    this.#teardown();
  }

  async #answerSubscriber(sig, { sdp, slots }) {
    if (this.#sig !== sig) return; // an offer of a connection we have given up on
    try {
      if (!this.subscriberPc) this.#createSubscriber(sig);
      const pc = this.subscriberPc;
      const trickle = this.#subscriberTrickle;
      this.#defineSlots(slots ?? []);
      this.marks.subscriberOffer = performance.now();
      await pc.setRemoteDescription({ type: 'offer', sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      await waitForGathering(pc);
      if (this.#sig !== sig) return;
      await sig.request('subscriber.answer', { sdp: trickle.takeSdp() });
      trickle.acknowledged();
      this.marks.subscriberReady = performance.now();
      // A new receiving connection (a rejoin) starts at "auto": say again what the viewer chose.
      if (this.layerPreference !== 'auto') await sig.request('layer.set', { preference: this.layerPreference });
    } catch (err) {
      if (err instanceof SignallingError && err.code === 'disconnected') return;
      if (this.#sig !== sig || this.state !== 'joined') return; // torn down while answering
      this.#notice(`Could not receive the stage: ${err.message}`, err.code);
    }
  }

  #createSubscriber(sig) {
    const pc = new RTCPeerConnection(this.#rtcConfiguration());
    this.subscriberPc = pc;
    this.#subscriberTrickle = new CandidateTrickle(pc, 'subscriber', (frame) => { if (this.#sig === sig) sig.send(frame); });
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
      if (existing) {
        existing.streamId = stream;
        existing.mids = { audio: String(audioMid), video: String(videoMid) };
      }
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

  #slotAssigned({ slot, mid, kind, participant_id: owner, source }) {
    const index = slot ?? this.#midToSlot.get(String(mid));
    const entry = this.#slotAt(index);
    if (!entry) return;
    entry.owners.set(kind, owner);
    entry.source = source ?? 'camera';
    if (this.marks.firstSlotAssigned === undefined) this.marks.firstSlotAssigned = performance.now();
    this.#emit('slot', { type: 'slot.assigned', slot: index, kind, mid: mid ?? null, participantId: owner });
    this.#emit('slots');
  }

  #slotReleased({ slot, mid, kind, participant_id: owner }) {
    const index = slot ?? this.#midToSlot.get(String(mid));
    const entry = this.#slotAt(index, false);
    if (!entry) return;
    if (owner === undefined || entry.owners.get(kind) === owner) entry.owners.delete(kind);
    this.#emit('slot', { type: 'slot.released', slot: index, kind, mid: mid ?? null, participantId: owner });
    this.#emit('slots');
  }

  #upsert(participant) {
    if (!participant?.id) return;
    if (participant.id === this.participantId) {
      this.self = participant;
      if (participant.role && participant.role !== this.role) this.#roleChanged(this.role, participant.role);
    } else {
      this.participants.set(participant.id, participant);
    }
    this.#emit('roster');
  }

  #roleChanged(from, to) {
    this.role = to;
    this.marks[`role:${to}`] = performance.now();
    if (!canPublish(to)) this.screen.close(); // the server ended the share with the camera
    if (!canPublish(to) && this.publishing !== 'off') {
      // Moved off stage: the server has stopped our media and closes the publisher connection.
      this.#closePublisher();
      this.#setPublishing('off');
      this.marks.demoted = performance.now();
    }
    this.#emit('role', { from, to });
    if (canPublish(to) && from === 'audience' && this.state === 'joined') {
      // Accepted an invitation: go on stage with camera and microphone straight away.
      this.publish();
    }
  }

  #removed({ participant_id: id, banned, reason, by }) {
    if (id === this.participantId) {
      this.end = { kind: banned ? 'banned' : 'removed', reason: reason ?? '', by: by ?? null };
      return;
    }
    const person = this.participants.get(id);
    if (person && canModerate(this.role)) {
      const what = banned ? 'banned' : 'removed';
      this.#notice(`${person.name} was ${what}${reason ? `: ${reason}` : '.'}`, `participant_${what}`, 'info');
    }
    this.#removeParticipant(id);
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
    this.#publishRun += 1;
    this.publisherPc?.close();
    this.publisherPc = null;
    this.#publisherTrickle = null;
    for (const track of this.localStream?.getTracks() ?? []) track.stop();
    this.localStream = null;
    this.muted = { audio: false, video: false };
  }

  #closed(sig, event) {
    if (this.#sig !== sig) return;
    if (this.state === 'connecting' || this.reconnecting) {
      // Closed while joining: the pending `join` fails, and whoever waits for it decides.
      this.closeCode = event.code;
      this.#attemptClose = event;
      return;
    }
    const wasLeaving = this.state === 'leaving' || this.state === 'left';
    const resume = { publish: this.publishing !== 'off', muted: { ...this.muted } };
    this.#teardown();
    if (wasLeaving) return;
    this.closeCode = event.code;
    if (event.code === CLOSE_REMOVED) this.end ??= { kind: 'removed', reason: event.reason ?? '', by: null };
    if (event.code === CLOSE_BANNED) this.end ??= { kind: 'banned', reason: event.reason ?? '', by: null };
    if (this.end && !this.end.reason && event.reason) this.end.reason = event.reason;
    if (!this.end && reconnects(event.code)) {
      this.#resume = resume;
      this.#reconnect().catch((err) => console.error('medstage: reconnecting failed', err));
      return;
    }
    this.#setState(this.end ? 'ended' : 'disconnected');
  }

  /**
   * Come back after a lost connection: the same identity, name and last role, with backoff
   * (reconnect.js), for as long as the page is open or until a final answer. The server decides the
   * role in the end (it remembers it by identity); what we were publishing is published again.
   * The first attempt dials the same node; an attempt that cannot reach its node (no socket opened)
   * makes the next one dial the next live node of `nodes`, so a page whose own node died comes back
   * on another (any node serves any stage). Once joined there, that node is ours: later requests
   * (tokens included, `httpUrl`) go to it, although the page itself was loaded from the dead one.
   */
  async #reconnect() {
    const run = ++this.#reconnectRun;
    const backoff = new Backoff();
    const previousRole = this.role;
    this.reconnecting = { since: Date.now(), attempt: 0, trying: false, nextAt: null, error: null };
    this.#setState('disconnected');
    let wait = backoff.next();
    for (;;) {
      this.#updateReconnecting({ trying: false, nextAt: Date.now() + wait });
      await this.#pause(wait);
      if (run !== this.#reconnectRun) return;
      this.#updateReconnecting({ trying: true, nextAt: null, attempt: this.reconnecting.attempt + 1 });
      this.#resetMedia();
      try {
        await this.#enter();
      } catch (err) {
        if (run !== this.#reconnectRun) return; // left or closed meanwhile
        const closeCode = this.#attemptClose?.code ?? null;
        this.#teardown();
        if (unreachable(err, closeCode)) {
          const other = nextNode(this.url, this.home, this.nodes);
          if (other !== this.url) {
            this.url = other;
            this.marks.nodeSwitched = performance.now();
          }
        }
        const next = afterFailure(err, closeCode, backoff);
        if (next.final) {
          this.#gaveUp(next.final, err);
          return;
        }
        this.reconnecting.error = { code: err.code ?? null, message: err.message ?? '' };
        wait = next.wait;
        continue;
      }
      if (run !== this.#reconnectRun) return;
      this.#rejoined(previousRole);
      return;
    }
  }

  #rejoined(previousRole) {
    this.reconnecting = null;
    this.rejoins += 1;
    this.marks.rejoined = performance.now();
    const resume = this.#resume;
    this.#resume = null;
    this.#setState('joined');
    this.#emit('rejoined');
    this.#emit('roster');
    this.#emit('model', { areas: [...AREAS] });
    if (this.role !== previousRole) this.#emit('role', { from: previousRole, to: this.role });
    if (resume?.publish && this.canPublish) this.publish({ muted: resume.muted });
  }

  /** A final answer while coming back: banned, stage ended, or a close that says not to return. */
  #gaveUp(kind, err) {
    this.reconnecting = null;
    this.#resume = null;
    if (kind === 'banned') this.end = { kind: 'banned', reason: '', by: null };
    if (kind === 'ended') this.end = { kind: 'ended', reason: '', by: null };
    this.#setState(this.end ? 'ended' : 'disconnected');
    if (!this.end) this.#notice(`Could not reconnect: ${err.message}`, err.code);
  }

  #updateReconnecting(fields) {
    this.reconnecting = { ...this.reconnecting, ...fields };
    this.#emit('reconnecting', { ...this.reconnecting });
  }

  /** Wait `ms`, or less if reconnectNow() or #stopReconnecting() wakes us. */
  #pause(ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        if (this.#wake === done) this.#wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#wake = done;
    });
  }

  #stopReconnecting() {
    if (!this.reconnecting) return;
    this.#reconnectRun += 1;
    this.reconnecting = null;
    this.#resume = null;
    this.#wake?.();
  }

  /** The old connections are closed: a rejoin negotiates new ones from the new offer. */
  #resetMedia() {
    this.subscriberPc = null;
    this.#subscriberTrickle = null;
    this.#slots = new Map();
    this.#midToSlot = new Map();
    this.#offerChain = Promise.resolve();
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
    this.screen.close();
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

  #notice(message, code, kind = 'error') {
    this.#emit('notice', { message, code, kind });
  }

  #emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/**
 * Camera video goes out as three simulcast encodings, lowest first (docs/protocol.md, media model):
 * the node forwards one of them to each viewer. Where simulcast is not wanted (`?simulcast=0` on the
 * page) or not possible (the browser refuses the encodings, or the answer does not receive them), the
 * camera goes out as one encoding with VP8 temporal layers (`L1T3`): the node then forwards a quarter,
 * half or all of its frames to each viewer.
 */
export const SIMULCAST_ENCODINGS = [
  { rid: 'l', scaleResolutionDownBy: 4, maxBitrate: 150000 },
  { rid: 'm', scaleResolutionDownBy: 2, maxBitrate: 500000 },
  { rid: 'h', maxBitrate: 1500000 },
];
export const TEMPORAL_ENCODING = { scalabilityMode: 'L1T3', maxBitrate: 1500000 };

function simulcastWanted() {
  return new URLSearchParams(window.location.search).get('simulcast') !== '0';
}

function addPublishTransceiver(pc, track, stream) {
  const init = { direction: 'sendonly', streams: [stream] };
  if (track.kind !== 'video') return pc.addTransceiver(track, init);
  const tries = simulcastWanted() ? [SIMULCAST_ENCODINGS, [TEMPORAL_ENCODING]] : [[TEMPORAL_ENCODING]];
  for (const encodings of tries) {
    try {
      return pc.addTransceiver(track, { ...init, sendEncodings: encodings.map((e) => ({ ...e })) });
    } catch {
      // the next, down to one plain encoding
    }
  }
  return pc.addTransceiver(track, init);
}

/**
 * The answer did not take simulcast (one encoding is sent): ask for temporal layers on it instead.
 * Best effort: a browser that cannot encode L1T3 keeps sending one layer, which the node forwards whole.
 */
async function temporalFallback(pc, answerSdp) {
  if (answerSdp.includes('a=simulcast:')) return;
  const sender = pc.getSenders().find((s) => s.track && s.track.kind === 'video');
  if (!sender) return;
  const params = sender.getParameters();
  if (params.encodings?.length !== 1 || params.encodings[0].scalabilityMode === 'L1T3') return;
  params.encodings[0].scalabilityMode = 'L1T3';
  try {
    await sender.setParameters(params);
  } catch (err) {
    console.info(`temporal layers not available: ${err.message}`);
  }
}

/** Camera and microphone, falling back to whichever of the two exists. */
async function openCameraAndMicrophone() {
  const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  // `?camera=360p` on the page asks for 640x360 instead of 720p: a weak device, and the test suite,
  // whose two cores would otherwise encode three 720p-simulcast layers per speaker.
  const small = new URLSearchParams(window.location.search).get('camera') === '360p';
  const video = small
    ? { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 30 } }
    : { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
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
