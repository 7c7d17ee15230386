// The stage as this person sees it: comments, questions, hands, invitations, polls, leaderboard,
// recording and consent.
// No DOM and no socket: `load` takes the `state` of `joined` (late joiners), `apply` takes one
// stage event and says which areas changed, so it is the same code for history and for live events.

const COMMENT_LIMIT = 500;

/** Areas that `apply` reports, for the page to re-render only what changed. */
export const AREAS = ['stage', 'chat', 'pinned', 'questions', 'hands', 'invitations', 'polls', 'leaderboard',
  'recording', 'consent'];

/** The consent scopes, in the order the page shows them (docs/protocol.md, "Consent and recording"). */
export const SCOPES = ['media', 'comments', 'share'];

export class StageModel {
  seq = 0; // last event applied (events at or below it are already in the snapshot)
  stage = { id: '', title: '', state: 'live', locked: false };
  comments = []; // oldest first
  pinned = null;
  slowModeS = 0;
  questions = new Map(); // id -> question
  hands = []; // participant ids in queue order
  invitation = null; // ours, as the invitee: {by, byName}
  invitations = new Map(); // moderators: invitee id -> inviter id
  polls = new Map(); // id -> poll, in creation order
  leaderboard = [];
  quiz = new Map(); // poll id -> {correct, score}: our own quiz results
  clockOffset = 0; // server clock minus ours, in seconds
  // Recording: mode off|manual|auto; startedAt in server seconds (null when not known).
  recording = { mode: 'off', active: false, sessionId: null, startedAt: null, by: null };
  lastStop = null; // the last recording.stopped: {sessionId, by, reason}
  policy = { version: null, text: '' }; // the consent policy shown to the person (`joined.policy`)
  // Our own decision under the current policy ({scopes, decision, at, method}) or null; moderators
  // also get `summary` ({granted, declined, none}: people present, by identity).
  consent = { policyVersion: null, mine: null, summary: null };
  consentRequest = null; // a `consent.requested` for us not answered yet: {sessionId, policyVersion}
  consentOf = new Map(); // moderators: participant id -> their last consent record seen

  #present = new Set(); // participant ids present (others and us), for the live consent summary
  #counted = new Map(); // participant id -> the summary category they are counted in, when known

  selfId;
  #upvoted = new Set(); // question ids we upvoted
  #ballots = new Map(); // poll id -> our choices

  constructor(selfId) {
    this.selfId = selfId;
  }

  /** The `joined` reply: the stage and, from servers that send it, the late joiner's `state`. */
  load({ stage, state, policy, participants }) {
    if (stage) this.stage = { ...this.stage, ...stage };
    if (policy && typeof policy === 'object') this.policy = { version: policy.version ?? null, text: policy.text ?? '' };
    if (Array.isArray(participants)) this.#present = new Set([this.selfId, ...participants.map((p) => p.id)]);
    if (!state) return;
    this.seq = Number(state.seq) || 0;
    this.comments = [...(state.comments ?? [])].slice(-COMMENT_LIMIT);
    this.pinned = state.pinned ?? null;
    this.slowModeS = Number(state.slow_mode_s) || 0;
    this.questions = new Map((state.questions ?? []).map((q) => [q.id, q]));
    for (const q of state.questions ?? []) if (q.voted) this.#upvoted.add(q.id);
    this.hands = [...(state.hands ?? [])];
    this.invitation = state.invitation ? invitationOf(state.invitation) : null;
    this.polls = new Map((state.polls ?? []).map((p) => [p.id, p]));
    for (const p of state.polls ?? []) if (Array.isArray(p.my_choices)) this.#ballots.set(p.id, p.my_choices);
    this.leaderboard = [...(state.leaderboard ?? [])];
    this.#loadRecording(state);
  }

