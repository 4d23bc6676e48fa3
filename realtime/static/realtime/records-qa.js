// Records people can read, review and hold (issue 31), in the console:
// - Print: a button on every record (request and crate rows) that fetches its signed PDF report and
//   opens it in a new tab (GET /api/crates/{id}/report.pdf, /api/{kind}-requests/{id}/report.pdf);
// - Review (QA and unit admins): the unit's unreviewed audit entries, filterable, signed off in one
//   step (POST /api/audit-reviews/, signature meaning `reviewed`);
// - Legal holds (QA and unit admins): Hold on a crate row, the holds list with Release, each signed in
//   a dialog of this module's own (meanings `hold` and `released`, a reason required); held crates
//   show "On hold".
// The console (console.js) owns sign-in, the lists and the socket; this module reads them through
// `window.recordsConsole` ({api, authorized, state, toast, errorText, errorCode, refresh}) and
// decorates the rows the console renders (a MutationObserver), so console.js carries one line for it.
// Test hooks: `window.recordsQaStats`.

const stats = { printed: [], reviews: 0, holds: 0, releases: 0 };
window.recordsQaStats = stats;

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);
const rc = () => window.recordsConsole;
// The meaning each signed act declares: the server's (the console's page carries its vocabulary).
const meaningOf = (act) => rc().vocabulary.acts[act].meaning;
const me = () => (rc() && rc().state.me) || null;
const canHoldOrReview = () => Boolean(me()) && ['qa', 'admin'].includes(me().role);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'testid') node.dataset.testid = value;
    else if (key === 'class') node.className = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== '') node.append(child instanceof Node ? child : String(child));
  }
  return node;
}


// --- the signing dialog ---------------------------------------------------------------------------

