// The live console (served at `/`): a small, framework-free client of the public API, kept current by
// updates-client.js. Lists refetch themselves (debounced) on every data_update of their entity; jobs
// follow job_update messages and, as a fallback, GET /api/jobs/{id}/.
//
// Test hooks (tests/browser): `window.realtimeStats` counts what the realtime client delivered, and
// `window.CONSOLE_OPTIONS` (set before the page loads) overrides the timings below.
import { STATUS, UpdatesClient } from './updates-client.js';

const OPTIONS = {
  debounceMs: 150, // coalesce a burst of updates into one refetch per list
  jobPollLiveMs: 5000, // job polling while job_update messages flow (a safety net only)
  jobPollOfflineMs: 1500, // job polling while the socket is down
  feedSize: 20,
  client: {}, // passed on to UpdatesClient (baseDelayMs, maxDelayMs, heartbeatMs, ...)
  ...(window.CONSOLE_OPTIONS || {}),
};

const KINDS = ['withdrawal', 'destruction', 'transfer'];
const KIND_LABEL = { withdrawal: 'Withdrawal', destruction: 'Destruction', transfer: 'Transfer' };
const STATUS_LABEL = {
  pending: 'Pending', approved: 'Approved', rejected: 'Rejected', sent_back: 'Sent back',
  in_storage: 'In storage', withdrawn: 'Withdrawn', in_transit: 'In transit', destroyed: 'Destroyed',
  queued: 'Queued', running: 'Running', succeeded: 'Succeeded', failed: 'Failed',
};
const BADGE_TEXT = { [STATUS.LIVE]: 'Live', [STATUS.SYNCING]: 'Syncing', [STATUS.OFFLINE]: 'Offline' };
// How the history panel words an audit entry's action ("Approved by …").
const ACTION_WORDS = {
  created: 'Created', updated: 'Updated', relocated: 'Relocated', deleted: 'Deleted', approved: 'Approved',
  rejected: 'Rejected', sent_back: 'Sent back', resubmitted: 'Resubmitted', withdrawn: 'Withdrawn',
  destroyed: 'Destroyed', transferred: 'Transferred out', received: 'Received',
};
const FIELD_LABEL = {
  crate_number: 'crate number', destruction_due: 'destruction due', destination_unit: 'destination unit',
};
// Why ids of a bulk job failed, as its summary counts them.
const OUTCOME_LABEL = {
  four_eyes: 'filed by you: four eyes', stale_version: 'changed since you saw them', not_found: 'not found',
  invalid_transition: 'no longer in a status that allows it', crate_unavailable: 'crates not available',
  permission_denied: 'not allowed for your role', reason_required: 'reason missing',
};
const FOUR_EYES_TEXT = 'You filed this request: someone else decides (four eyes)';
const TERMINAL_JOB = new Set(['succeeded', 'failed']);
// Which list an update's entity makes stale.
const LIST_OF_ENTITY = { withdrawal: 'requests', destruction: 'requests', transfer: 'requests', sendback: 'requests', crate: 'crates' };

const stats = {
  updates: 0, byEntity: {}, jobUpdates: 0, resyncs: 0, gaps: 0, closes: [], refreshes: 0, statuses: [],
  fetches: { requests: 0, crates: 0 }, lastSeq: null, status: STATUS.OFFLINE,
};
window.realtimeStats = stats;

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

// --- tokens and the API -----------------------------------------------------------------------------

const tokens = {
  get access() { return sessionStorage.getItem('records.access'); },
  get refresh() { return sessionStorage.getItem('records.refresh'); },
  save({ access, refresh }) {
    if (access) sessionStorage.setItem('records.access', access);
    if (refresh) sessionStorage.setItem('records.refresh', refresh);
  },
  clear() {
    sessionStorage.removeItem('records.access');
    sessionStorage.removeItem('records.refresh');
  },
};

class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.message || body.detail)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

let refreshing = null;

/** One refresh at a time, however many callers (API 401s, the socket's 4001/4002) ask at once. */
function refreshAccess() {
  if (!refreshing) {
    refreshing = (async () => {
      const refresh = tokens.refresh;
      if (!refresh) throw new ApiError(401, { message: 'Not signed in.' });
      const response = await fetch('/api/auth/token/refresh/', {
        method: 'POST', headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ refresh }),
      });
      const body = await response.json().catch(() => null);
      if (!response.ok || !body || !body.access) throw new ApiError(response.status, body);
      tokens.save(body); // a rotating refresh token comes back too
      stats.refreshes += 1;
      return body.access;
    })().finally(() => { refreshing = null; });
  }
  return refreshing;
}

