/**
 * React hooks for the common views, on one UpdatesClient (`@records/client/react`; React and
 * TanStack Query are optional peer dependencies: only this entry imports them).
 *
 *   <UpdatesProvider client={updates}>          the client the hooks below use
 *   useUpdates()                                {status, lastSeq}; onUpdate / onRefetch callbacks
 *   usePresence({entity, id})                   the unit's online users, and who else is on this record
 *   useJob(jobId)                               a bulk job's live state (job_update)
 *   useNotifications()                          the unread count and the notifications that arrived
 *   useLiveQueries(queryClient)                 lists in the TanStack Query cache updated in place
 */
import type { QueryClient } from '@tanstack/react-query';
import { createContext, createElement, useContext, useEffect, useRef, useState, useSyncExternalStore, type ReactNode } from 'react';

import type { DataUpdate, Entity, JobState, Notification, PresenceUser } from './generated/messages';
import { ALL_QUERY_KEYS, LIST_KEYS, invalidationKeys } from './invalidation';
import type { RefetchDetail, Status, UpdatesClient } from './updates';

const UpdatesContext = createContext<UpdatesClient | null>(null);

/** Makes `client` the one the hooks below use (each also takes a `client` option of its own). */
export function UpdatesProvider({ client, children }: { client: UpdatesClient; children?: ReactNode }) {
  return createElement(UpdatesContext.Provider, { value: client }, children);
}

/** The client from the argument, else the provider's. */
export function useUpdatesClient(client?: UpdatesClient | null): UpdatesClient {
  const fromContext = useContext(UpdatesContext);
  const found = client ?? fromContext;
  if (!found) throw new Error('@records/client/react: no UpdatesClient (wrap the app in <UpdatesProvider client={...}>)');
  return found;
}

/** The latest value of a callback, for listeners registered once. */
function useLatest<T>(value: T) {
  const ref = useRef(value);
  ref.current = value;
  return ref;
}

export interface UseUpdatesOptions {
  client?: UpdatesClient;
  /** Each data_update, in seq order, once. */
  onUpdate?: (update: DataUpdate) => void;
  /** The server asked for a refetch (`resync_required`, `epoch_changed` among its reasons). */
  onRefetch?: (detail: RefetchDetail) => void;
}

/** The connection's status (`live`, `syncing`, `offline`) and last seq, re-rendered as they change. */
export function useUpdates(options: UseUpdatesOptions = {}): { status: Status; lastSeq: number | null; client: UpdatesClient } {
  const client = useUpdatesClient(options.client);
  const onUpdate = useLatest(options.onUpdate);
  const onRefetch = useLatest(options.onRefetch);
  const status = useSyncExternalStore(
    (changed) => client.on('status', changed),
    () => client.status,
    () => client.status,
  );
  const lastSeq = useSyncExternalStore(
    (changed) => {
      const offs = [client.on('update', changed), client.on('refetch', changed), client.on('status', changed)];
      return () => offs.forEach((off) => off());
    },
    () => client.lastSeq,
    () => client.lastSeq,
  );
  useEffect(() => {
    const offs = [
      client.on('update', (update) => onUpdate.current?.(update)),
      client.on('refetch', (detail) => onRefetch.current?.(detail)),
    ];
    return () => offs.forEach((off) => off());
  }, [client, onUpdate, onRefetch]);
  return { status, lastSeq, client };
}

export interface PresenceTarget {
  entity: Entity;
  id: string;
  /** Editing the record, not only viewing it. */
  editing?: boolean;
}

/** The unit's online users (needs the client's `presence: true`). With a `target`, this view says
 *  it is viewing (or editing) that record while mounted, and `here` lists who else is on it. */
export function usePresence(target?: PresenceTarget | null, options: { client?: UpdatesClient; me?: string | null } = {}) {
  const client = useUpdatesClient(options.client);
  const [users, setUsers] = useState<PresenceUser[]>(() => client.roster.users);
  useEffect(() => {
    setUsers(client.roster.users);
    return client.on('presence', (detail) => setUsers(detail.users));
  }, [client]);
  const entity = target?.entity;
  const id = target?.id;
  const editing = Boolean(target?.editing);
  useEffect(() => {
    if (!entity || !id) return undefined;
    if (editing) client.setEditing(entity, id);
    else client.setViewing(entity, id);
    return () => {
      client.setIdle();
    };
  }, [client, entity, id, editing]);
  const here = entity && id ? client.roster.on(entity, id, { except: options.me ?? null }) : [];
  return { users, here };
}

