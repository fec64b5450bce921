// infergate API docs (gateway and key-admin): renders /openapi.json and lets you try each route.
// Vanilla JS, no external resources, no inline styles or scripts: it runs under the docs CSP
// (default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:).
'use strict';

(function () {
  const METHODS = ['get', 'head', 'post', 'put', 'patch', 'delete', 'options'];
  let spec = null;

  // ---- small DOM helpers (text only: nothing from the spec is ever parsed as HTML) ----------

  function el(tag, cls, ...children) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }

  // Inline `code` spans and **bold** in descriptions, built as nodes.
  function rich(text, tag) {
    const node = el(tag || 'p', 'desc');
    String(text || '').split(/(`[^`]+`)/).forEach((part) => {
      if (part.startsWith('`') && part.endsWith('`') && part.length > 1) {
        node.append(el('code', null, part.slice(1, -1)));
      } else {
        node.append(part.replace(/\*\*/g, ''));
      }
    });
    return node;
  }

  function paragraphs(text) {
    return String(text || '').split(/\n\s*\n/).filter(Boolean).map((p) => rich(p));
  }

  // ---- spec helpers --------------------------------------------------------------------------

  function deref(obj) {
    let cur = obj;
    for (let i = 0; cur && cur.$ref && i < 10; i++) {
      cur = cur.$ref.replace(/^#\//, '').split('/')
        .reduce((o, k) => (o ? o[k.replace(/~1/g, '/').replace(/~0/g, '~')] : undefined), spec);
    }
    return cur || {};
  }

  // The values a parameter may take when its schema lists them all (an enum, or alternatives
  // that are all enums, such as a role or the empty "any"); null when any value is free text.
  function enumOf(obj) {
    const s = deref(obj);
    if (s.enum) return s.enum;
    const alts = s.anyOf || s.oneOf;
    if (!alts) return null;
    const lists = alts.map(enumOf);
    if (lists.some((l) => l === null)) return null;
    const values = lists.flat();
    return values.some((v) => v !== '') ? values : null;
  }

  function refName(obj) {
    return obj && obj.$ref ? obj.$ref.split('/').pop() : null;
  }

  function typeLabel(s) {
    const name = refName(s);
    if (name) return name;
    if (s.const !== undefined) return JSON.stringify(s.const);
    if (s.oneOf) return s.oneOf.map(typeLabel).join(' | ');
    let t = Array.isArray(s.type) ? s.type.join(' | ') : (s.type || 'any');
    if (s.type === 'array' && s.items) t = typeLabel(s.items) + '[]';
    return t;
  }

  function constraints(s) {
    const out = [];
    const pair = (lo, hi, unit) => {
      if (lo !== undefined && hi !== undefined) out.push(lo + '–' + hi + unit);
      else if (lo !== undefined) out.push('≥ ' + lo + unit);
      else if (hi !== undefined) out.push('≤ ' + hi + unit);
    };
    pair(s.minimum, s.maximum, '');
    pair(s.pattern === '\\S' && s.minLength === 1 ? undefined : s.minLength, s.maxLength, ' chars');
    pair(s.minItems, s.maxItems, ' items');
    if (s.pattern === '\\S') out.push('not blank');
    else if (s.pattern) out.push('pattern ' + s.pattern);
    if (s.enum) out.push('one of ' + s.enum.join(', '));
    if (s.default !== undefined) out.push('default ' + JSON.stringify(s.default));
    if (s.format) out.push(s.format);
    return out;
  }

  // A schema as a nested list of fields.
  function schemaView(schema, depth) {
    const s = deref(schema);
    depth = depth || 0;
    const box = el('div', 'schema');
    if (depth === 0) box.append(el('div', 'schema-type', typeLabel(schema)));
    if (s.description && depth === 0) box.append(rich(s.description));
    const props = s.properties || (s.type === 'array' && s.items && deref(s.items).properties);
    if (!props || depth > 4) {
      const c = constraints(s);
      if (c.length) box.append(el('div', 'muted', c.join(' · ')));
      return box;
    }
    const required = new Set(s.required || (s.items && deref(s.items).required) || []);
    const list = el('ul', 'fields');
    for (const [name, raw] of Object.entries(props)) {
      const p = deref(raw);
      const item = el('li', null,
        el('code', 'field', name),
        el('span', 'type', typeLabel(raw)),
        required.has(name) ? el('span', 'req', 'required') : null,
        constraints(p).map((c) => el('span', 'tag', c)));
      if (p.description) item.append(rich(p.description, 'div'));
      const nested = p.properties || (p.items && deref(p.items).properties);
      if (nested) item.append(schemaView(raw, depth + 1));
      list.append(item);
    }
    box.append(list);
    return box;
  }

  function exampleOf(media) {
    if (!media) return undefined;
    if (media.example !== undefined) return media.example;
    const s = deref(media.schema);
    return s.example;
  }

  // ---- rendering -----------------------------------------------------------------------------

  function isPublic(op) {
    const sec = op.security !== undefined ? op.security : spec.security;
    return !sec || sec.length === 0;
  }

  function opId(method, path) {
    return 'op-' + method + path.replace(/[^a-zA-Z0-9]+/g, '-');
  }

  function paramsTable(params) {
    const table = el('table', 'params', el('thead', null, el('tr', null,
      el('th', null, 'name'), el('th', null, 'in'), el('th', null, 'type'), el('th', null, 'description'))));
    const body = el('tbody');
    params.forEach((p) => {
      const s = deref(p.schema || {});
      body.append(el('tr', null,
        el('td', null, el('code', null, p.name), p.required ? el('span', 'req', 'required') : null),
        el('td', null, p.in),
        el('td', null, typeLabel(p.schema || {}), constraints(s).length ? ' (' + constraints(s).join(', ') + ')' : ''),
        el('td', null, p.description || '')));
    });
    table.append(body);
    return table;
  }

  function responsesView(responses) {
    const list = el('div', 'responses');
    for (const [code, raw] of Object.entries(responses || {})) {
      const r = deref(raw);
      const row = el('details', 'response',
        el('summary', null, el('span', 'code c' + code[0], code), ' ', rich(r.description || '', 'span')));
      const headers = Object.keys(r.headers || {});
      if (headers.length) row.append(el('div', 'muted', 'Headers: ', headers.map((h, i) => [i ? ', ' : '', el('code', null, h)])));
      for (const [type, media] of Object.entries(r.content || {})) {
        row.append(el('div', 'media', type));
        if (media.schema) row.append(schemaView(media.schema));
        const ex = exampleOf(media);
        if (ex !== undefined) row.append(el('pre', 'example', typeof ex === 'string' ? ex : JSON.stringify(ex, null, 2)));
      }
      list.append(row);
    }
    return list;
  }

  function tryIt(method, path, op, params) {
    const form = el('form', 'try');
    form.append(el('h4', null, 'Try it'));
    const inputs = {};
    params.forEach((p) => {
      const values = enumOf(p.schema || {});
      let input;
      if (values) {
        const options = values.filter((v) => v !== '').map((v) => { const o = el('option', null, String(v)); o.value = v; return o; });
        // An optional filter starts unset: "any", sent as nothing.
        if (!p.required) {
          const any = el('option', null, 'any');
          any.value = '';
          options.unshift(any);
        }
        input = el('select', null, options);
      } else {
        input = el('input');
        input.type = 'text';
      }
      inputs[p.name] = { param: p, input };
      form.append(el('label', 'row', el('span', null, p.name + ' (' + p.in + ')'), input));
    });
    let textarea = null;
    const media = op.requestBody && op.requestBody.content && op.requestBody.content['application/json'];
    if (media) {
      textarea = el('textarea', 'body');
      textarea.spellcheck = false;
      textarea.rows = 8;
      const ex = exampleOf(media);
      textarea.value = ex !== undefined ? JSON.stringify(ex, null, 2) : '{}';
      form.append(el('label', 'row', el('span', null, 'JSON body'), textarea));
    }
    const send = el('button', 'send', 'Send');
    send.type = 'submit';
    const cancel = el('button', 'cancel', 'Cancel');
    cancel.type = 'button';
    cancel.disabled = true;
    const out = el('div', 'out');
    form.append(el('div', 'actions', send, cancel, isPublic(op) ? el('span', 'muted', 'public: no key sent') : null), out);

    let controller = null;
    cancel.addEventListener('click', () => controller && controller.abort());
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      let url = path;
      const query = new URLSearchParams();
      for (const { param, input } of Object.values(inputs)) {
        if (param.in === 'path') url = url.replace('{' + param.name + '}', encodeURIComponent(input.value));
        else if (param.in === 'query' && input.value !== '') query.set(param.name, input.value);
      }
      const headers = {};
      for (const { param, input } of Object.values(inputs)) {
        if (param.in === 'header' && input.value !== '') headers[param.name] = input.value;
      }
      const key = document.getElementById('api-key').value.trim();
      const mode = document.getElementById('auth-mode').value;
      if (key && !isPublic(op)) {
        if (mode === 'header') headers['X-API-Key'] = key;
        else if (mode === 'bearer') headers.Authorization = 'Bearer ' + key;
        else query.set('api_key', key);
      }
      const init = { method: method.toUpperCase(), headers };
      if (textarea) {
        init.body = textarea.value;
        headers['Content-Type'] = 'application/json';
      }
      const qs = query.toString();
      if (qs) url += '?' + qs;

      controller = new AbortController();
      init.signal = controller.signal;
      send.disabled = true;
      cancel.disabled = false;
      out.replaceChildren(el('div', 'muted', init.method + ' ' + url.replace(/api_key=[^&]*/, 'api_key=…')));
      const started = performance.now();
      try {
        const res = await fetch(url, init);
        const status = el('div', 'status', el('span', 'code c' + String(res.status)[0], res.status), ' ', res.statusText,
          el('span', 'muted', ' · ' + Math.round(performance.now() - started) + ' ms to headers'));
        const hdrs = el('pre', 'headers', [...res.headers].map(([k, v]) => k + ': ' + v).join('\n'));
        const bodyOut = el('pre', 'resp');
        out.replaceChildren(status, el('div', 'label', 'Headers'), hdrs, el('div', 'label', 'Body'), bodyOut);
        let text = '';
        if (res.body && init.method !== 'HEAD') {
          // Read incrementally so streamed (SSE) responses appear as they arrive.
          const reader = res.body.getReader();
          const decoder = new TextDecoder();
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            text += decoder.decode(value, { stream: true });
            bodyOut.textContent = text;
          }
          text += decoder.decode();
        }
        if ((res.headers.get('content-type') || '').includes('json')) {
          try { text = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* keep as received */ }
        }
        bodyOut.textContent = text || '(empty body)';
      } catch (e) {
        out.append(el('div', 'error', e.name === 'AbortError' ? 'Cancelled.' : 'Request failed: ' + e.message));
      } finally {
        send.disabled = false;
        cancel.disabled = true;
        controller = null;
      }
    });
    return form;
  }

  function operationView(method, path, op, pathItem) {
    const params = [...(pathItem.parameters || []), ...(op.parameters || [])].map(deref);
    const details = el('details', 'op m-' + method);
    details.id = opId(method, path);
    details.append(el('summary', null,
      el('span', 'method', method.toUpperCase()),
      el('code', 'path', path),
      el('span', 'summary', op.summary || ''),
      isPublic(op) ? el('span', 'badge', 'public') : el('span', 'badge lock', 'key')));
    paragraphs(op.description).forEach((p) => details.append(p));
    if (params.length) details.append(el('h4', null, 'Parameters'), paramsTable(params));
    if (op.requestBody) {
      const rb = deref(op.requestBody);
      details.append(el('h4', null, 'Request body', rb.required ? el('span', 'req', 'required') : null));
      for (const [type, media] of Object.entries(rb.content || {})) {
        details.append(el('div', 'media', type));
        if (media.schema) details.append(schemaView(media.schema));
      }
    }
    details.append(el('h4', null, 'Responses'), responsesView(op.responses));
    details.append(tryIt(method, path, op, params));
    return details;
  }

  function render() {
    document.title = spec.info.title + ' API';
    document.getElementById('title').textContent = spec.info.title + ' API';
    document.getElementById('version').textContent = 'v' + spec.info.version;
    const intro = document.getElementById('intro');
    intro.replaceChildren(...paragraphs(spec.info.description));

    const groups = new Map();
    for (const [path, item] of Object.entries(spec.paths || {})) {
      for (const method of METHODS) {
        if (!item[method]) continue;
        const tag = (item[method].tags || ['Other'])[0];
        if (!groups.has(tag)) groups.set(tag, []);
        groups.get(tag).push([method, path, item[method], item]);
      }
    }
    const ops = document.getElementById('ops');
    const toc = document.getElementById('toc');
    ops.replaceChildren();
    toc.replaceChildren();
    for (const [tag, list] of groups) {
      const meta = (spec.tags || []).find((t) => t.name === tag);
      const section = el('section', 'group', el('h2', null, tag), meta && meta.description ? rich(meta.description) : null);
      const tocList = el('ul');
      for (const [method, path, op, item] of list) {
        section.append(operationView(method, path, op, item));
        const link = el('a', 'm-' + method, el('span', 'method', method.toUpperCase()), ' ', path);
        link.href = '#' + opId(method, path);
        link.addEventListener('click', () => { document.getElementById(opId(method, path)).open = true; });
        tocList.append(el('li', null, link));
      }
      ops.append(section);
      toc.append(el('div', 'toc-group', tag), tocList);
    }
    const hash = decodeURIComponent(location.hash.slice(1));
    const target = hash && document.getElementById(hash);
    if (target) { target.open = true; target.scrollIntoView(); }
  }

  function applyFilter(q) {
    q = q.trim().toLowerCase();
    document.querySelectorAll('details.op').forEach((d) => {
      const text = d.querySelector('summary').textContent.toLowerCase();
      d.hidden = q !== '' && !text.includes(q);
    });
    document.querySelectorAll('#toc li').forEach((li) => {
      li.hidden = q !== '' && !li.textContent.toLowerCase().includes(q);
    });
  }

  document.addEventListener('DOMContentLoaded', async () => {
    document.getElementById('filter').addEventListener('input', (e) => applyFilter(e.target.value));
    document.getElementById('auth-form').addEventListener('submit', (e) => e.preventDefault());
    const ops = document.getElementById('ops');
    try {
      const res = await fetch('/openapi.json', { headers: { Accept: 'application/json' } });
      if (!res.ok) throw new Error('HTTP ' + res.status);
      spec = await res.json();
      render();
    } catch (e) {
      ops.replaceChildren(el('p', 'error', 'Could not load /openapi.json: ' + e.message));
    }
  });
})();