async function api(path, { method = 'GET', body } = {}, retried = false) {
  const headers = { Accept: 'application/json', Authorization: `Bearer ${tokens.access}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401 && !retried) {
    try {
      await refreshAccess();
    } catch (error) {
      signOut('Your session has ended. Please sign in again.');
      throw error;
    }
    return api(path, { method, body }, true);
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// --- small DOM helpers ------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'testid') node.dataset.testid = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child !== undefined && child !== null && child !== false) node.append(child);
  }
  return node;
}

const pill = (status, testid) => el('span', { class: `pill pill--${status}`, testid }, STATUS_LABEL[status] || status);

function when(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  const today = new Date().toDateString() === date.toDateString();
  return today
    ? date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false })
    : date.toLocaleDateString([], { year: 'numeric', month: 'short', day: 'numeric' });
}

/** A moment as the history shows it: local date and time, UTC on hover. */
function timeEl(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  const local = date.toLocaleString([], {
    year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false,
  });
  const utc = `${date.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
  return el('time', { datetime: iso, title: utc, class: 'nowrap' }, local);
}

function toast(message, kind = 'error', ms = 6000) {
  const node = el('div', { class: `toast toast--${kind}`, role: 'alert' }, message);
  $('toasts').append(node);
  setTimeout(() => node.remove(), ms);
}

function errorCode(error) {
  return error instanceof ApiError && error.body ? error.body.code : undefined;
}

function errorText(error) {
  if (errorCode(error) === 'four_eyes') return 'you filed this request, so someone else must decide on it (four eyes).';
  if (error instanceof ApiError) return error.message;
  return 'The server cannot be reached.';
}

/** Every page of a cursor-paginated list, following `next` (same origin, path and query only). */
async function* pages(url, maxPages = 50) {
  for (let n = 0; url && n < maxPages; n += 1) {
    const page = await api(url);
    yield page;
    url = page.next ? samePath(page.next) : null;
  }
}

function samePath(link) {
  const url = new URL(link, location.href);
  return url.pathname + url.search;
}

// --- audit entries, in words ------------------------------------------------------------------------

const actorName = (actor = {}) => actor.full_name || actor.username || 'someone';

function actorLabel(actor = {}) {
  return actor.role ? `${actorName(actor)} (${actor.role})` : actorName(actor);
}

function valueText(field, value) {
  if (value === null || value === undefined || value === '') return '—';
  if (Array.isArray(value)) return value.length ? value.map((v) => valueText(field, v)).join(', ') : '—';
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  if (field === 'status') return STATUS_LABEL[value] || String(value);
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/** `{field: [old, new]}` as "field: old → new" lines (a value set on creation: "field: new"). */
function changeLines(changes, action) {
  return Object.entries(changes || {}).map(([field, pair]) => {
    const [before, after] = Array.isArray(pair) ? pair : [undefined, pair];
    const label = FIELD_LABEL[field] || field.replace(/_/g, ' ');
    const isNew = action === 'created' && (before === null || before === undefined);
    return { field, label, before: isNew ? null : valueText(field, before), after: valueText(field, after) };
  });
}

const changeText = ({ label, before, after }) => (before === null ? `${label}: ${after}` : `${label}: ${before} → ${after}`);

/** One entry as a sentence: "north.requester updated it: crates: A → A, B — reason given: forgot one". */
function entrySentence(entry) {
  const verb = (ACTION_WORDS[entry.action] || entry.action).toLowerCase();
  let text = `${actorName(entry.actor)} ${verb} it`;
  const lines = changeLines(entry.changes, entry.action);
  if (lines.length) text += `: ${lines.map(changeText).join('; ')}`;
  if (entry.reason) text += ` — reason given: ${entry.reason}`;
  return text;
}

function jobRef(jobId) {
  const mine = state.jobs.get(jobId);
  return el('span', { class: 'history-job', 'data-job': jobId, title: `Job ${jobId}` },
    'via job ', el('span', { class: 'mono' }, jobId.slice(0, 8)), mine ? ` (${mine.label})` : '');
}

function historyEntry(entry) {
  const actor = entry.actor || {};
  const lines = changeLines(entry.changes, entry.action);
  return el('li', { class: 'history-entry', testid: 'history-entry', 'data-action': entry.action },
    el('div', { class: 'history-head' },
      el('span', { class: 'history-what' },
        el('strong', {}, ACTION_WORDS[entry.action] || entry.action), ' by ',
        el('span', { class: 'history-who', title: actor.full_name ? actor.username : null }, actorName(actor)),
        actor.role ? el('span', { class: 'muted' }, ` (${actor.role})`) : ''),
      timeEl(entry.at)),
    lines.length
      ? el('ul', { class: 'history-changes' }, lines.map((line) => el('li', {},
        el('span', { class: 'history-field' }, `${line.label}: `),
        line.before === null ? '' : [el('span', { class: 'history-old' }, line.before), ' → '],
        el('span', { class: 'history-new' }, line.after))))
      : '',
    entry.reason ? el('p', { class: 'history-reason' }, el('span', { class: 'muted' }, 'Reason: '), entry.reason) : '',
    entry.job_id ? el('p', { class: 'history-meta muted' }, jobRef(entry.job_id)) : '',
  );
}

// --- the history panel ------------------------------------------------------------------------------

let historyOpen = null; // {testid of the button that opened it, generation}

const historyPath = (record) => (record.kind === 'crate'
  ? `/api/crates/${record.id}/history/?page_size=200`
  : `/api/${record.kind}-requests/${record.id}/history/?page_size=200`);

/** Open the panel on one record's audit entries, oldest first, every page. */
async function openHistory(record) {
  const dialog = $('history-panel');
  const generation = (historyOpen ? historyOpen.generation : 0) + 1;
  historyOpen = { record, returnTo: `history-${record.id}`, generation };
  $('history-title').textContent = `History of ${record.number}`;
  const list = $('history-list');
  list.replaceChildren();
  list.dataset.recordId = record.id;
  delete list.dataset.loaded;
  const status = $('history-state');
  status.textContent = 'Loading…';
  if (!dialog.open) dialog.showModal();
  let count = 0;
  try {
    for await (const page of pages(historyPath(record))) {
      if (!historyOpen || historyOpen.generation !== generation) return;
      list.append(...page.results.map(historyEntry));
      count += page.results.length;
    }
    if (!historyOpen || historyOpen.generation !== generation) return;
    status.textContent = count ? `${count} entr${count === 1 ? 'y' : 'ies'}, oldest first.` : 'No entries yet.';
    list.dataset.loaded = String(count);
  } catch (error) {
    if (historyOpen && historyOpen.generation === generation) status.textContent = `Could not load the history: ${errorText(error)}`;
  }
}

/** A change to the record whose history is open: read it again (its audit entry committed with it). */
function historyHeard(update) {
  const { data = {} } = update;
  if (historyOpen && [data.id, data.request_id].includes(historyOpen.record.id)) openHistory(historyOpen.record);
}

function closedHistory() {
  const returnTo = historyOpen && historyOpen.returnTo;
  historyOpen = null;
  // The row may have been redrawn meanwhile: focus its History button as it is now.
  const button = returnTo && $(returnTo);
  if (button) button.focus();
}

// --- stale decisions explained ----------------------------------------------------------------------

/** Tell who changed a record since the version the user saw, and what (audit entries since then). */
function explainStale({ label, number, history, currentVersion }) {
  const dialog = $('stale-dialog');
  const returnTo = document.activeElement;
  $('stale-title').textContent = `${number} changed since you saw it`;
  const items = (history || []).map((entry) => el('li', { testid: 'stale-change' },
    entrySentence(entry), entry.at ? [' · ', timeEl(entry.at)] : ''));
  $('stale-changes').replaceChildren(...(items.length ? items : [el('li', {}, 'It was changed by someone else.')]));
  $('stale-next').textContent = `${label}: not done. The list now shows ${number} as it is`
    + `${currentVersion ? ` (version ${currentVersion})` : ''}: check it and try again.`;
  dialog.addEventListener('close', () => {
    if (returnTo && returnTo.isConnected) returnTo.focus();
  }, { once: true });
  if (!dialog.open) dialog.showModal();
}

/** Put the record as the server has it now into its list (from a 409's `details.current`). */
function replaceRow(listName, current) {
  if (!current || !current.id) return;
  if (listName === 'requests') {
    state.requests = state.requests.map((row) => (row.id === current.id ? { ...current, kind: row.kind } : row));
  } else {
    state.crates = state.crates.map((row) => (row.id === current.id ? current : row));
  }
  refreshRendering(listName);
}

/** The reason / location prompt: a real dialog rather than window.prompt. Resolves null on cancel. */
function ask({ title, label, value = '' }) {
  const dialog = $('prompt-dialog');
  const input = $('prompt-input');
  $('prompt-title').textContent = title;
  $('prompt-label').textContent = label;
  input.value = value;
  return new Promise((resolve) => {
    const cancel = $('prompt-cancel');
    const onCancel = () => dialog.close('cancel');
    cancel.addEventListener('click', onCancel, { once: true });
    dialog.addEventListener('close', () => {
      cancel.removeEventListener('click', onCancel);
      const text = input.value.trim();
      resolve(dialog.returnValue === 'ok' && text ? text : null);
    }, { once: true });
    dialog.returnValue = '';
    dialog.showModal();
    input.focus();
  });
}

// --- state ------------------------------------------------------------------------------------------

const state = {
  me: null,
  units: new Map(), // id -> code, to name a transfer's other unit
  requests: [],
  requestsTotal: 0,
  crates: [],
  cratesTotal: 0,
  jobs: new Map(), // id -> {job, target, pollAt}
  unclaimedJobUpdates: new Map(), // job_update that beat the 202 answer to us: id -> [job, ...]
  busyTargets: new Set(), // request / crate ids with a job in flight
  bulkJobId: null,
  bulkSeen: null, // {entity, versions: Map id -> version} from "select all pending"
  feed: [],
};

const canDecide = () => ['approver', 'admin'].includes(state.me.role);
const canStore = () => ['store', 'admin'].includes(state.me.role);
const canResubmit = () => ['requester', 'admin'].includes(state.me.role);
// A superuser has no unit and acts on every unit's rows.
const isOwn = (row) => !state.me.unit || row.unit === state.me.unit.id;
// Four eyes: a request this user filed is someone else's to decide.
const filedByMe = (row) => Boolean(state.me && row.created_by) && String(row.created_by) === String(state.me.id);

// --- lists ------------------------------------------------------------------------------------------

const lists = {
  requests: { generation: 0, timer: null, dirty: false, load: loadRequests, render: renderRequests },
  crates: { generation: 0, timer: null, dirty: false, load: loadCrates, render: renderCrates },
};

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value) search.set(key, value);
  return search.toString();
}

async function loadRequests() {
  const kind = $('request-kind').value;
  const q = query({ search: $('request-search').value.trim(), status: $('request-status-filter').value, page_size: 50 });
  const kinds = kind ? [kind] : KINDS;
  const pages = await Promise.all(kinds.map((k) => api(`/api/${k}-requests/?${q}`)));
  const rows = pages.flatMap((page, i) => page.results.map((row) => ({ ...row, kind: kinds[i] })));
  rows.sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0));
  return { rows, total: pages.reduce((sum, page) => sum + page.count, 0) };
}

