// infergate operator console. Served by key-admin with a CSP that allows only this script, its
// stylesheet and calls to this origin. The admin key is sent once (POST /console/session) and
// never kept: the session is an HttpOnly cookie, and the CSRF token lives in this closure only.
(function () {
  'use strict';
  let csrf = null;
  let keysOffset = 0;
  const PAGE = 20;
  let current = null; // the key shown on the key page

  const $ = (id) => document.getElementById(id);
  const views = ['sign-in', 'keys', 'key', 'mint', 'audit'];

  function show(view) {
    views.forEach((v) => { $('view-' + v).hidden = v !== view; });
    $('nav').hidden = view === 'sign-in';
  }

  function status(text, error) {
    const s = $('status');
    s.textContent = text || '';
    s.className = error ? 'error' : '';
  }

  function el(tag, text, attrs) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    Object.entries(attrs || {}).forEach(([k, v]) => e.setAttribute(k, v));
    return e;
  }

  async function api(method, path, body) {
    const headers = {};
    if (method !== 'GET' && csrf) headers['X-CSRF-Token'] = csrf;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
    let data = null;
    try { data = await res.json(); } catch (_) { data = null; }
    if (res.status === 401 && path !== '/console/session') {
      signedOut('Your session has ended; sign in again.');
    }
    if (!res.ok) {
      const e = new Error((data && (data.detail || data.error)) || ('HTTP ' + res.status));
      e.status = res.status;
      e.code = data && data.code;
      throw e;
    }
    return data;
  }

  function signedIn(session) {
    csrf = session.csrf_token;
    $('who').textContent = 'signed in as ' + (session.name || session.actor) + ' (' + session.actor + ')';
    loadKeys(0);
  }

  function signedOut(message) {
    csrf = null;
    show('sign-in');
    status(message || '', Boolean(message));
  }

  // ---- sign-in / sign-out -------------------------------------------------------------------

  $('sign-in-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const input = $('admin-key');
    const key = input.value.trim();
    input.value = ''; // never kept, not even in the field
    try {
      signedIn(await api('POST', '/console/session', { key }));
      status('Signed in.');
    } catch (e) {
      status('Sign-in refused: ' + e.message, true);
    }
  });

  $('sign-out').addEventListener('click', async () => {
    try { await api('DELETE', '/console/session'); } catch (_) { /* ended either way */ }
    signedOut('Signed out.');
  });

  document.querySelectorAll('nav [data-view]').forEach((b) => {
    b.addEventListener('click', () => {
      const v = b.getAttribute('data-view');
      if (v === 'keys') loadKeys(0);
      else if (v === 'audit') loadAudit();
      else { show(v); status(''); }
    });
  });

  // ---- keys ---------------------------------------------------------------------------------

  async function loadKeys(offset) {
    keysOffset = Math.max(0, offset);
    const q = new URLSearchParams({ offset: keysOffset, limit: PAGE });
    if ($('f-role').value) q.set('role', $('f-role').value);
    if ($('f-state').value) q.set('state', $('f-state').value);
    const needle = $('f-search').value.trim();
    if (needle) q.set('q', needle);
    try {
      const page = await api('GET', '/v1/keys?' + q);
      const items = page.items;
      const body = $('keys-table').querySelector('tbody');
      body.replaceChildren(...items.map((k) => {
        const tr = el('tr');
        const link = el('a', k.id, { href: '#key/' + k.id });
        link.addEventListener('click', (ev) => { ev.preventDefault(); openKey(k.id); });
        const idCell = el('td');
        idCell.append(link);
        tr.append(idCell, el('td', k.name), el('td', k.role), el('td', k.state), el('td', k.expires_at || 'never'));
        return tr;
      }));
      $('keys-caption').textContent = page.total + ' key(s); showing ' + (page.total ? keysOffset + 1 : 0)
        + '–' + Math.min(keysOffset + PAGE, page.total) + (needle ? ', matching "' + needle + '"' : '');
      $('prev-page').disabled = keysOffset === 0;
      $('next-page').disabled = keysOffset + PAGE >= page.total;
      show('keys');
      status('');
      topKeys();
    } catch (e) {
      if (e.status !== 401) status('Could not list keys: ' + e.message, true);
    }
  }

  async function topKeys() {
    try {
      const top = await api('GET', '/v1/usage?days=30&limit=5');
      $('top-keys').textContent = top.keys.length
        ? 'Most used (30 days): ' + top.keys.map((k) => k.name + ' (' + k.requests + ' requests)').join(', ')
        : 'No key was used in the last 30 days.';
    } catch (_) { $('top-keys').textContent = ''; }
  }

  $('key-filters').addEventListener('submit', (ev) => { ev.preventDefault(); loadKeys(0); });
  $('prev-page').addEventListener('click', () => loadKeys(keysOffset - PAGE));
  $('next-page').addEventListener('click', () => loadKeys(keysOffset + PAGE));

  const optNum = (v) => (v.trim() === '' ? null : Number(v.trim()));
  const optStr = (v) => (v.trim() === '' ? null : v.trim());
  const models = (v) => (v.trim() === '' ? null : v.split(',').map((m) => m.trim()).filter(Boolean));

  async function openKey(id) {
    try {
      const [rec, usage] = await Promise.all([
        api('GET', '/v1/keys/' + encodeURIComponent(id)),
        api('GET', '/v1/keys/' + encodeURIComponent(id) + '/usage?days=30'),
      ]);
      current = rec;
      $('key-title').textContent = rec.name + ' (' + rec.id + ')';
      const dl = $('key-record');
      dl.replaceChildren();
      const fields = ['id', 'name', 'role', 'state', 'prefix', 'created_at', 'created_by', 'expires_at',
        'revoked_at', 'rate_limit', 'tokens_per_minute', 'tokens_per_day', 'max_concurrent', 'models',
        'metadata', 'rotated_to'];
      fields.forEach((f) => {
        const v = rec[f];
        dl.append(el('dt', f), el('dd', v === null || v === undefined ? '—' : (typeof v === 'object' ? JSON.stringify(v) : v)));
      });
      dl.append(el('dt', 'last_used_at'), el('dd', usage.last_used_at || 'never'));
      $('e-name').value = rec.name;
      $('e-role').value = rec.role;
      $('e-rate').value = rec.rate_limit || '';
      $('e-tpm').value = rec.tokens_per_minute || '';
      $('e-tpd').value = rec.tokens_per_day || '';
      $('e-conc').value = rec.max_concurrent || '';
      $('e-models').value = (rec.models || []).join(', ');
      $('e-days').value = '';
      $('e-meta').value = JSON.stringify(rec.metadata || {});
      chart('usage-chart', usage, (d) => d.requests, 'requests');
      chart('tokens-chart', usage, (d) => d.input_tokens + d.output_tokens, 'tokens');
      summary(usage);
      refusals((usage.totals && usage.totals.refused) || {});
      show('key');
      status('');
    } catch (e) {
      if (e.status !== 401) status('Could not open key ' + id + ': ' + e.message, true);
    }
  }

  // One value per day as plain SVG bars, drawn here (no library).
  function chart(target, usage, value, unit) {
    const ns = 'http://www.w3.org/2000/svg';
    const days = usage.days || [];
    const max = Math.max(1, ...days.map(value));
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('viewBox', '0 0 300 100');
    svg.setAttribute('preserveAspectRatio', 'none');
    const today = new Date(Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate()));
    for (let i = 0; i < 30; i++) {
      const date = new Date(today.getTime() - (29 - i) * 86400000).toISOString().slice(0, 10);
      const d = days.find((x) => x.date === date);
      const h = d && value(d) > 0 ? Math.max(2, (value(d) / max) * 95) : 0;
      const r = document.createElementNS(ns, 'rect');
      r.setAttribute('x', String(i * 10 + 1));
      r.setAttribute('y', String(100 - h));
      r.setAttribute('width', '8');
      r.setAttribute('height', String(h));
      const t = document.createElementNS(ns, 'title');
      t.textContent = date + ': ' + (d ? value(d) : 0) + ' ' + unit;
      r.append(t);
      svg.append(r);
    }
    $(target).replaceChildren(svg);
  }

  // Refused requests by reason: one labelled horizontal bar each.
  function refusals(r) {
    const ns = 'http://www.w3.org/2000/svg';
    const reasons = [['rate_limited', 'request limit'], ['token_limited', 'token limit'],
      ['concurrency_limited', 'concurrency cap'], ['forbidden', 'role or model']];
    const max = Math.max(1, ...reasons.map(([k]) => r[k] || 0));
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('viewBox', '0 0 300 60');
    reasons.forEach(([k, label], i) => {
      const n = r[k] || 0;
      const text = document.createElementNS(ns, 'text');
      text.setAttribute('x', '0');
      text.setAttribute('y', String(i * 15 + 10));
      text.textContent = label + ': ' + n;
      const bar = document.createElementNS(ns, 'rect');
      bar.setAttribute('x', '90');
      bar.setAttribute('y', String(i * 15 + 3));
      bar.setAttribute('height', '9');
      bar.setAttribute('width', String(n ? Math.max(1, (n / max) * 200) : 0));
      svg.append(text, bar);
    });
    $('refusals-chart').replaceChildren(svg);
  }

  function summary(usage) {
    const t = usage.totals;
    $('usage-summary').textContent = t.requests + ' requests and ' + (t.input_tokens + t.output_tokens)
      + ' tokens in 30 days; today ' + usage.today.requests + ' requests; this minute '
      + usage.current_minute.requests + ' requests and '
      + (usage.current_minute.input_tokens + usage.current_minute.output_tokens) + ' tokens.';
  }

  $('edit-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!current) return;
    const patch = {
      name: $('e-name').value.trim(),
      role: $('e-role').value,
      rate_limit: optStr($('e-rate').value),
      tokens_per_minute: optNum($('e-tpm').value),
      tokens_per_day: optNum($('e-tpd').value),
      max_concurrent: optNum($('e-conc').value),
      models: models($('e-models').value),
    };
    const days = optNum($('e-days').value);
    if (days === 0) patch.expires_at = null;
    else if (days !== null) patch.expires_in_days = days;
    try { patch.metadata = JSON.parse($('e-meta').value || '{}'); } catch (_) {
      status('Metadata must be a JSON object.', true);
      return;
    }
    try {
      await api('PATCH', '/v1/keys/' + current.id, patch);
      await openKey(current.id);
      status('Saved.');
    } catch (e) {
      status('Not saved: ' + e.message, true);
    }
  });

  $('rotate').addEventListener('click', async () => {
    if (!current) return;
    try {
      const r = await api('POST', '/v1/keys/' + current.id + '/rotate', { grace_seconds: Number($('grace').value || 0) });
      showMinted(r.key);
      status('Rotated: the new key ' + r.record.id + ' replaces ' + current.id + '.');
    } catch (e) {
      status('Not rotated: ' + e.message, true);
    }
  });

  $('revoke').addEventListener('click', async () => {
    if (!current) return;
    if (!window.confirm('Revoke the key "' + current.name + '" (' + current.id + ')? It is refused from then on.')) return;
    try {
      await api('POST', '/v1/keys/' + current.id + '/revoke');
      await openKey(current.id);
      status('Revoked ' + current.id + '.');
    } catch (e) {
      status('Not revoked: ' + e.message, true);
    }
  });

  // ---- mint ---------------------------------------------------------------------------------

  function showMinted(key) {
    $('minted-key').value = key;
    $('minted').hidden = false;
    show('mint');
    $('minted').scrollIntoView();
    $('minted-key').focus();
  }

  $('mint-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    let metadata = {};
    try { metadata = JSON.parse($('m-meta').value || '{}'); } catch (_) {
      status('Metadata must be a JSON object.', true);
      return;
    }
    const body = { name: $('m-name').value.trim(), role: $('m-role').value, metadata };
    const days = optNum($('m-days').value);
    if (days !== null) body.expires_in_days = days;
    const rate = optStr($('m-rate').value);
    if (rate) body.rate_limit = rate;
    [['tokens_per_minute', 'm-tpm'], ['tokens_per_day', 'm-tpd'], ['max_concurrent', 'm-conc']].forEach(([f, id]) => {
      const v = optNum($(id).value);
      if (v !== null) body[f] = v;
    });
    const m = models($('m-models').value);
    if (m) body.models = m;
    try {
      const r = await api('POST', '/v1/keys', body);
      showMinted(r.key);
      status('Minted key ' + r.record.id + '.');
    } catch (e) {
      status('Not minted: ' + e.message, true);
    }
  });

  $('copy-key').addEventListener('click', async () => {
    const input = $('minted-key');
    input.select();
    try { await navigator.clipboard.writeText(input.value); status('Copied.'); } catch (_) { status('Select the key and copy it.'); }
  });

  // ---- audit --------------------------------------------------------------------------------

  async function loadAudit() {
    const q = new URLSearchParams({ limit: 100 });
    [['actor', 'a-actor'], ['action', 'a-action'], ['target', 'a-target'], ['since', 'a-since'], ['until', 'a-until']]
      .forEach(([p, id]) => { if ($(id).value.trim()) q.set(p, $(id).value.trim()); });
    try {
      const page = await api('GET', '/v1/audit?' + q);
      const outcome = $('a-outcome').value;
      const items = page.items.filter((e) => !outcome || e.outcome === outcome);
      $('audit-table').querySelector('tbody').replaceChildren(...items.map((e) => {
        const tr = el('tr');
        tr.append(el('td', e.at), el('td', e.actor), el('td', e.action), el('td', e.target || ''), el('td', e.outcome));
        return tr;
      }));
      show('audit');
      status(items.length + ' entr' + (items.length === 1 ? 'y' : 'ies') + '.');
    } catch (e) {
      if (e.status !== 401) status('Could not read the audit log: ' + e.message, true);
    }
  }

  $('audit-filters').addEventListener('submit', (ev) => { ev.preventDefault(); loadAudit(); });

  // ---- start: a live session (a reloaded page) or the sign-in form ---------------------------

  api('GET', '/console/session').then(signedIn).catch(() => signedOut());
})();
