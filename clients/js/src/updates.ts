/**
 * The updates client: one connection to `/ws/updates/`, kept alive for as long as the app wants it.
 *
 * It speaks the protocol of docs/realtime.md: ticket handshake with a `?token=` fallback, per-unit
 * `seq` with resume (`last_seq` + `epoch`), de-duplication and gap detection, `resync_required`
 * (`epoch_changed` among its reasons) surfaced as one `refetch` event, the token refreshed on the open
 * socket before it expires (`refresh` / `refreshed`), the close codes 4001/4002 (refresh the token,
 * reconnect) and 4003 (sign out), reconnection with exponential backoff and full jitter, a ping/pong
 * heartbeat, batch mode, presence, subscriptions, notifications and job updates. docs/client.md is the
 * user guide.
 *
 * No globals are needed: the WebSocket, fetch, timers, clock and randomness can all be injected, so
 * it runs in a page, a worker, Node or a test with a fake socket. The message types are generated
 * from the server's JSON Schemas (src/generated/messages.ts).
 */
import {
  ENTITIES,
  type ClientMessage,
  type ConnectionEstablished,
  type DataUpdate,
  type Entity,
  type JobState,
  type Notification,
  type NotificationRead,
  type PresenceUpdate,
  type PresenceUser,
  type ResyncRequired,
  type ServerError,
  type ServerMessage,
  type Activity,
} from './generated/messages';
import { TypedEventTarget } from './emitter';

export const STATUS = Object.freeze({ LIVE: 'live', SYNCING: 'syncing', OFFLINE: 'offline' } as const);
export type Status = (typeof STATUS)[keyof typeof STATUS];

export const CLOSE_CODES = Object.freeze({
  NORMAL: 1000,
  CLIENT_RECONNECT: 4000, // ours: the client drops a socket itself (heartbeat timeout, gap, reconnect())
  AUTH_FAILED: 4001,
  TOKEN_EXPIRED: 4002,
  ACCESS_REVOKED: 4003,
  TOO_SLOW: 4008,
  TOO_MANY_CONNECTIONS: 4029,
  TRY_AGAIN_LATER: 1013,
} as const);

/** A subscription filter: any of entities, ids (1 to 100 record ids) and mine. */
export interface Filter {
  entities?: Entity[];
  ids?: string[];
  mine?: boolean;
}

/** What the client needs of a WebSocket (the browser's, `ws` in Node, a fake in tests). */
export interface SocketLike {
  readonly readyState?: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type SocketConstructor = new (url: string) => SocketLike;

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  setInterval(fn: () => void, ms: number): unknown;
  clearInterval(handle: unknown): void;
}

type FetchLike = (input: string, init?: RequestInit) => Promise<Pick<Response, 'ok' | 'status' | 'json'>>;
type TokenSource = () => string | null | undefined | Promise<string | null | undefined>;

/** Why the app must refetch its lists over REST: a `resync_required` (any reason, `epoch_changed`
 *  among them). One event for all of them. */
export interface RefetchDetail {
  reason: string;
  seq: number;
  epoch: string | null;
  message: ResyncRequired;
}

/** Every event the client emits, with its detail. */
export interface UpdatesEventMap {
  status: { status: Status; previous: Status };
  update: DataUpdate;
  job: JobState;
  refetch: RefetchDetail;
  resync: ResyncRequired;
  signout: { code: number; reason: string };
  close: { code: number; reason: string };
  gap: { expected: number; got: number };
  giveup: { attempts: number; code?: number; reason?: string };
  servererror: ServerError;
  message: ServerMessage;
  presence: { users: PresenceUser[]; update: PresenceUpdate | null };
  activity: Activity;
  notification: Notification;
  refreshed: { expiresAt: string };
  notificationread: { ids: string[]; all: boolean };
}
export type UpdatesEventName = keyof UpdatesEventMap;

type Hooks = {
  onStatus?: (detail: UpdatesEventMap['status']) => void;
  onUpdate?: (detail: DataUpdate) => void;
  onJobUpdate?: (detail: JobState) => void;
  onRefetch?: (detail: RefetchDetail) => void;
  onResync?: (detail: ResyncRequired) => void;
  onSignOut?: (detail: UpdatesEventMap['signout']) => void;
  onClose?: (detail: UpdatesEventMap['close']) => void;
  onGap?: (detail: UpdatesEventMap['gap']) => void;
  onGiveUp?: (detail: UpdatesEventMap['giveup']) => void;
  onServerError?: (detail: ServerError) => void;
  onMessage?: (detail: ServerMessage) => void;
  onPresence?: (detail: UpdatesEventMap['presence']) => void;
  onActivity?: (detail: Activity) => void;
  onNotification?: (detail: Notification) => void;
  onRefreshed?: (detail: UpdatesEventMap['refreshed']) => void;
  onNotificationRead?: (detail: UpdatesEventMap['notificationread']) => void;
};

