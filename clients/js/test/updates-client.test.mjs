// Unit tests for the updates client (src/updates.ts), ported from the plain client's node:test suite: vitest against a fake socket.
// The socket, fetch, timers and randomness are injected fakes, so every schedule is deterministic;
// tests/realtime/console/ proves the same module against a real Daphne in a real browser.
import assert from 'node:assert/strict';
import { describe, it } from 'vitest';

import {
  ALL_QUERY_KEYS,
  CLOSE_CODES,
  SeqTracker,
  UpdatesClient,
  backoffCeiling,
  backoffDelay,
  buildSocketUrl,
  closeAction,
  invalidationKeys,
  refreshDelay,
  unpackUpdates,
} from '../src/index';

// --- fakes -----------------------------------------------------------------------------------------

class FakeClock {
  constructor() {
    this.now = 0;
    this.nextId = 1;
    this.timers = new Map();
  }

  setTimeout(fn, ms) {
    const id = this.nextId++;
    this.timers.set(id, { fn, at: this.now + ms, every: null, ms });
    return id;
  }

  setInterval(fn, ms) {
    const id = this.nextId++;
    this.timers.set(id, { fn, at: this.now + ms, every: ms, ms });
    return id;
  }

  clearTimeout(id) {
    this.timers.delete(id);
  }

  clearInterval(id) {
    this.timers.delete(id);
  }

  /** Delays of the one-shot timers now pending (what the client scheduled). */
  pendingDelays() {
    return [...this.timers.values()].filter((t) => t.every === null).map((t) => t.ms);
  }

  tick(ms) {
    const end = this.now + ms;
    for (;;) {
      const due = [...this.timers.entries()].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      const [id, timer] = due;
      this.now = timer.at;
      if (timer.every === null) this.timers.delete(id);
      else timer.at += timer.every;
      timer.fn();
    }
    this.now = end;
  }
}

class FakeSocket {
  static instances = [];

  constructor(url) {
    this.url = new URL(url);
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
    FakeSocket.instances.push(this);
  }

  send(text) {
    this.sent.push(JSON.parse(text));
  }

  close(code, reason) {
    this.closedWith = { code, reason };
    this.readyState = 3;
  }

  // server side
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }

  receive(message) {
    this.onmessage?.({ data: typeof message === 'string' ? message : JSON.stringify(message) });
  }

  serverClose(code, reason = '') {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  /** Open and greet, as Daphne does for a good handshake. */
  greet(seq) {
    this.open();
    this.receive({ type: 'connection_established', message: 'Connected to unit u updates', unit_id: 'u', seq });
  }
}

const settle = async () => {
  for (let i = 0; i < 5; i += 1) await new Promise((resolve) => setImmediate(resolve));
};

const update = (seq, entity = 'withdrawal', status = 'approved') => ({
  type: 'data_update', entity, action: 'updated', data: { id: `id-${seq}`, status }, timestamp: 't', seq,
});

function ticketFetch({ fail = false, refuse = [] } = {}) {
  const calls = [];
  let n = 0;
  const fetch = async (url, init) => {
    calls.push({ url, init });
    if (fail) throw new TypeError('network down');
    if (refuse.includes(init.headers.Authorization)) return { ok: false, status: 401, json: async () => ({}) };
    n += 1;
    return { ok: true, status: 201, json: async () => ({ ticket: `ticket-${n}`, expires_in: 30 }) };
  };
  return { fetch, calls };
}

/** A client wired to fakes; `events` records every hook call in order. */
async function makeClient(options = {}) {
  FakeSocket.instances = [];
  const clock = new FakeClock();
  const { fetch, calls } = ticketFetch(options.ticket);
  const events = [];
  const client = new UpdatesClient({
    url: 'ws://example.test/ws/updates/',
    token: 'access-1',
    WebSocket: FakeSocket,
    fetch,
    timers: clock,
    random: () => 0.5,
    onStatus: ({ status }) => events.push(['status', status]),
    onUpdate: (u) => events.push(['update', u.seq]),
    onResync: (m) => events.push(['resync', m.seq]),
    onSignOut: (d) => events.push(['signout', d.code]),
    onJobUpdate: (job) => events.push(['job', job.id]),
    onGiveUp: (d) => events.push(['giveup', d.attempts]),
    ...options.client,
  });
  client.start();
  await settle();
  return { client, clock, fetchCalls: calls, events, sockets: FakeSocket.instances };
}

const updatesOf = (events) => events.filter(([kind]) => kind === 'update').map(([, seq]) => seq);
const statusesOf = (events) => events.filter(([kind]) => kind === 'status').map(([, s]) => s);

