// The TypeScript client's own surface, against a fake socket: the one `refetch` event, the typed
// emitter, a list joined by its watermark, and no globals needed.
import { beforeEach, describe, expect, it } from 'vitest';

import { CLOSE_CODES, PROTOCOL_VERSION, STATUS, UpdatesClient, type RefetchDetail, type UpdatesOptions } from '../src/index';
import { FakeClock, FakeSocket, ID, settle, ticketFetch, update } from './fakes';

async function connected(options: UpdatesOptions = {}) {
  FakeSocket.instances = [];
  const clock = new FakeClock();
  const client = new UpdatesClient({
    url: 'ws://example.test/ws/updates/', token: 'access-1', WebSocket: FakeSocket, fetch: ticketFetch(), timers: clock,
    random: () => 0.5, now: () => clock.now, ...options,
  });
  client.start();
  await settle();
  return { client, clock, sockets: FakeSocket.instances };
}

beforeEach(() => {
  FakeSocket.instances = [];
});

describe('refetch: resync_required and epoch_changed are one event', () => {
  it('emits refetch for any resync reason, with the seq and epoch it continues from', async () => {
    const { client, sockets } = await connected();
    const refetches: RefetchDetail[] = [];
    client.on('refetch', (detail) => refetches.push(detail));
    sockets[0]!.greet(5, { epoch: 'epoch-a' });
    sockets[0]!.receive({ type: 'resync_required', reason: 'history_limit', seq: 40 });
    sockets[0]!.receive({ type: 'resync_required', reason: 'epoch_changed', seq: 3, epoch: 'epoch-b' });
    expect(refetches.map(({ reason, seq, epoch }) => [reason, seq, epoch])).toEqual([
      ['history_limit', 40, 'epoch-a'],
      ['epoch_changed', 3, 'epoch-b'],
    ]);
    // and the stream continues from there: 4 is the next update, 3 a duplicate
    const seen: number[] = [];
    client.on('update', (u) => seen.push(u.seq));
    sockets[0]!.receive(update(3));
    sockets[0]!.receive(update(4));
    expect(seen).toEqual([4]);
    expect([client.lastSeq, client.epoch]).toEqual([4, 'epoch-b']);
  });

  it('calls the onRefetch option too, and a resume after it sends the new epoch', async () => {
    const calls: string[] = [];
    const { sockets, clock } = await connected({ onRefetch: ({ reason }) => calls.push(reason) });
    sockets[0]!.greet(5, { epoch: 'epoch-a' });
    sockets[0]!.receive({ type: 'resync_required', reason: 'epoch_changed', seq: 0, epoch: 'epoch-b' });
    sockets[0]!.serverClose(1006);
    clock.tick(60_000);
    await settle();
    expect(calls).toEqual(['epoch_changed']);
    const resumed = sockets[1]!.url.searchParams;
    expect([resumed.get('last_seq'), resumed.get('epoch')]).toEqual(['0', 'epoch-b']);
  });
});

describe('the typed emitter', () => {
  it('hands on() listeners the detail and unregisters them with the function it returns', async () => {
    const { client, sockets } = await connected();
    const statuses: string[] = [];
    const off = client.on('status', ({ status }) => statuses.push(status));
    let once = 0;
    client.once('update', () => {
      once += 1;
    });
    sockets[0]!.greet(1);
    sockets[0]!.receive(update(2));
    sockets[0]!.receive(update(3));
    off();
    client.stop();
    expect(statuses).toEqual([STATUS.LIVE]);
    expect(once).toBe(1);
  });

  it('still dispatches DOM-style events (event.detail) for code written against EventTarget', async () => {
    const { client, sockets } = await connected();
    const seen: number[] = [];
    client.addEventListener('update', (event) => seen.push((event as CustomEvent<{ seq: number }>).detail.seq));
    sockets[0]!.greet(1);
    sockets[0]!.receive({ type: 'data_update_batch', updates: [update(2), update(3)] });
    expect(seen).toEqual([2, 3]);
  });
});

describe('from a list to live without a gap', () => {
  it('resumes after the list watermark of a fetch Response and applies each later change once', async () => {
    FakeSocket.instances = [];
    const clock = new FakeClock();
    const client = new UpdatesClient({ url: 'ws://example.test/ws/updates/', token: 't', WebSocket: FakeSocket, fetch: ticketFetch(), timers: clock });
    const list = new Response('[]', { headers: { 'X-Records-Seq': '7', 'X-Records-Epoch': 'e1' } });
    client.joinList(list).start();
    await settle();
    const socket = FakeSocket.instances[0]!;
    expect([socket.url.searchParams.get('last_seq'), socket.url.searchParams.get('epoch')]).toEqual(['7', 'e1']);
    const seen: number[] = [];
    client.on('update', (u) => seen.push(u.seq));
    socket.greet(9);
    // the server replays 8 and 9; live delivery overlaps with 9 again
    for (const seq of [8, 9, 9, 10]) socket.receive(update(seq));
    expect(seen).toEqual([8, 9, 10]);
  });
});

describe('no globals', () => {
  it('runs on injected WebSocket, fetch and timers alone (a worker, Node, a test)', async () => {
    const saved = { WebSocket: globalThis.WebSocket, fetch: globalThis.fetch };
    Object.assign(globalThis, { WebSocket: undefined, fetch: undefined });
    try {
      const { client, sockets } = await connected();
      sockets[0]!.greet(1);
      expect(client.status).toBe(STATUS.LIVE);
      expect(sockets[0]!.url.searchParams.get('ticket')).toBe('ticket-1');
    } finally {
      Object.assign(globalThis, saved);
    }
  });

  it('says what it needs where there is no location and no url', async () => {
    const clock = new FakeClock();
    const closes: { code: number; reason: string }[] = [];
    const client = new UpdatesClient({ token: 't', WebSocket: FakeSocket, useTicket: false, timers: clock, onClose: (d) => closes.push(d) });
    client.start();
    await settle();
    expect(closes[0]?.reason).toMatch(/needs a `url` option/);
    client.stop();
  });

  it('knows the protocol version it speaks, and 4002 still refreshes and comes back', async () => {
    expect(PROTOCOL_VERSION).toBe(1);
    let n = 0;
    const { client, sockets } = await connected({ refreshToken: () => `fresh-${++n}` });
    sockets[0]!.greet(1);
    sockets[0]!.serverClose(CLOSE_CODES.TOKEN_EXPIRED);
    await settle();
    expect(sockets).toHaveLength(2);
    sockets[1]!.greet(1);
    expect(client.status).toBe(STATUS.LIVE);
  });
});

describe('presence and subscriptions speak the generated client messages', () => {
  it('sends viewing/editing/idle and subscribe on the live socket', async () => {
    const { client, sockets } = await connected({ presence: true });
    sockets[0]!.greet(1);
    client.setViewing('withdrawal', ID(1)).setEditing('withdrawal', ID(1)).setIdle();
    client.subscribe({ entities: ['crate'], mine: true });
    expect(sockets[0]!.sent).toEqual([
      { type: 'viewing', entity: 'withdrawal', id: ID(1) },
      { type: 'editing', entity: 'withdrawal', id: ID(1) },
      { type: 'idle' },
      { type: 'subscribe', entities: ['crate'], mine: true },
    ]);
  });
});
