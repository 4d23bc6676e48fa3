// Unit tests for the collaboration part of the updates client (src/updates.ts), run by vitest: presence
// (onPresence, setViewing / setEditing / setIdle) and selective updates (subscribe / unsubscribe).
// Same style as updates-client.test.mjs: an injected fake socket and no timers firing.
import assert from 'node:assert/strict';
import { describe, it } from 'vitest';

import {
  PresenceRoster,
  SeqTracker,
  UpdatesClient,
  buildSocketUrl,
  normalizeFilter,
} from '../src/index';

class FakeSocket {
  static instances = [];

  constructor(url) {
    this.url = new URL(url);
    this.readyState = 0;
    this.sent = [];
    FakeSocket.instances.push(this);
  }

  send(text) {
    this.sent.push(JSON.parse(text));
  }

  close() {
    this.readyState = 3;
  }

  receive(message) {
    this.onmessage?.({ data: JSON.stringify(message) });
  }

  greet(seq) {
    this.readyState = 1;
    this.onopen?.({});
    this.receive({ type: 'connection_established', message: 'Connected to unit u updates', unit_id: 'u', seq });
  }

  serverClose(code) {
    this.readyState = 3;
    this.onclose?.({ code, reason: '' });
  }
}

const timers = {
  setTimeout: () => 1, clearTimeout: () => {}, setInterval: () => 1, clearInterval: () => {},
};
const settle = async () => {
  for (let i = 0; i < 5; i += 1) await new Promise((resolve) => setImmediate(resolve));
};
const ID = '0b9e6c2a-3f7d-4c1e-9a55-1d2e3f4a5b6c';
const ID2 = '1c0f7d3b-4e8a-4d2f-8b66-2e3f4a5b6c7d';
const user = (id, username, extra = {}) => ({
  id, username, full_name: '', role: 'requester', viewing: null, editing: null, since: 't', ...extra,
});
const update = (seq) => ({ type: 'data_update', entity: 'crate', action: 'updated', data: { id: ID }, timestamp: 't', seq });

async function makeClient(options = {}) {
  FakeSocket.instances = [];
  const client = new UpdatesClient({
    url: 'ws://example.test/ws/updates/', token: 'access-1', useTicket: false, WebSocket: FakeSocket, timers,
    random: () => 0, ...options,
  });
  client.start();
  await settle();
  return { client, sockets: FakeSocket.instances };
}

describe('normalizeFilter', () => {
  it('keeps the keys the server takes and treats an empty filter as the whole unit', () => {
    assert.deepEqual(normalizeFilter({ entities: ['crate', 'crate'], ids: [ID.toUpperCase()], mine: true }), {
      entities: ['crate'], ids: [ID], mine: true,
    });
    assert.equal(normalizeFilter({}), null);
    assert.equal(normalizeFilter({ mine: false }), null);
    assert.equal(normalizeFilter(null), null);
  });

  it('refuses what the server would refuse', () => {
    for (const bad of [{ entities: [] }, { entities: ['secret'] }, { ids: [] }, { ids: ['x'] }, { mine: 1 },
      { ids: Array.from({ length: 101 }, () => ID) }, 'crate', []]) {
      assert.throws(() => normalizeFilter(bad), TypeError, JSON.stringify(bad));
    }
  });
});

describe('buildSocketUrl with presence and a filter', () => {
  it('puts presence=1 and the filter in the query, replacing any old one', () => {
    const url = new URL(buildSocketUrl('ws://h/ws/updates/?mine=1&ids=old', {
      token: 't', lastSeq: 5, presence: true, filter: { entities: ['withdrawal', 'transfer'], ids: [ID] },
    }));
    assert.equal(url.searchParams.get('presence'), '1');
    assert.equal(url.searchParams.get('entities'), 'withdrawal,transfer');
    assert.equal(url.searchParams.get('ids'), ID);
    assert.equal(url.searchParams.get('mine'), null);
    assert.equal(url.searchParams.get('last_seq'), '5');
  });
});

describe('SeqTracker for a filtered client', () => {
  it('takes a jump as the next update, but still drops duplicates', () => {
    const tracker = new SeqTracker(10);
    const f = { filtered: true };
    assert.deepEqual([14, 14, 12, 20].map((s) => tracker.accept(s, f)), ['deliver', 'duplicate', 'duplicate', 'deliver']);
    assert.equal(tracker.accept(25), 'gap'); // unfiltered again: a jump is a gap
  });
});

