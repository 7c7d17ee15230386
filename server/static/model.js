// The stage as this person sees it: comments, questions, hands, invitations, polls, leaderboard.
// No DOM and no socket: `load` takes the `state` of `joined` (late joiners), `apply` takes one
// stage event and says which areas changed, so it is the same code for history and for live events.

const COMMENT_LIMIT = 500;

/** Areas that `apply` reports, for the page to re-render only what changed. */
export const AREAS = ['stage', 'chat', 'pinned', 'questions', 'hands', 'invitations', 'polls', 'leaderboard'];

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

  selfId;
  #upvoted = new Set(); // question ids we upvoted
  #ballots = new Map(); // poll id -> our choices

  constructor(selfId) {
    this.selfId = selfId;
  }

  /** The `joined` reply: the stage and, from servers that send it, the late joiner's `state`. */
  load({ stage, state }) {
    if (stage) this.stage = { ...this.stage, ...stage };
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
};
