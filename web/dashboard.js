// dashboard.js: the dashboard's behaviour. Reads the admin endpoints with the admin key
// (sessionStorage, sent as a Bearer token), draws charts as SVG itself (no library), and
// never builds HTML from data: text goes in through textContent, so a hostile model name
// or error string stays text.
'use strict';

const KEY_SLOT = 'smolgate.admin_key';
const $ = (id) => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';

let liveTimer = null;
let lastTotals = null;          // {t, requests, series: Map}: for rates between two polls
let todaySpend = { day: new Map(), month: new Map(), total: new Map() };   // key id -> micro-dollars
let reqCursor = null;

// ---- talking to the gateway ----------------------------------------------------------------

function key() { return sessionStorage.getItem(KEY_SLOT) || ''; }

async function api(path, opts = {}) {
  const headers = { authorization: `Bearer ${key()}`, ...(opts.headers || {}) };
  const r = await fetch(path, { ...opts, headers });
  const text = await r.text();
  if (r.status === 401 || r.status === 403) {
    if (!opts.keepSession) logout(r.status === 403 ? 'that key is not an admin key' : 'the key was refused');
    throw new Error(`HTTP ${r.status}`);
  }
  let json = null;
  try { json = JSON.parse(text); } catch { /* CSV, or an error page */ }
  if (!r.ok) throw new Error(json?.error?.message || `HTTP ${r.status}`);
  return json ?? text;
}

// ---- small helpers ------------------------------------------------------------------------

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells, cls) {
  const tr = el('tr', null, cls);
  for (const c of cells) tr.append(c instanceof Node ? wrapTd(c) : el('td', c ?? ''));
  return tr;
}
function wrapTd(n) { const td = el('td'); td.append(n); return td; }

function fill(tableId, rows) {
  const tb = $(tableId).tBodies[0];
  tb.replaceChildren(...rows);
}

const usd = (micro) => (micro === null || micro === undefined ? '' : (micro / 1e6).toFixed(6));
const ms = (v) => (v === null || v === undefined || v < 0 ? '' : String(v));
const fmtTime = (t) => new Date(t).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');

// ---- login --------------------------------------------------------------------------------

function showApp(on) {
  $('login').hidden = on;
  $('tabs').hidden = !on;
  if (on) show('live');
  else for (const v of document.querySelectorAll('.view')) v.hidden = true;
}

function logout(why) {
  sessionStorage.removeItem(KEY_SLOT);
  clearInterval(liveTimer);
  liveTimer = null;
  showApp(false);
  $('login-error').textContent = why || '';
}

async function login(ev) {
  ev.preventDefault();
  sessionStorage.setItem(KEY_SLOT, $('login-key').value.trim());
  try {
    await api('/admin/stats', { keepSession: true });
    $('login-key').value = '';
    $('login-error').textContent = '';
    showApp(true);
  } catch (e) {
    sessionStorage.removeItem(KEY_SLOT);
    $('login-error').textContent = `not logged in: ${e.message === 'HTTP 403' ? 'that key is not an admin key' : e.message === 'HTTP 401' ? 'the key was refused' : e.message}`;
  }
}

// ---- views --------------------------------------------------------------------------------

function show(view) {
  for (const b of document.querySelectorAll('#tabs button[data-view]')) b.classList.toggle('on', b.dataset.view === view);
  for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== `view-${view}`;
  clearInterval(liveTimer);
  liveTimer = null;
  if (view === 'live') { refreshLive(); liveTimer = setInterval(refreshLive, 2000); }
  if (view === 'spend') refreshSpend();
  if (view === 'requests') searchRequests(true);
  if (view === 'keys') refreshKeys();
}

// ---- live ---------------------------------------------------------------------------------

const seriesId = (s) => `${s.route}\u0000${s.provider}\u0000${s.model}`;

// What each key spent this UTC day, this UTC month and ever (from the ledger: its budgets'
// periods), for the "left" columns.
async function refreshTodaySpend() {
  const day = new Date();
  day.setUTCHours(0, 0, 0, 0);
  const month = new Date(Date.UTC(day.getUTCFullYear(), day.getUTCMonth(), 1));
  const spent = async (from) => {
    const doc = await api(`/admin/spend?${from ? `from=${Math.floor(from / 1000)}&` : ''}by=key&bucket=none`);
    return new Map(doc.data.map((r) => [r.key, r.cost_micro]));
  };
  const [d, m, t] = await Promise.all([spent(day), spent(month), spent(null)]);
  todaySpend = { day: d, month: m, total: t };
}

