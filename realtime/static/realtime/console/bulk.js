// The bulk action box: requests named the way people see them (request numbers, typed, ticked in the
// list, or "select all pending"), checked with POST /api/bulk-actions/preview/ before any password is
// asked, the exact list shown in the signing dialog, and each request's result when the job ends.
//
// `c` is what the console shares with it (createBulk(c) in console.js): api, el, $, state, and the
// signing dialog, job tracking and the labels.

const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;
const RESULTS_SHOWN = 500; // a job of up to this many requests lists every one; a bigger one its failures

export function createBulk(c) {
  const { $, el, api } = c;
  // What the user saw of the requests they named (ticked rows, "select all pending"): the version
  // the decision is pinned to. ref (a number as shown, or an id) -> {id, version}.
  let seen = { entity: null, refs: new Map() };
  let refusedRefs = [];

  const refs = () => [...new Set($('bulk-ids').value.split(/[\s,;]+/).map((s) => s.trim()).filter(Boolean))];
  const setRefs = (list) => { $('bulk-ids').value = list.join('\n'); };

  function showError(message) {
    $('bulk-error').textContent = message;
    $('bulk-error').hidden = !message;
  }

  function showNote(message) {
    $('bulk-note').textContent = message;
    $('bulk-note').hidden = !message;
  }

  /** The requests the check refused, each with why; the user removes them or fixes the list. */
  function showRefusals(items) {
    refusedRefs = items.map((item) => item.ref);
    $('bulk-refusal-list').replaceChildren(...items.map((item) => el('li', {
      class: 'item item--failed', testid: `bulk-refusal-${item.ref}`, 'data-code': item.code,
    }, el('span', { class: 'mono' }, item.request_number || item.ref), ` — ${c.outcomeText(item.code)}: ${item.message}`)));
    $('bulk-refusals').hidden = !items.length;
  }

  function forget() {
    seen = { entity: null, refs: new Map() };
    showRefusals([]);
  }

  function remember(entity, ref, row) {
    if (seen.entity !== entity) seen = { entity, refs: new Map() };
    seen.refs.set(ref, { id: String(row.id), version: row.version });
  }

  /** A row ticked in the list (or unticked): its number joins (leaves) the box, with the version shown. */
  function tick(row, on) {
    const entity = $('bulk-entity').value;
    let list = refs();
    if (on && row.kind !== entity) {
      // the box holds one kind at a time: ticking another kind starts it over
      $('bulk-entity').value = row.kind;
      list = [];
      forget();
    }
    if (on) {
      remember(row.kind, row.request_number, row);
      if (!list.includes(row.request_number)) list.push(row.request_number);
    } else {
      list = list.filter((ref) => ref !== row.request_number && ref !== String(row.id));
    }
    setRefs(list);
    c.renderTicks();
  }

  const ticked = (row) => $('bulk-entity').value === row.kind && refs().some((ref) => ref === row.request_number || ref === String(row.id));

  /** Fill the box with the unit's pending requests of the kind, by number, remembering the version of
   *  each (the job refuses any that changed after). Those the user filed or changed are left out (four eyes). */
  async function selectAllPending() {
    const entity = $('bulk-entity').value;
    let skipped = 0;
    const numbers = [];
    let url = `/api/${entity}-requests/?status=pending&page_size=500`;
    seen = { entity, refs: new Map() };
    try {
      while (url && numbers.length < 20000) {
        const page = await api(url);
        for (const row of page.results.filter(c.isOwn)) {
          if (c.contributedByMe(row)) {
            skipped += 1;
          } else {
            remember(entity, row.request_number, row);
            numbers.push(row.request_number);
          }
        }
        url = page.next ? c.samePath(page.next) : null;
      }
      setRefs(numbers);
      showRefusals([]);
      showError(numbers.length ? '' : `No pending ${entity} requests${skipped ? ' you may decide on' : ''}.`);
      showNote(skipped ? `Left out ${skipped} request${skipped === 1 ? '' : 's'} you filed or changed (four eyes).` : '');
      c.renderTicks();
    } catch (error) {
      showError(c.errorText(error));
    }
  }

  /** The body naming `list`: what was seen goes as items with its version, ids as ids, the rest as
   *  numbers; and, for the answer, which entry of the list each item of the body stands for. */
  function named(entity, list) {
    const known = seen.entity === entity ? seen.refs : new Map();
    const numbers = [];
    const ids = [];
    const items = [];
    const entryOf = new Map();
    for (const ref of list) {
      if (known.has(ref)) {
        items.push(known.get(ref));
        entryOf.set(known.get(ref).id, ref);
      } else if (UUID.test(ref)) {
        ids.push(ref);
      } else {
        numbers.push(ref);
      }
    }
    const body = { ...(numbers.length ? { numbers } : {}), ...(ids.length ? { ids } : {}), ...(items.length ? { items } : {}) };
    return { body, entryOf };
  }

  async function submit(event) {
    event.preventDefault();
    const entity = $('bulk-entity').value;
    const action = $('bulk-action').value;
    const list = refs();
    const reason = $('bulk-reason').value.trim();
    if (!list.length) return showError('Give at least one request number, tick rows in the list, or select all pending.');
    if ((action === 'reject' || action === 'send_back') && !reason) return showError('A reason is required to reject or send back.');
    showError('');
    showRefusals([]);
    const button = $('bulk-submit');
    button.disabled = true;
    let label = `${c.ACTION_LABEL[action]} ${list.length} ${entity} request${list.length === 1 ? '' : 's'}`;
    const because = reason ? { reason } : {};
    try {
      // First the check: every named request, and what the job would do with it now. Nothing signed yet.
      const { body, entryOf } = named(entity, list);
      const check = await api('/api/bulk-actions/preview/', { method: 'POST', body: { entity, action, ...because, ...body } });
      const refused = check.items.filter((item) => !item.ok).map((item) => ({ ...item, ref: entryOf.get(item.ref) || item.ref }));
      if (refused.length) {
        showError(`${refused.length} of ${check.items.length} cannot be ${c.DONE_WORD[action]}: remove them or correct them, then run again.`);
        showRefusals(refused);
        return;
      }
      // In the order of the box (the check answers numbers, then ids, then what was seen).
      const at = new Map(list.map((ref, i) => [ref, i]));
      const place = (item) => at.get(entryOf.get(item.ref) || item.ref) ?? list.length;
      const going = [...check.items].sort((x, y) => place(x) - place(y));
      label = `${c.ACTION_LABEL[action]} ${going.length} ${entity} request${going.length === 1 ? '' : 's'}`;
      const items = going.map((item) => ({ id: item.id, version: item.version }));
      const queue = (extra = {}) => api('/api/bulk-actions/', { method: 'POST', body: { entity, action, items, ...because, ...extra } });
      let job;
      if (c.MEANING[action]) {
        // One signature for every request in it, and the dialog lists exactly those.
        const outcome = await c.signDecision({
          title: label, action, reasonMode: 'fixed', fixedReason: reason,
          items: going.map((item) => item.request_number), attempt: (signature) => queue({ signature }),
        });
        if (!outcome) return;
        if (outcome.error) throw outcome.error;
        ({ job } = outcome.result);
      } else {
        ({ job } = await queue());
      }
      c.state.bulkJobId = job.id;
      // Queued: the box is free for the next one (the results list below names these).
      setRefs([]);
      forget();
      c.renderTicks();
      const names = new Map(going.map((item) => [item.id, item.request_number]));
      $('bulk-results').replaceChildren();
      $('bulk-results').hidden = true;
      c.trackJob(job, { label, target: null, list: 'requests', bulk: true, names, action });
    } catch (error) {
      if (c.errorCode(error) === 'signature_locked') {
        c.toast(`${label}: not signed — ${c.LOCKED_TEXT}`, 'error', 12000);
        showError(`Not signed: ${c.LOCKED_TEXT}`);
      } else {
        showError(c.errorText(error));
      }
    } finally {
      button.disabled = false;
    }
  }

  /** Each request's result of a finished bulk job, with the reason of every refusal
   *  (GET /api/jobs/{id}/outcomes/): all of them for a job of up to RESULTS_SHOWN, else the failed. */
  async function showResults(entry) {
    const { job, names = new Map(), action } = entry;
    const total = (job.progress || {}).total || 0;
    const failedOnly = total > RESULTS_SHOWN;
    const rows = [];
    try {
      let url = `/api/jobs/${job.id}/outcomes/?page_size=500${failedOnly ? '&status=failed' : ''}`;
      while (url && rows.length < RESULTS_SHOWN) {
        const page = await api(url);
        rows.push(...page.results);
        url = page.next ? c.samePath(page.next) : null;
      }
    } catch (error) {
      return; // the counts above still say how many failed
    }
    if (c.state.bulkJobId !== job.id) return;
    rows.sort((a, b) => (a.status === b.status ? 0 : a.status === 'failed' ? -1 : 1));
    const list = $('bulk-results');
    list.replaceChildren(...rows.map((row) => {
      const number = names.get(row.target) || row.target;
      const text = row.status === 'failed'
        ? ` — failed: ${c.outcomeText(row.code)}${row.message ? ` (${row.message})` : ''}`
        : ` — ${c.DONE_WORD[action] || 'done'}`;
      return el('li', { class: `item item--${row.status}`, testid: `bulk-result-${number}`, 'data-status': row.status, 'data-code': row.code || '' },
        el('span', { class: 'mono' }, number), text);
    }));
    list.hidden = !rows.length;
  }

  function wire() {
    $('bulk-form').addEventListener('submit', submit);
    $('bulk-select-pending').addEventListener('click', selectAllPending);
    $('bulk-entity').addEventListener('change', () => {
      showNote('');
      showRefusals([]);
      c.renderTicks();
    });
    $('bulk-ids').addEventListener('input', () => c.renderTicks());
    $('bulk-drop-refused').addEventListener('click', () => {
      const drop = new Set(refusedRefs);
      setRefs(refs().filter((ref) => !drop.has(ref)));
      showRefusals([]);
      showError('');
      c.renderTicks();
    });
  }

  function reset() {
    forget();
    showNote('');
    showError('');
    $('bulk-results').replaceChildren();
    $('bulk-results').hidden = true;
  }

  return { wire, reset, tick, ticked, showResults };
}