const HOOKS: { [K in UpdatesEventName]: keyof Hooks } = {
  status: 'onStatus',
  update: 'onUpdate',
  job: 'onJobUpdate',
  refetch: 'onRefetch',
  resync: 'onResync',
  signout: 'onSignOut',
  close: 'onClose',
  gap: 'onGap',
  giveup: 'onGiveUp',
  servererror: 'onServerError',
  message: 'onMessage',
  presence: 'onPresence',
  activity: 'onActivity',
  notification: 'onNotification',
  refreshed: 'onRefreshed',
  notificationread: 'onNotificationRead',
};

export interface UpdatesOptions extends Hooks {
  /** The socket's URL (`wss://host/ws/updates/`); default: this page's host and `wsPath`. Needed
   *  wherever there is no `location` (a worker without one, Node). */
  url?: string;
  /** The access token now (called before every connection), and a new one (the refresh token's
   *  work) when the server says this one expired. */
  getToken?: TokenSource;
  refreshToken?: TokenSource;
  token?: string;
  lastSeq?: number | null;
  epoch?: string | null;
  maxAttempts?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  heartbeatMs?: number;
  heartbeatTimeoutMs?: number;
  connectTimeoutMs?: number;
  batch?: boolean;
  presence?: boolean;
  filter?: Filter | null;
  activityFeed?: boolean;
  useTicket?: boolean;
  refreshOnSocket?: boolean;
  refreshAheadMs?: number;
  refreshRetryMs?: number;
  apiBase?: string;
  ticketPath?: string;
  wsPath?: string;
  WebSocket?: SocketConstructor;
  fetch?: FetchLike;
  random?: () => number;
  now?: () => number;
  timers?: Timers;
}

type DefaultKeys = 'maxAttempts' | 'baseDelayMs' | 'maxDelayMs' | 'heartbeatMs' | 'heartbeatTimeoutMs'
  | 'connectTimeoutMs' | 'batch' | 'presence' | 'filter' | 'activityFeed' | 'useTicket' | 'refreshOnSocket'
  | 'refreshAheadMs' | 'refreshRetryMs' | 'apiBase' | 'ticketPath' | 'wsPath';

export const DEFAULTS: Readonly<Required<Pick<UpdatesOptions, DefaultKeys>>> = Object.freeze({
  maxAttempts: 10, // the seed: "up to 10 attempts with exponential backoff"
  baseDelayMs: 1000,
  maxDelayMs: 30000,
  heartbeatMs: 30000, // the seed's 30 s ping
  heartbeatTimeoutMs: 10000, // no message at all this long after a ping: the connection is dead
  connectTimeoutMs: 15000, // no `connection_established` this long after opening: try again
  batch: false,
  presence: false,
  filter: null,
  activityFeed: false,
  useTicket: true,
  refreshOnSocket: true,
  refreshAheadMs: 60000,
  refreshRetryMs: 5000,
  apiBase: '',
  ticketPath: '/api/auth/ws-ticket/',
  wsPath: '/ws/updates/',
});

// --- pure logic ---------------------------------------------------------------------------------

interface Bounds {
  baseDelayMs?: number;
  maxDelayMs?: number;
}

/** The upper bound of the delay before reconnect attempt `attempt` (0-based): base·2^attempt, capped. */
export function backoffCeiling(attempt: number, { baseDelayMs = DEFAULTS.baseDelayMs, maxDelayMs = DEFAULTS.maxDelayMs }: Bounds = {}): number {
  return Math.min(maxDelayMs, baseDelayMs * 2 ** Math.max(0, attempt));
}

/** "Full jitter": a uniform delay in [0, ceiling), so a thousand clients dropped by one server
 *  restart do not come back in lockstep. */
export function backoffDelay(attempt: number, { random = Math.random, ...bounds }: Bounds & { random?: () => number } = {}): number {
  return Math.floor(random() * backoffCeiling(attempt, bounds));
}

export type Verdict = 'deliver' | 'duplicate' | 'gap';

const isInt = (value: unknown): value is number => Number.isInteger(value);
const isText = (value: unknown): value is string => typeof value === 'string' && value !== '';

/** Per-unit sequence bookkeeping. `lastSeq` is the last seq this client has seen (delivered or
 *  skipped by a resync); it survives reconnects and is sent back as `last_seq`, with its `epoch`. */
export class SeqTracker {
  lastSeq: number | null;
  epoch: string | null;

  constructor(lastSeq: number | null = null, epoch: string | null = null) {
    this.lastSeq = isInt(lastSeq) ? lastSeq : null;
    this.epoch = isText(epoch) ? epoch : null;
  }

  /** `connection_established`: a fresh client starts at the unit's current seq; a resuming client
   *  keeps its own. A client that knew no epoch adopts the greeting's. */
  established(seq: unknown, epoch: unknown): void {
    if (this.lastSeq === null && isInt(seq)) this.lastSeq = seq;
    if (this.epoch === null && isText(epoch)) this.epoch = epoch;
  }