function dialogs() {
  if ($('qa-sign-dialog')) return;
  // Its own stylesheet (the page's CSP allows styles from 'self' only, no inline <style>).
  document.head.append(el('link', { rel: 'stylesheet', href: new URL('./records-qa.css', import.meta.url).href }));
  const sign = el('dialog', { class: 'dialog dialog--sign', testid: 'qa-sign-dialog', 'aria-labelledby': 'qa-sign-title' },
    el('form', { class: 'dialog-form', testid: 'qa-sign-form' },
      el('h3', { id: 'qa-sign-title', testid: 'qa-sign-title' }),
      el('p', { class: 'sign-manifest', testid: 'qa-sign-manifest' }),
      el('label', {}, el('span', { testid: 'qa-sign-reason-caption' }, 'Reason (required)'),
        el('textarea', { name: 'reason', testid: 'qa-sign-reason', maxlength: '2000', rows: '2' })),
      el('label', {}, 'Password',
        el('input', { name: 'password', type: 'password', testid: 'qa-sign-password', autocomplete: 'current-password', required: true })),
      el('p', { class: 'muted sign-note' }, 'Your password signs this electronically, as your handwritten signature would.'),
      el('p', { class: 'form-error', testid: 'qa-sign-error', role: 'alert', hidden: true }),
      el('div', { class: 'dialog-actions' },
        el('button', { type: 'button', class: 'btn btn--ghost', testid: 'qa-sign-cancel' }, 'Cancel'),
        el('button', { type: 'submit', class: 'btn btn--primary', testid: 'qa-sign-confirm' }, 'Sign'))));
  const holds = el('dialog', { class: 'dialog dialog--wide', testid: 'holds-panel', 'aria-labelledby': 'holds-title' },
    el('form', { method: 'dialog', class: 'dialog-form' },
      el('div', { class: 'dialog-head' }, el('h3', { id: 'holds-title' }, 'Legal holds'),
        el('button', { class: 'btn btn--ghost btn--small', testid: 'holds-close' }, 'Close')),
      el('p', { class: 'qa-note' }, 'Crates under a hold in force are not destroyed, transferred or deleted. Place a hold from a crate\'s row.'),
      el('p', { class: 'muted history-state', testid: 'holds-state' }),
      el('ul', { class: 'qa-list', testid: 'holds-list' })));
  const review = el('dialog', { class: 'dialog dialog--wide', testid: 'review-panel', 'aria-labelledby': 'review-title' },
    el('div', { class: 'dialog-form' },
      el('div', { class: 'dialog-head' }, el('h3', { id: 'review-title' }, 'Review the audit trail'),
        el('button', { type: 'button', class: 'btn btn--ghost btn--small', testid: 'review-close' }, 'Close')),
      el('p', { class: 'qa-note', testid: 'review-last' }),
      el('form', { class: 'qa-row', testid: 'review-filters' },
        el('label', {}, 'Record kind', el('select', { name: 'entity', testid: 'review-entity' },
          ...[['', 'Any'], ['crate', 'Crate'], ['withdrawal', 'Withdrawal'], ['destruction', 'Destruction'],
            ['transfer', 'Transfer'], ['user', 'User'], ['legal_hold', 'Legal hold'], ['audit_review', 'Review']]
            .map(([value, label]) => el('option', { value }, label)))),
        el('label', {}, 'Who (username)', el('input', { name: 'actor', testid: 'review-actor', autocomplete: 'off' })),
        el('button', { type: 'submit', class: 'btn btn--small' }, 'Filter')),
      el('p', { class: 'muted history-state', testid: 'review-state' }),
      el('ul', { class: 'qa-list', testid: 'review-list' }),
      el('form', { class: 'qa-signoff', testid: 'review-form' },
        el('p', { class: 'qa-note', testid: 'review-scope' }),
        el('label', {}, 'Comment (required): what you checked and what you found',
          el('textarea', { name: 'comment', testid: 'review-comment', maxlength: '4000' })),
        el('label', {}, 'Password', el('input', { type: 'password', name: 'password', testid: 'review-password',
          autocomplete: 'current-password', required: true })),
        el('p', { class: 'sign-manifest', testid: 'review-manifest' }),
        el('p', { class: 'form-error', testid: 'review-error', role: 'alert', hidden: true }),
        el('div', { class: 'dialog-actions' },
          el('button', { type: 'submit', class: 'btn btn--primary', testid: 'review-sign' }, 'Sign off as reviewed')))));
  document.body.append(sign, holds, review);
  $('holds-close').addEventListener('click', () => $('holds-panel').close());
  $('review-close').addEventListener('click', () => $('review-panel').close());
  $('review-filters').addEventListener('submit', (event) => { event.preventDefault(); loadReview(); });
  $('review-form').addEventListener('submit', signOff);
}

function signerName() {
  const user = me();
  return user.full_name ? `${user.full_name} (${user.username})` : user.username;
}

/** A signed act in the dialog: resolves the result of `attempt({password, meaning}, reason)`, or null. */
function signAct({ title, meaning, attempt }) {
  const dialog = $('qa-sign-dialog');
  const form = $('qa-sign-form');
  const password = $('qa-sign-password');
  const reason = $('qa-sign-reason');
  const confirm = $('qa-sign-confirm');
  const showError = (message) => { $('qa-sign-error').textContent = message; $('qa-sign-error').hidden = !message; };
  $('qa-sign-title').textContent = title;
  $('qa-sign-manifest').textContent = `Signed by ${signerName()} — meaning: ${meaning}`;
  $('qa-sign-manifest').dataset.meaning = meaning;
  reason.value = '';
  password.value = '';
  showError('');
  return new Promise((resolve) => {
    let busy = false;
    let result = null;
    const onSubmit = async (event) => {
      event.preventDefault();
      if (busy) return;
      if (!reason.value.trim()) {
        showError('Give a reason: it is kept in the audit trail.');
        reason.focus();
        return;
      }
      busy = true;
      confirm.disabled = true;
      const signature = { password: password.value, meaning };
      password.value = '';
      try {
        result = await attempt(signature, reason.value.trim());
        dialog.close('signed');
      } catch (error) {
        showError(rc().errorText(error));
        (rc().errorCode(error) === 'signature_invalid' ? password : reason).focus();
      } finally {
        busy = false;
        confirm.disabled = false;
      }
    };
    const onCancel = () => { if (!busy) dialog.close('cancel'); };
    form.addEventListener('submit', onSubmit);
    $('qa-sign-cancel').addEventListener('click', onCancel);
    dialog.addEventListener('close', () => {
      password.value = '';
      form.removeEventListener('submit', onSubmit);
      $('qa-sign-cancel').removeEventListener('click', onCancel);
      resolve(result);
    }, { once: true });
    dialog.showModal();
    reason.focus();
  });
}

