// The live console (served at `/`): a small, framework-free client of the public API, kept current by
// the client kit's bundle (kit/records-client.js, built from clients/js). Lists refetch themselves (debounced) on every data_update of their entity; jobs
// follow job_update messages and, as a fallback, GET /api/jobs/{id}/.
//
// Test hooks (tests/browser): `window.realtimeStats` counts what the realtime client delivered, and
// `window.CONSOLE_OPTIONS` (set before the page loads) overrides the timings below.
import { STATUS, UpdatesClient } from './kit/records-client.js';
import { createBulk } from './console/bulk.js';
import { createForms } from './console/forms.js';
import { TERMINAL_JOB, jobProgress, shownStatus } from './console/jobs.js';

const OPTIONS = {
  debounceMs: 150, // coalesce a burst of updates into one refetch per list
  jobPollLiveMs: 5000, // job polling while job_update messages flow (a safety net only)
  jobPollOfflineMs: 1500, // job polling while the socket is down
  feedSize: 20,
  mineRefreshMs: 15000, // with "only mine" on, others' changes no longer come live: lists re-read this often
  client: {}, // passed on to UpdatesClient (baseDelayMs, maxDelayMs, heartbeatMs, ...)
  ...(window.CONSOLE_OPTIONS || {}),
};

const KINDS = ['withdrawal', 'destruction', 'transfer'];
const KIND_LABEL = { withdrawal: 'Withdrawal', destruction: 'Destruction', transfer: 'Transfer' };
const STATUS_LABEL = {
  pending: 'Pending', approved: 'Approved', rejected: 'Rejected', sent_back: 'Sent back',
  in_storage: 'In storage', withdrawn: 'Withdrawn', in_transit: 'In transit', destroyed: 'Destroyed',
  queued: 'Queued', running: 'Running', succeeded: 'Succeeded', failed: 'Failed',
  reserved: 'Reserved', partly_failed: 'Partly failed',
};
const BADGE_TEXT = { [STATUS.LIVE]: 'Live', [STATUS.SYNCING]: 'Syncing', [STATUS.OFFLINE]: 'Offline' };
// Every word for an action comes from the server, in the page (realtime/views.py renders it from
// backend/records/actions.py and the audit trail's vocabulary): no table of the console's own.
const VOCABULARY = JSON.parse(document.getElementById('vocabulary').textContent);
const spelling = (field) => Object.fromEntries(
  Object.values(VOCABULARY.actions).filter((a) => a[field]).map((a) => [a.name, a[field]]));
// How the history panel words an audit entry's action ("Approved by …").
const ENTRY_WORDS = VOCABULARY.entries;
// What each decision means when signed (the server checks the same pairs; Part 11 §11.50).
const MEANING = spelling('meaning');
const ACTION_PATH = spelling('path');
const ACTION_LABEL = spelling('label');
const DONE_WORD = spelling('notice');
const LOCKED_TEXT = 'signing is locked after too many wrong passwords. Ask a unit admin to unlock it.';
const FIELD_LABEL = {
  crate_number: 'crate number', destruction_due: 'destruction due', destination_unit: 'destination unit',
};
// Why ids of a bulk job failed, as its summary counts them.
const OUTCOME_LABEL = {
  four_eyes: 'filed or changed by you: four eyes', stale_version: 'changed since you saw them', not_found: 'not found',
  invalid_transition: 'no longer in a status that allows it', crate_unavailable: 'crates not available',
  permission_denied: 'not allowed for your role', reason_required: 'reason missing',
  duplicate: 'named twice', signature_invalid: 'signature not valid',
};
const outcomeText = (code) => OUTCOME_LABEL[code] || (code || 'failed').replace(/_/g, ' ');
const FOUR_EYES_TEXT = 'You filed this request: someone else decides (four eyes)';
const FOUR_EYES_CHANGED_TEXT = 'You changed this request: someone else decides (four eyes)';
// Which lists an update's entity makes stale: a request's change also changes which crates it
// reserves (filed, edited, decided, deleted), so the crates are read again too.
const LIST_OF_ENTITY = {
  withdrawal: ['requests', 'crates'], destruction: ['requests', 'crates'], transfer: ['requests', 'crates'],
  sendback: ['requests'], crate: ['crates'],
};