/** A bulk job's live state from `job_update` messages; `initial` (e.g. the POST's answer or a GET
 *  /api/jobs/{id}/) until the first arrives. Null without a job. */
export function useJob(jobId: string | null | undefined, options: { client?: UpdatesClient; initial?: JobState | null } = {}): JobState | null {
  const client = useUpdatesClient(options.client);
  const [job, setJob] = useState<JobState | null>(options.initial ?? null);
  useEffect(() => {
    setJob((current) => (current && current.id === jobId ? current : (options.initial ?? null)));
    if (!jobId) return undefined;
    return client.on('job', (state) => {
      if (state.id === jobId) setJob(state);
    });
    // `initial` is read when the job changes only
  }, [client, jobId]);
  return job;
}

/** The unread count (the greeting's, counted up by new notifications, down by reads in other tabs)
 *  and the notifications that arrived since mount, newest first (at most `keep`). */
export function useNotifications(options: { client?: UpdatesClient; keep?: number } = {}) {
  const client = useUpdatesClient(options.client);
  const keep = options.keep ?? 50;
  const [latest, setLatest] = useState<Notification[]>([]);
  const unread = useSyncExternalStore(
    (changed) => {
      const offs = [client.on('notification', changed), client.on('notificationread', changed), client.on('status', changed)];
      return () => offs.forEach((off) => off());
    },
    () => client.unreadNotifications,
    () => client.unreadNotifications,
  );
  useEffect(() => client.on('notification', (n) => setLatest((list) => [n, ...list].slice(0, keep))), [client, keep]);
  return { unread, latest, setUnread: (count: number) => client.setUnreadNotifications(count) };
}

// --- TanStack Query -------------------------------------------------------------------------------

type Row = { id?: unknown } & Record<string, unknown>;

/** A cached list (an array, or a page `{results: [...]}`) with the update applied to its row. */
export function patchList(list: unknown, update: DataUpdate): unknown {
  const apply = (rows: Row[]): Row[] => {
    if (update.action === 'deleted') return rows.filter((row) => row.id !== update.data.id);
    return rows.map((row) => (row.id === update.data.id ? patchRow(row, update) : row));
  };
  if (Array.isArray(list)) return apply(list as Row[]);
  if (list && typeof list === 'object' && Array.isArray((list as { results?: unknown }).results)) {
    const page = list as { results: Row[]; count?: number };
    const results = apply(page.results);
    const removed = page.results.length - results.length;
    return { ...page, results, ...(typeof page.count === 'number' && removed ? { count: page.count - removed } : {}) };
  }
  return list;
}

function patchRow(row: Row, update: DataUpdate): Row {
  const patch: Row = {};
  if (update.data.status !== undefined) patch.status = update.data.status;
  return { ...row, ...patch };
}

export interface LiveQueriesOptions {
  /** Also mark the touched queries stale so active ones refetch the full records (default true). */
  invalidate?: boolean;
}

/**
 * Keeps a TanStack Query cache current from the client: each update patches the rows it names in
 * every cached list of its entity (status in place, a deleted row out), then marks the entity's
 * queries stale (invalidationKeys) so active ones refetch the whole record; a `refetch` (resync,
 * epoch change) marks every records query stale. Lists are keyed by the seed's keys (`['withdrawal-
 * requests', ...]`, LIST_KEYS). Returns a function that disconnects. Framework-free: the hook below
 * calls it.
 */
export function connectQueryClient(client: UpdatesClient, queryClient: QueryClient, { invalidate = true }: LiveQueriesOptions = {}): () => void {
  const offs = [
    client.on('update', (update) => {
      const listKey = LIST_KEYS[update.entity];
      queryClient.setQueriesData({ queryKey: [listKey] }, (old: unknown) => patchList(old, update));
      if (invalidate) {
        for (const key of invalidationKeys(update)) void queryClient.invalidateQueries({ queryKey: [key] });
      }
    }),
    client.on('refetch', () => {
      for (const key of ALL_QUERY_KEYS) void queryClient.invalidateQueries({ queryKey: [key] });
    }),
  ];
  return () => offs.forEach((off) => off());
}

/** connectQueryClient for the component's lifetime. */
export function useLiveQueries(queryClient: QueryClient, options: LiveQueriesOptions & { client?: UpdatesClient } = {}): void {
  const client = useUpdatesClient(options.client);
  const invalidate = options.invalidate ?? true;
  useEffect(() => connectQueryClient(client, queryClient, { invalidate }), [client, queryClient, invalidate]);
}
