/**
 * Reference client for `/ws/updates/` — a dependency-free ES module any SPA can import:
 *
 *   import { UpdatesClient, invalidationKeys } from '/static/realtime/updates-client.js';
 *
 * It speaks the protocol of docs/realtime.md: ticket handshake with a
 * `?token=` fallback, per-unit `seq` with resume (`last_seq`), de-duplication and gap detection,
 * `resync_required`, the token refreshed on the open socket before it expires (`refresh` /
 * `refreshed`), the close codes 4001/4002 (refresh the token, reconnect) and 4003 (sign out),
 * reconnection with exponential backoff and full jitter, and a ping/pong heartbeat that notices a
 * dead connection. docs/client.md is the user guide.
 *
 * The pure logic (backoff, seq bookkeeping, message unpacking, close-code policy, invalidation map)
 * is exported on its own so it can be unit tested without a socket (tests/js/).
 */

export const STATUS = Object.freeze({ LIVE: 'live', SYNCING: 'syncing', OFFLINE: 'offline' });

export const CLOSE_CODES = Object.freeze({
  NORMAL: 1000,
  CLIENT_RECONNECT: 4000, // ours: the client drops a socket itself (heartbeat timeout, gap, reconnect())
  AUTH_FAILED: 4001,
  TOKEN_EXPIRED: 4002,
  ACCESS_REVOKED: 4003,
  TOO_SLOW: 4008,
  TOO_MANY_CONNECTIONS: 4029,
  TRY_AGAIN_LATER: 1013,
});

export const DEFAULTS = Object.freeze({
  maxAttempts: 10, // the seed: "up to 10 attempts with exponential backoff"
  baseDelayMs: 1000,
  maxDelayMs: 30000,
  heartbeatMs: 30000, // the seed's 30 s ping
  heartbeatTimeoutMs: 10000, // no message at all this long after a ping: the connection is dead
  connectTimeoutMs: 15000, // no `connection_established` this long after opening: try again
  batch: false,
  presence: false, // `presence=1`: the unit's online users (onPresence) and this tab's activity (setViewing, ...)
  filter: null, // a subscription filter from the start: {entities, ids, mine} (see subscribe())
  activityFeed: false, // `activity=1`: who did what, each update's audit entry (onActivity)
  useTicket: true,
  // Before the connection's token expires (the greeting's `expires_at`), send a new one on the open
  // socket (`refresh`), from the `refreshToken` hook (else `getToken`): the socket never has to close
  // 4002 and reconnect. Sent refreshAheadMs before the expiry, or halfway there for a shorter token.
  refreshOnSocket: true,
  refreshAheadMs: 60000,
  refreshRetryMs: 5000, // the server could not check the token just then (`refresh_unavailable`)
  apiBase: '',
  ticketPath: '/api/auth/ws-ticket/',
  wsPath: '/ws/updates/',
});

// --- pure logic ---------------------------------------------------------------------------------

/** The upper bound of the delay before reconnect attempt `attempt` (0-based): base·2^attempt, capped. */
export function backoffCeiling(attempt, { baseDelayMs = DEFAULTS.baseDelayMs, maxDelayMs = DEFAULTS.maxDelayMs } = {}) {
  return Math.min(maxDelayMs, baseDelayMs * 2 ** Math.max(0, attempt));
}

/**
 * "Full jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter"): a uniform delay in
 * [0, ceiling), so a thousand clients dropped by one server restart do not come back in lockstep.
 */
export function backoffDelay(attempt, { random = Math.random, ...bounds } = {}) {
  return Math.floor(random() * backoffCeiling(attempt, bounds));
}

/**
 * Per-unit sequence bookkeeping. `lastSeq` is the last seq this client has seen (delivered or
 * skipped by a resync); it survives reconnects and is sent back as `last_seq`.
 */