async function loadCrates() {
  const q = query({ search: $('crate-search').value.trim(), page_size: 50 });
  const page = await api(`/api/crates/?${q}`);
  return { rows: page.results, total: page.count };
}

/** Fetch a list now; a response that an even newer fetch overtook is dropped. */
async function refresh(name) {
  const list = lists[name];
  const generation = ++list.generation;
  stats.fetches[name] += 1;
  try {
    const result = await list.load();
    if (generation !== list.generation) return;
    list.dirty = false;
    $(`${name}-state`).textContent = '';
    list.render(result);
    $(`${name}-body`).dataset.loaded = String(generation);
  } catch (error) {
    if (generation !== list.generation) return;
    list.dirty = true; // fetched again as soon as the connection is back
    $(`${name}-state`).textContent = `Not updated: ${errorText(error)}`;
  }
}

function refreshSoon(name) {
  const list = lists[name];
  clearTimeout(list.timer);
  list.timer = setTimeout(() => refresh(name), OPTIONS.debounceMs);
}

function renderRequests({ rows, total }) {
  state.requests = rows;
  state.requestsTotal = total;
  const body = $('requests-body');
  body.replaceChildren(...rows.map(requestRow));
  $('requests-empty').hidden = rows.length > 0;
  $('request-count').textContent = rows.length < total ? `${rows.length} of ${total}` : `${total}`;
}

