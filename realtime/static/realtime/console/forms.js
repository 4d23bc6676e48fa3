// The console's forms: file a new request (its crates picked from those free now: in storage and in
// no open request, GET /api/crates/?available=true), edit a sent-back (or pending) request before it
// is resubmitted (PATCH with the version seen and why), and create a crate.
//
// `c` is what the console shares with it (createForms(c) in console.js).

const PICKER_MAX = 2000; // crates offered at most (four pages of the API's largest)

export function createForms(c) {
  const { $, el, api } = c;
  let editing = null; // the request row being edited; null: a new request
  let offered = []; // crates the picker offers: [{id, crate_number, location}]
  const picked = new Set();

  function showError(testid, error) {
    let message = typeof error === 'string' ? error : c.errorText(error);
    const details = error && error.body && error.body.details;
    if (details && Array.isArray(details.crates)) message += ` (${details.crates.join(', ')})`;
    else if (details && typeof details === 'object' && !Array.isArray(details) && !error.body.code) {
      message = Object.entries(details).map(([field, why]) => `${field}: ${[].concat(why).join(' ')}`).join('; ');
    }
    $(testid).textContent = message;
    $(testid).hidden = !message;
  }

  async function allPages(url) {
    const rows = [];
    for (let next = url; next && rows.length < PICKER_MAX;) {
      const page = await api(next);
      rows.push(...page.results);
      next = page.next ? c.samePath(page.next) : null;
    }
    return rows;
  }

  function renderPicker() {
    const filter = $('request-form-crate-filter').value.trim().toLowerCase();
    const shown = offered.filter((crate) => !filter || picked.has(crate.id)
      || `${crate.crate_number} ${crate.location || ''}`.toLowerCase().includes(filter));
    $('request-form-crates').replaceChildren(...shown.map((crate) => el('li', {},
      el('label', { class: 'pick' },
        el('input', {
          type: 'checkbox', testid: `pick-${crate.crate_number}`, value: crate.id, checked: picked.has(crate.id),
          onchange: (event) => {
            if (event.target.checked) picked.add(crate.id);
            else picked.delete(crate.id);
            showError('request-form-error', '');
          },
        }),
        el('span', { class: 'mono' }, crate.crate_number),
        el('span', { class: 'muted' }, crate.location || '—')))));
    $('request-form-crates-empty').hidden = offered.length > 0;
  }

  function destinations(current) {
    const own = c.state.me.unit && c.state.me.unit.id;
    const options = [...c.state.units].filter(([id]) => id !== own)
      .sort((a, b) => a[1].localeCompare(b[1]))
      .map(([id, code]) => el('option', { value: id, selected: id === current }, code));
    $('request-form-destination').replaceChildren(...options);
  }

  function kindChanged() {
    $('request-form-destination-label').hidden = $('request-form-kind').value !== 'transfer';
  }

  /** Open the request form: empty for a new request, or on `row` (a request of the user's unit still
   *  open) to edit it. While it is open on a request, the unit sees this user editing it. */
  async function openRequest(row = null) {
    editing = row;
    picked.clear();
    offered = [];
    const dialog = $('request-form-dialog');
    $('request-form-title').textContent = row ? `Edit ${row.request_number}` : 'New request';
    $('request-form-kind').value = row ? row.kind : 'withdrawal';
    $('request-form-kind').disabled = Boolean(row);
    $('request-form-reason').value = row ? row.reason || '' : '';
    $('request-form-change-label').hidden = !row;
    // What the decider asked for, while the requester edits it.
    $('request-form-sent-back').textContent = row && row.decision_reason ? `Sent back: ${row.decision_reason}` : '';
    $('request-form-sent-back').hidden = !(row && row.decision_reason);
    $('request-form-change-reason').value = '';
    $('request-form-crate-filter').value = '';
    $('request-form-submit').textContent = row ? 'Save changes' : 'File request';
    $('request-form-submit').disabled = true;
    destinations(row && row.destination_unit);
    kindChanged();
    showError('request-form-error', '');
    $('request-form-crates').replaceChildren(el('li', { class: 'muted' }, 'Loading crates…'));
    $('request-form-crates-empty').hidden = true;
    if (row) c.setActivity('editing', { kind: row.kind, id: row.id });
    if (!dialog.open) dialog.showModal();
    try {
      const free = await allPages('/api/crates/?available=true&ordering=crate_number&page_size=500');
      // Editing: the request's own crates are reserved (by it), and stay on offer, ticked.
      const own = row ? (await allPages('/api/crates/?reserved=true&ordering=crate_number&page_size=500'))
        .filter((crate) => row.crates.map(String).includes(String(crate.id))) : [];
      if (editing !== row) return;
      offered = [...own, ...free];
      own.forEach((crate) => picked.add(crate.id));
      renderPicker();
      $('request-form-submit').disabled = false;
      (row ? $('request-form-change-reason') : $('request-form-crate-filter')).focus();
    } catch (error) {
      if (editing === row) showError('request-form-error', `Could not load the crates: ${c.errorText(error)}`);
    }
  }

  async function submitRequest(event) {
    event.preventDefault();
    const row = editing;
    const kind = $('request-form-kind').value;
    const reason = $('request-form-reason').value.trim();
    const changeReason = $('request-form-change-reason').value.trim();
    if (!picked.size) return showError('request-form-error', 'Pick at least one crate.');
    if (row && !changeReason) return showError('request-form-error', 'Say why it is changed: it is kept in the audit trail.');
    const body = { crates: [...picked], reason };
    if (kind === 'transfer') body.destination_unit = $('request-form-destination').value;
    const button = $('request-form-submit');
    button.disabled = true;
    try {
      if (row) {
        const saved = await api(`/api/${kind}-requests/${row.id}/`, {
          method: 'PATCH', body: { ...body, change_reason: changeReason, version: row.version },
        });
        c.toast(`Saved ${saved.request_number}${saved.status === 'sent_back' ? ': resubmit it when it is ready' : ''}.`, 'info');
      } else {
        const filed = await api(`/api/${kind}-requests/`, { method: 'POST', body });
        c.toast(`Filed ${filed.request_number}.`, 'info');
        $('request-form-dialog').dataset.filed = filed.request_number;
      }
      $('request-form-dialog').close('saved');
      c.refresh('requests');
      c.refresh('crates');
    } catch (error) {
      showError('request-form-error', error);
    } finally {
      button.disabled = false;
    }
  }

  function openCrate() {
    $('crate-form-location').value = '';
    $('crate-form-due').value = '';
    showError('crate-form-error', '');
    $('crate-form-dialog').showModal();
    $('crate-form-location').focus();
  }

  async function submitCrate(event) {
    event.preventDefault();
    const button = $('crate-form-submit');
    button.disabled = true;
    try {
      const crate = await api('/api/crates/', {
        method: 'POST', body: { location: $('crate-form-location').value.trim(), destruction_due: $('crate-form-due').value || null },
      });
      c.toast(`Created ${crate.crate_number}.`, 'info');
      $('crate-form-dialog').dataset.created = crate.crate_number;
      $('crate-form-dialog').close('saved');
      c.refresh('crates');
    } catch (error) {
      showError('crate-form-error', error);
    } finally {
      button.disabled = false;
    }
  }

  function wire() {
    $('new-request').addEventListener('click', () => openRequest());
    $('new-crate').addEventListener('click', openCrate);
    $('request-form').addEventListener('submit', submitRequest);
    $('request-form-kind').addEventListener('change', kindChanged);
    $('request-form-crate-filter').addEventListener('input', renderPicker);
    $('request-form-cancel').addEventListener('click', () => $('request-form-dialog').close('cancel'));
    $('request-form-dialog').addEventListener('close', () => {
      if (editing) c.setActivity('editing', null);
      editing = null;
    });
    $('crate-form').addEventListener('submit', submitCrate);
    $('crate-form-cancel').addEventListener('click', () => $('crate-form-dialog').close('cancel'));
  }

  return { wire, openRequest };
}