export class SeqTracker {
  constructor(lastSeq = null, epoch = null) {
    this.lastSeq = Number.isInteger(lastSeq) ? lastSeq : null;
    // Which numbering `lastSeq` counts in (the stream's epoch); sent back with `last_seq`.
    this.epoch = typeof epoch === 'string' && epoch ? epoch : null;
  }

  /** `connection_established`: a fresh client starts at the unit's current seq. A resuming client
   *  keeps its own: the server replays from there (or says `resync_required`, `epoch_changed`
   *  among its reasons). A client that knew no epoch adopts the greeting's. */
  established(seq, epoch) {
    if (this.lastSeq === null && Number.isInteger(seq)) this.lastSeq = seq;
    if (this.epoch === null && typeof epoch === 'string' && epoch) this.epoch = epoch;
  }

  /** Start from a list's watermark (`X-Records-Seq`, `X-Records-Epoch`): the first connection
   *  resumes after it, so it applies exactly the changes the list does not show. With several
   *  lists, the smallest seq (an update is for a list only when its seq is above that list's). */
  joinList(seq, epoch) {
    if (!Number.isInteger(seq) || seq < 0) return;
    if (this.lastSeq === null || seq < this.lastSeq) this.lastSeq = seq;
    if (typeof epoch === 'string' && epoch) this.epoch = epoch;
  }

  /** The verdict for an update's seq: 'deliver' (the next one), 'duplicate' (seen before; replays
   *  overlap live delivery by design) or 'gap' (something in between was missed). A `filtered`
   *  client skips the updates its filter leaves out, so any later seq is the next one for it. */
  accept(seq, { filtered = false } = {}) {
    if (!Number.isInteger(seq)) return 'deliver'; // a seed-era server without seq: nothing to track
    if (this.lastSeq === null || seq === this.lastSeq + 1 || (filtered && seq > this.lastSeq)) {
      this.lastSeq = seq;
      return 'deliver';
    }
    return seq <= this.lastSeq ? 'duplicate' : 'gap';
  }

  /** `resync_required`: the client refetches everything over REST and continues from `seq`, in
   *  `epoch` (the greeting's, or the message's own when the epoch changed under a live socket). */
  resync(seq, epoch) {
    if (Number.isInteger(seq)) this.lastSeq = seq;
    if (typeof epoch === 'string' && epoch) this.epoch = epoch;
  }
}

/** The `data_update`s a message carries, in order (`data_update_batch` unpacked). */
export function unpackUpdates(message) {
  if (!message || typeof message !== 'object') return [];
  if (message.type === 'data_update') return [message];
  if (message.type === 'data_update_batch' && Array.isArray(message.updates)) return message.updates;
  return [];
}

/** What a close code asks of the client: 'refresh' the token, 'signout', 'stop' (4029: the user
 *  already has too many connections; retrying would only be refused again), or plain 'reconnect'
 *  (with backoff: 1013 try again later, 4008 too slow, 1006, ...). */
export function closeAction(code) {
  if (code === CLOSE_CODES.AUTH_FAILED || code === CLOSE_CODES.TOKEN_EXPIRED) return 'refresh';
  if (code === CLOSE_CODES.ACCESS_REVOKED) return 'signout';
  if (code === CLOSE_CODES.TOO_MANY_CONNECTIONS) return 'stop';
  return 'reconnect';
}

/** How long after `now` (ms) to send the open socket a new token, for a connection whose token
 *  expires at `expiresAt` (the server's ISO 8601 UTC): `aheadMs` before then, or halfway there when
 *  less than twice that is left. Null when there is no usable expiry (a server without it). */
export function refreshDelay(expiresAt, now, aheadMs = DEFAULTS.refreshAheadMs) {
  const expires = typeof expiresAt === 'string' ? Date.parse(expiresAt) : NaN;
  if (Number.isNaN(expires)) return null;
  const left = Math.max(0, expires - now);
  return Math.max(0, left - Math.min(aheadMs, left / 2));
}

/** The WebSocket URL: credentials (ticket preferred), `last_seq` when resuming, `batch=1` and
 *  `presence=1` on request, and the subscription filter (so a resume replays only what matches). */
