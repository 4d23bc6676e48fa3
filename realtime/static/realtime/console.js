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

function toast(message, kind = 'error') {
  const node = el('div', { class: `toast toast--${kind}`, role: 'alert' }, message);
  $('toasts').append(node);
  setTimeout(() => node.remove(), 6000);
}

function errorText(error) {
  if (error instanceof ApiError) return error.message;
  return 'The server cannot be reached.';
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
  feed: [],
};

const canDecide = () => ['approver', 'admin'].includes(state.me.role);
const canStore = () => ['store', 'admin'].includes(state.me.role);
const canResubmit = () => ['requester', 'admin'].includes(state.me.role);
// A superuser has no unit and acts on every unit's rows.
const isOwn = (row) => !state.me.unit || row.unit === state.me.unit.id;

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
    actions.push(
      actionButton('Approve', `approve-${row.id}`, busy, () => decide(row, 'approve'), 'btn--approve'),
      actionButton('Reject', `reject-${row.id}`, busy, () => decide(row, 'reject'), 'btn--danger'),
      actionButton('Send back', `send-back-${row.id}`, busy, () => decide(row, 'send_back')),
    );
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
    el('td', { class: 'actions' }, busy ? el('span', { class: 'working' }, 'Working…') : actions),
  );
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
    el('td', { class: 'actions' }, busy ? el('span', { class: 'working' }, 'Working…') : actions),
  );
}

function actionButton(label, testid, disabled, onclick, variant = '') {
  return el('button', { type: 'button', class: `btn btn--small ${variant}`, testid, disabled, onclick }, label);
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
  await submitJob(row.id, `${ACTION_LABEL[action]} ${row.request_number}`, 'requests', () =>
    api(`/api/${row.kind}-requests/${row.id}/${ACTION_PATH[action]}/`, {
      method: 'POST', body: { version: row.version, ...(reason ? { reason } : {}) },
    }));
}

async function relocate(crate) {
  const location = await ask({ title: `Relocate ${crate.crate_number}`, label: 'New location', value: crate.location });
  if (location === null || location === crate.location) return;
  await submitJob(crate.id, `Relocate ${crate.crate_number}`, 'crates', () =>
    api(`/api/crates/${crate.id}/relocate/`, { method: 'POST', body: { location, version: crate.version } }));
}

async function submitJob(targetId, label, listName, call) {
  state.busyTargets.add(targetId);
  refreshRendering(listName);
  try {
    const { job } = await call();
    trackJob(job, { label, target: targetId, list: listName });
  } catch (error) {
    state.busyTargets.delete(targetId);
    refreshRendering(listName);
    toast(`${label}: ${errorText(error)}`);
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
    toast(`${entry.label} failed: ${error.message || error.code || 'see the job for details'}`);
  }
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

function renderJob(id) {
  const { job, label } = state.jobs.get(id);
  const { total, processed, failed, percent } = jobProgress(job);
  const node = el('li', { class: `job job--${job.status}`, testid: `job-${id}`, 'data-status': job.status },
    el('div', { class: 'job-head' },
      el('span', { class: 'job-label' }, label),
      pill(job.status, `job-status-${id}`)),
    progressBar(percent, `job-progress-${id}`),
    el('div', { class: 'job-counts muted' }, `${processed} of ${total} processed · ${failed} failed`));
  const existing = $(`job-${id}`);
  if (existing) existing.replaceWith(node);
  else $('jobs').prepend(node);
  $('jobs-empty').hidden = true;
  if (id === state.bulkJobId) renderBulkProgress(job);
}

function progressBar(percent, testid) {
  const bar = el('div', { class: 'progress-bar' });
  bar.style.width = `${percent}%`;
  return el('div', { class: 'progress', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': String(percent), testid }, bar);
}

function renderBulkProgress(job) {
  const { total, processed, failed, percent } = jobProgress(job);
  $('bulk-job').hidden = false;
  const bar = $('bulk-progress');
  bar.setAttribute('aria-valuenow', String(percent));
  bar.dataset.status = job.status;
  bar.querySelector('.progress-bar').style.width = `${percent}%`;
  bar.classList.toggle('progress--failed', job.status === 'failed');
  $('bulk-progress-text').textContent = `${STATUS_LABEL[job.status] || job.status}: ${processed} of ${total} processed, ${failed} failed`;
}

// --- bulk form --------------------------------------------------------------------------------------

function bulkIds() {
  return $('bulk-ids').value.split(/[\s,;]+/).map((s) => s.trim()).filter(Boolean);
}

async function selectAllPending() {
  const entity = $('bulk-entity').value;
  const ids = [];
  let url = `/api/${entity}-requests/?status=pending&page_size=500`;
  try {
    while (url && ids.length < 20000) {
      const page = await api(url);
      ids.push(...page.results.filter(isOwn).map((r) => r.id));
      url = page.next ? new URL(page.next, location.href).pathname + new URL(page.next, location.href).search : null;
    }
    $('bulk-ids').value = ids.join('\n');
    showBulkError(ids.length ? '' : `No pending ${entity} requests.`);
  } catch (error) {
    showBulkError(errorText(error));
  }
}

function showBulkError(message) {
  $('bulk-error').textContent = message;
  $('bulk-error').hidden = !message;
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
    const { job } = await api('/api/bulk-actions/', { method: 'POST', body: { entity, action, ids, ...(reason ? { reason } : {}) } });
    state.bulkJobId = job.id;
    trackJob(job, { label: `${ACTION_LABEL[action]} ${ids.length} ${entity} request${ids.length === 1 ? '' : 's'}`, target: null, list: 'requests' });
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
    el('span', { class: 'feed-what' }, `${update.entity} ${label} ${update.action}`),
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