  /** Start from a list's watermark (`X-Records-Seq`, `X-Records-Epoch`): with several lists, the
   *  smallest seq (an update is for a list only when its seq is above that list's). */
  joinList(seq: unknown, epoch?: unknown): void {
    if (!isInt(seq) || seq < 0) return;
    if (this.lastSeq === null || seq < this.lastSeq) this.lastSeq = seq;
    if (isText(epoch)) this.epoch = epoch;
  }

  /** 'deliver' (the next one), 'duplicate' (seen before: replays overlap live delivery by design)
   *  or 'gap' (something in between was missed). A `filtered` client skips what its filter leaves
   *  out, so any later seq is the next one for it. */
  accept(seq: unknown, { filtered = false }: { filtered?: boolean } = {}): Verdict {
    if (!isInt(seq)) return 'deliver';
    if (this.lastSeq === null || seq === this.lastSeq + 1 || (filtered && seq > this.lastSeq)) {
      this.lastSeq = seq;
      return 'deliver';
    }
    return seq <= this.lastSeq ? 'duplicate' : 'gap';
  }

  /** `resync_required`: refetch over REST and continue from `seq`, in `epoch`. */
  resync(seq: unknown, epoch: unknown): void {
    if (isInt(seq)) this.lastSeq = seq;
    if (isText(epoch)) this.epoch = epoch;
  }
}

/** The `data_update`s a message carries, in order (`data_update_batch` unpacked). */
export function unpackUpdates(message: unknown): DataUpdate[] {
  if (!message || typeof message !== 'object') return [];
  const typed = message as ServerMessage;
  if (typed.type === 'data_update') return [typed];
  if (typed.type === 'data_update_batch' && Array.isArray(typed.updates)) return typed.updates;
  return [];
}

export type CloseAction = 'refresh' | 'signout' | 'stop' | 'reconnect';

/** What a close code asks: 'refresh' the token, 'signout', 'stop' (4029), or 'reconnect'. */
export function closeAction(code: number): CloseAction {
  if (code === CLOSE_CODES.AUTH_FAILED || code === CLOSE_CODES.TOKEN_EXPIRED) return 'refresh';
  if (code === CLOSE_CODES.ACCESS_REVOKED) return 'signout';
  if (code === CLOSE_CODES.TOO_MANY_CONNECTIONS) return 'stop';
  return 'reconnect';
}

/** How long after `now` (ms) to send the open socket a new token for a connection whose token
 *  expires at `expiresAt`: `aheadMs` before then, or halfway there. Null without a usable expiry. */
export function refreshDelay(expiresAt: unknown, now: number, aheadMs: number = DEFAULTS.refreshAheadMs): number | null {
  const expires = typeof expiresAt === 'string' ? Date.parse(expiresAt) : NaN;
  if (Number.isNaN(expires)) return null;
  const left = Math.max(0, expires - now);
  return Math.max(0, left - Math.min(aheadMs, left / 2));
}

export interface SocketUrlParts {
  ticket?: string | null;
  token?: string | null;
  lastSeq?: number | null;
  epoch?: string | null;
  batch?: boolean;
  presence?: boolean;
  filter?: Filter | null;
  activity?: boolean;
}

/** The WebSocket URL: credentials (ticket preferred), `last_seq` + `epoch` when resuming, `batch=1`,
 *  `presence=1`, `activity=1` on request, and the subscription filter. */
export function buildSocketUrl(base: string, { ticket, token, lastSeq, epoch, batch, presence, filter, activity }: SocketUrlParts = {}): string {
  const url = new URL(base);
  for (const name of ['ticket', 'token', 'last_seq', 'epoch', 'batch', 'presence', 'activity', 'entities', 'ids', 'mine']) {
    url.searchParams.delete(name);
  }
  if (ticket) url.searchParams.set('ticket', ticket);
  else if (token) url.searchParams.set('token', token);
  if (isInt(lastSeq)) url.searchParams.set('last_seq', String(lastSeq));
  if (isInt(lastSeq) && epoch) url.searchParams.set('epoch', epoch);
  if (batch) url.searchParams.set('batch', '1');
  if (presence) url.searchParams.set('presence', '1');
  if (activity) url.searchParams.set('activity', '1');
  if (filter) {
    if (filter.entities) url.searchParams.set('entities', filter.entities.join(','));
    if (filter.ids) url.searchParams.set('ids', filter.ids.join(','));
    if (filter.mine) url.searchParams.set('mine', '1');
  }
  return url.toString();
}

export const FILTER_MAX_IDS = 100;
const UUID_PATTERN = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/** A subscription filter as the server takes it, or null for "the whole unit"; throws a TypeError
 *  for anything the server would refuse. */