const stats = {
  updates: 0, byEntity: {}, jobUpdates: 0, resyncs: 0, gaps: 0, closes: [], refreshes: 0, socketRefreshes: 0,
  statuses: [],
  fetches: { requests: 0, crates: 0 }, auditFetches: 0, lastSeq: null, status: STATUS.OFFLINE,
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

/** A fetch with the access token; a 401 refreshes it and tries once more. */
async function authorized(path, { method = 'GET', body, accept = 'application/json' } = {}, retried = false) {
  const headers = { Accept: accept, Authorization: `Bearer ${tokens.access}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401 && !retried) {
    try {
      await refreshAccess();
    } catch (error) {
      signOut('Your session has ended. Please sign in again.');
      throw error;
    }
    return authorized(path, { method, body, accept }, true);
  }
  return response;
}

async function api(path, { method = 'GET', body } = {}) {
  const response = await authorized(path, { method, body });
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

// --- time, in the unit's time zone ------------------------------------------------------------------

// Times show in the unit's zone (`unit.timezone` of GET /api/me/, an IANA name; UTC without a unit),
// with the zone's short name; hovering one shows the moment in UTC.
const TIME_FORMATS = {
  full: { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23', timeZoneName: 'short' },
  time: { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' },
  date: { year: 'numeric', month: 'short', day: 'numeric' },
  zone: { hour: 'numeric', timeZoneName: 'short' },
};
const formatters = new Map();

function formatter(zone, kind) {
  const key = `${zone}|${kind}`;
  if (!formatters.has(key)) {
    // 'parts' reads a zone's wall clock as numbers: a fixed locale, whatever the user's.
    formatters.set(key, kind === 'parts'
      ? new Intl.DateTimeFormat('en-US', {
        timeZone: zone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23',
      })
      : new Intl.DateTimeFormat([], { timeZone: zone, ...TIME_FORMATS[kind] }));
  }
  return formatters.get(key);
}

function validZone(zone) {
  try {
    formatter(zone, 'zone');
    return true;
  } catch (error) {
    return false; // RangeError: a zone this browser does not know
  }
}

/** The zone times are shown in: the unit's, UTC when there is none (a superuser) or it is unknown. */
function unitZone() {
  const zone = state.me && state.me.unit && state.me.unit.timezone;
  return zone && validZone(zone) ? zone : 'UTC';
}

/** The zone's short name at a moment ("GMT+9", "CET", "EDT"): it changes with daylight saving. */
function zoneName(zone = unitZone(), date = new Date()) {
  const part = formatter(zone, 'zone').formatToParts(date).find((p) => p.type === 'timeZoneName');
  return part ? part.value : zone;
}

/** The zone's wall clock at a moment, as numbers. */
function wallClock(zone, ms) {
  const parts = Object.fromEntries(formatter(zone, 'parts').formatToParts(new Date(ms)).map((p) => [p.type, p.value]));
  return Date.UTC(Number(parts.year), Number(parts.month) - 1, Number(parts.day), Number(parts.hour) % 24, Number(parts.minute), Number(parts.second));
}

/** A `datetime-local` value ("2026-03-05T14:00"), read as a wall-clock time in `zone`, as ISO 8601 UTC. */
function zonedToIso(local, zone = unitZone()) {
  const match = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)(?::(\d\d))?/.exec(local || '');
  if (!match) return '';
  const [, y, mo, d, h, mi, sec] = match;
  const wall = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(sec || 0));
  // The zone's offset at the guess, then again at the result (a daylight-saving change in between).
  let ms = wall - (wallClock(zone, wall) - wall);
  ms = wall - (wallClock(zone, ms) - ms);
  return new Date(ms).toISOString();
}

const utcText = (date) => `${date.toISOString().slice(0, 19).replace('T', ' ')} UTC`;

/** A moment in a list cell: the time in the unit's zone if it was today there, else the date. */
function when(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  const zone = unitZone();
  const day = (d) => formatter(zone, 'date').format(d);
  const text = day(new Date()) === day(date) ? formatter(zone, 'time').format(date) : day(date);
  return el('time', { datetime: iso, title: `${formatter(zone, 'full').format(date)} · ${utcText(date)}` }, text);
}

/** A moment as the history and the audit trail show it: date and time in the unit's zone with the
 *  zone's short name, UTC on hover. */
function timeEl(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  return el('time', { datetime: iso, title: utcText(date), class: 'nowrap' }, formatter(unitZone(), 'full').format(date));
}

function toast(message, kind = 'error', ms = 6000) {
  const node = el('div', { class: `toast toast--${kind}`, role: 'alert' }, message);
  $('toasts').append(node);
  setTimeout(() => node.remove(), ms);
}

function errorCode(error) {
  return error instanceof ApiError && error.body ? error.body.code : undefined;
}

/** The server's four_eyes refusal, in the words of what the user did: filed it, or changed it since. */
function fourEyesText(details = {}) {
  const did = details && details.contributors === 'you changed it' ? 'changed' : 'filed';
  return `you ${did} this request, so someone else must decide on it (four eyes).`;
}

function errorText(error) {
  if (errorCode(error) === 'four_eyes') return fourEyesText(error.body.details);
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
  const verb = (ENTRY_WORDS[entry.action] || entry.action).toLowerCase();
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

const actionWords = (action) => ENTRY_WORDS[action] || (action.charAt(0).toUpperCase() + action.slice(1)).replace(/_/g, ' ');

/** A signature as Part 11 §11.50 wants it shown: "Signed: approved by Ada Approver (north.approver), <time>". */
function signatureLine(signature) {
  const who = signature.full_name ? `${signature.full_name} (${signature.signer})` : signature.signer;
  return ['Signed: ', el('strong', { class: 'signature-meaning' }, signature.meaning), ` by ${who}, `, timeEl(signature.signed_at)];
}

function historyEntry(entry) {
  const actor = entry.actor || {};
  const lines = changeLines(entry.changes, entry.action);
  return el('li', { class: 'history-entry', testid: 'history-entry', 'data-action': entry.action },
    el('div', { class: 'history-head' },
      el('span', { class: 'history-what' },
        el('strong', {}, ENTRY_WORDS[entry.action] || entry.action), ' by ',
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
    entry.signature ? el('p', { class: 'history-signature', testid: 'history-signature', 'data-signature': entry.signature.id },
      signatureLine(entry.signature)) : '',
    entry.job_id ? el('p', { class: 'history-meta muted' }, jobRef(entry.job_id)) : '',
  );
}

/** One of a request's signatures, and whether it still covers the record as it is. */
function signatureItem(signature) {
  const stale = signature.matches_record === false;
  return el('li', {
    class: `signature${stale ? ' signature--stale' : ''}`, testid: `signature-${signature.id}`,
    'data-meaning': signature.meaning, 'data-matches-record': String(!stale),
  },
  el('span', {}, signatureLine(signature), el('span', { class: 'muted' }, ` · version ${signature.version}`)),
  stale ? el('p', { class: 'signature-warning', testid: `signature-warning-${signature.id}` },
    'Warning: this signature no longer matches the record (changed after signing).') : '');
}

// --- the history panel ------------------------------------------------------------------------------

let historyOpen = null; // {testid of the button that opened it, generation}

const historyPath = (record) => (record.kind === 'crate'
  ? `/api/crates/${record.id}/history/?page_size=200`
  : `/api/${record.kind}-requests/${record.id}/history/?page_size=200`);

/** Open the panel on one record's audit entries, oldest first, every page. */
async function openHistory(record, returnTo = `history-${record.id}`) {
  const dialog = $('history-panel');
  const generation = (historyOpen ? historyOpen.generation : 0) + 1;
  historyOpen = { record, returnTo, generation };
  setActivity('viewing', record);
  $('history-title').textContent = `History of ${record.number}`;
  const list = $('history-list');
  list.replaceChildren();
  list.dataset.recordId = record.id;
  delete list.dataset.loaded;
  const status = $('history-state');
  status.textContent = 'Loading…';
  if (!dialog.open) dialog.showModal();
  loadSignatures(record, generation);
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

/** A request's signatures at the top of its history (GET /api/{kind}-requests/{id}/): who signed what
 *  meaning when, and a warning on one the record no longer matches (it changed after signing). */
async function loadSignatures(record, generation) {
  const box = $('history-signatures');
  if (box.dataset.recordId !== record.id) {
    box.replaceChildren();
    box.hidden = true;
    box.dataset.recordId = record.id;
  }
  if (!KINDS.includes(record.kind)) {
    box.hidden = true;
    return;
  }
  try {
    const request = await api(`/api/${record.kind}-requests/${record.id}/`);
    if (!historyOpen || historyOpen.generation !== generation) return;
    const signatures = request.signatures || [];
    box.replaceChildren(
      el('h4', {}, 'Electronic signatures'),
      signatures.length
        ? el('ul', { class: 'signature-list' }, signatures.map(signatureItem))
        : el('p', { class: 'muted', testid: 'history-no-signatures' }, 'Not signed yet.'),
    );
    box.hidden = false;
  } catch (error) {
    // A record no longer listed (deleted) has no detail: its entries still show.
    if (historyOpen && historyOpen.generation === generation) box.hidden = true;
  }
}

/** A change to the record whose history is open: read it again (its audit entry committed with it). */
function historyHeard(update) {
  const { data = {} } = update;
  if (historyOpen && [data.id, data.request_id].includes(historyOpen.record.id)) openHistory(historyOpen.record, historyOpen.returnTo);
}

function closedHistory() {
  const returnTo = historyOpen && historyOpen.returnTo;
  historyOpen = null;
  setActivity('viewing', null);
  // The row may have been redrawn meanwhile: focus its History button as it is now.
  const button = returnTo && $(returnTo);
  if (button) button.focus();
}

// --- stale decisions explained ----------------------------------------------------------------------

let staleList = null; // the list the stale dialog's Reload reads again

/** Tell who changed a record since the version the user saw, and what (audit entries since then). */
function explainStale({ label, number, history, currentVersion, listName = null }) {
  const dialog = $('stale-dialog');
  staleList = listName; // Reload (stale-reload) reads that list again
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

/** The signing dialog (21 CFR Part 11 §11.50, §11.200): what is signed, by whom, meaning what, the
 *  reason where the action takes one (`reasonMode` required | optional | fixed, the bulk form's
 *  `fixedReason` shown as text) and the signer's password. `attempt(signature, reason)` makes the
 *  signed call; the dialog stays open while it runs and, on a wrong password (403
 *  signature_invalid), shows the server's message with the reason kept. Resolves `{result}` once the
 *  call went through, `{error}` when it was refused otherwise (the dialog closed), `null` when
 *  cancelled. The password goes from the input into the request body only: never kept in state,
 *  logged or shown, and the input is emptied as soon as it is sent and whenever the dialog closes. */
function signDecision({ title, action, reasonMode, fixedReason = '', attempt, items = null }) {
  const dialog = $('sign-dialog');
  const form = $('sign-form');
  const password = $('sign-password');
  const reasonInput = $('sign-reason');
  const confirm = $('sign-confirm');
  const cancel = $('sign-cancel');
  const meaning = MEANING[action];
  const returnTo = document.activeElement;
  const showError = (message) => {
    $('sign-error').textContent = message;
    $('sign-error').hidden = !message;
  };
  $('sign-title').textContent = title;
  $('sign-manifest').textContent = `Signed by ${state.me.username} — meaning: ${meaning}`;
  $('sign-manifest').dataset.meaning = meaning;
  // A bulk decision lists exactly the requests it signs (what the check before it found).
  const shown = (items || []).slice(0, 200);
  $('sign-items').replaceChildren(...shown.map((item) => el('li', { class: 'mono', testid: 'sign-item' }, item)),
    ...(items && items.length > shown.length ? [el('li', { class: 'muted' }, `and ${items.length - shown.length} more`)] : []));
  $('sign-items-count').textContent = items ? `${items.length} request${items.length === 1 ? '' : 's'}, each signed:` : '';
  $('sign-items-box').hidden = !items;
  $('sign-fixed-reason').textContent = fixedReason ? `Reason: ${fixedReason}` : '';
  $('sign-fixed-reason').hidden = !(reasonMode === 'fixed' && fixedReason);
  $('sign-reason-label').hidden = reasonMode === 'fixed';
  $('sign-reason-caption').textContent = reasonMode === 'required' ? 'Reason (required)' : 'Reason (optional)';
  reasonInput.required = reasonMode === 'required';
  reasonInput.value = '';
  password.value = '';
  confirm.textContent = 'Sign';
  showError('');
  return new Promise((resolve) => {
    let busy = false;
    let outcome = null;
    const onSubmit = async (event) => {
      event.preventDefault();
      if (busy) return;
      const reason = reasonMode === 'fixed' ? undefined : reasonInput.value.trim();
      if (reasonMode === 'required' && !reason) {
        showError('Give a reason: it is kept in the audit trail.');
        reasonInput.focus();
        return;
      }
      busy = true;
      confirm.disabled = true;
      confirm.textContent = 'Signing…';
      showError('');
      const signature = { password: password.value, meaning };
      password.value = '';
      try {
        outcome = { result: await attempt(signature, reason) };
        dialog.close('signed');
      } catch (error) {
        if (errorCode(error) === 'signature_invalid') {
          showError(errorText(error));
          password.focus();
        } else {
          outcome = { error };
          dialog.close('refused');
        }
      } finally {
        busy = false;
        confirm.disabled = false;
        confirm.textContent = 'Sign';
      }
    };
    const onCancel = () => { if (!busy) dialog.close('cancel'); };
    const onEscape = (event) => { if (busy) event.preventDefault(); }; // not while the signed call runs
    form.addEventListener('submit', onSubmit);
    cancel.addEventListener('click', onCancel);
    dialog.addEventListener('cancel', onEscape);
    dialog.addEventListener('close', () => {
      password.value = '';
      form.removeEventListener('submit', onSubmit);
      cancel.removeEventListener('click', onCancel);
      dialog.removeEventListener('cancel', onEscape);
      if (returnTo && returnTo.isConnected) returnTo.focus();
      resolve(outcome);
    }, { once: true });
    dialog.returnValue = '';
    dialog.showModal();
    (reasonMode === 'required' ? reasonInput : password).focus();
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
// Four eyes: a request this user filed is someone else's to decide.
const filedByMe = (row) => Boolean(state.me && row.created_by) && String(row.created_by) === String(state.me.id);
/** Four eyes: the user filed the request or changed its content (the API's `contributed`), so
 *  someone else decides on it; the server refuses it either way (403 four_eyes). */
const contributedByMe = (row) => row.contributed === true || filedByMe(row);

// --- lists ------------------------------------------------------------------------------------------

const PAGE_SIZE = 50;
const API_MAX_PAGE_SIZE = 500; // the API's largest page (backend/common/pagination.py)
const lists = {
  requests: { generation: 0, timer: null, dirty: false, load: loadRequests, render: renderRequests, page: 1, pages: 1 },
  crates: { generation: 0, timer: null, dirty: false, load: loadCrates, render: renderCrates, page: 1, pages: 1 },
};

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value) search.set(key, value);
  return search.toString();
}

/** One page of a list (page numbers from 1); a page past the end (the list shrank) is empty. */
async function listPage(path, params, page) {
  try {
    return await api(`${path}?${query({ ...params, page_size: PAGE_SIZE, page: page > 1 ? page : '' })}`);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404 && page > 1)) throw error;
    // Past this list's end (the list shrank since its pages were counted): no rows, but its count.
    const first = await api(`${path}?${query({ ...params, page_size: 1 })}`);
    return { results: [], count: first.count };
  }
}

/** The first `n` rows of a list (its own order), read in pages of the API's largest, and its count. */
async function firstRows(path, params, n) {
  const rows = [];
  let count = 0;
  for (let page = 1; rows.length < n; page += 1) {
    const size = Math.min(n, API_MAX_PAGE_SIZE);
    const found = await api(`${path}?${query({ ...params, page_size: size, page: page > 1 ? page : '' })}`);
    rows.push(...found.results);
    count = found.count || 0;
    if (!found.next || rows.length >= count) break;
  }
  return { rows: rows.slice(0, n), count };
}

// The order the API lists requests in (`-created_at`, then `id`): the merge of all kinds keeps it.
const newestFirst = (a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1
  : String(a.id).localeCompare(String(b.id)));

/** The requests' current page. With all kinds it is rows (n-1)*P to n*P of the three lists merged
 *  newest first: no kind can put more than n*P rows on pages 1 to n, so each kind's first n*P rows
 *  are read, merged and cut (deep pages read more; the one-kind list reads one page). */
async function loadRequests() {
  const kind = $('request-kind').value;
  const params = { search: $('request-search').value.trim(), status: $('request-status-filter').value };
  const { page } = lists.requests;
  if (kind) {
    const found = await listPage(`/api/${kind}-requests/`, params, page);
    const total = found.count || 0;
    return { rows: found.results.map((row) => ({ ...row, kind })), total, pages: Math.max(1, Math.ceil(total / PAGE_SIZE)) };
  }
  const heads = await Promise.all(KINDS.map((k) => firstRows(`/api/${k}-requests/`, params, page * PAGE_SIZE)));
  const merged = heads.flatMap((head, i) => head.rows.map((row) => ({ ...row, kind: KINDS[i] }))).sort(newestFirst);
  const total = heads.reduce((sum, head) => sum + head.count, 0);
  return { rows: merged.slice((page - 1) * PAGE_SIZE, page * PAGE_SIZE), total, pages: Math.max(1, Math.ceil(total / PAGE_SIZE)) };
}

// The crate status filter: a status, or `available` (free for a new request) / `reserved` (in an open one).
function crateFilter() {
  const value = $('crate-status-filter').value;
  if (value === 'available') return { available: 'true' };
  if (value === 'reserved') return { reserved: 'true' };
  return { status: value };
}

async function loadCrates() {
  const page = await listPage('/api/crates/', { search: $('crate-search').value.trim(), ...crateFilter() }, lists.crates.page);
  const total = page.count || 0;
  return { rows: page.results, total, pages: Math.max(1, Math.ceil(total / PAGE_SIZE)) };
}

function renderPager(name, shown) {
  const list = lists[name];
  $(`${name}-page`).textContent = list.pages > 1 || list.page > 1 ? `Page ${list.page} of ${Math.max(list.pages, list.page)}` : '';
  $(`${name}-prev`).disabled = list.page <= 1;
  $(`${name}-next`).disabled = list.page >= list.pages || !shown;
}

/** Another page, or page 1 again (a filter changed). */
function turnPage(name, page) {
  lists[name].page = Math.max(1, page);
  refresh(name);
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
    list.pages = result.pages || 1;
    list.render(result);
    renderPager(name, result.rows.length);
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

/** Can this user take a bulk action on the row (so it gets a tick box)? */
function tickable(row) {
  if (!isOwn(row) || !state.me.unit) return false;
  if (row.status === 'pending') return canDecide() && !contributedByMe(row);
  return row.status === 'sent_back' && canResubmit();
}

/** The tick boxes follow the bulk box (a number typed or removed there ticks or unticks its row). */
function renderTicks() {
  for (const row of state.requests) {
    const box = $(`select-${row.id}`);
    if (box) box.checked = bulk.ticked(row);
  }
}

/** The requester's reason, and under it the decision's (reject, send back, approve) with its word. */
function reasonCell(row) {
  const decided = row.decision_reason
    ? el('span', { class: 'decision-reason', testid: `decision-reason-${row.id}` },
      el('span', { class: 'muted' }, `${STATUS_LABEL[row.status] || 'Decided'}: `), row.decision_reason)
    : '';
  return el('td', { class: 'reason', title: [row.reason, row.decision_reason].filter(Boolean).join('\n') },
    el('span', { testid: `request-reason-${row.id}` }, row.reason || ''), decided);
}

function requestRow(row) {
  const own = isOwn(row);
  const busy = state.busyTargets.has(row.id);
  const actions = [];
  if (own && row.status === 'pending' && canDecide()) {
    // Four eyes: whoever filed a request or changed it never decides on it; the buttons say why
    // they are off. (A change the list has not heard of yet is refused by the server: fourEyesText.)
    const mine = contributedByMe(row);
    const off = busy || mine;
    const why = mine ? (filedByMe(row) ? FOUR_EYES_TEXT : FOUR_EYES_CHANGED_TEXT) : undefined;
    actions.push(...Object.keys(MEANING).map((action) => actionButton(
      ACTION_LABEL[action], `${ACTION_PATH[action]}-${row.id}`, off, () => decide(row, action), `btn--${action}`, why)));
    if (mine) actions.push(el('span', { class: 'sr-only', testid: `four-eyes-${row.id}` }, why));
  }
  if (own && row.status === 'sent_back' && canResubmit()) {
    // Edited first if it needs to be (what the send-back asked for), then resubmitted.
    actions.push(
      actionButton('Edit', `edit-${row.id}`, busy, () => forms.openRequest(row)),
      actionButton(ACTION_LABEL.resubmit, `${ACTION_PATH.resubmit}-${row.id}`, busy, () => decide(row, 'resubmit')),
    );
  }
  const kind = [KIND_LABEL[row.kind]];
  if (row.kind === 'transfer') {
    const other = own ? row.destination_unit : row.unit;
    kind.push(' ', el('span', { class: 'tag' }, `${own ? 'to' : 'from'} ${state.units.get(other) || 'another unit'}`));
  }
  const tick = tickable(row)
    ? el('input', {
      type: 'checkbox', testid: `select-${row.id}`, 'aria-label': `Select ${row.request_number} for a bulk action`,
      checked: bulk.ticked(row), onchange: (event) => bulk.tick(row, event.target.checked),
    })
    : '';
  return el('tr', { testid: `request-row-${row.id}`, 'data-kind': row.kind, 'data-status': row.status },
    el('td', { class: 'select-col' }, tick),
    el('td', { class: 'mono' }, row.request_number, presenceBadge(row.kind, row.id)),
    el('td', { class: 'nowrap' }, kind),
    el('td', {}, pill(row.status, `request-status-${row.id}`)),
    reasonCell(row),
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
  // In storage but named in an open request: reserved, not free for another request.
  const reserved = crate.reserved && crate.status === 'in_storage';
  return el('tr', { testid: `crate-row-${crate.id}`, 'data-status': crate.status, 'data-reserved': String(Boolean(crate.reserved)) },
    el('td', { class: 'mono' }, crate.crate_number, presenceBadge('crate', crate.id)),
    el('td', { class: 'nowrap' }, pill(reserved ? 'reserved' : crate.status, `crate-status-${crate.id}`),
      reserved ? el('span', { class: 'muted reserved-by', testid: `crate-reserved-by-${crate.id}` }, ` in ${crate.reserved_by}`) : ''),
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

async function decide(row, action) {
  const label = `${ACTION_LABEL[action]} ${row.request_number}`;
  const record = { kind: row.kind, id: row.id, number: row.request_number, version: row.version };
  const post = (extra = {}) => startJob(row.id, label, 'requests', () =>
    api(`/api/${row.kind}-requests/${row.id}/${ACTION_PATH[action]}/`, {
      method: 'POST', body: { version: row.version, ...extra },
    }), record);
  if (!MEANING[action]) {
    // Resubmit is not a decision: it is not signed.
    try {
      await post();
    } catch (error) {
      jobRefused(error, { label, listName: 'requests', record });
    }
    return;
  }
  // A decision is signed: the dialog asks for the password (and the reason where one is needed).
  // While it is open, the unit's other consoles show this user editing the request.
  setActivity('editing', record);
  const outcome = await signDecision({
    title: label, action, reasonMode: action === 'approve' ? 'optional' : 'required',
    attempt: (signature, reason) => post({ ...(reason ? { reason } : {}), signature }),
  }).finally(() => setActivity('editing', null));
  if (outcome && outcome.error) jobRefused(outcome.error, { label, listName: 'requests', record });
}

async function relocate(crate) {
  setActivity('editing', { kind: 'crate', id: crate.id });
  const location = await ask({ title: `Relocate ${crate.crate_number}`, label: 'New location', value: crate.location })
    .finally(() => setActivity('editing', null));
  if (location === null || location === crate.location) return;
  const record = { kind: 'crate', id: crate.id, number: crate.crate_number, version: crate.version };
  await submitJob(crate.id, `Relocate ${crate.crate_number}`, 'crates', () =>
    api(`/api/crates/${crate.id}/relocate/`, { method: 'POST', body: { location, version: crate.version } }), record);
}

/** Queue a job on one record (its row shows "Working…" until the job ends). What the API refused is
 *  thrown, the row free again. */
async function startJob(targetId, label, listName, call, record = null) {
  state.busyTargets.add(targetId);
  refreshRendering(listName);
  try {
    const { job } = await call();
    trackJob(job, { label, target: targetId, list: listName, record });
    return job;
  } catch (error) {
    state.busyTargets.delete(targetId);
    refreshRendering(listName);
    throw error;
  }
}

async function submitJob(targetId, label, listName, call, record = null) {
  try {
    await startJob(targetId, label, listName, call, record);
  } catch (error) {
    jobRefused(error, { label, listName, record });
  }
}

/** Say why the API refused an action: a stale version explained, a locked signature, else the message. */
function jobRefused(error, { label, listName, record }) {
  const details = error instanceof ApiError && error.body ? error.body.details : null;
  if (errorCode(error) === 'stale_version' && record && details && typeof details === 'object') {
    // What the user saw is out of date: show the record as it is, and who changed what since.
    replaceRow(listName, details.current);
    explainStale({ label, number: record.number, history: details.history, currentVersion: details.current_version, listName });
  } else if (errorCode(error) === 'signature_locked') {
    toast(`${label}: not signed — ${LOCKED_TEXT}`, 'error', 12000);
  } else {
    toast(`${label}: ${errorText(error)}`);
  }
}

/** A job refused `stale_version` by the worker (the record changed after the check the POST ran):
 *  the same explanation, from the record's history since the version sent. */
async function explainStaleJob(entry) {
  const { record, label } = entry;
  try {
    const history = [];
    for await (const page of pages(historyPath(record))) history.push(...page.results.filter((e) => e.version > record.version));
    explainStale({ label, number: record.number, history, listName: entry.list });
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
    else if (error.code === 'four_eyes') toast(`${entry.label} failed: ${fourEyesText(error.details)}`);
    else toast(`${entry.label} failed: ${error.message || error.code || 'see the job for details'}`);
  }
  if (entry.bulk && (entry.job.progress || {}).failed) loadFailures(id);
  if (entry.bulk && id === state.bulkJobId) bulk.showResults(entry);
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
    .map(([code, n]) => `${n} ${outcomeText(code)}`);
  return parts.length ? ` (${parts.join('; ')})` : '';
}


function renderJob(id) {
  const { job, label, failures } = state.jobs.get(id);
  const { total, processed, failed, percent } = jobProgress(job);
  const status = shownStatus(job);
  const node = el('li', { class: `job job--${status}`, testid: `job-${id}`, 'data-status': status },
    el('div', { class: 'job-head' },
      el('span', { class: 'job-label' }, label),
      pill(status, `job-status-${id}`)),
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
  const status = shownStatus(job);
  bar.dataset.status = status;
  bar.querySelector('.progress-bar').style.width = `${percent}%`;
  bar.classList.toggle('progress--failed', status === 'failed');
  bar.classList.toggle('progress--partly', status === 'partly_failed');
  $('bulk-progress-text').textContent = `${STATUS_LABEL[status] || status}: ${processed} of ${total} processed, ${failed} failed${failureText(failures)}`;
}

// --- bulk form: console/bulk.js --------------------------------------------------------------------

// --- the audit trail page (approvers and unit admins) ----------------------------------------------

const audit = { generation: 0, timer: null, next: null, open: false, loaded: 0 };
const canAudit = () => ['approver', 'admin', 'qa'].includes(state.me.role);

/** The filters as the API takes them; since / until are wall-clock times in the unit's zone, sent in UTC. */
function auditFilters() {
  const zone = unitZone();
  return {
    entity: $('audit-entity').value,
    action: $('audit-action').value.trim(),
    actor: $('audit-actor').value.trim(),
    since: zonedToIso($('audit-since').value, zone),
    until: zonedToIso($('audit-until').value, zone),
  };
}

function showAudit(open) {
  audit.open = open;
  $('audit-page').hidden = !open;
  $('workspace').hidden = open;
  $('open-audit').setAttribute('aria-pressed', String(open));
  if (open) {
    const zone = unitZone();
    $('audit-zone').textContent = zoneName(zone) === zone ? `Times in ${zone}` : `Times in ${zone} (${zoneName(zone)})`;
    loadAudit();
    $('audit-entity').focus();
  } else {
    clearTimeout(audit.timer);
    audit.generation += 1; // a response still on its way is dropped
    $('open-audit').focus();
  }
}

/** The first page of entries for the filters (newest first), or with `more` the next page after those shown. */
async function loadAudit({ more = false } = {}) {
  if (more && !audit.next) return;
  const generation = ++audit.generation;
  const url = more ? audit.next : `/api/audit-trail/?${query({ ...auditFilters(), page_size: 50 })}`;
  stats.auditFetches += 1;
  $('audit-state').textContent = 'Loading…';
  $('audit-more').disabled = true;
  try {
    const page = await api(url);
    if (generation !== audit.generation) return;
    const body = $('audit-body');
    const rows = page.results.map(auditRow);
    if (more) body.append(...rows);
    else body.replaceChildren(...rows);
    audit.next = page.next ? samePath(page.next) : null;
    audit.loaded = body.children.length;
    $('audit-more').hidden = !audit.next;
    $('audit-empty').hidden = audit.loaded > 0;
    $('audit-count').textContent = `${audit.loaded} entr${audit.loaded === 1 ? 'y' : 'ies'}${audit.next ? ', more to load' : ''}`;
    $('audit-state').textContent = '';
    body.dataset.loaded = String(generation);
  } catch (error) {
    if (generation === audit.generation) $('audit-state').textContent = `Not updated: ${errorText(error)}`;
  } finally {
    if (generation === audit.generation) $('audit-more').disabled = false;
  }
}

/** An update while the page is open: its first page again, debounced like the lists. */
function auditHeard() {
  if (!audit.open) return;
  clearTimeout(audit.timer);
  audit.timer = setTimeout(() => loadAudit(), OPTIONS.debounceMs);
}

function auditRow(entry) {
  const actor = entry.actor || {};
  const lines = changeLines(entry.changes, entry.action);
  const record = entry.entity === 'crate' || KINDS.includes(entry.entity)
    ? el('a', {
      href: `#history-${entry.record_id}`, class: 'record-link mono', testid: `audit-record-${entry.id}`,
      title: `History of ${entry.record_number}`,
      onclick: (event) => {
        event.preventDefault();
        openHistory({ kind: entry.entity, id: entry.record_id, number: entry.record_number }, `audit-record-${entry.id}`);
      },
    }, entry.record_number)
    : el('span', { class: 'mono' }, entry.record_number || '—');
  return el('tr', {
    testid: `audit-row-${entry.id}`, class: 'audit-row', 'data-action': entry.action, 'data-entity': entry.entity,
    'data-record': entry.record_id,
  },
  el('td', {}, timeEl(entry.at)),
  el('td', { class: 'nowrap' }, el('span', { title: actor.full_name ? actor.username : null }, actorName(actor)),
    actor.role ? el('span', { class: 'muted' }, ` (${actor.role})`) : ''),
  el('td', { class: 'nowrap' }, actionWords(entry.action)),
  el('td', { class: 'nowrap' }, el('span', { class: 'muted' }, `${KIND_LABEL[entry.entity] || actionWords(entry.entity)} `), record),
  el('td', { class: 'audit-changes' }, lines.length ? lines.map(changeText).join('; ') : '—'),
  el('td', { class: 'audit-reason' }, entry.reason || '—'),
  el('td', { class: 'audit-signature' }, entry.signature ? signatureLine(entry.signature) : '—'),
  );
}