// --- pure logic ------------------------------------------------------------------------------------

describe('backoff with full jitter', () => {
  it('doubles the ceiling from the base delay and caps it', () => {
    const ceilings = [0, 1, 2, 3, 4, 5, 6, 9].map((n) => backoffCeiling(n, { baseDelayMs: 1000, maxDelayMs: 30000 }));
    assert.deepEqual(ceilings, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  });

  it('draws uniformly from [0, ceiling): the lowest and highest random give the bounds', () => {
    assert.equal(backoffDelay(3, { random: () => 0 }), 0);
    assert.equal(backoffDelay(3, { random: () => 0.5 }), 4000);
    assert.equal(backoffDelay(3, { random: () => 0.9999999 }), 7999);
    assert.equal(backoffDelay(12, { random: () => 0.9999999, maxDelayMs: 5000 }), 4999);
  });

  it('never leaves [0, ceiling) whatever the random source returns in [0, 1)', () => {
    for (let attempt = 0; attempt < 12; attempt += 1) {
      for (const r of [0, 0.1, 0.25, 0.5, 0.75, 0.999999]) {
        const delay = backoffDelay(attempt, { random: () => r });
        assert.ok(delay >= 0 && delay < backoffCeiling(attempt), `attempt ${attempt} r ${r}: ${delay}`);
      }
    }
  });
});

describe('SeqTracker', () => {
  it('starts a fresh client at the greeting seq and delivers the next one only', () => {
    const tracker = new SeqTracker();
    tracker.established(41);
    assert.deepEqual([42, 42, 41, 43].map((s) => tracker.accept(s)), ['deliver', 'duplicate', 'duplicate', 'deliver']);
    assert.equal(tracker.lastSeq, 43);
  });

  it('keeps a resuming client at its own seq, not the greeting (the server replays the difference)', () => {
    const tracker = new SeqTracker(10);
    tracker.established(15);
    assert.equal(tracker.lastSeq, 10);
    assert.deepEqual([11, 12].map((s) => tracker.accept(s)), ['deliver', 'deliver']);
  });

  it('reports a jump as a gap and does not move past it', () => {
    const tracker = new SeqTracker(5);
    assert.equal(tracker.accept(7), 'gap');
    assert.equal(tracker.lastSeq, 5);
  });

  it('continues from the seq of resync_required', () => {
    const tracker = new SeqTracker(5);
    tracker.resync(900);
    assert.equal(tracker.accept(901), 'deliver');
  });

  it('delivers updates without seq (a seed-era server) and tracks nothing for them', () => {
    const tracker = new SeqTracker(5);
    assert.equal(tracker.accept(undefined), 'deliver');
    assert.equal(tracker.lastSeq, 5);
  });
});

describe('message helpers', () => {
  it('unpacks a data_update_batch into its updates in order, and a data_update into itself', () => {
    const batch = { type: 'data_update_batch', updates: [update(1), update(2), update(3)] };
    assert.deepEqual(unpackUpdates(batch).map((u) => u.seq), [1, 2, 3]);
    assert.deepEqual(unpackUpdates(update(4)).map((u) => u.seq), [4]);
    assert.deepEqual(unpackUpdates({ type: 'pong' }), []);
  });

  it('maps close codes: 4001/4002 refresh, 4003 signs out, 4029 stops, anything else reconnects', () => {
    assert.deepEqual([4001, 4002, 4003, 4029, 4008, 1013, 1011, 1006, 1000].map(closeAction),
      ['refresh', 'refresh', 'signout', 'stop', 'reconnect', 'reconnect', 'reconnect', 'reconnect', 'reconnect']);
  });

  it('builds the socket URL with the ticket in preference to the token, last_seq and batch', () => {
    const url = new URL(buildSocketUrl('ws://h/ws/updates/', { ticket: 'T', token: 'A', lastSeq: 0, batch: true }));
    assert.deepEqual(Object.fromEntries(url.searchParams), { ticket: 'T', last_seq: '0', batch: '1' });
    const plain = new URL(buildSocketUrl('ws://h/ws/updates/', { token: 'A' }));
    assert.deepEqual(Object.fromEntries(plain.searchParams), { token: 'A' });
  });

  it("names the seed's React Query keys per entity", () => {
    assert.deepEqual(invalidationKeys({ entity: 'withdrawal' }), ['withdrawal-requests', 'withdrawal-request', 'dashboard', 'summary']);
    assert.deepEqual(invalidationKeys({ entity: 'destruction' }), ['destruction-requests', 'destruction-request', 'dashboard', 'summary']);
    assert.deepEqual(invalidationKeys({ entity: 'transfer' }), ['transfer-requests', 'transfer-request', 'dashboard', 'summary']);
    assert.deepEqual(invalidationKeys({ entity: 'crate' }), ['crates', 'crate', 'dashboard', 'summary']);
    assert.deepEqual(invalidationKeys({ entity: 'sendback', data: { request_entity: 'destruction' } }),
      ['sendback-records', 'destruction-requests', 'destruction-request', 'dashboard', 'summary']);
    assert.deepEqual(invalidationKeys({ entity: 'sendback', data: {} }), ['sendback-records', 'dashboard', 'summary']);
    // legal holds and audit reviews: their own keys (a hold changes its crates' on_hold too)
    assert.deepEqual(invalidationKeys({ entity: 'legal_hold' }), ['legal-holds', 'legal-hold', 'crates', 'crate', 'dashboard', 'summary']);
    assert.deepEqual(invalidationKeys({ entity: 'audit_review' }), ['audit-reviews', 'audit-trail', 'dashboard', 'summary']);
    assert.deepEqual(invalidationKeys({ entity: 'something-new' }), [...ALL_QUERY_KEYS]);
    assert.equal(ALL_QUERY_KEYS.length, 15);
  });
});

// --- the client against a fake socket ---------------------------------------------------------------

describe('UpdatesClient: connecting', () => {
  it('buys a ticket with the Bearer token and connects with it, never with the token', async () => {
    const { fetchCalls, sockets, events } = await makeClient();
    assert.equal(fetchCalls.length, 1);
    assert.equal(fetchCalls[0].url, '/api/auth/ws-ticket/');
    assert.equal(fetchCalls[0].init.method, 'POST');
    assert.equal(fetchCalls[0].init.headers.Authorization, 'Bearer access-1');
    assert.deepEqual(Object.fromEntries(sockets[0].url.searchParams), { ticket: 'ticket-1' });
    sockets[0].greet(7);
    assert.deepEqual(statusesOf(events), ['syncing', 'live']);
  });

  it('refreshes an expired token when the ticket is refused with 401, then uses a ticket', async () => {
    let refreshed = 0;
    const { fetchCalls, sockets } = await makeClient({
      ticket: { refuse: ['Bearer access-1'] },
      client: { refreshToken: async () => { refreshed += 1; return 'access-2'; } },
    });
    assert.equal(refreshed, 1);
    assert.deepEqual(fetchCalls.map((c) => c.init.headers.Authorization), ['Bearer access-1', 'Bearer access-2']);
    assert.deepEqual(Object.fromEntries(sockets[0].url.searchParams), { ticket: 'ticket-1' });
  });

  it('falls back to ?token= when the ticket cannot be had', async () => {
    const { sockets } = await makeClient({ ticket: { fail: true } });
    assert.deepEqual(Object.fromEntries(sockets[0].url.searchParams), { token: 'access-1' });
  });

  it('asks batch=1 when batch is on and unpacks batches into one onUpdate per update', async () => {
    const { sockets, events } = await makeClient({ client: { batch: true } });
    assert.equal(sockets[0].url.searchParams.get('batch'), '1');
    sockets[0].greet(5);
    sockets[0].receive({ type: 'data_update_batch', updates: [update(5), update(6), update(7), update(8)] });
    assert.deepEqual(updatesOf(events), [6, 7, 8]);
  });

  it('asks activity=1 for the activity feed and hands each activity to onActivity, seqs untouched', async () => {
    const seen = [];
    const { sockets, events } = await makeClient({ client: { activityFeed: true, onActivity: (m) => seen.push(m) } });
    assert.equal(sockets[0].url.searchParams.get('activity'), '1');
    sockets[0].greet(5);
    const activity = (seq) => ({ type: 'activity', seq, entry: { action: 'approved', seq, actor: { username: 'a' } } });
    sockets[0].receive(update(6));
    sockets[0].receive(activity(6));
    sockets[0].receive(update(7));
    sockets[0].receive(activity(7));
    assert.deepEqual(updatesOf(events), [6, 7]);
    assert.deepEqual(seen.map((m) => m.seq), [6, 7]);
    assert.equal(events.filter(([kind]) => kind === 'resync').length, 0); // an activity is no gap
    const plain = await makeClient();
    assert.equal(plain.sockets[0].url.searchParams.get('activity'), null);
  });

  it('passes job_update jobs to onJobUpdate and dispatches DOM-style events too', async () => {
    const { client, sockets, events } = await makeClient();
    const seen = [];
    client.addEventListener('update', (event) => seen.push(event.detail.seq));
    sockets[0].greet(1);
    sockets[0].receive({ type: 'job_update', job: { id: 'job-1', status: 'running', progress: { total: 2, done: 1, failed: 0 } } });
    sockets[0].receive(update(2));
    assert.deepEqual(events.filter(([k]) => k === 'job'), [['job', 'job-1']]);
    assert.deepEqual(seen, [2]);
  });
});

describe('UpdatesClient: notifications', () => {
  const note = (id, read = false) => ({
    type: 'notification',
    notification: { id, kind: 'request_decided', title: 'WR-1 approved', body: 'b', link: { entity: 'withdrawal', id: 'r' }, created_at: 't', read },
  });

  it('takes unreadNotifications from the greeting and counts each unread notification once', async () => {
    const { client, sockets } = await makeClient();
    const seen = [];
    const off = client.onNotification((n) => seen.push([n.id, client.unreadNotifications]));
    assert.equal(client.unreadNotifications, null);
    sockets[0].open();
    sockets[0].receive({ type: 'connection_established', message: 'Connected to unit u updates', unit_id: 'u', seq: 1, unread_notifications: 3 });
    assert.equal(client.unreadNotifications, 3);
    sockets[0].receive(note('n-1'));
    sockets[0].receive(note('n-1')); // the same id again: not counted, not delivered
    sockets[0].receive(note('n-2', true)); // already read: delivered, not counted
    assert.deepEqual(seen, [['n-1', 4], ['n-2', 4]]);
    off();
    sockets[0].receive(note('n-3'));
    assert.equal(seen.length, 2);
    assert.equal(client.unreadNotifications, 5);
    client.setUnreadNotifications(0);
    assert.equal(client.unreadNotifications, 0);
  });

  it('a reconnecting client takes the server count from its new greeting', async () => {
    const { client, sockets, clock } = await makeClient({ client: { onNotification: () => {} } });
    sockets[0].open();
    sockets[0].receive({ type: 'connection_established', message: 'Connected to unit u updates', unit_id: 'u', seq: 1, unread_notifications: 0 });
    sockets[0].receive(note('n-1'));
    assert.equal(client.unreadNotifications, 1);
    sockets[0].serverClose(1006);
    clock.tick(30000);
    await settle();
    const again = sockets[sockets.length - 1];
    assert.notEqual(again, sockets[0]);
    again.open();
    again.receive({ type: 'connection_established', message: 'Connected to unit u updates', unit_id: 'u', seq: 1, unread_notifications: 4 });
    assert.equal(client.unreadNotifications, 4);
  });

  it('the onNotification option is called too, and a greeting without the field keeps the count', async () => {
    const got = [];
    const { client, sockets } = await makeClient({ client: { onNotification: (n) => got.push(n.id) } });
    sockets[0].greet(1); // an older server: no unread_notifications
    assert.equal(client.unreadNotifications, null);
    sockets[0].receive(note('n-9'));
    assert.deepEqual(got, ['n-9']);
    assert.equal(client.unreadNotifications, 1);
  });
});

describe('UpdatesClient: resume and de-duplication', () => {
  it('drops duplicates and old seqs', async () => {
    const { sockets, events } = await makeClient();
    sockets[0].greet(5);
    for (const seq of [6, 6, 5, 7, 7]) sockets[0].receive(update(seq));
    assert.deepEqual(updatesOf(events), [6, 7]);
  });

  it('reconnects after a drop with last_seq and takes the replay without repeats', async () => {
    const { client, clock, sockets, events } = await makeClient();
    sockets[0].greet(5);
    sockets[0].receive(update(6));
    sockets[0].receive(update(7));
    sockets[0].serverClose(1006);
    assert.equal(client.status, 'syncing');
    assert.deepEqual(clock.pendingDelays(), [500]); // attempt 0: 0.5 * 1000
    clock.tick(500);
    await settle();
    assert.equal(sockets.length, 2);
    assert.equal(sockets[1].url.searchParams.get('last_seq'), '7');
    assert.equal(sockets[1].url.searchParams.get('ticket'), 'ticket-2'); // a fresh single-use ticket
    sockets[1].greet(9);
    for (const seq of [7, 8, 9, 9]) sockets[1].receive(update(seq));
    assert.deepEqual(updatesOf(events), [6, 7, 8, 9]);
    assert.deepEqual(statusesOf(events), ['syncing', 'live', 'syncing', 'live']);
  });

  it('treats a jump as a gap: drops the socket and resumes at once from the last seq it has', async () => {
    const { clock, sockets, events } = await makeClient();
    sockets[0].greet(5);
    sockets[0].receive(update(6));
    sockets[0].receive(update(8));
    sockets[0].receive(update(9)); // after the gap on the abandoned socket: ignored
    await settle();
    assert.deepEqual(updatesOf(events), [6]);
    assert.deepEqual(sockets[0].closedWith, { code: CLOSE_CODES.CLIENT_RECONNECT, reason: 'seq gap' });
    assert.equal(sockets.length, 2, 'the resume starts without a backoff delay');
    assert.deepEqual(clock.pendingDelays().filter((ms) => ms !== 15000), []);
    assert.equal(sockets[1].url.searchParams.get('last_seq'), '6');
    sockets[1].greet(9);
    for (const seq of [7, 8, 9]) sockets[1].receive(update(seq));
    assert.deepEqual(updatesOf(events), [6, 7, 8, 9]);
  });

  it('calls onResync once and continues from its seq', async () => {
    const { client, clock, sockets, events } = await makeClient();
    sockets[0].greet(5);
    sockets[0].serverClose(1006);
    clock.tick(500);
    await settle();
    sockets[1].greet(20_000);
    sockets[1].receive({ type: 'resync_required', reason: 'history_limit', seq: 20_000 });
    sockets[1].receive(update(20_001));
    assert.deepEqual(events.filter(([k]) => k === 'resync'), [['resync', 20_000]]);
    assert.deepEqual(updatesOf(events), [20_001]);
    assert.equal(client.lastSeq, 20_001);
  });
});

describe('UpdatesClient: reconnection budget', () => {
  it('backs off with full jitter and goes offline after maxAttempts failed attempts', async () => {
    const { client, clock, sockets, events } = await makeClient({ client: { maxAttempts: 3 } });
    sockets[0].greet(1);
    const delays = [];
    for (let i = 0; i < 3; i += 1) {
      sockets.at(-1).serverClose(1006);
      delays.push(...clock.pendingDelays());
      clock.tick(delays.at(-1));
      await settle();
    }
    sockets.at(-1).serverClose(1006); // the third attempt fails too
    assert.deepEqual(delays, [500, 1000, 2000]);
    assert.equal(sockets.length, 4);
    assert.equal(client.status, 'offline');
    assert.deepEqual(events.filter(([k]) => k === 'giveup'), [['giveup', 3]]);
    clock.tick(600_000);
    await settle();
    assert.equal(sockets.length, 4, 'no attempt after giving up');
    client.reconnect();
    await settle();
    assert.equal(sockets.length, 5, 'reconnect() starts a fresh budget');
  });

  it('defaults to the seed: 10 attempts', async () => {
    const { client, clock, sockets } = await makeClient();
    for (let i = 0; i < 10; i += 1) {
      sockets.at(-1).serverClose(1006);
      clock.tick(clock.pendingDelays()[0]);
      await settle();
    }
    assert.equal(sockets.length, 11);
    assert.equal(client.status, 'syncing');
    sockets.at(-1).serverClose(1006);
    assert.equal(client.status, 'offline');
  });

  it('resets the budget once a connection is live again', async () => {
    const { clock, sockets } = await makeClient({ client: { maxAttempts: 2 } });
    sockets[0].serverClose(1006);
    clock.tick(500);
    await settle();
    sockets[1].greet(1);
    sockets[1].serverClose(1006);
    assert.deepEqual(clock.pendingDelays(), [500]); // attempt 0 again, not 2 (which would give up)
  });
});

describe('UpdatesClient: close codes', () => {
  it('4002 on a live connection: refreshes the token and reconnects at once with it', async () => {
    let refreshed = 0;
    const { client, clock, sockets, fetchCalls, events } = await makeClient({
      client: { refreshToken: async () => { refreshed += 1; return 'access-2'; } },
    });
    sockets[0].greet(3);
    sockets[0].serverClose(4002);
    await settle();
    assert.equal(refreshed, 1);
    assert.equal(sockets.length, 2);
    assert.equal(fetchCalls[1].init.headers.Authorization, 'Bearer access-2');
    sockets[1].greet(3);
    assert.equal(client.status, 'live');
    assert.deepEqual(statusesOf(events), ['syncing', 'live', 'syncing', 'live']);
    assert.deepEqual(clock.pendingDelays().filter((ms) => ms !== 15000), []);
  });

  it('4001 at the handshake: refreshes, then reconnects through the backoff', async () => {
    const { clock, sockets } = await makeClient({ client: { refreshToken: async () => 'access-2', useTicket: false } });
    sockets[0].open();
    sockets[0].serverClose(4001);
    await settle();
    assert.equal(sockets.length, 1);
    assert.deepEqual(clock.pendingDelays(), [500]);
    clock.tick(500);
    await settle();
    assert.equal(sockets[1].url.searchParams.get('token'), 'access-2');
  });

  it('signs out when the refresh fails', async () => {
    const { client, sockets, events } = await makeClient({
      client: { refreshToken: async () => { throw new Error('refresh expired'); } },
    });
    sockets[0].greet(1);
    sockets[0].serverClose(4002);
    await settle();
    assert.equal(client.status, 'offline');
    assert.deepEqual(events.filter(([k]) => k === 'signout'), [['signout', 4002]]);
    assert.equal(sockets.length, 1);
  });

  it('4003: stops for good and calls onSignOut', async () => {
    const { client, clock, sockets, events } = await makeClient();
    sockets[0].greet(1);
    sockets[0].serverClose(4003, 'access revoked');
    clock.tick(600_000);
    await settle();
    assert.equal(client.status, 'offline');
    assert.deepEqual(events.filter(([k]) => k === 'signout'), [['signout', 4003]]);
    assert.equal(sockets.length, 1);
  });

  it('4029: too many connections of this user: stops (retrying would be refused again), keeps the sign-in', async () => {
    const { client, clock, sockets, events } = await makeClient();
    sockets[0].serverClose(4029, 'too many connections');
    clock.tick(600_000);
    await settle();
    assert.equal(client.status, 'offline');
    assert.deepEqual(events.filter(([k]) => k === 'giveup' || k === 'signout'), [['giveup', 0]]);
    assert.equal(sockets.length, 1);
  });

  it('1013 (try again later) reconnects with backoff and resumes', async () => {
    const { clock, sockets } = await makeClient();
    sockets[0].greet(7);
    sockets[0].serverClose(1013);
    clock.tick(500);
    await settle();
    assert.equal(sockets.length, 2);
    assert.equal(sockets[1].url.searchParams.get('last_seq'), '7');
  });

  it('4008 (too slow) and 1006 are ordinary reconnects that resume', async () => {
    const { clock, sockets } = await makeClient();
    sockets[0].greet(4);
    sockets[0].serverClose(4008);
    clock.tick(500);
    await settle();
    assert.equal(sockets[1].url.searchParams.get('last_seq'), '4');
  });

  it('stop() closes with 1000 and never reconnects', async () => {
    const { client, clock, sockets } = await makeClient();
    sockets[0].greet(1);
    client.stop();
    clock.tick(600_000);
    await settle();
    assert.deepEqual(sockets[0].closedWith, { code: 1000, reason: 'client stopped' });
    assert.equal(sockets.length, 1);
    assert.equal(client.status, 'offline');
  });
});

describe('UpdatesClient: heartbeat', () => {
  it('pings every heartbeatMs with the seed message', async () => {
    const { clock, sockets } = await makeClient();
    sockets[0].greet(1);
    clock.tick(30_000);
    assert.equal(sockets[0].sent.length, 1);
    assert.equal(sockets[0].sent[0].type, 'ping');
    assert.match(sockets[0].sent[0].timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    sockets[0].receive({ type: 'pong', timestamp: 'x' });
    clock.tick(30_000);
    assert.equal(sockets[0].sent.length, 2);
    assert.equal(sockets[0].closedWith, null);
  });

  it('closes a connection that answers nothing and reconnects with last_seq', async () => {
    const { client, clock, sockets } = await makeClient({ client: { heartbeatMs: 1000, heartbeatTimeoutMs: 400 } });
    sockets[0].greet(1);
    sockets[0].receive(update(2));
    clock.tick(1000 + 399);
    assert.equal(sockets[0].closedWith, null);
    clock.tick(1);
    assert.deepEqual(sockets[0].closedWith, { code: CLOSE_CODES.CLIENT_RECONNECT, reason: 'heartbeat timeout' });
    assert.equal(client.status, 'syncing');
    clock.tick(500);
    await settle();
    assert.equal(sockets.length, 2);
    assert.equal(sockets[1].url.searchParams.get('last_seq'), '2');
  });

  it('gives up on a handshake that never completes', async () => {
    const { clock, sockets } = await makeClient({ client: { connectTimeoutMs: 2000 } });
    clock.tick(2000);
    assert.deepEqual(sockets[0].closedWith, { code: CLOSE_CODES.CLIENT_RECONNECT, reason: 'connect timeout' });
    clock.tick(500);
    await settle();
    assert.equal(sockets.length, 2);
  });
});

// --- the token, refreshed on the open socket -----------------------------------------------------------

const T0 = Date.parse('2026-01-15T10:00:00.000Z');
const at = (ms) => new Date(T0 + ms).toISOString();

/** A client whose clock reads T0 + the fake clock, greeted with a token expiring `expiresInMs` from now. */
async function greetedClient(expiresInMs, client = {}) {
  let clock;
  // (no heartbeat: the fake server answers no pings, and hours pass here)
  const made = await makeClient({ client: { now: () => T0 + clock.now, heartbeatMs: 10 * 86_400_000, ...client } });
  clock = made.clock;
  made.sockets[0].open();
  made.sockets[0].receive({
    type: 'connection_established', message: 'Connected to unit u updates', unit_id: 'u', seq: 1,
    unread_notifications: 0, expires_at: at(expiresInMs),
  });
  return made;
}

const refreshesSent = (socket) => socket.sent.filter((m) => m.type === 'refresh');

describe('refreshDelay', () => {
  it('is a minute before the expiry, or halfway there for a token shorter than two minutes', () => {
    assert.equal(refreshDelay(at(15 * 60_000), T0), 14 * 60_000);
    assert.equal(refreshDelay(at(8000), T0), 4000);
    assert.equal(refreshDelay(at(-1000), T0), 0);
    assert.equal(refreshDelay(at(600_000), T0, 120_000), 480_000);
  });

  it('is null for a greeting without a usable expiry (an older server)', () => {
    assert.equal(refreshDelay(undefined, T0), null);
    assert.equal(refreshDelay('soon', T0), null);
  });
});

describe('UpdatesClient: the token refreshed on the open socket', () => {
  it('sends a new token before the expiry and stays on the same socket, however long it lives', async () => {
    let refreshed = 0;
    const { client, clock, sockets, events } = await greetedClient(15 * 60_000, {
      refreshToken: async () => { refreshed += 1; return `access-${refreshed + 1}`; },
    });
    assert.equal(client.expiresAt, at(15 * 60_000));

    // a day of 15-minute tokens, each refreshed a minute before it runs out
    for (let n = 1; n <= 96; n += 1) {
      clock.tick(14 * 60_000 - 1);
      await settle();
      assert.equal(refreshesSent(sockets[0]).length, n - 1);
      clock.tick(1);
      await settle();
      assert.deepEqual(refreshesSent(sockets[0]).at(-1), { type: 'refresh', token: `access-${n + 1}` });
      sockets[0].receive({ type: 'refreshed', expires_at: at(clock.now + 15 * 60_000) });
    }
    sockets[0].receive(update(2));

    assert.equal(sockets.length, 1); // never reconnected
    assert.equal(refreshed, 96);
    assert.equal(client.status, 'live');
    assert.deepEqual(statusesOf(events), ['syncing', 'live']);
    assert.deepEqual(updatesOf(events), [2]);
    assert.equal(client.expiresAt, at(clock.now + 15 * 60_000));
  });

  it('without a refreshToken hook, sends what getToken has', async () => {
    const { clock, sockets } = await greetedClient(8000, { getToken: () => 'access-from-app' });
    clock.tick(4000);
    await settle();
    assert.deepEqual(refreshesSent(sockets[0]), [{ type: 'refresh', token: 'access-from-app' }]);
  });

  it('sends nothing when turned off, or when no token can be had (the 4002 reconnect still works)', async () => {
    const off = await greetedClient(8000, { refreshOnSocket: false, refreshToken: async () => 'access-2' });
    off.clock.tick(10_000);
    await settle();
    assert.deepEqual(refreshesSent(off.sockets[0]), []);

    const none = await greetedClient(8000, { refreshToken: async () => { throw new Error('refresh expired'); } });
    none.clock.tick(10_000);
    await settle();
    assert.deepEqual(refreshesSent(none.sockets[0]), []);
  });

  it('tries again shortly when the server could not check the token', async () => {
    const { clock, sockets } = await greetedClient(60_000, { refreshToken: async () => 'access-2', refreshRetryMs: 5000 });
    clock.tick(30_000);
    await settle();
    sockets[0].receive({ type: 'error', code: 'refresh_unavailable', message: 'try again' });
    clock.tick(5000);
    await settle();
    assert.equal(refreshesSent(sockets[0]).length, 2);
  });

  it('a refused token (4001 on the live socket) refreshes once more and reconnects with it', async () => {
    const { clock, sockets } = await greetedClient(8000, { refreshToken: async () => 'access-2' });
    clock.tick(4000);
    await settle();
    sockets[0].serverClose(4001);
    await settle();
    assert.equal(sockets.length, 2);
  });

  it('drops the refresh timer of an abandoned socket', async () => {
    const { client, clock, sockets } = await greetedClient(8000, { refreshToken: async () => 'access-2' });
    client.stop();
    clock.tick(10_000);
    await settle();
    assert.deepEqual(refreshesSent(sockets[0]), []);
  });
});

describe('UpdatesClient: from a list to live, and stream epochs', () => {
  const hello = (seq, epoch, extra = {}) => ({
    type: 'connection_established', message: 'Connected to unit u updates', unit_id: 'u', seq, epoch, ...extra,
  });

  it('joins where a list left it (X-Records-Seq / X-Records-Epoch) and resumes with last_seq and epoch', async () => {
    FakeSocket.instances = [];
    const clock = new FakeClock();
    const { fetch } = ticketFetch();
    const seen = [];
    const client = new UpdatesClient({
      url: 'ws://example.test/ws/updates/', token: 'access-1', WebSocket: FakeSocket, fetch, timers: clock,
      random: () => 0.5, onUpdate: (u) => seen.push(u.seq),
    });
    const headers = new Map([['X-Records-Seq', '12'], ['X-Records-Epoch', 'e1']]);
    client.joinList({ headers: { get: (name) => headers.get(name) ?? null } });
    client.joinList(15, 'e1'); // a second list read later: the smallest seq wins
    client.start();
    await settle();
    const socket = FakeSocket.instances[0];
    assert.equal(socket.url.searchParams.get('last_seq'), '12');
    assert.equal(socket.url.searchParams.get('epoch'), 'e1');
    socket.open();
    socket.receive(hello(14, 'e1'));
    [13, 14, 15].forEach((seq) => socket.receive(update(seq)));
    assert.deepEqual(seen, [13, 14, 15]);
  });

  it('treats epoch_changed as a resync and continues in the new epoch', async () => {
    const { client, sockets, events, clock } = await makeClient({ client: { lastSeq: 40, epoch: 'old' } });
    assert.equal(sockets[0].url.searchParams.get('epoch'), 'old');
    sockets[0].open();
    sockets[0].receive(hello(3, 'new'));
    sockets[0].receive({ type: 'resync_required', reason: 'epoch_changed', seq: 3 });
    sockets[0].receive(update(4));
    assert.deepEqual(events.filter(([kind]) => kind === 'resync' || kind === 'update'), [['resync', 3], ['update', 4]]);
    assert.equal(client.tracker.epoch, 'new');
    // a live socket told of a new epoch carries it in the message; the next resume sends it
    sockets[0].receive({ type: 'resync_required', reason: 'epoch_changed', seq: 0, epoch: 'newer' });
    sockets[0].serverClose(1006);
    clock.tick(30000);
    await settle();
    const again = sockets[sockets.length - 1];
    assert.equal(again.url.searchParams.get('last_seq'), '0');
    assert.equal(again.url.searchParams.get('epoch'), 'newer');
  });

  it('a fresh client adopts the greeting epoch; a seed-era greeting without one sends none', async () => {
    const { client, sockets } = await makeClient();
    sockets[0].open();
    sockets[0].receive(hello(7, 'e7'));
    assert.deepEqual([client.lastSeq, client.tracker.epoch], [7, 'e7']);
    assert.equal(buildSocketUrl('ws://h/ws/updates/', { lastSeq: 7, epoch: null }).includes('epoch'), false);
    assert.equal(buildSocketUrl('ws://h/ws/updates/', { epoch: 'e7' }).includes('epoch'), false); // only with last_seq
  });
});

describe('UpdatesClient: notifications owed on resume and read in other tabs', () => {
  const note = (id, counted) => ({
    type: 'notification', ...(counted ? { counted: true } : {}),
    notification: { id, kind: 'job_finished', title: 't', body: 'b', link: { entity: 'job', id: 'j' }, created_at: 't', read: false },
  });

  it('does not count a resume frame the greeting already counted, and follows notification_read', async () => {
    const { client, sockets } = await makeClient();
    const reads = [];
    client.addEventListener('notificationread', (event) => reads.push(event.detail));
    sockets[0].open();
    sockets[0].receive({ type: 'connection_established', message: 'Connected to unit u updates', unit_id: 'u', seq: 1, unread_notifications: 3 });
    sockets[0].receive(note('n-1', true)); // owed on resume: in the 3 already
    sockets[0].receive(note('n-2', false)); // new since the greeting
    assert.equal(client.unreadNotifications, 4);
    sockets[0].receive({ type: 'notification_read', ids: ['n-2'], all: false });
    assert.equal(client.unreadNotifications, 3);
    sockets[0].receive({ type: 'notification_read', ids: [], all: true });
    assert.equal(client.unreadNotifications, 0);
    assert.deepEqual(reads, [{ ids: ['n-2'], all: false }, { ids: [], all: true }]);
  });
});