async function refreshLive() {
  let st;
  try { st = await api('/admin/stats'); } catch { return; }
  const now = st.now_ms;
  const prev = lastTotals;
  const dt = prev ? (now - prev.t) / 1000 : 0;
  const rate = (cur, old) => (prev && dt > 0 ? ((cur - (old ?? 0)) / dt).toFixed(2) : '0.00');
  $('live-requests').textContent = st.totals.requests;
  $('live-rps').textContent = rate(st.totals.requests, prev?.requests);
  $('live-errors').textContent = st.totals.errors;
  $('live-fallbacks').textContent = st.totals.fallbacks;
  $('live-pending').textContent = st.ledger.pending;
  const series = new Map(st.series.map((s) => [seriesId(s), s]));
  fill('live-series', st.series.map((s) => row([
    s.route || '(direct)', s.provider, s.model, s.requests, rate(s.requests, prev?.series.get(seriesId(s))?.requests),
    s.errors, s.fallbacks, ms(s.latency_ms.p50), ms(s.latency_ms.p95), ms(s.ttft_ms.p50), ms(s.ttft_ms.p95), usd(s.cost_micro),
  ], s.errors ? 'has-errors' : '')));
  fill('live-breakers', st.breakers.length ? st.breakers.map((b) => row([b.target, b.state, b.failures, b.cooldown_ms], `breaker-${b.state}`))
    : [row(['no breaker has seen a failure', '', '', ''])]);
  if (!prev || Math.floor(now / 10000) !== Math.floor(prev.t / 10000)) { try { await refreshTodaySpend(); } catch { /* ledger down: keep */ } }
  const left = (cap, spent) => (cap === null ? '-' : usd(Math.max(0, cap - (spent ?? 0))));
  fill('live-limits', st.keys.map((k) => {
    const b = k.budget_micro;
    const rateLeft = (limit, used) => (limit === null ? '-' : k.now ? Math.max(0, limit - used) : 'n/a');
    return row([k.id, k.role, k.limits.rpm ?? '-', rateLeft(k.limits.rpm, k.now?.requests), k.limits.tpm ?? '-',
      rateLeft(k.limits.tpm, k.now?.tokens), k.limits.concurrency ?? '-',
      usd(todaySpend.day.get(k.id) ?? 0), left(b.daily, todaySpend.day.get(k.id)), left(b.monthly, todaySpend.month.get(k.id)),
      left(b.total, todaySpend.total.get(k.id))], (b.daily !== null && (todaySpend.day.get(k.id) ?? 0) >= b.daily) ? 'has-errors' : '');
  }));
  // tokens/s of a local model: its output tokens (series with provider "local") between polls
  fill('live-local', st.local.length ? st.local.map((l) => {
    let out = 0, old = 0;
    for (const s of st.series) if (s.provider === 'local' && s.model === l.name) out += s.output_tokens;
    if (prev) for (const s of prev.series.values()) if (s.provider === 'local' && s.model === l.name) old += s.output_tokens;
    return row([l.name, l.slots, l.active, l.queued, rate(out, old)]);
  }) : [row(['no local model', '', '', '', ''])]);
  lastTotals = { t: now, requests: st.totals.requests, series };
  $('live-updated').textContent = `updated ${fmtTime(now)}`;
}

// ---- spend --------------------------------------------------------------------------------

function spendQuery() {
  const range = $('spend-range').value, by = $('spend-by').value, bucket = $('spend-bucket').value;
  const q = new URLSearchParams({ by, bucket });
  if (range !== 'all') q.set('from', String(Math.floor(Date.now() / 1000) - Number(range) * 3600));
  return q;
}

const PALETTE = ['#3b82f6', '#f59e0b', '#10b981', '#ef4444', '#8b5cf6', '#14b8a6', '#f97316', '#64748b'];