describe('PresenceRoster', () => {
  it('takes a snapshot, then joins, changes and leaves', () => {
    const roster = new PresenceRoster();
    roster.apply({ type: 'presence', users: [user('b', 'zed'), user('a', 'amy')] });
    assert.deepEqual(roster.users.map((u) => u.username), ['amy', 'zed']);
    roster.apply({ type: 'presence_update', state: 'editing', user: user('b', 'zed', { editing: { entity: 'crate', id: ID }, viewing: { entity: 'crate', id: ID } }) });
    assert.deepEqual(roster.on('crate', ID).map((x) => [x.user.username, x.editing]), [['zed', true]]);
    assert.deepEqual(roster.on('crate', ID, { except: 'b' }), []);
    roster.apply({ type: 'presence_update', state: 'left', user: user('a', 'amy') });
    assert.deepEqual(roster.users.map((u) => u.username), ['zed']);
    assert.equal(roster.apply({ type: 'pong' }), false);
  });
});

describe('UpdatesClient presence', () => {
  it('connects with presence=1, reports the roster, and sends this tab\'s activity', async () => {
    const { client, sockets } = await makeClient({ presence: true });
    const seen = [];
    const off = client.onPresence(({ users, update: change }) => seen.push([users.map((u) => u.username), change && change.state]));
    assert.equal(sockets[0].url.searchParams.get('presence'), '1');
    sockets[0].greet(3);
    sockets[0].receive({ type: 'presence', users: [user('a', 'amy')] });
    sockets[0].receive({ type: 'presence_update', state: 'joined', user: user('b', 'bob') });
    client.setViewing('crate', ID);
    client.setViewing('crate', ID); // the same again: nothing sent
    client.setEditing('withdrawal', ID2);
    client.setIdle();
    assert.deepEqual(seen, [[['amy'], null], [['amy', 'bob'], 'joined']]);
    assert.deepEqual(sockets[0].sent, [
      { type: 'viewing', entity: 'crate', id: ID }, { type: 'editing', entity: 'withdrawal', id: ID2 }, { type: 'idle' },
    ]);
    assert.throws(() => client.setViewing('secret', ID), TypeError);
    off();
    sockets[0].receive({ type: 'presence_update', state: 'left', user: user('b', 'bob') });
    assert.equal(seen.length, 2);
  });

  it('sends the activity again after a reconnect (a new connection starts idle)', async () => {
    const { client, sockets } = await makeClient({ presence: true });
    sockets[0].greet(3);
    client.setEditing('crate', ID);
    sockets[0].serverClose(1006);
    client.reconnect();
    await settle();
    sockets.at(-1).greet(3);
    assert.deepEqual(sockets.at(-1).sent, [{ type: 'editing', entity: 'crate', id: ID }]);
  });

  it('sends nothing about presence without presence: true', async () => {
    const { client, sockets } = await makeClient();
    sockets[0].greet(3);
    client.setViewing('crate', ID);
    assert.deepEqual(sockets[0].sent, []);
    assert.equal(sockets[0].url.searchParams.get('presence'), null);
  });
});

describe('UpdatesClient subscriptions', () => {
  it('subscribes, takes seq jumps as updates, and re-sends the filter in the URL on reconnect', async () => {
    const { client, sockets } = await makeClient();
    const got = [];
    client.addEventListener('update', (event) => got.push(event.detail.seq));
    client.addEventListener('gap', () => got.push('gap'));
    sockets[0].greet(10);
    client.subscribe({ mine: true });
    assert.deepEqual(sockets[0].sent, [{ type: 'subscribe', mine: true }]);
    sockets[0].receive(update(11));
    sockets[0].receive(update(15));
    assert.deepEqual(got, [11, 15]);
    sockets[0].serverClose(1006);
    client.reconnect();
    await settle();
    const url = sockets.at(-1).url;
    assert.equal(url.searchParams.get('mine'), '1');
    assert.equal(url.searchParams.get('last_seq'), '15');
  });

  it('unsubscribes: the whole unit again, one jump allowed, then gaps are gaps', async () => {
    const { client, sockets } = await makeClient({ filter: { entities: ['crate'] } });
    const got = [];
    client.addEventListener('update', (event) => got.push(event.detail.seq));
    client.addEventListener('gap', () => got.push('gap'));
    assert.equal(sockets[0].url.searchParams.get('entities'), 'crate');
    sockets[0].greet(10);
    sockets[0].receive(update(12));
    client.unsubscribe();
    assert.deepEqual(sockets[0].sent, [{ type: 'unsubscribe' }]);
    sockets[0].receive(update(20)); // the first after unsubscribe may follow filtered-out ones
    sockets[0].receive(update(21));
    sockets[0].receive(update(23));
    assert.deepEqual(got, [12, 20, 21, 'gap']);
    assert.equal(client.filter, null);
  });

  it('refuses a filter the server would refuse, before sending anything', async () => {
    const { client, sockets } = await makeClient();
    sockets[0].greet(1);
    assert.throws(() => client.subscribe({ entities: ['nope'] }), TypeError);
    client.subscribe({});
    assert.deepEqual(sockets[0].sent, [{ type: 'unsubscribe' }]);
  });
});