// --- print ----------------------------------------------------------------------------------------

const reportPath = (kind, id) => (kind === 'crate' ? `/api/crates/${id}/report.pdf` : `/api/${kind}-requests/${id}/report.pdf`);

async function print(kind, id, number, button) {
  // The tab is opened at the click (a tab opened after the fetch would be a blocked pop-up).
  const tab = window.open('', '_blank');
  button.disabled = true;
  try {
    const response = await rc().authorized(reportPath(kind, id), { accept: 'application/pdf' });
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      throw Object.assign(new Error((body && body.message) || `HTTP ${response.status}`), { status: response.status, body });
    }
    const blob = await response.blob();
    stats.printed.push({ id, number, status: response.status, type: blob.type, bytes: blob.size });
    const url = URL.createObjectURL(blob);
    if (tab) {
      tab.location.href = url;
    } else {
      const link = el('a', { href: url, download: `${number}-report.pdf`, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
    }
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (error) {
    if (tab) tab.close();
    stats.printed.push({ id, number, status: error.status || 0, error: error.message });
    rc().toast(`Could not print ${number}: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

function printButton(kind, id, number) {
  const button = el('button', {
    type: 'button', class: 'btn btn--small btn--ghost', testid: `print-${id}`,
    'aria-label': `Print ${number} (PDF report)`, title: 'The record, its signatures and its history, as a PDF',
  }, 'Print');
  button.addEventListener('click', () => print(kind, id, number, button));
  return button;
}

// --- rows -----------------------------------------------------------------------------------------

function decorate(row) {
  const testid = row.dataset.testid || '';
  const actions = row.querySelector('td.actions');
  if (!actions) return;
  const console_ = rc();
  if (testid.startsWith('request-row-')) {
    const id = testid.slice('request-row-'.length);
    const record = console_.state.requests.find((r) => r.id === id);
    if (record && !row.querySelector(`[data-testid="print-${id}"]`)) actions.append(printButton(record.kind, id, record.request_number));
  } else if (testid.startsWith('crate-row-')) {
    const id = testid.slice('crate-row-'.length);
    const crate = console_.state.crates.find((c) => c.id === id);
    if (!crate) return;
    if (!row.querySelector(`[data-testid="print-${id}"]`)) actions.append(printButton('crate', id, crate.crate_number));
    if (crate.on_hold && !row.querySelector(`[data-testid="on-hold-${id}"]`)) {
      row.querySelector('td').append(el('span', { class: 'qa-hold-badge', testid: `on-hold-${id}`, title: 'Under legal hold' }, 'On hold'));
    }
    if (canHoldOrReview() && !crate.on_hold && crate.status !== 'destroyed' && !row.querySelector(`[data-testid="hold-${id}"]`)) {
      const hold = el('button', { type: 'button', class: 'btn btn--small btn--danger', testid: `hold-${id}` }, 'Hold');
      hold.addEventListener('click', () => placeHold(crate));
      actions.append(hold);
    }
  }
}

function decorateAll() {
  for (const row of document.querySelectorAll('[data-testid^="request-row-"], [data-testid^="crate-row-"]')) decorate(row);
}

// --- legal holds ----------------------------------------------------------------------------------

async function placeHold(crate) {
  const hold = await signAct({
    title: `Place ${crate.crate_number} on legal hold`, meaning: meaningOf('hold'),
    attempt: (signature, reason) => rc().api('/api/legal-holds/', { method: 'POST', body: { crates: [crate.id], reason, signature } }),
  });
  if (!hold) return;
  stats.holds += 1;
  rc().toast(`${crate.crate_number} is on legal hold (${hold.hold_number}).`, 'info');
  rc().refresh('crates');
  if ($('holds-panel').open) loadHolds();
}

async function releaseHold(hold) {
  const released = await signAct({
    title: `Release legal hold ${hold.hold_number}`, meaning: meaningOf('release'),
    attempt: (signature, reason) => rc().api(`/api/legal-holds/${hold.id}/release/`, { method: 'POST', body: { reason, signature } }),
  });
  if (!released) return;
  stats.releases += 1;
  rc().toast(`Legal hold ${hold.hold_number} released.`, 'info');
  rc().refresh('crates');
  loadHolds();
}

async function loadHolds() {
  $('holds-state').textContent = 'Loading…';
  try {
    const page = await rc().api('/api/legal-holds/?page_size=100');
    const holds = page.results || page;
    const numbers = new Map(rc().state.crates.map((c) => [c.id, c.crate_number]));
    $('holds-list').replaceChildren(...holds.map((hold) => {
      const crates = hold.crates.map((id) => numbers.get(id) || id.slice(0, 8)).join(', ');
      const inForce = !hold.released_at;
      return el('li', { testid: `hold-${hold.id}-row`, 'data-state': inForce ? 'in-force' : 'released' },
        el('span', { class: 'qa-what' },
          el('strong', {}, hold.hold_number), ` · ${hold.crates.length} crate${hold.crates.length === 1 ? '' : 's'}: ${crates}`,
          el('br'), el('span', { class: 'muted' }, hold.reason),
          inForce ? '' : [el('br'), el('span', { class: 'muted' }, `Released: ${hold.release_reason}`)]),
        inForce
          ? el('button', { type: 'button', class: 'btn btn--small', testid: `release-${hold.id}`, onclick: () => releaseHold(hold) }, 'Release')
          : el('span', { class: 'muted' }, 'released'));
    }));
    $('holds-state').textContent = holds.length ? `${holds.filter((h) => !h.released_at).length} in force` : 'No legal holds.';
  } catch (error) {
    $('holds-state').textContent = `Could not load the holds: ${rc().errorText(error)}`;
  }
}

// --- review ---------------------------------------------------------------------------------------

const review = { loadedAt: null, generation: 0 };

async function loadReview() {
  const generation = ++review.generation;
  const form = $('review-filters');
  const params = new URLSearchParams({ reviewed: 'false', page_size: '200' });
  for (const name of ['entity', 'actor']) if (form.elements[name].value.trim()) params.set(name, form.elements[name].value.trim());
  $('review-state').textContent = 'Loading…';
  try {
    const loadedAt = new Date();
    const [page, last] = await Promise.all([
      rc().api(`/api/audit-trail/?${params}`),
      rc().api('/api/audit-reviews/?page_size=1').catch(() => null),
    ]);
    if (generation !== review.generation) return;
    review.loadedAt = loadedAt;
    const mine = me().id;
    const entries = page.results || [];
    $('review-list').replaceChildren(...entries.map((entry) => el('li', { testid: 'review-entry', 'data-position': entry.position },
      el('span', { class: 'qa-what' }, el('strong', {}, `#${entry.position} ${entry.action.replace(/_/g, ' ')}`),
        ` · ${entry.entity} ${entry.record_number} · ${entry.actor.full_name || entry.actor.username}`,
        entry.reason ? el('span', { class: 'muted' }, ` · ${entry.reason}`) : '',
        String(entry.actor.id) === String(mine) ? el('span', { class: 'qa-own', testid: 'review-own' }, ' · yours: someone else reviews it') : ''),
      el('time', { datetime: entry.at, class: 'muted' }, new Date(entry.at).toLocaleString()))));
    const more = page.next ? ' (more: filter to narrow)' : '';
    $('review-state').textContent = entries.length ? `${entries.length} unreviewed entries shown${more}` : 'Nothing waiting for review.';
    const previous = last && (last.results || [])[0];
    $('review-last').textContent = previous
      ? `Last review: #${previous.from_position}–#${previous.through_position} by ${previous.reviewer.full_name || previous.reviewer.username}, ${new Date(previous.signed_at).toLocaleString()}.`
      : 'No review of this unit yet.';
    $('review-scope').textContent = `Signing off covers every unreviewed entry of your unit up to ${loadedAt.toLocaleString()} `
      + '(when this list was loaded), whatever the filter shows; your own entries stay for someone else to review.';
  } catch (error) {
    if (generation === review.generation) $('review-state').textContent = `Could not load the trail: ${rc().errorText(error)}`;
  }
}