function requestRow(row) {
  const own = isOwn(row);
  const busy = state.busyTargets.has(row.id);
  const actions = [];
  if (own && row.status === 'pending' && canDecide()) {
    // Four eyes: whoever filed a request never decides on it; the buttons say why they are off.
    const mine = filedByMe(row);
    const off = busy || mine;
    const why = mine ? FOUR_EYES_TEXT : undefined;
    actions.push(
      actionButton('Approve', `approve-${row.id}`, off, () => decide(row, 'approve'), 'btn--approve', why),
      actionButton('Reject', `reject-${row.id}`, off, () => decide(row, 'reject'), 'btn--danger', why),
      actionButton('Send back', `send-back-${row.id}`, off, () => decide(row, 'send_back'), '', why),
    );
    if (mine) actions.push(el('span', { class: 'sr-only', testid: `four-eyes-${row.id}` }, FOUR_EYES_TEXT));
  }
  if (own && row.status === 'sent_back' && canResubmit()) {
    actions.push(actionButton('Resubmit', `resubmit-${row.id}`, busy, () => decide(row, 'resubmit')));
  }
  const kind = [KIND_LABEL[row.kind]];
  if (row.kind === 'transfer') {
    const other = own ? row.destination_unit : row.unit;
    kind.push(' ', el('span', { class: 'tag' }, `${own ? 'to' : 'from'} ${state.units.get(other) || 'another unit'}`));
  }
  return el('tr', { testid: `request-row-${row.id}`, 'data-kind': row.kind, 'data-status': row.status },
    el('td', { class: 'mono' }, row.request_number),
    el('td', { class: 'nowrap' }, kind),
    el('td', {}, pill(row.status, `request-status-${row.id}`)),
    el('td', { class: 'reason', title: row.decision_reason || row.reason || '' }, row.decision_reason || row.reason || ''),
    el('td', { class: 'num' }, String(row.crates.length)),
    el('td', { class: 'muted nowrap' }, when(row.updated_at)),
    el('td', { class: 'actions' }, busy ? el('span', { class: 'working' }, 'Working…') : actions,
      historyButton({ kind: row.kind, id: row.id, number: row.request_number })),
  );
}

function historyButton(record) {
  return el('button', {
    type: 'button', class: 'btn btn--small btn--ghost', testid: `history-${record.id}`,
    'aria-label': `History of ${record.number}`, 'aria-haspopup': 'dialog', onclick: () => openHistory(record),
  }, 'History');
}