  #loadRecording(state) {
    const recording = state.recording ?? {};
    const sessionId = recording.session_id ?? null;
    const active = Boolean(recording.active);
    const sameSession = active && sessionId === this.recording.sessionId;
    this.recording = {
      mode: recording.mode ?? 'off',
      active,
      sessionId,
      // Servers that say when it started; else the start encoded in the session id; else unknown.
      startedAt: active ? (numberOr(recording.started_at) ?? (sameSession ? this.recording.startedAt : null)
        ?? sessionStart(sessionId)) : null,
      by: recording.by ?? (sameSession ? this.recording.by : null),
    };
    const consent = state.consent ?? {};
    this.consent = {
      policyVersion: consent.policy_version ?? this.policy.version,
      mine: consent.mine ? { ...consent.mine, scopes: [...(consent.mine.scopes ?? [])] } : null,
      summary: consent.summary ? { granted: 0, declined: 0, none: 0, ...consent.summary } : null,
    };
    if (!this.policy.version) this.policy = { ...this.policy, version: this.consent.policyVersion };
    // The summary counted everyone present now; we know the category of ourselves only.
    this.#counted = new Map();
    if (this.consent.summary) this.#counted.set(this.selfId, categoryOf(this.consent.mine));
    // Servers that list each person's decision to moderators (participant id -> decision).
    const people = consent.people ?? consent.participants;
    if (people && typeof people === 'object') {
      for (const [id, mine] of Object.entries(people)) {
        if (!mine) continue;
        this.consentOf.set(id, { participant_id: id, ...mine });
        if (this.consent.summary) this.#counted.set(id, categoryOf(mine));
      }
    }
  }

  /** Whether the stage may record (its mode is not `off`). */
  get mayRecord() {
    return this.recording.mode !== 'off';
  }

  /** Whether we must be asked before we are on the stage: it may record and we have not decided. */
  get needsConsent() {
    return this.mayRecord && !this.consent.mine;
  }

  /** Our granted scopes now ([] when declined, withdrawn or undecided). */
  get myScopes() {
    return [...(this.consent.mine?.scopes ?? [])];
  }

  /** Someone joined: until they decide, the summary counts them as undecided. */
  personArrived(id) {
    if (!id || this.#present.has(id)) return [];
    this.#present.add(id);
    if (!this.consent.summary) return [];
    this.#recount(id, 'none'); // a reconnect of someone who decided is corrected by their next record
    return ['consent'];
  }

  personLeft(id) {
    if (!this.#present.delete(id)) return [];
    this.consentOf.delete(id);
    if (!this.consent.summary || !this.#counted.has(id)) return [];
    this.#recount(id, null);
    return ['consent'];
  }

  /**
   * Our own answer was accepted (the reply to `consent.give` or `consent.withdraw`): take it as our
   * decision until its `consent.recorded` says exactly. Returns whether anything changed.
   */
  consentAnswered({ scopes, method, recordId = null, withdrawn = false }) {
    const mine = this.consent.mine;
    if (recordId && mine?.record_id === recordId) return false; // its record is already here
    const sorted = [...scopes].sort();
    let decision = sorted.length ? 'granted' : 'declined';
    if (withdrawn) decision = 'withdrawn';
    else if (sorted.length && mine?.scopes?.length && mine.scopes.join() !== sorted.join()) decision = 'changed';
    this.consent = {
      ...this.consent, mine: { scopes: sorted, decision, at: this.serverNow(), method, record_id: recordId },
    };
    this.consentRequest = null;
    return true;
  }

  /** A consent record (ours, or anyone's for moderators). */
  consentRecorded(record, summary = null) {
    if (!record) return [];
    const decision = {
      scopes: [...(record.scopes ?? [])], decision: record.decision, at: record.at, method: record.method,
      record_id: record.record_id ?? null,
    };
    if (record.participant_id === this.selfId) {
      this.consent = { ...this.consent, mine: decision };
      this.consentRequest = null;
    }
    this.consentOf.set(record.participant_id, { ...record, ...decision });
    if (summary && typeof summary === 'object') {
      this.consent.summary = { granted: 0, declined: 0, none: 0, ...summary }; // the server's own count
    } else if (this.consent.summary) {
      this.#recount(record.participant_id, categoryOf(decision), previousCategory(record));
    }
    return ['consent'];
  }

  /** Adjust the moderators' summary: `id` is now counted in `to` (null: no longer present). */
  #recount(id, to, fallbackFrom = null) {
    const summary = this.consent.summary;
    if (!summary) return;
    const from = this.#counted.get(id) ?? fallbackFrom;
    if (from) summary[from] = Math.max(0, (summary[from] ?? 0) - 1);
    if (to) {
      summary[to] = (summary[to] ?? 0) + 1;
      this.#counted.set(id, to);
    } else {
      this.#counted.delete(id);
    }
  }

  /** Apply one stage event; returns the areas it changed ([] when it is not a stage event or is stale). */
  apply(frame) {
    const handler = HANDLERS[frame.type];
    if (!handler) return [];
    if (typeof frame.seq === 'number') {
      if (frame.seq <= this.seq) return []; // already part of the snapshot in `joined`
      this.seq = frame.seq;
    }
    if (typeof frame.at === 'number') this.clockOffset = frame.at - Date.now() / 1000;
    return handler.call(this, frame);
  }

  /** Now on the server's clock (Unix seconds), for poll countdowns. */
  serverNow() {
    return Date.now() / 1000 + this.clockOffset;
  }

  hasUpvoted(questionId) {
    return this.#upvoted.has(questionId) || Boolean(this.questions.get(questionId)?.voted);
  }

  markUpvoted(questionId) {
    this.#upvoted.add(questionId);
  }

  /** Our ballot in `pollId` (an array of option indexes), or null. */
  ballot(pollId) {
    return this.#ballots.get(pollId) ?? this.polls.get(pollId)?.my_choices ?? null;
  }

  recordBallot(pollId, choices) {
    this.#ballots.set(pollId, [...choices]);
  }

  /** Open questions by votes then time; then the answered ones. Dismissed ones are not shown. */
  questionList() {
    const byVotes = (a, b) => (b.votes ?? 0) - (a.votes ?? 0) || (a.at ?? 0) - (b.at ?? 0);
    const all = [...this.questions.values()];
    return [
      ...all.filter((q) => q.status === 'open' || !q.status).sort(byVotes),
      ...all.filter((q) => q.status === 'answered').sort(byVotes),
    ];
  }

  /** Open polls first (newest first), then drafts, then closed ones (newest first). */
  pollList() {
    const all = [...this.polls.values()].reverse();
    const rank = { open: 0, draft: 1, closed: 2 };
    return all.sort((a, b) => (rank[a.status] ?? 3) - (rank[b.status] ?? 3));
  }

  isOwn(item) {
    return item?.author_id === this.selfId;
  }

  /** Insert or merge a poll (events to everyone carry no personal ballot). */
  upsertPoll(poll) {
    const previous = this.polls.get(poll.id);
    const merged = { ...previous, ...poll };
    // `poll.counts` results outlive a later `poll.opened` without results.
    if (poll.my_choices == null && previous?.my_choices != null) merged.my_choices = previous.my_choices;
    if (poll.results == null && previous?.results != null && poll.status !== 'closed') merged.results = previous.results;
    this.polls.set(poll.id, merged);
  }
}

function invitationOf(value) {
  if (typeof value === 'string') return { by: value, byName: null };
  return { by: value.by ?? null, byName: value.by_name ?? null };
}

/** The summary category of a decision: granted (some scope), declined (none), none (undecided). */
function categoryOf(decision) {
  if (!decision) return 'none';
  return (decision.scopes ?? []).length ? 'granted' : 'declined';
}

/**
 * For a record about someone whose previous category we never saw: what it most likely was. A prompt
 * answer follows no decision; a withdrawal or a change follows a grant; a decision in settings or at
 * an invitation most likely changes the other way.
 */
function previousCategory(record) {
  if (record.decision === 'withdrawn' || record.decision === 'changed') return 'granted';
  if (record.method === 'join_prompt' || record.method === 'recording_prompt') return 'none';
  if (record.method === 'invitation') return 'none';
  return (record.scopes ?? []).length ? 'declined' : 'granted';
}

function numberOr(value, fallback = null) {
  return typeof value === 'number' && Number.isFinite(value) ? value : fallback;
}

/** The server names sessions after their start (`20261126T140305Z-3f2a`): that start, Unix seconds. */
export function sessionStart(sessionId) {
  const match = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z/.exec(String(sessionId ?? ''));
  if (!match) return null;
  const [, y, mo, d, h, mi, se] = match.map(Number);
  return Date.UTC(y, mo - 1, d, h, mi, se) / 1000;
}

const HANDLERS = {
  'stage.updated'({ stage }) {
    this.stage = { ...this.stage, ...stage };
    return ['stage'];
  },
  'chat.updated'({ slow_mode_s: seconds }) {
    this.slowModeS = Number(seconds) || 0;
    return ['chat'];
  },
  'comment.posted'({ comment }) {
    if (!comment || this.comments.some((c) => c.id === comment.id)) return [];
    this.comments.push(comment);
    if (this.comments.length > COMMENT_LIMIT) this.comments.splice(0, this.comments.length - COMMENT_LIMIT);
    return ['chat'];
  },
  'comment.deleted'({ comment_id: id }) {
    this.comments = this.comments.filter((c) => c.id !== id);
    const areas = ['chat'];
    if (this.pinned?.id === id) {
      this.pinned = null;
      areas.push('pinned');
    }
    return areas;
  },
  'comment.pinned'({ comment }) {
    this.pinned = comment ?? null;
    return ['pinned', 'chat'];
  },
  'question.asked'({ question }) {
    this.questions.set(question.id, question);
    return ['questions'];
  },
  'question.updated'({ question }) {
    this.questions.set(question.id, { ...this.questions.get(question.id), ...question });
    return ['questions'];
  },
  'hands.updated'({ hands }) {
    this.hands = [...(hands ?? [])];
    return ['hands'];
  },
  invitation({ participant_id: invitee, by, by_name: byName }) {
    if (invitee === this.selfId) this.invitation = { by: by ?? null, byName: byName ?? null };
    else this.invitations.set(invitee, by ?? null);
    return ['invitations'];
  },
  'invitation.answered'({ participant_id: invitee }) {
    if (invitee === this.selfId) this.invitation = null;
    this.invitations.delete(invitee);
    return ['invitations'];
  },
  'poll.created'({ poll }) {
    this.upsertPoll({ status: 'draft', ...poll });
    return ['polls'];
  },
  'poll.opened'({ poll }) {
    this.upsertPoll({ ...poll, status: 'open' });
    return ['polls'];
  },
  'poll.counts'({ poll_id: id, counts, ballots }) {
    const poll = this.polls.get(id);
    if (!poll) return [];
    this.polls.set(id, { ...poll, results: { ...poll.results, counts, ballots } });
    return ['polls'];
  },
  'poll.closed'({ poll }) {
    this.upsertPoll({ ...poll, status: 'closed' });
    return ['polls'];
  },
  'poll.voters'({ poll_id: id, voters }) {
    const poll = this.polls.get(id);
    if (!poll) return [];
    this.polls.set(id, { ...poll, voters });
    return ['polls'];
  },
  'quiz.result'({ poll_id: id, correct, score }) {
    this.quiz.set(id, { correct: Boolean(correct), score });
    return ['polls'];
  },
  'quiz.leaderboard'({ entries }) {
    this.leaderboard = [...(entries ?? [])];
    return ['leaderboard'];
  },
  // Our view changed wholesale (e.g. we became a moderator): the same snapshot as in `joined`.
  state({ state }) {
    if (!state) return [];
    this.load({ state });
    return [...AREAS];
  },
  'participant.joined'({ participant }) {
    return this.personArrived(participant?.id);
  },
  'participant.left'({ participant_id: id }) {
    return this.personLeft(id);
  },
  'consent.recorded'({ record, summary }) {
    return this.consentRecorded(record, summary);
  },
  'consent.requested'({ participant_id: id, policy_version: version, session_id: sessionId }) {
    if (id !== this.selfId) return [];
    this.consentRequest = { sessionId: sessionId ?? null, policyVersion: version ?? this.consent.policyVersion };
    return ['consent'];
  },
  'recording.started'({ session_id: sessionId, by, at }) {
    this.recording = {
      ...this.recording,
      mode: this.recording.mode === 'off' ? 'manual' : this.recording.mode,
      active: true,
      sessionId: sessionId ?? null,
      startedAt: numberOr(at) ?? sessionStart(sessionId) ?? this.serverNow(),
      by: by ?? null,
    };
    return ['recording'];
  },
  'recording.stopped'({ session_id: sessionId, by, reason }) {
    this.recording = { ...this.recording, active: false, sessionId: null, startedAt: null, by: null };
    this.lastStop = { sessionId: sessionId ?? null, by: by ?? null, reason: reason ?? null };
    return ['recording'];
  },
};