async function signOff(event) {
  event.preventDefault();
  const comment = $('review-comment');
  const password = $('review-password');
  const error = $('review-error');
  const show = (message) => { error.textContent = message; error.hidden = !message; };
  if (!comment.value.trim()) {
    show('Give a comment: what you checked and what you found.');
    comment.focus();
    return;
  }
  if (!review.loadedAt) return;
  $('review-sign').disabled = true;
  const signature = { password: password.value, meaning: meaningOf('review') };
  password.value = '';
  try {
    const done = await rc().api('/api/audit-reviews/', {
      method: 'POST', body: { through: review.loadedAt.toISOString(), comment: comment.value.trim(), signature },
    });
    stats.reviews += 1;
    comment.value = '';
    show('');
    rc().toast(`Reviewed: #${done.from_position}–#${done.through_position} (${done.entries} entries) signed off.`, 'info');
    loadReview();
  } catch (failure) {
    show(rc().errorText(failure));
    password.focus();
  } finally {
    $('review-sign').disabled = false;
  }
}

// --- wiring ---------------------------------------------------------------------------------------

function topbarButtons() {
  const signOut = $('sign-out');
  if (!signOut || $('open-review')) return;
  const reviewButton = el('button', { type: 'button', class: 'btn btn--ghost btn--small', testid: 'open-review', hidden: true }, 'Review');
  const holdsButton = el('button', { type: 'button', class: 'btn btn--ghost btn--small', testid: 'open-holds', hidden: true }, 'Legal holds');
  reviewButton.addEventListener('click', () => {
    $('review-manifest').textContent = `Signed by ${signerName()} — meaning: ${meaningOf('review')}`;
    $('review-panel').showModal();
    loadReview();
  });
  holdsButton.addEventListener('click', () => { $('holds-panel').showModal(); loadHolds(); });
  signOut.before(reviewButton, holdsButton);
}

function sessionChanged() {
  const signedIn = Boolean(me()) && !$('session').hidden;
  for (const id of ['open-review', 'open-holds']) if ($(id)) $(id).hidden = !(signedIn && canHoldOrReview());
  if (signedIn) decorateAll();
}

function start() {
  if (!rc()) {
    setTimeout(start, 50);
    return;
  }
  dialogs();
  topbarButtons();
  const rows = new MutationObserver(() => decorateAll());
  for (const body of ['requests-body', 'crates-body']) rows.observe($(body), { childList: true, subtree: true });
  new MutationObserver(sessionChanged).observe($('session'), { attributes: true, attributeFilter: ['hidden'] });
  new MutationObserver(sessionChanged).observe($('user-name'), { childList: true, characterData: true, subtree: true });
  sessionChanged();
}

start();