export function normalizeFilter(filter: unknown): Filter | null {
  if (filter === null || filter === undefined) return null;
  if (typeof filter !== 'object' || Array.isArray(filter)) throw new TypeError('filter must be an object');
  const given = filter as Record<string, unknown>;
  const out: Filter = {};
  if (given.entities !== undefined) {
    const entities = given.entities;
    if (!Array.isArray(entities) || entities.length === 0 || !entities.every((e) => (ENTITIES as readonly unknown[]).includes(e))) {
      throw new TypeError(`filter.entities must be a non-empty list of ${ENTITIES.join(', ')}`);
    }
    out.entities = [...new Set(entities as Entity[])];
  }
  if (given.ids !== undefined) {
    const ids = given.ids;
    if (!Array.isArray(ids) || ids.length === 0 || ids.length > FILTER_MAX_IDS
      || !ids.every((id) => typeof id === 'string' && UUID_PATTERN.test(id))) {
      throw new TypeError(`filter.ids must hold 1 to ${FILTER_MAX_IDS} record ids (UUIDs)`);
    }
    out.ids = [...new Set((ids as string[]).map((id) => id.toLowerCase()))];
  }
  if (given.mine !== undefined) {
    if (typeof given.mine !== 'boolean') throw new TypeError('filter.mine must be true or false');
    if (given.mine) out.mine = true;
  }
  return Object.keys(out).length ? out : null;
}

/** The unit's online users, from `presence` (a snapshot) and `presence_update` (a delta). */
export class PresenceRoster {
  byId = new Map<string, PresenceUser>();

  /** True when the list changed. */
  apply(message: unknown): boolean {
    if (!message || typeof message !== 'object') return false;
    const typed = message as ServerMessage;
    if (typed.type === 'presence' && Array.isArray(typed.users)) {
      this.byId = new Map(typed.users.filter((u) => u && u.id).map((u) => [u.id, u]));
      return true;
    }
    if (typed.type === 'presence_update' && typed.user && typed.user.id) {
      if (typed.state === 'left') return this.byId.delete(typed.user.id);
      this.byId.set(typed.user.id, typed.user);
      return true;
    }
    return false;
  }

  clear(): void {
    this.byId.clear();
  }

  /** Sorted by username. */
  get users(): PresenceUser[] {
    return [...this.byId.values()].sort((a, b) => String(a.username).localeCompare(String(b.username)));
  }

  /** Who else is viewing / editing a record. */
  on(entity: Entity, id: string, { except = null }: { except?: string | null } = {}): { user: PresenceUser; editing: boolean }[] {
    const found: { user: PresenceUser; editing: boolean }[] = [];
    for (const user of this.byId.values()) {
      if (user.id === except) continue;
      const editing = Boolean(user.editing && user.editing.entity === entity && user.editing.id === id);
      const viewing = Boolean(user.viewing && user.viewing.entity === entity && user.viewing.id === id);
      if (editing || viewing) found.push({ user, editing });
    }
    return found;
  }
}

// Notification ids remembered for de-duplication (a frame is never counted twice).
const NOTIFICATION_IDS_KEPT = 500;

type Activity_ = { type: 'idle' } | { type: 'viewing' | 'editing'; entity: Entity; id: string };
type TimerName = 'reconnect' | 'heartbeat' | 'dead' | 'connect' | 'refresh';