// Stacked bars: one bar per bucket, one colour per value of the chosen dimension.
function drawStacked(container, buckets, names, value, label) {
  const W = 760, H = 220, pad = 40;
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H + 40}`);
  svg.setAttribute('role', 'img');
  const totals = buckets.map((b) => names.reduce((a, n) => a + (value(b, n) || 0), 0));
  const max = Math.max(1, ...totals);
  const bw = buckets.length ? Math.min(60, (W - pad) / buckets.length - 4) : 0;
  buckets.forEach((b, i) => {
    let y = H;
    const x = pad + i * ((W - pad) / Math.max(1, buckets.length));
    names.forEach((n, k) => {
      const v = value(b, n) || 0;
      if (!v) return;
      const h = (v / max) * (H - 20);
      y -= h;
      const r = document.createElementNS(SVG, 'rect');
      r.setAttribute('x', x); r.setAttribute('y', y); r.setAttribute('width', bw); r.setAttribute('height', Math.max(h, 1));
      r.setAttribute('fill', PALETTE[k % PALETTE.length]);
      r.setAttribute('class', 'bar');
      const t = document.createElementNS(SVG, 'title');
      t.textContent = `${b.label} ${n}: ${label(v)}`;
      r.append(t);
      svg.append(r);
    });
    const tx = document.createElementNS(SVG, 'text');
    tx.setAttribute('x', x); tx.setAttribute('y', H + 14); tx.setAttribute('class', 'axis');
    tx.textContent = b.label.slice(5, b.label.length > 10 ? 13 : 10);
    svg.append(tx);
  });
  const top = document.createElementNS(SVG, 'text');
  top.setAttribute('x', 0); top.setAttribute('y', 12); top.setAttribute('class', 'axis');
  top.textContent = label(max);
  svg.append(top);
  names.forEach((n, k) => {   // legend
    const x = pad + (k % 6) * 120, y = H + 26 + Math.floor(k / 6) * 12;
    const r = document.createElementNS(SVG, 'rect');
    r.setAttribute('x', x); r.setAttribute('y', y); r.setAttribute('width', 10); r.setAttribute('height', 10);
    r.setAttribute('fill', PALETTE[k % PALETTE.length]);
    const t = document.createElementNS(SVG, 'text');
    t.setAttribute('x', x + 14); t.setAttribute('y', y + 9); t.setAttribute('class', 'axis');
    t.textContent = n;
    svg.append(r, t);
  });
  container.replaceChildren(svg);
}

async function refreshSpend(ev) {
  ev?.preventDefault();
  const q = spendQuery(), by = q.get('by'), bucket = q.get('bucket');
  let doc;
  try { doc = await api(`/admin/spend?${q}`); } catch (e) { $('spend-chart').replaceChildren(el('p', e.message, 'err')); return; }
  $('spend-cost').textContent = usd(doc.total.cost_micro);
  $('spend-requests').textContent = doc.total.requests;
  $('spend-tokens').textContent = doc.total.input_tokens + doc.total.output_tokens;
  const name = (r) => r[by] ?? '(none)';
  const byName = new Map(), byBucket = new Map();
  for (const r of doc.data) {
    const n = name(r), b = r[bucket];
    const t = byName.get(n) || { requests: 0, errors: 0, input: 0, output: 0, cost: 0 };
    t.requests += r.requests; t.errors += r.errors; t.input += r.input_tokens; t.output += r.output_tokens; t.cost += r.cost_micro;
    byName.set(n, t);
    if (!byBucket.has(b)) byBucket.set(b, { label: b, v: new Map() });
    byBucket.get(b).v.set(n, (byBucket.get(b).v.get(n) || 0) + r.cost_micro);
  }
  const names = [...byName.keys()];
  // every bucket of the range, spent in or not, so that time reads left to right evenly
  const from = q.get('from');
  if (from) {
    const step = bucket === 'hour' ? 3600000 : 86400000;
    const label = (t) => (bucket === 'hour' ? new Date(t).toISOString().replace(/\.\d+Z$/, 'Z') : new Date(t).toISOString().slice(0, 10));
    for (let t = Math.floor((Number(from) * 1000) / step) * step; t <= Date.now(); t += step) {
      if (!byBucket.has(label(t))) byBucket.set(label(t), { label: label(t), v: new Map() });
    }
  }
  const buckets = [...byBucket.values()].sort((a, b) => (a.label < b.label ? -1 : a.label > b.label ? 1 : 0));
  drawStacked($('spend-chart'), buckets, names, (b, n) => b.v.get(n), (v) => `$${usd(v)}`);
  $('spend-dim').textContent = by;
  fill('spend-table', names.map((n) => {
    const t = byName.get(n);
    return row([n, t.requests, t.errors, t.input, t.output, usd(t.cost)]);
  }));
}

async function exportCsv() {
  const text = await api(`/admin/spend.csv?${spendQuery()}`);
  const a = el('a');
  a.href = URL.createObjectURL(new Blob([text], { type: 'text/csv' }));
  a.download = 'smolgate-spend.csv';
  document.body.append(a);
  a.click();
  a.remove();
}

// ---- requests and traces ------------------------------------------------------------------

async function searchRequests(fresh, ev) {
  ev?.preventDefault();
  if (fresh) reqCursor = null;
  const q = new URLSearchParams({ limit: '50' });
  if ($('req-q').value.trim()) q.set('q', $('req-q').value.trim());
  if ($('req-status').value) q.set('status', $('req-status').value);
  if (reqCursor) q.set('before', reqCursor);
  let doc;
  try { doc = await api(`/admin/requests?${q}`); } catch (e) { fill('req-table', [row([e.message])]); return; }
  const rows = doc.data.map((r) => {
    const tr = row([fmtTime(r.time_ms), r.key ?? '', r.route ?? '', r.model ?? r.requested_model ?? '', r.status,
      r.attempts, (r.input_tokens ?? 0) + (r.output_tokens ?? 0), usd(r.cost_micro), ms(r.latency_ms)],
    r.status >= 400 ? 'has-errors req' : 'req');
    tr.dataset.id = r.request_id;
    tr.addEventListener('click', () => showTrace(r.request_id));
    return tr;
  });
  const tb = $('req-table').tBodies[0];
  if (fresh) tb.replaceChildren(...rows);
  else tb.append(...rows);
  reqCursor = doc.next_before;
  $('req-more').hidden = !reqCursor;
}

const REASONS = {
  retryable: 'the upstream answered with a retryable error (429 or 5xx)',
  timeout: 'the attempt timed out',
  connect: 'the connection failed',
  stream: 'the stream broke before the answer',
  quota: 'the provider reported its quota exhausted',
  context: 'the prompt did not fit the model\'s context',
  client: 'the upstream refused the request',
  limited: 'the target was at its own rate limit',
  open: 'the target\'s circuit breaker was open',
};

async function showTrace(id) {
  let t;
  try { t = await api(`/admin/requests/${encodeURIComponent(id)}`); } catch (e) { $('trace').hidden = false; $('trace-summary').replaceChildren(el('dd', e.message, 'err')); return; }
  $('trace').hidden = false;
  $('trace-id').textContent = t.request_id;
  const facts = [['time', fmtTime(t.time_ms)], ['key', t.key ?? ''], ['route', t.route ?? ''], ['requested model', t.requested_model ?? ''],
    ['served by', t.provider ? `${t.provider}/${t.model}` : ''], ['status', t.status + (t.error ? ` (${t.error})` : '')],
    ['tokens in / out', `${t.input_tokens ?? '?'} / ${t.output_tokens ?? '?'}`], ['cost $', usd(t.cost_micro)],
    ['latency ms', ms(t.latency_ms)], ['time to first token ms', ms(t.ttft_ms)], ['stream', t.stream ? 'yes' : 'no']];
  $('trace-summary').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', k), el('dd', v)]));
  const opt = (v) => (v === null || v === undefined ? '?' : v);
  fill('trace-attempts', t.attempts.map((a) => row([a.n + 1, a.provider ?? '', a.model ?? '',
    a.error ? `${a.error} (${a.status || 'no response'})` : `ok (${a.status})`, a.start_ms, opt(a.queue_ms),
    opt(a.connect_ms), a.ttft_ms === null && a.queue_ms !== null ? '-' : opt(a.ttft_ms), ms(a.latency_ms),
    `${opt(a.input_tokens)} / ${opt(a.output_tokens)}`, a.cost_micro === null ? '?' : usd(a.cost_micro),
    a.next_reason ? (REASONS[a.next_reason] || a.next_reason) : ''], a.error ? 'has-errors attempt' : 'attempt')));
  // a timeline: one bar per attempt from its start for its duration, in phases: queued,
  // waiting for the first byte, answering
  const W = 760, rowH = 22, total = Math.max(1, t.latency_ms ?? 0, ...t.attempts.map((a) => a.start_ms + (a.latency_ms ?? 0)));
  const X = (v) => 200 + (v / total) * (W - 210);
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${rowH * t.attempts.length + 8}`);
  t.attempts.forEach((a, i) => {
    const dur = a.latency_ms ?? 0, q = Math.min(dur, a.queue_ms ?? 0), first = a.ttft_ms === null ? dur : Math.min(dur, a.ttft_ms);
    const phases = [[0, q, 0.35, 'queue'], [q, first, 0.6, 'wait'], [first, dur, 1, 'answer']];
    for (const [from, to, opacity, phase] of phases) {
      if (to <= from && !(phase === 'answer' && dur === 0)) continue;
      const r = document.createElementNS(SVG, 'rect');
      r.setAttribute('x', X(a.start_ms + from));
      r.setAttribute('y', i * rowH + 4);
      r.setAttribute('width', Math.max(2, ((to - from) / total) * (W - 210)));
      r.setAttribute('height', rowH - 8);
      r.setAttribute('fill', a.error ? '#ef4444' : '#10b981');
      r.setAttribute('fill-opacity', opacity);
      r.setAttribute('class', `phase-${phase}`);
      r.dataset.attempt = i;
      svg.append(r);
    }
    const lab = document.createElementNS(SVG, 'text');
    lab.setAttribute('x', 0); lab.setAttribute('y', i * rowH + 16); lab.setAttribute('class', 'axis');
    lab.textContent = `${a.provider}/${a.model} ${ms(a.latency_ms)} ms${a.ttft_ms !== null && a.ttft_ms !== undefined ? ` (TTFT ${a.ttft_ms})` : ''}`;
    svg.append(lab);
  });
  $('trace-chart').replaceChildren(svg);
  const p = $('trace-payload');
  if (t.payload) {
    p.replaceChildren(el('h3', 'Prompt (captured, redacted)'), el('pre', t.payload.request ?? ''),
      el('h3', 'Answer'), el('pre', t.payload.response ?? ''));
  } else p.replaceChildren(el('p', 'payload not captured (payload capture is off for this route and key)', 'note'));
}