/** Download the trail the page shows (its filters) as CSV or NDJSON: fetched with the access token,
 *  then saved from a Blob under the name the server gives (Content-Disposition). */
async function exportAudit(format) {
  const button = $(`export-${format}`);
  button.disabled = true;
  try {
    const response = await authorized(`/api/audit-trail/export/?${query({ ...auditFilters(), format })}`, { accept: '*/*' });
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    const blob = await response.blob();
    const disposition = response.headers.get('Content-Disposition') || '';
    const match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition);
    const filename = match ? decodeURIComponent(match[1]) : `audit-trail.${format}`;
    const url = URL.createObjectURL(blob);
    const link = el('a', { href: url, download: filename, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    $('audit-state').textContent = '';
    $('audit-count').dataset.exported = filename;
  } catch (error) {
    toast(`Export ${format.toUpperCase()}: ${errorText(error)}`);
  } finally {
    button.disabled = false;
  }
}

// --- presence: who is online, who views or edits which record ------------------------------------

// What this tab tells the unit (docs/realtime.md "Presence"): the record whose history panel is open
// (viewing), the record a decision's signing dialog or the relocation prompt is about (editing).
const activity = { viewing: null, editing: null };
let mineTimer = null; // with "only mine" on: re-reads the lists (others' changes no longer come live)

/** `kind` 'viewing' | 'editing', `record` {kind, id} or null; sends what this tab now does. */
function setActivity(kind, record) {
  activity[kind] = record ? { kind: record.kind, id: String(record.id) } : null;
  if (!client) return;
  const { viewing, editing } = activity;
  try {
    if (editing) client.setEditing(editing.kind, editing.id);
    else if (viewing) client.setViewing(viewing.kind, viewing.id);
    else client.setIdle();
  } catch (error) {
    // a record the server would not take (not a UUID): presence is advisory, the console goes on
  }
}

const isMe = (user) => Boolean(state.me) && String(user.id) === String(state.me.id);

/** A record's number as the lists show it, for a title ("viewing WR-2026-0001"). */
function recordNumber(target) {
  if (!target) return '';
  const row = target.entity === 'crate'
    ? state.crates.find((c) => c.id === target.id)
    : state.requests.find((r) => r.id === target.id);
  return row ? (row.request_number || row.crate_number) : target.entity;
}

function presenceTitle(user) {
  let text = user.full_name ? `${user.full_name} (${user.username}, ${user.role})` : `${user.username} (${user.role})`;
  if (user.editing) text += ` · editing ${recordNumber(user.editing)}`;
  else if (user.viewing) text += ` · viewing ${recordNumber(user.viewing)}`;
  return text;
}

/** The unit's online users in the top bar (the signed-in user as "you", first), and the rows' badges. */
function renderPresence({ users }) {
  const ordered = [...users.filter(isMe), ...users.filter((user) => !isMe(user))];
  $('online-users').replaceChildren(...ordered.map((user) => el('li', {
    class: `online-user${isMe(user) ? ' online-user--me' : ''}`, testid: `online-${user.username}`,
    'data-user': user.username, 'data-state': user.editing ? 'editing' : user.viewing ? 'viewing' : 'idle',
    title: presenceTitle(user),
  }, isMe(user) ? 'you' : user.username)));
  stats.online = ordered.map((user) => user.username);
  renderPresenceBadges();
}

/** Who else views or edits a record: "north.requester is viewing", "a, b are editing; c is viewing". */
function presenceBadge(entity, id) {
  const slot = el('span', { class: 'presence-slot', 'data-entity': entity, 'data-record': id });
  const here = (client && state.me ? client.roster.on(entity, id).filter(({ user }) => !isMe(user)) : [])
    .sort((a, b) => String(a.user.username).localeCompare(String(b.user.username)));
  if (!here.length) return slot;
  const editors = here.filter((h) => h.editing).map(({ user }) => user);
  const viewers = here.filter((h) => !h.editing).map(({ user }) => user);
  const said = (people, verb) => `${people.map((u) => u.username).join(', ')} ${people.length > 1 ? 'are' : 'is'} ${verb}`;
  const text = [editors.length ? said(editors, 'editing') : '', viewers.length ? said(viewers, 'viewing') : ''].filter(Boolean).join('; ');
  slot.append(el('span', {
    class: `presence-badge presence-badge--${editors.length ? 'editing' : 'viewing'}`, testid: `presence-${id}`,
    'data-editing': editors.map((u) => u.username).join(' '), 'data-viewing': viewers.map((u) => u.username).join(' '),
    title: here.map(({ user }) => presenceTitle(user)).join('\n'),
  }, text));
  return slot;
}

function renderPresenceBadges() {
  for (const slot of document.querySelectorAll('.presence-slot')) {
    slot.replaceWith(presenceBadge(slot.dataset.entity, slot.dataset.record));
  }
}

/** "Only mine" (`only-mine`): the socket then carries only the user's own updates (`subscribe`
 *  {mine: true}), so the feed shows only those. Others' changes no longer refresh the lists live:
 *  while it is on, the lists are read again every `mineRefreshMs` and on every reconnect, and once
 *  more when it goes off (what the filter left out is not replayed). */
function setOnlyMine(on) {
  if (client) {
    if (on) client.subscribe({ mine: true });
    else client.unsubscribe();
  }
  $('only-mine-note').hidden = !on;
  clearInterval(mineTimer);
  mineTimer = null;
  if (on) mineTimer = setInterval(() => Object.keys(lists).forEach(refreshSoon), OPTIONS.mineRefreshMs);
  else if (client) Object.keys(lists).forEach(refreshSoon);
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

/** Who did what (an `activity` message, right after its update): "north.approver approved
 *  WR-2026-0042: signed, meaning approved", on the feed line of that update. */
function activitySentence(entry) {
  const who = (entry.actor && entry.actor.username) || 'system';
  const what = (ENTRY_WORDS[entry.action] || entry.action || '').toLowerCase();
  let text = `${who} ${what} ${entry.record_number || entry.record_id}`;
  if (entry.signature) text += `: signed, meaning ${entry.signature.meaning}`;
  if (entry.reason) text += ` — ${entry.reason}`;
  return text;
}

function addActivity(message) {
  const entry = message.entry || {};
  stats.activities = (stats.activities || 0) + 1;
  const line = el('span', { class: 'feed-activity', testid: 'feed-activity' }, activitySentence(entry));
  const item = [...$('feed').children].find((li) => li.dataset.seq === String(message.seq));
  if (item) item.append(line);
  else $('feed').prepend(el('li', { class: 'feed-item', 'data-seq': String(message.seq ?? '') }, line));
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
    // Who of the unit is online and what they view or edit (the top bar, the rows' badges).
    presence: true,
    onPresence: renderPresence,
    filter: $('only-mine').checked ? { mine: true } : null,
    ...OPTIONS.client,
    onStatus: ({ status }) => {
      stats.status = status;
      stats.statuses.push(status);
      setBadge(status);
      if (status === STATUS.LIVE) {
        showSeq();
        for (const name of Object.keys(lists)) if (lists[name].dirty) refresh(name);
        // Filtered, the resume replayed only the user's own updates: read the lists again.
        if (client && client.filter) Object.keys(lists).forEach(refreshSoon);
      } else if (status === STATUS.OFFLINE) {
        $('online-users').replaceChildren(); // not known while offline (a reconnect brings a snapshot)
      }
    },
    onUpdate: (update) => {
      stats.updates += 1;
      stats.byEntity[update.entity] = (stats.byEntity[update.entity] || 0) + 1;
      showSeq();
      addToFeed(update);
      historyHeard(update);
      auditHeard();
      (LIST_OF_ENTITY[update.entity] || Object.keys(lists)).forEach(refreshSoon);
    },
    // Who did what: each update's audit entry, right after it (same seq).
    activityFeed: true,
    onActivity: addActivity,
    onResync: () => {
      // The server could not replay what we missed: refetch everything, once.
      stats.resyncs += 1;
      Object.keys(lists).forEach(refreshSoon);
    },
    onGap: () => { stats.gaps += 1; },
    onClose: ({ code }) => { stats.closes.push(code); },
    // The token renewed on the open socket before it ran out (the client's refreshOnSocket): no reconnect.
    onRefreshed: () => { stats.socketRefreshes += 1; },
    onJobUpdate: (job) => {
      stats.jobUpdates += 1;
      jobSeen(job);
    },
    onSignOut: ({ code }) => {
      signOut(code === 4003 ? 'Your access to this unit has ended.' : 'Your session has ended. Please sign in again.');
    },
  });
  window.consoleClient = client;
  watchNotifications(client);
  client.start();
}