export function buildSocketUrl(base, { ticket, token, lastSeq, epoch, batch, presence, filter, activity } = {}) {
  const url = new URL(base);
  for (const name of ['ticket', 'token', 'last_seq', 'epoch', 'batch', 'presence', 'activity', 'entities', 'ids', 'mine']) {
    url.searchParams.delete(name);
  }
  if (ticket) url.searchParams.set('ticket', ticket);
  else if (token) url.searchParams.set('token', token);
  if (Number.isInteger(lastSeq)) url.searchParams.set('last_seq', String(lastSeq));
  if (Number.isInteger(lastSeq) && epoch) url.searchParams.set('epoch', epoch);
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

/**
 * A subscription filter as the server takes it: any of `entities` (non-empty list of entity
 * names), `ids` (1 to 100 record ids) and `mine` (boolean). Returns the normalized filter, or null
 * for "the whole unit" (no key set); throws a TypeError for anything the server would refuse.
 */
export function normalizeFilter(filter) {
  if (filter === null || filter === undefined) return null;
  if (typeof filter !== 'object' || Array.isArray(filter)) throw new TypeError('filter must be an object');
  const out = {};
  if (filter.entities !== undefined) {
    if (!Array.isArray(filter.entities) || filter.entities.length === 0
      || !filter.entities.every((e) => ENTITY_NAMES.includes(e))) {
      throw new TypeError(`filter.entities must be a non-empty list of ${ENTITY_NAMES.join(', ')}`);
    }
    out.entities = [...new Set(filter.entities)];
  }
  if (filter.ids !== undefined) {
    if (!Array.isArray(filter.ids) || filter.ids.length === 0 || filter.ids.length > FILTER_MAX_IDS
      || !filter.ids.every((id) => typeof id === 'string' && UUID_PATTERN.test(id))) {
      throw new TypeError(`filter.ids must hold 1 to ${FILTER_MAX_IDS} record ids (UUIDs)`);
    }
    out.ids = [...new Set(filter.ids.map((id) => id.toLowerCase()))];
  }
  if (filter.mine !== undefined) {
    if (typeof filter.mine !== 'boolean') throw new TypeError('filter.mine must be true or false');
    if (filter.mine) out.mine = true;
  }
  return Object.keys(out).length ? out : null;
}

const ENTITY_NAMES = ['withdrawal', 'destruction', 'transfer', 'sendback', 'crate'];
const UUID_PATTERN = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/**
 * The unit's online users, kept from `presence` (a snapshot) and `presence_update` (a delta)
 * messages: `apply(message)` returns true when the list changed; `users` is sorted by username.
 */
export class PresenceRoster {
  constructor() {
    this.byId = new Map();
  }

  apply(message) {
    if (!message || typeof message !== 'object') return false;
    if (message.type === 'presence' && Array.isArray(message.users)) {
      this.byId = new Map(message.users.filter((u) => u && u.id).map((u) => [u.id, u]));
      return true;
    }
    if (message.type === 'presence_update' && message.user && message.user.id) {
      if (message.state === 'left') return this.byId.delete(message.user.id);
      this.byId.set(message.user.id, message.user);
      return true;
    }
    return false;
  }

  clear() {
    this.byId.clear();
  }

  get users() {
    return [...this.byId.values()].sort((a, b) => String(a.username).localeCompare(String(b.username)));
  }

  /** Who else is viewing / editing a record: [{user, editing: boolean}]. */
  on(entity, id, { except = null } = {}) {
    const found = [];
    for (const user of this.byId.values()) {
      if (user.id === except) continue;
      const editing = Boolean(user.editing && user.editing.entity === entity && user.editing.id === id);
      const viewing = Boolean(user.viewing && user.viewing.entity === entity && user.viewing.id === id);
      if (editing || viewing) found.push({ user, editing });
    }
    return found;
  }
}

// The seed's React Query keys ("Cache Invalidation"), per entity.
const COMMON_KEYS = ['dashboard', 'summary'];
const REQUEST_KEYS = {
  withdrawal: ['withdrawal-requests', 'withdrawal-request'],
  destruction: ['destruction-requests', 'destruction-request'],
  transfer: ['transfer-requests', 'transfer-request'],
};

export const ALL_QUERY_KEYS = Object.freeze([
  ...REQUEST_KEYS.withdrawal, ...REQUEST_KEYS.destruction, ...REQUEST_KEYS.transfer,
  'sendback-records', 'crates', 'crate', ...COMMON_KEYS,
]);

/**
 * The React Query keys (first key element) an update makes stale. A send-back also touches its
 * request's lists (`data.request_entity`); an unknown entity invalidates everything, which is
 * always safe.
 */
export function invalidationKeys(update) {
  const entity = update && update.entity;
  if (REQUEST_KEYS[entity]) return [...REQUEST_KEYS[entity], ...COMMON_KEYS];
  if (entity === 'sendback') {
    const request = REQUEST_KEYS[update.data && update.data.request_entity] || [];
    return ['sendback-records', ...request, ...COMMON_KEYS];
  }
  if (entity === 'crate') return ['crates', 'crate', ...COMMON_KEYS];
  return [...ALL_QUERY_KEYS];
}

// --- the client ---------------------------------------------------------------------------------

const HOOKS = {
  status: 'onStatus',
  update: 'onUpdate',
  job: 'onJobUpdate',
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

// Notification ids remembered for de-duplication (a frame is never counted twice).
const NOTIFICATION_IDS_KEPT = 500;

function makeEvent(name, detail) {
  if (typeof CustomEvent === 'function') return new CustomEvent(name, { detail });
  const event = new Event(name);
  event.detail = detail;
  return event;
}

function defaultSocketBase(wsPath) {
  const { protocol, host } = globalThis.location;
  return `${protocol === 'https:' ? 'wss:' : 'ws:'}//${host}${wsPath}`;
}

/**
 * One connection to `/ws/updates/`, kept alive for as long as the page wants it.
 *
 * Events (an EventTarget; each also calls the matching `on…` option): `status` {status, previous},
 * `update` (a data_update), `job` (job_update's job), `resync` (resync_required), `signout`
 * {code, reason}, `close` {code, reason}, `gap` {expected, got}, `giveup` {attempts},
 * `servererror` (an `error` message), `notification` (a `notification` frame's notification, once
 * per id; `unreadNotifications` counts it), `refreshed` {expiresAt} (the open socket took a new
 * token), `message` (every parsed message).
 */
export class UpdatesClient extends EventTarget {
  constructor(options = {}) {
    super();
    this.options = { ...DEFAULTS, ...options };
    const o = this.options;
    this._WebSocket = o.WebSocket || globalThis.WebSocket;
    this._fetch = o.fetch || (globalThis.fetch ? globalThis.fetch.bind(globalThis) : null);
    this._random = o.random || Math.random;
    this._now = o.now || (() => Date.now());
    this._timers = o.timers || {
      setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
      clearTimeout: (handle) => globalThis.clearTimeout(handle),
      setInterval: (fn, ms) => globalThis.setInterval(fn, ms),
      clearInterval: (handle) => globalThis.clearInterval(handle),
    };
    this._token = typeof o.token === 'string' ? o.token : null;
    this._useRefreshed = false;
    this.tracker = new SeqTracker(o.lastSeq, o.epoch);
    this.status = STATUS.OFFLINE;
    this.attempt = 0; // reconnect attempts since the last live connection
    this._stopped = true;
    this._generation = 0; // bumped whenever a socket is abandoned; stale callbacks check it
    this._socket = null;
    this._live = false; // the current socket got `connection_established`
    this._gapStreak = 0; // gaps since the last delivered update
    this._timer = { reconnect: null, heartbeat: null, dead: null, connect: null, refresh: null };
    this.expiresAt = null; // when the live connection's token expires (the server's ISO 8601 UTC)
    this._filter = normalizeFilter(o.filter);
    this._jumpOnce = false; // after unsubscribe(): the next update may follow a filtered-out stretch
    this.roster = new PresenceRoster();
    this._activity = { type: 'idle' }; // this tab's presence, sent again after every reconnect
    // The user's unread notifications: the greeting's `unread_notifications` (null before the first
    // greeting), plus one for each unread `notification` frame since.
    this.unreadNotifications = null;
    this._notificationIds = new Set();
  }

  /** The subscription filter in force (null: the whole unit). */
  get filter() {
    return this._filter;
  }

  /** Only the matching updates from now on, and on every reconnect (its replay too). `filter` is
   *  any of {entities, ids, mine}; null or {} is the whole unit. Throws a TypeError for a filter
   *  the server would refuse. The client then sees seq jumps: they are not gaps. */
  subscribe(filter) {
    const normalized = normalizeFilter(filter);
    if (!normalized) return this.unsubscribe();
    this._filter = normalized;
    this._send({ type: 'subscribe', ...normalized });
    return this;
  }

  /** Back to the whole unit's stream. Updates left out while filtered are not replayed: refetch
   *  lists over REST if they matter. */
  unsubscribe() {
    if (this._filter) this._jumpOnce = true;
    this._filter = null;
    this._send({ type: 'unsubscribe' });
    return this;
  }

  /** `cb(message)` for each `activity` message ({type, entry, seq}: the audit entry of the update
   *  with that seq, right after it; needs `activityFeed: true`). Returns a function that unregisters. */
  onActivity(cb) {
    const listener = (event) => cb(event.detail);
    this.addEventListener('activity', listener);
    return () => this.removeEventListener('activity', listener);
  }

  /** `cb(notification)` for each `notification` frame ({id, kind, title, body, link: {entity, id},
   *  created_at, read}), once per id; `unreadNotifications` already counts it. Returns a function
   *  that unregisters. */
  onNotification(cb) {
    const listener = (event) => cb(event.detail);
    this.addEventListener('notification', listener);
    return () => this.removeEventListener('notification', listener);
  }

  /** Set the unread count after the app marked notifications read over REST (e.g. 0 after
   *  POST /api/notifications/read-all/); the next greeting brings the server's count again. */
  setUnreadNotifications(count) {
    this.unreadNotifications = Math.max(0, Number(count) || 0);
    return this;
  }

  /** `cb({users, update})` on every change of the unit's online users (needs `presence: true`);
   *  `update` is the presence_update (null for a snapshot). Returns a function that unregisters. */
  onPresence(cb) {
    const listener = (event) => cb(event.detail);
    this.addEventListener('presence', listener);
    return () => this.removeEventListener('presence', listener);
  }

  /** This tab is viewing a record (other users see it in presence). */
  setViewing(entity, id) {
    return this._setActivity({ type: 'viewing', entity, id });
  }

  /** This tab is editing a record (viewing it too). */
  setEditing(entity, id) {
    return this._setActivity({ type: 'editing', entity, id });
  }

  /** This tab is neither viewing nor editing a record. */
  setIdle() {
    return this._setActivity({ type: 'idle' });
  }

  _setActivity(activity) {
    if (activity.type !== 'idle') {
      if (!ENTITY_NAMES.includes(activity.entity) || typeof activity.id !== 'string' || !UUID_PATTERN.test(activity.id)) {
        throw new TypeError('presence needs an entity name and a record id (UUID)');
      }
    }
    const same = this._activity.type === activity.type && this._activity.entity === activity.entity
      && this._activity.id === activity.id;
    this._activity = activity;
    if (!same && this.options.presence) this._send(activity);
    return this;
  }

  /** Send a client message on the live socket; false when there is none (it goes on reconnect). */
  _send(message) {
    if (!this._socket || !this._live) return false;
    try {
      this._socket.send(JSON.stringify(message));
      return true;
    } catch (error) {
      return false; // about to close; the reconnect sends the state again
    }
  }

  get lastSeq() {
    return this.tracker.lastSeq;
  }

  /** Join the stream where a list left it, before `start()`: pass the list's `X-Records-Seq` and
   *  `X-Records-Epoch` (or the fetch Response itself). The connection then replays exactly the
   *  changes after the list, and none twice; an epoch that changed meanwhile answers `resync`. */
  joinList(seqOrResponse, epoch) {
    if (seqOrResponse && typeof seqOrResponse === 'object' && seqOrResponse.headers) {
      const headers = seqOrResponse.headers;
      const seq = Number.parseInt(headers.get('X-Records-Seq'), 10);
      return this.joinList(Number.isNaN(seq) ? null : seq, headers.get('X-Records-Epoch'));
    }
    this.tracker.joinList(seqOrResponse, epoch);
    return this;
  }

  /** Connect (status `syncing` until the server greets us, then `live`). */
  start() {
    if (!this._stopped) return this;
    this._stopped = false;
    this.attempt = 0;
    this._setStatus(STATUS.SYNCING);
    this._open();
    return this;
  }

  /** Close for good (sign-out, page teardown): status `offline`, no reconnection. */
  stop() {
    this._stopped = true;
    this._abandon(CLOSE_CODES.NORMAL, 'client stopped');
    this._setStatus(STATUS.OFFLINE);
  }

  /** Try again now with a fresh attempt budget (a "Reconnect" button, the browser's `online` event). */
  reconnect() {
    this._stopped = false;
    this.attempt = 0;
    this._abandon(CLOSE_CODES.CLIENT_RECONNECT, 'reconnect');
    this._setStatus(STATUS.SYNCING);
    this._open();
  }

  // --- connecting ---------------------------------------------------------------------------------

  async _open() {
    const generation = ++this._generation;
    const url = await this._socketUrl();
    if (generation !== this._generation || this._stopped) return; // stopped or superseded meanwhile
    let socket;
    try {
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

  async _socketUrl() {
    const o = this.options;
    let token = await this._currentToken();
    let credentials = token ? { token } : {};
    if (o.useTicket && token && this._fetch) {
      let answer = await this._fetchTicket(token);
      if (answer.status === 401) {
        // The access token ran out (a tab that slept): refresh it now rather than let the
        // handshake fail with 4001.
        const fresh = await this._refreshedToken();
        if (fresh) {
          token = fresh;
          credentials = { token };
          answer = await this._fetchTicket(fresh);
        }
      }
      if (answer.ticket) credentials = { ticket: answer.ticket }; // otherwise the seed's ?token= still works
    }
    const base = o.url || defaultSocketBase(o.wsPath);
    return buildSocketUrl(base, {
      ...credentials, lastSeq: this.tracker.lastSeq, epoch: this.tracker.epoch, batch: o.batch, presence: o.presence,
      filter: this._filter,
      activity: o.activityFeed,
    });
  }

  async _currentToken() {
    if (this._useRefreshed) {
      this._useRefreshed = false;
      return this._token;
    }
    if (typeof this.options.getToken === 'function') {
      try {
        const token = await this.options.getToken();
        if (token) this._token = token;
      } catch (error) {
        // keep the last token we had: the handshake will tell (4001) if it is no good
      }
    }
    return this._token;
  }

  /** `{ticket, status}`: the ticket, or null and the HTTP status (null for a network error). */
  async _fetchTicket(token) {
    const o = this.options;
    try {
      const init = { method: 'POST', headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' } };
      if (typeof AbortSignal !== 'undefined' && AbortSignal.timeout) init.signal = AbortSignal.timeout(o.connectTimeoutMs);
      const response = await this._fetch(`${o.apiBase}${o.ticketPath}`, init);
      if (!response.ok) return { ticket: null, status: response.status };
      const body = await response.json();
      return { ticket: typeof body.ticket === 'string' ? body.ticket : null, status: response.status };
    } catch (error) {
      return { ticket: null, status: null };
    }
  }

  /** The new access token from the `refreshToken` hook, or null if there is none. */
  async _refreshedToken() {
    if (typeof this.options.refreshToken !== 'function') return null;
    try {
      const token = await this.options.refreshToken();
      if (!token) return null;
      this._token = token;
      return token;
    } catch (error) {
      return null;
    }
  }

  _opened(generation) {
    if (generation !== this._generation) return;
    this._timer.heartbeat = this._timers.setInterval(() => this._ping(generation), this.options.heartbeatMs);
  }

  // --- receiving ----------------------------------------------------------------------------------

  _received(generation, raw) {
    if (generation !== this._generation) return;
    this._clear('dead'); // any message at all proves the connection alive
    let message;
    try {
      message = JSON.parse(raw);
    } catch (error) {
      return;
    }
    this._emit('message', message);
    switch (message.type) {
      case 'connection_established':
        this._clear('connect');
        this.tracker.established(message.seq, message.epoch);
        this._greetingEpoch = typeof message.epoch === 'string' ? message.epoch : null;
        // Every unread notification committed before the greeting (frames follow only for later ones).
        if (Number.isInteger(message.unread_notifications)) this.unreadNotifications = message.unread_notifications;
        this._live = true;
        this._expiring(generation, message.expires_at);
        this.attempt = 0;
        // The filter went in the URL; this tab's activity starts over on every connection.
        if (this.options.presence && this._activity.type !== 'idle') this._send(this._activity);
        this._setStatus(STATUS.LIVE);
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
            return this._gap(update.seq);
          }
        }
        break;
      case 'resync_required':
        // `epoch_changed` is a resync like any other: refetch, continue from `seq` in the new epoch.
        this.tracker.resync(message.seq, message.epoch || this._greetingEpoch);
        this._emit('resync', message);
        break;
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
        // Carries the seq of the update it describes (already counted): no gap check, no seq of its own.
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
    return undefined;
  }

  /** `counted`: a resume's frame for one the greeting's count already includes. */
  _notification(notification, counted = false) {
    if (!notification || typeof notification.id !== 'string' || this._notificationIds.has(notification.id)) return;
    this._notificationIds.add(notification.id);
    if (this._notificationIds.size > NOTIFICATION_IDS_KEPT) {
      this._notificationIds.delete(this._notificationIds.values().next().value);
    }
    if (!notification.read && !counted) this.unreadNotifications = (this.unreadNotifications || 0) + 1;
    this._emit('notification', notification);
  }

  /** Another tab of this user read some (`ids`) or `all` notifications: the count follows. */
  _notificationRead(message) {
    if (message.all) this.unreadNotifications = 0;
    else if (Array.isArray(message.ids) && this.unreadNotifications !== null) {
      this.unreadNotifications = Math.max(0, this.unreadNotifications - message.ids.length);
    }
    this._emit('notificationread', { ids: Array.isArray(message.ids) ? message.ids : [], all: Boolean(message.all) });
  }

  /** A seq jumped: drop this socket and resume from the last seq we have; the server replays.
   *  The first gap reconnects at once; a second one before anything was delivered backs off. */
  _gap(got) {
    this._emit('gap', { expected: this.tracker.lastSeq + 1, got });
    this._abandon(CLOSE_CODES.CLIENT_RECONNECT, 'seq gap');
    if (this._stopped) return;
    this._setStatus(STATUS.SYNCING);
    this._gapStreak += 1;
    if (this._gapStreak > 1) this._scheduleReconnect();
    else this._open();
  }

  // --- the token, refreshed on the open socket ------------------------------------------------------

  /** The live connection's token expires at `expiresAt`: send a new one before then. */
  _expiring(generation, expiresAt) {
    this.expiresAt = typeof expiresAt === 'string' ? expiresAt : null;
    this._clear('refresh');
    if (!this.options.refreshOnSocket) return;
    const delay = refreshDelay(this.expiresAt, this._now(), this.options.refreshAheadMs);
    if (delay === null) return; // a server that does not say: the 4002 close and reconnect still work
    this._timer.refresh = this._timers.setTimeout(() => this._refreshOnSocket(generation), delay);
  }

  async _refreshOnSocket(generation) {
    this._timer.refresh = null;
    if (generation !== this._generation || !this._live) return;
    // A new access token (the refreshToken hook); without that hook, whatever getToken has now.
    const token = typeof this.options.refreshToken === 'function' ? await this._refreshedToken() : await this._currentToken();
    if (generation !== this._generation || !token) return; // no token: the server closes 4002 at expiry, as before
    // `refreshed` re-arms the timer; a token the server refuses closes the socket 4001 (refresh, reconnect).
    this._send({ type: 'refresh', token });
  }

  _retryRefresh(generation) {
    if (!this.options.refreshOnSocket || this._timer.refresh !== null) return;
    this._timer.refresh = this._timers.setTimeout(() => this._refreshOnSocket(generation), this.options.refreshRetryMs);
  }

  // --- heartbeat ----------------------------------------------------------------------------------

  _ping(generation) {
    if (generation !== this._generation || !this._socket) return;
    try {
      this._socket.send(JSON.stringify({ type: 'ping', timestamp: new Date().toISOString() }));
    } catch (error) {
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
  _deadConnection(generation, reason) {
    if (generation !== this._generation) return;
    this._abandon(CLOSE_CODES.CLIENT_RECONNECT, reason);
    this._emit('close', { code: CLOSE_CODES.CLIENT_RECONNECT, reason });
    if (this._stopped) return;
    this._setStatus(STATUS.SYNCING);
    this._scheduleReconnect();
  }

  // --- closing ------------------------------------------------------------------------------------

  _dropped(generation, code, reason) {
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
      this._refreshThenReconnect(code, reason, wasLive);
      return;
    }
    this._scheduleReconnect();
  }

  async _refreshThenReconnect(code, reason, wasLive) {
    const generation = this._generation;
    const token = await this._refreshedToken();
    if (generation !== this._generation || this._stopped) return;
    if (!token) {
      this._signOut({ code, reason: 'token refresh failed' });
      return;
    }
    this._useRefreshed = true;
    // A live connection whose token ran out (4002) comes straight back; a handshake refused even
    // so (4001 again) goes through the backoff, so a token the server keeps refusing cannot spin.
    if (wasLive) this._open();
    else this._scheduleReconnect();
  }

  _scheduleReconnect() {
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
      if (!this._stopped) this._open();
    }, delay);
  }

  _signOut(detail) {
    this._stopped = true;
    this._abandon();
    this._setStatus(STATUS.OFFLINE);
    this._emit('signout', detail);
  }

  /** Forget the current socket (closing it if still open) and every timer. */
  _abandon(code, reason) {
    this._generation += 1;
    for (const name of Object.keys(this._timer)) this._clear(name);
    const socket = this._socket;
    this._socket = null;
    this._live = false;
    if (!socket) return;
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    if (code !== undefined && socket.readyState !== undefined && socket.readyState < 2) {
      try {
        socket.close(code, reason);
      } catch (error) {
        // already closing
      }
    }
  }

  _clear(name) {
    const handle = this._timer[name];
    if (handle === null) return;
    if (name === 'heartbeat') this._timers.clearInterval(handle);
    else this._timers.clearTimeout(handle);
    this._timer[name] = null;
  }

  // --- events -------------------------------------------------------------------------------------

  _setStatus(status) {
    if (status === this.status) return;
    const previous = this.status;
    this.status = status;
    this._emit('status', { status, previous });
  }

  _emit(name, detail) {
    const hook = this.options[HOOKS[name]];
    if (typeof hook === 'function') {
      try {
        hook(detail);
      } catch (error) {
        console.error(`updates-client: ${HOOKS[name]} threw`, error);
      }
    }
    this.dispatchEvent(makeEvent(name, detail));
  }
}