function renderCrates({ rows, total }) {
  state.crates = rows;
  state.cratesTotal = total;
  $('crates-body').replaceChildren(...rows.map(crateRow));
  $('crates-empty').hidden = rows.length > 0;
  $('crate-count').textContent = rows.length < total ? `${rows.length} of ${total}` : `${total}`;
}

function crateRow(crate) {
  const busy = state.busyTargets.has(crate.id);
  const actions = canStore() && crate.status !== 'destroyed'
    ? [actionButton('Relocate', `relocate-${crate.id}`, busy, () => relocate(crate))]
    : [];
  return el('tr', { testid: `crate-row-${crate.id}`, 'data-status': crate.status },
    el('td', { class: 'mono' }, crate.crate_number),
    el('td', {}, pill(crate.status, `crate-status-${crate.id}`)),
    el('td', { testid: `crate-location-${crate.id}` }, crate.location || '—'),
    el('td', {}, crate.destruction_due || '—'),
    el('td', { class: 'muted nowrap' }, when(crate.updated_at)),
    el('td', { class: 'actions' }, busy ? el('span', { class: 'working' }, 'Working…') : actions,
      historyButton({ kind: 'crate', id: crate.id, number: crate.crate_number })),
  );
}

function actionButton(label, testid, disabled, onclick, variant = '', title = undefined) {
  return el('button', { type: 'button', class: `btn btn--small ${variant}`, testid, disabled, onclick, title }, label);
}

// --- actions and jobs -------------------------------------------------------------------------------

const ACTION_PATH = { approve: 'approve', reject: 'reject', send_back: 'send-back', resubmit: 'resubmit' };
const ACTION_LABEL = { approve: 'Approve', reject: 'Reject', send_back: 'Send back', resubmit: 'Resubmit' };

async function decide(row, action) {
  let reason;
  if (action === 'reject' || action === 'send_back') {
    reason = await ask({ title: `${ACTION_LABEL[action]} ${row.request_number}`, label: 'Reason' });
    if (reason === null) return;
  }
  const record = { kind: row.kind, id: row.id, number: row.request_number, version: row.version };
  await submitJob(row.id, `${ACTION_LABEL[action]} ${row.request_number}`, 'requests', () =>
    api(`/api/${row.kind}-requests/${row.id}/${ACTION_PATH[action]}/`, {
      method: 'POST', body: { version: row.version, ...(reason ? { reason } : {}) },
    }), record);
}

async function relocate(crate) {
  const location = await ask({ title: `Relocate ${crate.crate_number}`, label: 'New location', value: crate.location });
  if (location === null || location === crate.location) return;
  const record = { kind: 'crate', id: crate.id, number: crate.crate_number, version: crate.version };
  await submitJob(crate.id, `Relocate ${crate.crate_number}`, 'crates', () =>
    api(`/api/crates/${crate.id}/relocate/`, { method: 'POST', body: { location, version: crate.version } }), record);
}

async function submitJob(targetId, label, listName, call, record = null) {
  state.busyTargets.add(targetId);
  refreshRendering(listName);
  try {
    const { job } = await call();
    trackJob(job, { label, target: targetId, list: listName, record });
  } catch (error) {
    state.busyTargets.delete(targetId);
    refreshRendering(listName);
    const details = error instanceof ApiError && error.body ? error.body.details : null;
    if (errorCode(error) === 'stale_version' && record && details && typeof details === 'object') {
      // What the user saw is out of date: show the record as it is, and who changed what since.
      replaceRow(listName, details.current);
      explainStale({ label, number: record.number, history: details.history, currentVersion: details.current_version });
    } else {
      toast(`${label}: ${errorText(error)}`);
    }
  }
}

/** A job refused `stale_version` by the worker (the record changed after the check the POST ran):
 *  the same explanation, from the record's history since the version sent. */
async function explainStaleJob(entry) {
  const { record, label } = entry;
  try {
    const history = [];
    for await (const page of pages(historyPath(record))) history.push(...page.results.filter((e) => e.version > record.version));
    explainStale({ label, number: record.number, history });
  } catch (error) {
    toast(`${label}: ${record.number} changed since you saw it; the list shows it as it is now.`);
  }
}

function refreshRendering(listName) {
  if (listName === 'requests') renderRequests({ rows: state.requests, total: state.requestsTotal });
  else renderCrates({ rows: state.crates, total: state.cratesTotal });
}

function trackJob(job, meta) {
  state.jobs.set(job.id, { job, ...meta, pollAt: Date.now() + pollInterval() });
  renderJob(job.id);
  if (TERMINAL_JOB.has(job.status)) finishJob(job.id);
  const early = state.unclaimedJobUpdates.get(job.id) || [];
  state.unclaimedJobUpdates.delete(job.id);
  early.forEach(jobSeen);
}