// --- notifications: the bell (unread count) and its panel --------------------------------------------

const notifications = { items: new Map(), generation: 0 };
const RECORD_NUMBER = /\b(?:WR|DR|TR|CR)-[A-Za-z0-9-]+/;

/** The count in the bell: the greeting's `unread_notifications`, plus each unread notification since. */
function renderBell() {
  const count = client && Number.isInteger(client.unreadNotifications) ? client.unreadNotifications : 0;
  const badge = $('notifications-count');
  badge.textContent = count > 99 ? '99+' : String(count);
  badge.dataset.count = String(count);
  stats.unreadNotifications = count;
}

function notificationItem(n) {
  const item = el('li', {
    class: `notification${n.read ? '' : ' notification--unread'}`, testid: `notification-${n.id}`,
    'data-kind': n.kind, 'data-read': String(Boolean(n.read)), tabindex: '0', role: 'button',
    onclick: () => openNotification(n),
    onkeydown: (event) => { if (event.key === 'Enter') openNotification(n); },
  }, n.title, el('span', { class: 'notification-body' }, n.body), el('span', { class: 'muted notification-time' }, when(n.created_at)));
  return item;
}

function renderNotifications() {
  const rows = [...notifications.items.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
  $('notifications-list').replaceChildren(...rows.map(notificationItem));
  $('notifications-empty').hidden = rows.length > 0;
}

/** The first page of the user's notifications (GET /api/notifications/), newest first. */
async function loadNotifications() {
  const generation = ++notifications.generation;
  try {
    const page = await api('/api/notifications/?page_size=50');
    if (generation !== notifications.generation) return;
    notifications.items = new Map(page.results.map((n) => [n.id, n]));
    renderNotifications();
  } catch (error) {
    // the bell keeps its count; the list comes with the next greeting or opening
  }
}

function toggleNotifications(open = $('notifications-panel').hidden) {
  $('notifications-panel').hidden = !open;
  $('notifications-bell').setAttribute('aria-expanded', String(open));
  if (open) loadNotifications();
}

/** Clicking one marks it read (POST …/{id}/read/) and opens its record's history. */
async function openNotification(n) {
  if (!n.read) {
    n.read = true;
    if (client) client.setUnreadNotifications((client.unreadNotifications || 1) - 1);
    renderBell();
    renderNotifications();
    api(`/api/notifications/${n.id}/read/`, { method: 'POST' }).catch((error) => toast(errorText(error)));
  }
  const { entity, id } = n.link || {};
  if (['withdrawal', 'destruction', 'transfer', 'crate'].includes(entity)) {
    toggleNotifications(false);
    const number = (RECORD_NUMBER.exec(n.title) || [entity])[0];
    openHistory({ kind: entity, id, number }, 'notifications-bell');
  }
}

async function readAllNotifications() {
  try {
    await api('/api/notifications/read-all/', { method: 'POST' });
    for (const n of notifications.items.values()) n.read = true;
    if (client) client.setUnreadNotifications(0);
    renderBell();
    renderNotifications();
  } catch (error) {
    toast(errorText(error));
  }
}

function watchNotifications(updates) {
  updates.onNotification((n) => {
    stats.notifications = (stats.notifications || 0) + 1;
    notifications.items.set(n.id, n);
    renderBell();
    if (!$('notifications-panel').hidden) renderNotifications();
  });
  // Every greeting (first connect and each reconnect) brings the server's unread count.
  updates.addEventListener('status', ({ detail }) => {
    if (detail.status !== STATUS.LIVE) return;
    renderBell();
    if (!$('notifications-panel').hidden) loadNotifications();
  });
}

function wireNotifications() {
  $('notifications-bell').addEventListener('click', () => toggleNotifications());
  $('notifications-read-all').addEventListener('click', readAllNotifications);
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && !$('notifications-panel').hidden) toggleNotifications(false);
  });
}