// ---- keys ---------------------------------------------------------------------------------

async function refreshKeys() {
  let doc;
  try { doc = await api('/admin/keys'); } catch (e) { $('key-error').textContent = e.message; return; }
  fill('key-table', doc.data.map((k) => {
    const revoked = !!k.revoked_at;
    let action = el('span', '');
    if (k.source !== 'config' && !revoked) {
      action = el('button', 'Revoke', 'quiet');
      action.addEventListener('click', async () => {
        try { await api(`/admin/keys/${encodeURIComponent(k.id)}`, { method: 'DELETE' }); } catch (e) { $('key-error').textContent = e.message; }
        refreshKeys();
      });
    }
    return row([k.id, k.source, k.role, k.routes ? k.routes.join(', ') : 'all', revoked ? 'revoked' : 'active', action], revoked ? 'revoked' : '');
  }));
}

async function createKey(ev) {
  ev.preventDefault();
  const body = { id: $('key-id').value.trim(), role: $('key-role').value };
  const b = $('key-budget').value.trim();
  if (b) body.budget = { daily_usd: Number(b) };
  $('key-error').textContent = '';
  try {
    const k = await api('/admin/keys', { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
    $('key-secret').hidden = false;
    $('key-secret').textContent = `Key ${k.id} created. Its secret, shown once: ${k.key}`;
    $('key-id').value = '';
  } catch (e) { $('key-error').textContent = e.message; }
  refreshKeys();
}

// ---- start --------------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', () => logout(''));
  for (const b of document.querySelectorAll('#tabs button[data-view]')) b.addEventListener('click', () => show(b.dataset.view));
  $('spend-form').addEventListener('submit', refreshSpend);
  for (const id of ['spend-range', 'spend-by', 'spend-bucket']) $(id).addEventListener('change', () => refreshSpend());
  $('spend-csv').addEventListener('click', () => exportCsv().catch((e) => { $('spend-chart').append(el('p', e.message, 'err')); }));
  $('req-form').addEventListener('submit', (ev) => searchRequests(true, ev));
  $('req-more').addEventListener('click', () => searchRequests(false));
  $('key-form').addEventListener('submit', createKey);
  if (key()) api('/admin/stats', { keepSession: true }).then(() => showApp(true), () => logout(''));
});