function pollInterval() {
  return client && client.status === STATUS.LIVE ? OPTIONS.jobPollLiveMs : OPTIONS.jobPollOfflineMs;
}

/** Merge what we hear (job_update or a poll) without ever going backwards. */
function jobSeen(update) {
  const entry = state.jobs.get(update.id);
  if (!entry) {
    // A fast worker can report before the POST that queued the job has answered.
    const early = state.unclaimedJobUpdates.get(update.id) || [];
    state.unclaimedJobUpdates.set(update.id, [...early, update]);
    if (state.unclaimedJobUpdates.size > 50) state.unclaimedJobUpdates.delete(state.unclaimedJobUpdates.keys().next().value);
    return;
  }
  const current = entry.job;
  if (TERMINAL_JOB.has(current.status)) return;
  const progress = { ...current.progress, ...(update.progress || {}) };
  progress.done = Math.max(progress.done || 0, (current.progress || {}).done || 0);
  entry.job = { ...current, ...update, progress };
  renderJob(update.id);
  if (TERMINAL_JOB.has(entry.job.status)) finishJob(update.id);
}

function finishJob(id) {
  const entry = state.jobs.get(id);
  if (entry.finished) return;
  entry.finished = true;
  if (entry.target) {
    state.busyTargets.delete(entry.target);
    refreshRendering(entry.list);
  }
  if (entry.job.status === 'failed') {
    const error = entry.job.error || {};
    if (error.code === 'stale_version' && entry.record) explainStaleJob(entry);
    else if (error.code === 'four_eyes') toast(`${entry.label} failed: you filed this request, so someone else must decide on it (four eyes).`);
    else toast(`${entry.label} failed: ${error.message || error.code || 'see the job for details'}`);
  }
  if (entry.bulk && (entry.job.progress || {}).failed) loadFailures(id);
  // The data_update refetches the list; a job that changed nothing visible still deserves a fresh read.
  refreshSoon(entry.list || 'requests');
}

async function pollJobs() {
  const now = Date.now();
  for (const [id, entry] of state.jobs) {
    if (entry.finished || entry.polling || entry.pollAt > now) continue;
    entry.polling = true;
    try {
      // Progress only: a bulk job's per-id outcomes are not needed to draw its bar.
      jobSeen(await api(`/api/jobs/${id}/?outcomes=none`));
    } catch (error) {
      // the next poll tries again
    } finally {
      entry.polling = false;
      entry.pollAt = Date.now() + pollInterval();
    }
  }
}

/** How far a job got. A finished job is complete whatever its counts say (a refused single job
 *  reports done 0, failed 1; a bulk counts every id with an outcome, refused or not, as done). */
function jobProgress(job) {
  const { total = 0, done = 0, failed = 0 } = job.progress || {};
  const finished = TERMINAL_JOB.has(job.status);
  const processed = finished ? total : Math.min(total, done);
  let percent = 0;
  if (finished) percent = 100;
  else if (total) percent = Math.round((processed / total) * 100);
  return { total, processed, failed, percent };
}

/** Why a finished bulk job's ids failed, counted by code (four eyes, stale version, …). */
async function loadFailures(id) {
  const entry = state.jobs.get(id);
  try {
    const detail = await api(`/api/jobs/${id}/?outcomes=failed`);
    const counts = {};
    for (const outcome of Object.values((detail.result || {}).outcomes || {})) {
      const code = outcome.code || 'failed';
      counts[code] = (counts[code] || 0) + 1;
    }
    entry.failures = counts;
    renderJob(id);
  } catch (error) {
    // the summary keeps its plain count
  }
}

function failureText(failures) {
  const parts = Object.entries(failures || {}).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .map(([code, n]) => `${n} ${OUTCOME_LABEL[code] || code.replace(/_/g, ' ')}`);
  return parts.length ? ` (${parts.join('; ')})` : '';
}

function renderJob(id) {
  const { job, label, failures } = state.jobs.get(id);
  const { total, processed, failed, percent } = jobProgress(job);
  const node = el('li', { class: `job job--${job.status}`, testid: `job-${id}`, 'data-status': job.status },
    el('div', { class: 'job-head' },
      el('span', { class: 'job-label' }, label),
      pill(job.status, `job-status-${id}`)),
    progressBar(percent, `job-progress-${id}`),
    el('div', { class: 'job-counts muted', testid: `job-counts-${id}` },
      `${processed} of ${total} processed · ${failed} failed${failureText(failures)}`));
  const existing = $(`job-${id}`);
  if (existing) existing.replaceWith(node);
  else $('jobs').prepend(node);
  $('jobs-empty').hidden = true;
  if (id === state.bulkJobId) renderBulkProgress(job, failures);
}

