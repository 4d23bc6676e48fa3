// @vitest-environment jsdom
// The React hooks on a client wired to a fake socket: status and seq re-render, presence says what
// this view is on, a job follows job_update, notifications count, and a TanStack Query list updates
// in place.
import { QueryClient } from '@tanstack/react-query';
import { act, cleanup, render, renderHook } from '@testing-library/react';
import type { ReactNode } from 'react';
import { afterEach, describe, expect, it } from 'vitest';

import { UpdatesClient } from '../src/index';
import { UpdatesProvider, connectQueryClient, patchList, useJob, useLiveQueries, useNotifications, usePresence, useUpdates } from '../src/react';
import { FakeClock, FakeSocket, ID, settle, ticketFetch, update } from './fakes';

async function started(options = {}) {
  FakeSocket.instances = [];
  const client = new UpdatesClient({
    url: 'ws://example.test/ws/updates/', token: 't', WebSocket: FakeSocket, fetch: ticketFetch(), timers: new FakeClock(), ...options,
  });
  client.start();
  await settle();
  const socket = FakeSocket.instances[0]!;
  const wrapper = ({ children }: { children?: ReactNode }) => <UpdatesProvider client={client}>{children}</UpdatesProvider>;
  return { client, socket, wrapper };
}

afterEach(() => cleanup());

describe('useUpdates', () => {
  it('re-renders with the status and the last seq, and calls onUpdate / onRefetch', async () => {
    const { socket, wrapper } = await started();
    const seen: string[] = [];
    const { result } = renderHook(() => useUpdates({ onUpdate: (u) => seen.push(`u${u.seq}`), onRefetch: (r) => seen.push(r.reason) }), { wrapper });
    expect(result.current.status).toBe('syncing');
    act(() => socket.greet(4));
    expect([result.current.status, result.current.lastSeq]).toEqual(['live', 4]);
    act(() => socket.receive(update(5)));
    act(() => socket.receive({ type: 'resync_required', reason: 'epoch_changed', seq: 0, epoch: 'e2' }));
    expect(result.current.lastSeq).toBe(0);
    expect(seen).toEqual(['u5', 'epoch_changed']);
  });

  it('needs a client', () => {
    expect(() => renderHook(() => useUpdates())).toThrow(/UpdatesProvider/);
  });
});

describe('usePresence', () => {
  it('lists who is online, says this view is on a record while mounted, and idles after', async () => {
    const { socket, wrapper } = await started({ presence: true });
    act(() => socket.greet(1));
    const user = (id: string, name: string, on: string | null) => ({
      id, username: name, full_name: name, role: 'approver', since: '2026-01-15T10:30:00.000Z',
      viewing: on ? { entity: 'withdrawal' as const, id: on } : null, editing: null,
    });
    const { result, unmount } = renderHook(() => usePresence({ entity: 'withdrawal', id: ID(1) }, { me: 'me' }), { wrapper });
    act(() => socket.receive({ type: 'presence', users: [user('me', 'ann', ID(1)), user('u2', 'bob', ID(1)), user('u3', 'cy', null)] }));
    expect(result.current.users.map((u) => u.username)).toEqual(['ann', 'bob', 'cy']);
    expect(result.current.here.map(({ user: u }) => u.username)).toEqual(['bob']);
    unmount();
    expect(socket.sent).toEqual([{ type: 'viewing', entity: 'withdrawal', id: ID(1) }, { type: 'idle' }]);
  });
});

describe('useJob and useNotifications', () => {
  it('follows its job only', async () => {
    const { socket, wrapper } = await started();
    act(() => socket.greet(1));
    const { result } = renderHook(() => useJob(ID(9)), { wrapper });
    expect(result.current).toBeNull();
    const job = (id: string, status: 'running' | 'failed', failed: number) => ({ type: 'job_update' as const, job: { id, status, progress: { total: 2, done: 2, failed } } });
    act(() => socket.receive(job(ID(8), 'running', 0)));
    expect(result.current).toBeNull();
    act(() => socket.receive(job(ID(9), 'failed', 1)));
    expect(result.current?.progress.failed).toBe(1);
  });

  it('counts unread notifications and keeps the latest', async () => {
    const { socket, wrapper } = await started();
    const { result } = renderHook(() => useNotifications(), { wrapper });
    act(() => socket.greet(1, { unread_notifications: 2 }));
    expect(result.current.unread).toBe(2);
    const notification = {
      id: ID(5), kind: 'request_decided' as const, title: 'Approved', body: 'WR-1', link: { entity: 'withdrawal' as const, id: ID(1) },
      created_at: '2026-01-15T10:30:00.000Z', read: false,
    };
    act(() => socket.receive({ type: 'notification', notification }));
    act(() => socket.receive({ type: 'notification', notification })); // the same one again: once
    expect(result.current.unread).toBe(3);
    expect(result.current.latest.map((n) => n.title)).toEqual(['Approved']);
    act(() => socket.receive({ type: 'notification_read', ids: [], all: true }));
    expect(result.current.unread).toBe(0);
  });
});

describe('TanStack Query: a list updates in place', () => {
  it('patches the row of every cached list of the entity, drops a deleted one, and refetches on resync', async () => {
    const { client, socket } = await started();
    const queryClient = new QueryClient();
    const row = (n: number, status: string) => ({ id: ID(n), request_number: `WR-${n}`, status });
    queryClient.setQueryData(['withdrawal-requests', { page: 1 }], { count: 2, next: null, previous: null, results: [row(2, 'pending'), row(3, 'pending')] });
    queryClient.setQueryData(['crates'], [{ id: ID(2), status: 'in_storage' }]);
    const disconnect = connectQueryClient(client, queryClient, { invalidate: false });
    socket.greet(1);
    socket.receive(update(2, 'withdrawal', 'approved'));
    socket.receive(update(3, 'withdrawal', 'pending', 'deleted'));
    const page = queryClient.getQueryData<{ count: number; results: { status: string }[] }>(['withdrawal-requests', { page: 1 }]);
    expect(page?.results.map((r) => r.status)).toEqual(['approved']);
    expect(page?.count).toBe(1);
    expect(queryClient.getQueryData(['crates'])).toEqual([{ id: ID(2), status: 'in_storage' }]); // another entity's list
    socket.receive({ type: 'resync_required', reason: 'gap', seq: 10 });
    expect(queryClient.getQueryState(['withdrawal-requests', { page: 1 }])?.isInvalidated).toBe(true);
    disconnect();
  });

  it('useLiveQueries connects for the component lifetime and marks the entity stale', async () => {
    const { socket, wrapper } = await started();
    const queryClient = new QueryClient();
    queryClient.setQueryData(['crates'], [{ id: ID(2), status: 'in_storage' }]);
    function Live() {
      useLiveQueries(queryClient);
      return null;
    }
    const view = render(<Live />, { wrapper });
    act(() => socket.greet(1));
    act(() => socket.receive(update(2, 'crate', 'withdrawn')));
    expect(queryClient.getQueryData(['crates'])).toEqual([{ id: ID(2), status: 'withdrawn' }]);
    expect(queryClient.getQueryState(['crates'])?.isInvalidated).toBe(true);
    view.unmount();
    act(() => socket.receive(update(3, 'crate', 'destroyed')));
    expect(queryClient.getQueryData(['crates'])).toEqual([{ id: ID(2), status: 'withdrawn' }]);
  });

  it('leaves what it does not know alone', () => {
    expect(patchList(undefined, update(1))).toBeUndefined();
    expect(patchList({ detail: 1 }, update(1))).toEqual({ detail: 1 });
  });
});