function defaultSocketBase(wsPath: string): string {
  const location = (globalThis as { location?: { protocol: string; host: string } }).location;
  if (!location) throw new TypeError('UpdatesClient needs a `url` option where there is no `location` (a worker, Node)');
  return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}${wsPath}`;
}

type Resolved = UpdatesOptions & Required<Pick<UpdatesOptions, DefaultKeys>>;

/**
 * The updates client. A typed event target: `client.on('update', (update) => ...)` (returns an
 * unsubscribe function), or `addEventListener('update', (event) => event.detail)`; each event also
 * calls the matching `on…` option.
 */
export class UpdatesClient extends TypedEventTarget<UpdatesEventMap> {
  readonly options: Resolved;
  readonly tracker: SeqTracker;
  readonly roster = new PresenceRoster();
  status: Status = STATUS.OFFLINE;
  /** Reconnect attempts since the last live connection. */
  attempt = 0;
  /** When the live connection's token expires (the server's ISO 8601 UTC). */
  expiresAt: string | null = null;
  /** The user's unread notifications: the greeting's count (null before it), plus one per unread
   *  `notification` frame since. */
  unreadNotifications: number | null = null;

  private readonly _WebSocket: SocketConstructor | undefined;
  private readonly _fetch: FetchLike | null;
  private readonly _random: () => number;
  private readonly _now: () => number;
  private readonly _timers: Timers;
  private _token: string | null;
  private _useRefreshed = false;
  private _stopped = true;
  private _generation = 0; // bumped whenever a socket is abandoned; stale callbacks check it
  private _socket: SocketLike | null = null;
  private _live = false; // the current socket got `connection_established`
  private _gapStreak = 0;
  private _timer: Record<TimerName, unknown> = { reconnect: null, heartbeat: null, dead: null, connect: null, refresh: null };
  private _filter: Filter | null;
  private _jumpOnce = false; // after unsubscribe(): the next update may follow a filtered-out stretch
  private _activity: Activity_ = { type: 'idle' };
  private _notificationIds = new Set<string>();
  private _greetingEpoch: string | null = null;

  constructor(options: UpdatesOptions = {}) {
    super();
    this.options = { ...DEFAULTS, ...options };
    const o = this.options;
    this._WebSocket = o.WebSocket || (globalThis as { WebSocket?: SocketConstructor }).WebSocket;
    this._fetch = o.fetch || (globalThis.fetch ? (globalThis.fetch.bind(globalThis) as FetchLike) : null);
    this._random = o.random || Math.random;
    this._now = o.now || (() => Date.now());
    this._timers = o.timers || {
      setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
      clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof setTimeout>),
      setInterval: (fn, ms) => globalThis.setInterval(fn, ms),
      clearInterval: (handle) => globalThis.clearInterval(handle as ReturnType<typeof setInterval>),
    };
    this._token = typeof o.token === 'string' ? o.token : null;
    this.tracker = new SeqTracker(o.lastSeq ?? null, o.epoch ?? null);
    this._filter = normalizeFilter(o.filter);
  }

  /** The subscription filter in force (null: the whole unit). */
  get filter(): Filter | null {
    return this._filter;
  }

  get lastSeq(): number | null {
    return this.tracker.lastSeq;
  }

  get epoch(): string | null {
    return this.tracker.epoch;
  }

  /** Only the matching updates from now on, and on every reconnect (its replay too). */
  subscribe(filter: Filter | null): this {
    const normalized = normalizeFilter(filter);
    if (!normalized) return this.unsubscribe();
    this._filter = normalized;
    this._send({ type: 'subscribe', ...normalized } as ClientMessage);
    return this;
  }

  /** Back to the whole unit's stream (what was left out meanwhile is not replayed: refetch). */
  unsubscribe(): this {
    if (this._filter) this._jumpOnce = true;
    this._filter = null;
    this._send({ type: 'unsubscribe' });
    return this;
  }

  /** `cb(activity)` for each `activity` message (needs `activityFeed: true`). */
  onActivity(cb: (detail: Activity) => void): () => void {
    return this.on('activity', cb);
  }

  /** `cb(notification)` once per notification id. */
  onNotification(cb: (detail: Notification) => void): () => void {
    return this.on('notification', cb);
  }

  /** `cb({users, update})` on every change of the unit's online users (needs `presence: true`). */
  onPresence(cb: (detail: UpdatesEventMap['presence']) => void): () => void {
    return this.on('presence', cb);
  }

  /** Set the unread count after the app marked notifications read over REST. */
  setUnreadNotifications(count: number): this {
    this.unreadNotifications = Math.max(0, Number(count) || 0);
    return this;
  }

  /** This tab is viewing a record (other users see it in presence). */
  setViewing(entity: Entity, id: string): this {
    return this._setActivity({ type: 'viewing', entity, id });
  }

  /** This tab is editing a record (viewing it too). */
  setEditing(entity: Entity, id: string): this {
    return this._setActivity({ type: 'editing', entity, id });
  }

  /** This tab is neither viewing nor editing a record. */
  setIdle(): this {
    return this._setActivity({ type: 'idle' });
  }

  private _setActivity(activity: Activity_): this {
    if (activity.type !== 'idle') {
      if (!(ENTITIES as readonly unknown[]).includes(activity.entity) || typeof activity.id !== 'string' || !UUID_PATTERN.test(activity.id)) {
        throw new TypeError('presence needs an entity name and a record id (UUID)');
      }
    }
    const was = this._activity;
    const same = was.type === activity.type
      && (was.type === 'idle' || activity.type === 'idle' || (was.entity === activity.entity && was.id === activity.id));
    this._activity = activity;
    if (!same && this.options.presence) this._send(activity);
    return this;
  }

  /** Send a client message on the live socket; false when there is none (state goes on reconnect). */
  private _send(message: ClientMessage): boolean {
    if (!this._socket || !this._live) return false;
    try {
      this._socket.send(JSON.stringify(message));
      return true;
    } catch {
      return false;
    }
  }

  /** Join the stream where a list left it, before `start()`: the list's `X-Records-Seq` and
   *  `X-Records-Epoch` (or the fetch Response itself). The connection then replays exactly the
   *  changes after the list, and none twice; an epoch that changed meanwhile answers `refetch`. */
  joinList(seqOrResponse: number | null | { headers: { get(name: string): string | null } }, epoch?: string | null): this {
    if (seqOrResponse && typeof seqOrResponse === 'object' && seqOrResponse.headers) {
      const headers = seqOrResponse.headers;
      const seq = Number.parseInt(headers.get('X-Records-Seq') ?? '', 10);
      return this.joinList(Number.isNaN(seq) ? null : seq, headers.get('X-Records-Epoch'));
    }
    this.tracker.joinList(seqOrResponse, epoch);
    return this;
  }

  /** Connect (status `syncing` until the server greets us, then `live`). */
  start(): this {
    if (!this._stopped) return this;
    this._stopped = false;
    this.attempt = 0;
    this._setStatus(STATUS.SYNCING);
    void this._open();
    return this;
  }

  /** Close for good (sign-out, teardown): status `offline`, no reconnection. */
  stop(): void {
    this._stopped = true;
    this._abandon(CLOSE_CODES.NORMAL, 'client stopped');
    this._setStatus(STATUS.OFFLINE);
  }

  /** Try again now with a fresh attempt budget (a "Reconnect" button, the browser's `online`). */
  reconnect(): void {
    this._stopped = false;
    this.attempt = 0;
    this._abandon(CLOSE_CODES.CLIENT_RECONNECT, 'reconnect');
    this._setStatus(STATUS.SYNCING);
    void this._open();
  }

  // --- connecting ---------------------------------------------------------------------------------

  private async _open(): Promise<void> {
    const generation = ++this._generation;
    let url: string;
    try {
      url = await this._socketUrl();
    } catch (error) {
      if (generation === this._generation && !this._stopped) this._dropped(generation, 1006, String(error));
      return;
    }
    if (generation !== this._generation || this._stopped) return; // stopped or superseded meanwhile
    let socket: SocketLike;
    try {
      if (!this._WebSocket) throw new TypeError('no WebSocket: pass the `WebSocket` option');
      socket = new this._WebSocket(url);
    } catch (error) {
      this._dropped(generation, 1006, String(error));
      return;
    }
    this._socket = socket;
    this._live = false;
    socket.onopen = () => this._opened(generation);
    socket.onmessage = (event) => this._received(generation, event.data);
    socket.onclose = (event) => this._dropped(generation, event.code, event.reason);
    socket.onerror = () => {}; // a close event always follows
    this._timer.connect = this._timers.setTimeout(
      () => this._deadConnection(generation, 'connect timeout'),
      this.options.connectTimeoutMs,
    );
  }

  private async _socketUrl(): Promise<string> {
    const o = this.options;
    let token = await this._currentToken();
    let credentials: { token?: string; ticket?: string } = token ? { token } : {};
    if (o.useTicket && token && this._fetch) {
      let answer = await this._fetchTicket(token);
      if (answer.status === 401) {
        // The access token ran out (a tab that slept): refresh it now, not after a 4001.
        const fresh = await this._refreshedToken();
        if (fresh) {
          token = fresh;
          credentials = { token };
          answer = await this._fetchTicket(fresh);
        }
      }
      if (answer.ticket) credentials = { ticket: answer.ticket }; // otherwise ?token= still works
    }
    const base = o.url || defaultSocketBase(o.wsPath);
    return buildSocketUrl(base, {
      ...credentials,
      lastSeq: this.tracker.lastSeq,
      epoch: this.tracker.epoch,
      batch: o.batch,
      presence: o.presence,
      filter: this._filter,
      activity: o.activityFeed,
    });
  }

  private async _currentToken(): Promise<string | null> {
    if (this._useRefreshed) {
      this._useRefreshed = false;
      return this._token;
    }
    if (typeof this.options.getToken === 'function') {
      try {
        const token = await this.options.getToken();
        if (token) this._token = token;
      } catch {
        // keep the last token: the handshake tells (4001) if it is no good
      }
    }
    return this._token;
  }

  private async _fetchTicket(token: string): Promise<{ ticket: string | null; status: number | null }> {
    const o = this.options;
    if (!this._fetch) return { ticket: null, status: null };
    try {
      const init: RequestInit = { method: 'POST', headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' } };
      if (typeof AbortSignal !== 'undefined' && AbortSignal.timeout) init.signal = AbortSignal.timeout(o.connectTimeoutMs);
      const response = await this._fetch(`${o.apiBase}${o.ticketPath}`, init);
      if (!response.ok) return { ticket: null, status: response.status };
      const body = (await response.json()) as { ticket?: unknown };
      return { ticket: typeof body.ticket === 'string' ? body.ticket : null, status: response.status };
    } catch {
      return { ticket: null, status: null };
    }
  }

  private async _refreshedToken(): Promise<string | null> {
    if (typeof this.options.refreshToken !== 'function') return null;
    try {
      const token = await this.options.refreshToken();
      if (!token) return null;
      this._token = token;
      return token;
    } catch {
      return null;
    }
  }

  private _opened(generation: number): void {
    if (generation !== this._generation) return;
    this._timer.heartbeat = this._timers.setInterval(() => this._ping(generation), this.options.heartbeatMs);
  }

  // --- receiving ----------------------------------------------------------------------------------

  private _received(generation: number, raw: unknown): void {
    if (generation !== this._generation) return;
    this._clear('dead'); // any message at all proves the connection alive
    let message: ServerMessage;
    try {
      message = JSON.parse(String(raw)) as ServerMessage;
    } catch {
      return;
    }
    if (!message || typeof message !== 'object') return;
    this._emit('message', message);
    switch (message.type) {
      case 'connection_established':
        this._greeted(generation, message);
        break;
      case 'data_update':
      case 'data_update_batch':
        for (const update of unpackUpdates(message)) {
          const verdict = this.tracker.accept(update.seq, { filtered: Boolean(this._filter) || this._jumpOnce });
          if (verdict === 'deliver') {
            this._jumpOnce = false;
            this._gapStreak = 0;
            this._emit('update', update);
          } else if (verdict === 'gap') {
            this._gap(update.seq);
            return;
          }
        }
        break;
      case 'resync_required': {
        // `epoch_changed` is a resync like any other: refetch, continue from `seq` in the new epoch.
        this.tracker.resync(message.seq, message.epoch || this._greetingEpoch);
        this._emit('resync', message);
        this._emit('refetch', { reason: message.reason, seq: message.seq, epoch: this.tracker.epoch, message });
        break;
      }
      case 'job_update':
        this._emit('job', message.job);
        break;
      case 'refreshed':
        this._expiring(generation, message.expires_at);
        this._emit('refreshed', { expiresAt: message.expires_at });
        break;
      case 'error':
        if (message.code === 'refresh_unavailable') this._retryRefresh(generation);
        this._emit('servererror', message);
        break;
      case 'activity':
        // Carries the seq of the update it describes (already counted): no gap check.
        this._emit('activity', message);
        break;
      case 'notification':
        this._notification(message.notification, message.counted === true);
        break;
      case 'notification_read':
        this._notificationRead(message);
        break;
      case 'presence':
      case 'presence_update':
        if (this.roster.apply(message)) {
          this._emit('presence', { users: this.roster.users, update: message.type === 'presence_update' ? message : null });
        }
        break;
      default:
        break; // pong, and whatever a newer server adds
    }
  }

  private _greeted(generation: number, message: ConnectionEstablished): void {
    this._clear('connect');
    this.tracker.established(message.seq, message.epoch);
    this._greetingEpoch = typeof message.epoch === 'string' ? message.epoch : null;
    // Every unread notification committed before the greeting (frames follow only for later ones).
    if (isInt(message.unread_notifications)) this.unreadNotifications = message.unread_notifications;
    this._live = true;
    this._expiring(generation, message.expires_at);
    this.attempt = 0;
    // The filter went in the URL; this tab's activity starts over on every connection.
    if (this.options.presence && this._activity.type !== 'idle') this._send(this._activity);
    this._setStatus(STATUS.LIVE);
  }

  private _notification(notification: Notification | undefined, counted: boolean): void {
    if (!notification || typeof notification.id !== 'string' || this._notificationIds.has(notification.id)) return;
    this._notificationIds.add(notification.id);
    if (this._notificationIds.size > NOTIFICATION_IDS_KEPT) {
      const oldest = this._notificationIds.values().next().value;
      if (oldest !== undefined) this._notificationIds.delete(oldest);
    }
    if (!notification.read && !counted) this.unreadNotifications = (this.unreadNotifications || 0) + 1;
    this._emit('notification', notification);
  }

  private _notificationRead(message: NotificationRead): void {
    if (message.all) this.unreadNotifications = 0;
    else if (Array.isArray(message.ids) && this.unreadNotifications !== null) {
      this.unreadNotifications = Math.max(0, this.unreadNotifications - message.ids.length);
    }
    this._emit('notificationread', { ids: Array.isArray(message.ids) ? message.ids : [], all: Boolean(message.all) });
  }

  /** A seq jumped: drop this socket and resume from the last seq we have; the server replays.
   *  The first gap reconnects at once; a second one before anything was delivered backs off. */
  private _gap(got: number): void {
    this._emit('gap', { expected: (this.tracker.lastSeq ?? 0) + 1, got });
    this._abandon(CLOSE_CODES.CLIENT_RECONNECT, 'seq gap');
    if (this._stopped) return;
    this._setStatus(STATUS.SYNCING);
    this._gapStreak += 1;
    if (this._gapStreak > 1) this._scheduleReconnect();
    else void this._open();
  }

  // --- the token, refreshed on the open socket ------------------------------------------------------

  private _expiring(generation: number, expiresAt: unknown): void {
    this.expiresAt = typeof expiresAt === 'string' ? expiresAt : null;
    this._clear('refresh');
    if (!this.options.refreshOnSocket) return;
    const delay = refreshDelay(this.expiresAt, this._now(), this.options.refreshAheadMs);
    if (delay === null) return; // a server that does not say: the 4002 close and reconnect still work
    this._timer.refresh = this._timers.setTimeout(() => void this._refreshOnSocket(generation), delay);
  }

  private async _refreshOnSocket(generation: number): Promise<void> {
    this._timer.refresh = null;
    if (generation !== this._generation || !this._live) return;
    const token = typeof this.options.refreshToken === 'function' ? await this._refreshedToken() : await this._currentToken();
    if (generation !== this._generation || !token) return; // the server closes 4002 at expiry, as before
    // `refreshed` re-arms the timer; a token the server refuses closes the socket 4001.
    this._send({ type: 'refresh', token });
  }

  private _retryRefresh(generation: number): void {
    if (!this.options.refreshOnSocket || this._timer.refresh !== null) return;
    this._timer.refresh = this._timers.setTimeout(() => void this._refreshOnSocket(generation), this.options.refreshRetryMs);
  }

  // --- heartbeat ----------------------------------------------------------------------------------

  private _ping(generation: number): void {
    if (generation !== this._generation || !this._socket) return;
    try {
      this._socket.send(JSON.stringify({ type: 'ping', timestamp: new Date(this._now()).toISOString() } satisfies ClientMessage));
    } catch {
      // a socket that cannot send is about to close; the close event handles it
    }
    if (this._timer.dead === null) {
      this._timer.dead = this._timers.setTimeout(
        () => this._deadConnection(generation, 'heartbeat timeout'),
        this.options.heartbeatTimeoutMs,
      );
    }
  }

  /** No answer: a half-open TCP connection may never deliver a close event, so do not wait for one. */
  private _deadConnection(generation: number, reason: string): void {
    if (generation !== this._generation) return;
    this._abandon(CLOSE_CODES.CLIENT_RECONNECT, reason);
    this._emit('close', { code: CLOSE_CODES.CLIENT_RECONNECT, reason });
    if (this._stopped) return;
    this._setStatus(STATUS.SYNCING);
    this._scheduleReconnect();
  }

  // --- closing ------------------------------------------------------------------------------------

  private _dropped(generation: number, code: number, reason: string): void {
    if (generation !== this._generation) return;
    const wasLive = this._live;
    this._abandon();
    this._emit('close', { code, reason });
    if (this._stopped) return;
    const action = closeAction(code);
    if (action === 'signout') {
      this._signOut({ code, reason });
      return;
    }
    if (action === 'stop') {
      this._stopped = true;
      this._setStatus(STATUS.OFFLINE);
      this._emit('giveup', { attempts: this.attempt, code, reason: 'too many connections' });
      return;
    }
    this._setStatus(STATUS.SYNCING);
    if (action === 'refresh') {
      void this._refreshThenReconnect(code, reason, wasLive);
      return;
    }
    this._scheduleReconnect();
  }

  private async _refreshThenReconnect(code: number, _reason: string, wasLive: boolean): Promise<void> {
    const generation = this._generation;
    const token = await this._refreshedToken();
    if (generation !== this._generation || this._stopped) return;
    if (!token) {
      this._signOut({ code, reason: 'token refresh failed' });
      return;
    }
    this._useRefreshed = true;
    // A live connection whose token ran out (4002) comes straight back; a handshake refused even so
    // (4001 again) goes through the backoff, so a token the server keeps refusing cannot spin.
    if (wasLive) void this._open();
    else this._scheduleReconnect();
  }

  private _scheduleReconnect(): void {
    const o = this.options;
    if (this.attempt >= o.maxAttempts) {
      this._stopped = true;
      this._setStatus(STATUS.OFFLINE);
      this._emit('giveup', { attempts: this.attempt });
      return;
    }
    const delay = backoffDelay(this.attempt, { random: this._random, baseDelayMs: o.baseDelayMs, maxDelayMs: o.maxDelayMs });
    this.attempt += 1;
    this._timer.reconnect = this._timers.setTimeout(() => {
      this._timer.reconnect = null;
      if (!this._stopped) void this._open();
    }, delay);
  }

  private _signOut(detail: { code: number; reason: string }): void {
    this._stopped = true;
    this._abandon();
    this._setStatus(STATUS.OFFLINE);
    this._emit('signout', detail);
  }

  /** Forget the current socket (closing it if still open) and every timer. */
  private _abandon(code?: number, reason?: string): void {
    this._generation += 1;
    for (const name of Object.keys(this._timer) as TimerName[]) this._clear(name);
    const socket = this._socket;
    this._socket = null;
    this._live = false;
    if (!socket) return;
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    if (code !== undefined && socket.readyState !== undefined && socket.readyState < 2) {
      try {
        socket.close(code, reason);
      } catch {
        // already closing
      }
    }
  }

  private _clear(name: TimerName): void {
    const handle = this._timer[name];
    if (handle === null) return;
    if (name === 'heartbeat') this._timers.clearInterval(handle);
    else this._timers.clearTimeout(handle);
    this._timer[name] = null;
  }

  // --- events -------------------------------------------------------------------------------------

  private _setStatus(status: Status): void {
    if (status === this.status) return;
    const previous = this.status;
    this.status = status;
    this._emit('status', { status, previous });
  }

  private _emit<K extends UpdatesEventName>(name: K, detail: UpdatesEventMap[K]): void {
    const hook = this.options[HOOKS[name]] as ((detail: UpdatesEventMap[K]) => void) | undefined;
    if (typeof hook === 'function') {
      try {
        hook(detail);
      } catch (error) {
        console.error(`@records/client: ${HOOKS[name]} threw`, error);
      }
    }
    this.emit(name, detail);
  }
}