function progressBar(percent, testid) {
  const bar = el('div', { class: 'progress-bar' });
  bar.style.width = `${percent}%`;
  return el('div', { class: 'progress', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': String(percent), testid }, bar);
}

function renderBulkProgress(job, failures) {
  const { total, processed, failed, percent } = jobProgress(job);
  $('bulk-job').hidden = false;
  const bar = $('bulk-progress');
  bar.setAttribute('aria-valuenow', String(percent));
  bar.dataset.status = job.status;
  bar.querySelector('.progress-bar').style.width = `${percent}%`;
  bar.classList.toggle('progress--failed', job.status === 'failed');
  $('bulk-progress-text').textContent = `${STATUS_LABEL[job.status] || job.status}: ${processed} of ${total} processed, ${failed} failed${failureText(failures)}`;
}

// --- bulk form --------------------------------------------------------------------------------------

function bulkIds() {
  return $('bulk-ids').value.split(/[\s,;]+/).map((s) => s.trim()).filter(Boolean);
}

/** Fill the ids with the unit's pending requests of the kind, remembering the version of each:
 *  the bulk job then refuses any that changed after this (what the approver saw). The user's own
 *  requests are left out (four eyes). */
async function selectAllPending() {
  const entity = $('bulk-entity').value;
  const versions = new Map();
  let skipped = 0;
  let url = `/api/${entity}-requests/?status=pending&page_size=500`;
  try {
    while (url && versions.size < 20000) {
      const page = await api(url);
      for (const row of page.results.filter(isOwn)) {
        if (filedByMe(row)) skipped += 1;
        else versions.set(String(row.id), row.version);
      }
      url = page.next ? samePath(page.next) : null;
    }
    state.bulkSeen = { entity, versions };
    $('bulk-ids').value = [...versions.keys()].join('\n');
    showBulkError(versions.size ? '' : `No pending ${entity} requests${skipped ? ' filed by someone else' : ''}.`);
    showBulkNote(skipped ? `Left out ${skipped} request${skipped === 1 ? '' : 's'} you filed (four eyes).` : '');
  } catch (error) {
    showBulkError(errorText(error));
  }
}

function showBulkError(message) {
  $('bulk-error').textContent = message;
  $('bulk-error').hidden = !message;
}

function showBulkNote(message) {
  $('bulk-note').textContent = message;
  $('bulk-note').hidden = !message;
}

/** The ids to send: those "select all pending" found go as items with the version seen, ids typed
 *  by hand (no version known) as plain ids. */
function bulkTargets(entity, ids) {
  const seen = state.bulkSeen && state.bulkSeen.entity === entity ? state.bulkSeen.versions : new Map();
  const items = [];
  const plain = [];
  for (const id of new Set(ids)) {
    if (seen.has(id)) items.push({ id, version: seen.get(id) });
    else plain.push(id);
  }
  return { ...(plain.length ? { ids: plain } : {}), ...(items.length ? { items } : {}) };
}

async function submitBulk(event) {
  event.preventDefault();
  const entity = $('bulk-entity').value;
  const action = $('bulk-action').value;
  const ids = bulkIds();
  const reason = $('bulk-reason').value.trim();
  if (!ids.length) return showBulkError('Give at least one request id, or select all pending.');
  if ((action === 'reject' || action === 'send_back') && !reason) return showBulkError('A reason is required to reject or send back.');
  showBulkError('');
  const submit = $('bulk-submit');
  submit.disabled = true;
  try {
    const body = { entity, action, ...bulkTargets(entity, ids), ...(reason ? { reason } : {}) };
    const { job } = await api('/api/bulk-actions/', { method: 'POST', body });
    state.bulkJobId = job.id;
    trackJob(job, { label: `${ACTION_LABEL[action]} ${ids.length} ${entity} request${ids.length === 1 ? '' : 's'}`, target: null, list: 'requests', bulk: true });
  } catch (error) {
    showBulkError(errorText(error));
  } finally {
    submit.disabled = false;
  }
}

// --- the realtime connection ------------------------------------------------------------------------

let client = null;

function setBadge(status) {
  const badge = $('status-badge');
  badge.textContent = BADGE_TEXT[status];
  badge.dataset.status = status;
  badge.className = `badge badge--${status}`;
  $('reconnect').hidden = status !== STATUS.OFFLINE || !state.me;
}

function addToFeed(update) {
  const { data = {} } = update;
  state.feed.unshift(update);
  state.feed.length = Math.min(state.feed.length, OPTIONS.feedSize);
  const label = data.request_number || data.crate_number || data.id;
  $('feed').prepend(el('li', { class: 'feed-item', 'data-seq': String(update.seq ?? '') },
    el('span', { class: 'feed-seq mono' }, update.seq ? `#${update.seq}` : ''),
    el('span', { class: 'feed-what' }, `${update.entity} ${label} ${update.action}`,
      data.actor ? el('span', { class: 'feed-by muted', testid: 'feed-actor' }, ` by ${data.actor}`) : ''),
    data.status ? pill(data.status) : '',
  ));
  while ($('feed').children.length > OPTIONS.feedSize) $('feed').lastElementChild.remove();
  $('feed-empty').hidden = true;
}

function showSeq() {
  stats.lastSeq = client.lastSeq;
  $('last-seq').textContent = client.lastSeq === null ? '' : `seq ${client.lastSeq}`;
}

function startRealtime() {
  client = new UpdatesClient({
    getToken: () => tokens.access,
    refreshToken: refreshAccess,
    batch: true,
    ...OPTIONS.client,
    onStatus: ({ status }) => {
      stats.status = status;
      stats.statuses.push(status);
      setBadge(status);
      if (status === STATUS.LIVE) {
        showSeq();
        for (const name of Object.keys(lists)) if (lists[name].dirty) refresh(name);
      }
    },
    onUpdate: (update) => {
      stats.updates += 1;
      stats.byEntity[update.entity] = (stats.byEntity[update.entity] || 0) + 1;
      showSeq();
      addToFeed(update);
      historyHeard(update);
      const list = LIST_OF_ENTITY[update.entity];
      if (list) refreshSoon(list);
      else Object.keys(lists).forEach(refreshSoon);
    },
    onResync: () => {
      // The server could not replay what we missed: refetch everything, once.
      stats.resyncs += 1;
      Object.keys(lists).forEach(refreshSoon);
    },
    onGap: () => { stats.gaps += 1; },
    onClose: ({ code }) => { stats.closes.push(code); },
    onJobUpdate: (job) => {
      stats.jobUpdates += 1;
      jobSeen(job);
    },
    onSignOut: ({ code }) => {
      signOut(code === 4003 ? 'Your access to this unit has ended.' : 'Your session has ended. Please sign in again.');
    },
  });
  window.consoleClient = client;
  client.start();
}

// --- session ----------------------------------------------------------------------------------------

function showLogin(message = '') {
  $('login').hidden = false;
  $('workspace').hidden = true;
  $('session').hidden = true;
  $('login-error').textContent = message;
  $('login-error').hidden = !message;
  $('login-username').focus();
}

async function showWorkspace() {
  state.me = await api('/api/me/');
  const { unit } = state.me;
  $('unit-name').textContent = unit ? `${unit.name} (${unit.code})` : 'All units';
  $('user-name').textContent = `${state.me.username} · ${state.me.role}`;
  $('login').hidden = true;
  $('workspace').hidden = false;
  $('session').hidden = false;
  $('bulk-card').hidden = !(canDecide() || canResubmit());
  for (const option of $('bulk-action').options) {
    option.disabled = option.value === 'resubmit' ? !canResubmit() : !canDecide();
  }
  const firstAllowed = [...$('bulk-action').options].find((option) => !option.disabled);
  if (firstAllowed) $('bulk-action').value = firstAllowed.value;
  startRealtime();
  try {
    state.units = new Map((await api('/api/units/')).map((u) => [u.id, u.code]));
  } catch (error) {
    // only used for labels
  }
  await Promise.all([refresh('requests'), refresh('crates')]);
}

function signOut(message = '') {
  if (client) {
    const old = client;
    client = null;
    old.stop();
  }
  tokens.clear();
  state.me = null;
  state.jobs.clear();
  state.bulkSeen = null;
  for (const name of ['history-panel', 'stale-dialog', 'prompt-dialog']) if ($(name).open) $(name).close();
  showBulkNote('');
  $('jobs').replaceChildren();
  $('feed').replaceChildren();
  setBadge(STATUS.OFFLINE);
  showLogin(message);
}

async function signIn(event) {
  event.preventDefault();
  const submit = $('login-submit');
  submit.disabled = true;
  try {
    const response = await fetch('/api/auth/token/', {
      method: 'POST', headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ username: $('login-username').value.trim(), password: $('login-password').value }),
    });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      showLogin(response.status === 401 ? 'Wrong username or password.' : errorText(new ApiError(response.status, body)));
      return;
    }
    tokens.save(body);
    $('login-password').value = '';
    await showWorkspace();
  } catch (error) {
    showLogin(errorText(error));
  } finally {
    submit.disabled = false;
  }
}

function wire() {
  $('login-form').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', () => signOut());
  $('reconnect').addEventListener('click', () => client && client.reconnect());
  window.addEventListener('online', () => client && client.status === STATUS.OFFLINE && client.reconnect());
  let searchTimer = null;
  for (const [input, list] of [['request-search', 'requests'], ['crate-search', 'crates']]) {
    $(input).addEventListener('input', () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => refresh(list), 250);
    });
  }
  $('request-kind').addEventListener('change', () => refresh('requests'));
  $('request-status-filter').addEventListener('change', () => refresh('requests'));
  $('bulk-form').addEventListener('submit', submitBulk);
  $('bulk-select-pending').addEventListener('click', selectAllPending);
  $('bulk-entity').addEventListener('change', () => showBulkNote(''));
  $('history-panel').addEventListener('close', closedHistory);
  setInterval(pollJobs, 500);
}

async function boot() {
  wire();
  if (!tokens.refresh) return showLogin();
  try {
    await showWorkspace();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) signOut();
    else showLogin(errorText(error));
  }
}

boot();