function resetNotifications() {
  notifications.items.clear();
  notifications.generation += 1;
  $('notifications-panel').hidden = true;
  $('notifications-bell').setAttribute('aria-expanded', 'false');
  $('notifications-list').replaceChildren();
  $('notifications-count').textContent = '0';
  $('notifications-count').dataset.count = '0';
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
  const zone = unitZone();
  $('unit-timezone').textContent = zoneName(zone) === zone ? zone : `${zone} · ${zoneName(zone)}`;
  $('unit-timezone').dataset.zone = zone;
  $('user-name').textContent = `${state.me.username} · ${state.me.role}`;
  $('login').hidden = true;
  $('workspace').hidden = false;
  $('audit-page').hidden = true;
  $('open-audit').hidden = !canAudit();
  $('session').hidden = false;
  $('bulk-card').hidden = !(canDecide() || canResubmit());
  // Filing needs a unit: a superuser (no unit) reads and decides, but files nothing here.
  $('new-request').hidden = !(canResubmit() && state.me.unit);
  $('new-crate').hidden = !(canStore() && state.me.unit);
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
  bulk.reset();
  for (const name of ['history-panel', 'stale-dialog', 'prompt-dialog', 'sign-dialog', 'request-form-dialog', 'crate-form-dialog']) {
    if ($(name).open) $(name).close();
  }
  activity.viewing = null;
  activity.editing = null;
  $('only-mine').checked = false;
  setOnlyMine(false);
  $('online-users').replaceChildren();
  $('sign-password').value = '';
  audit.open = false;
  audit.generation += 1;
  clearTimeout(audit.timer);
  $('audit-page').hidden = true;
  $('audit-body').replaceChildren();
  $('jobs').replaceChildren();
  $('feed').replaceChildren();
  resetNotifications();
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
      searchTimer = setTimeout(() => turnPage(list, 1), 250);
    });
  }
  $('request-kind').addEventListener('change', () => turnPage('requests', 1));
  $('request-status-filter').addEventListener('change', () => turnPage('requests', 1));
  $('crate-status-filter').addEventListener('change', () => turnPage('crates', 1));
  for (const name of Object.keys(lists)) {
    $(`${name}-prev`).addEventListener('click', () => turnPage(name, lists[name].page - 1));
    $(`${name}-next`).addEventListener('click', () => turnPage(name, lists[name].page + 1));
  }
  bulk.wire();
  forms.wire();
  $('history-panel').addEventListener('close', closedHistory);
  $('only-mine').addEventListener('change', (event) => setOnlyMine(event.target.checked));
  $('only-mine-note').textContent = `Only your own changes come live: others' show in the lists when they are read again (every ${Math.round(OPTIONS.mineRefreshMs / 1000)} s and on reconnect).`;
  $('stale-reload').addEventListener('click', () => {
    const name = staleList;
    $('stale-dialog').close('reload');
    if (name) refresh(name);
  });
  $('open-audit').addEventListener('click', () => showAudit(!audit.open));
  $('close-audit').addEventListener('click', () => showAudit(false));
  $('audit-filters').addEventListener('submit', (event) => {
    event.preventDefault();
    loadAudit();
  });
  $('audit-filters').addEventListener('reset', () => setTimeout(() => loadAudit(), 0)); // after the fields cleared
  $('audit-more').addEventListener('click', () => loadAudit({ more: true }));
  $('export-csv').addEventListener('click', () => exportAudit('csv'));
  $('export-ndjson').addEventListener('click', () => exportAudit('ndjson'));
  wireNotifications();
  setInterval(pollJobs, 500);
}

// What the bulk box (console/bulk.js) and the forms (console/forms.js) use of the console.
const shared = {
  $, el, api, state, toast, errorText, errorCode, samePath, signDecision, trackJob, refresh, setActivity,
  isOwn, contributedByMe, outcomeText, renderTicks, MEANING, ACTION_LABEL, DONE_WORD, LOCKED_TEXT,
};
const bulk = createBulk(shared);
const forms = createForms(shared);

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

// records-qa.js (Print, Review, legal holds: issue 31) reads the console through this.
window.recordsConsole = { api, authorized, state, toast, errorText, errorCode, refresh, vocabulary: VOCABULARY };
boot();
