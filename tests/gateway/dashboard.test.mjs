// dashboard.test.mjs: the built-in dashboard in a real browser (Debian's chromium, headless,
// driven by puppeteer-core), after known traffic: three requests on the route `dash`
// (tests/e2e/gateway.sh declares it: openai/m-dash-primary, then backup/m-dash-backup),
// the first of which fails twice on the primary (500, then its retry) and falls back.
// Checks what the live, spend, requests and trace views show against that traffic, the
// CSV export, payload capture (on for route dash: the prompt, redacted, and the answer in
// the trace), key management through /admin/keys, and the admin endpoints' refusals.
// Screenshots go to DASHBOARD_SHOTS (gateway.sh: ${TMPDIR:-/tmp}/smolgate-dashboard).
//
// Chromium missing is a failure, not a skip: install it (tools/install-deps.sh --test).

import test from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GW, KEY, post, get, sleep, chatBody, assertOpenAIError, nonce, control, loadPackage } from './lib.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.DASHBOARD_SHOTS || path.join(os.tmpdir(), 'smolgate-dashboard');
const USER_KEY = 'sk-smolgate-limited-key';

const n = nonce('dash');
let traffic = [];   // the three answers: {status, info}
const budgetKey = `dash-budget-${n}`.replace(/[^A-Za-z0-9._-]/g, '-');
let budgetRequestId = null;
let budgetKeySecret = null;

async function until(what, fn, ms = 15000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try { const v = await fn(); if (v) return v; } catch (e) { last = e; }
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms${last ? ` (${last.message})` : ''}`);
    await sleep(200);
  }
}

test('known traffic: three requests on route dash, one of them after a fallback', async () => {
  await control('/control', { provider: 'openai', match: `${n}-a`, faults: [{ status: 500, count: 2 }] });
  for (const s of ['a', 'b', 'c']) {
    // c carries a provider's key in its prompt: the captured payload must not
    const r = await post(chatBody('dash', `dashboard ${n}-${s}${s === 'c' ? ' my key is sk-fake-openai-dummy' : ''}`));
    assert.equal(r.status, 200, r.text);
    traffic.push(r);
  }
  assert.equal(traffic[0].info.provider, 'backup', 'the first request fell back');
  assert.equal(traffic[0].info.attempts, 3, 'two tries of the primary, then the backup');
  assert.equal(traffic[1].info.provider, 'openai');
  // a run-time key with a daily budget of $1 and rpm/tpm limits, used once (a priced model, no
  // route): the live view shows what it spent today and what is left of each
  const k = await post({ id: budgetKey, role: 'user', budget: { daily_usd: 1 }, limits: { rpm: 50, tpm: 100000 } }, { path: '/admin/keys' });
  assert.equal(k.status, 201, k.text);
  const spend = await until('the new key served', async () => {
    const r = await post(chatBody('openai/m-dash-primary', `budgeted ${n}`, { max_tokens: 16 }), { key: k.json.key });   // a small reservation
    return r.status === 200 ? r : null;
  });
  budgetRequestId = spend.info.requestId;
  budgetKeySecret = k.json.key;
  // the ledger delivers within flush_ms (1 s): wait until the three are there
  await until('three dash requests in the ledger', async () => {
    const r = await get('/admin/requests?route=dash&limit=10');
    return r.status === 200 && r.json.data.length >= 3;
  });
});

test('the admin endpoints refuse other keys (403, OpenAI shape) and no key (401)', async () => {
  for (const p of ['/admin/stats', '/admin/spend', '/admin/spend.csv', '/admin/requests', '/admin/requests/x']) {
    const r = await get(p, { key: USER_KEY });
    assert.equal(r.status, 403, `${p}: ${r.text}`);
    assertOpenAIError(r.json, { status: 403, code: 'permission_denied' });
    const r2 = await get(p, { key: null });
    assert.equal(r2.status, 401, `${p} without a key`);
  }
  const bad = await get('/admin/requests?status=nope');
  assert.equal(bad.status, 400);
  assertOpenAIError(bad.json, { status: 400, code: 'invalid_query' });
  const none = await get('/admin/requests/0000000000000000nope');
  assert.equal(none.status, 404);
  // the page itself needs no key and holds no data; / redirects browsers, not Ollama probes
  const page = await fetch(`${GW}/dashboard`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type'), /text\/html/);
  assert.match(page.headers.get('content-security-policy'), /default-src 'self'/);
  const ui = await fetch(`${GW}/ui`, { redirect: 'manual' });
  assert.equal(ui.status, 302);
  assert.equal(ui.headers.get('location'), '/dashboard');
  const probe = await fetch(`${GW}/`);
  assert.equal(await probe.text(), 'Ollama is running');
});

test('the endpoints agree with the traffic: spend, CSV, request list, trace', async () => {
  const sp = await get('/admin/spend?by=route&bucket=none');
  assert.equal(sp.status, 200, sp.text);
  const row = sp.json.data.find((r) => r.route === 'dash');
  assert.ok(row, JSON.stringify(sp.json));
  assert.equal(row.requests, 3);
  assert.equal(row.fallbacks, 1);
  assert.equal(row.errors, 0);
  const list = await get('/admin/requests?route=dash&limit=10');
  const cost = list.json.data.reduce((a, r) => a + (r.cost_micro ?? 0), 0);
  assert.ok(cost > 0, 'the dash models are priced');
  assert.equal(row.cost_micro, cost, 'spend (rollup) = the sum of the requests\' costs');
  const csv = await get('/admin/spend.csv?by=route&bucket=none');
  assert.equal(csv.status, 200);
  assert.match(csv.headers.get('content-type'), /text\/csv/);
  const lines = csv.text.trim().split('\n');
  assert.match(lines[0], /^route,requests,/);
  assert.ok(lines.some((l) => l.startsWith('dash,3,')), csv.text);
  // paging: one at a time, newest first, three pages
  const seen = [];
  let before = null;
  for (let i = 0; i < 3; i++) {
    const r = await get(`/admin/requests?route=dash&limit=1${before ? `&before=${encodeURIComponent(before)}` : ''}`);
    assert.equal(r.json.data.length, 1);
    seen.push(r.json.data[0].request_id);
    before = r.json.next_before;
  }
  assert.equal(new Set(seen).size, 3);
  const fb = list.json.data.find((r) => r.fallbacks === 1);
  assert.ok(fb, 'the fallback request is listed');
  assert.equal(fb.request_id, traffic[0].info.requestId);
  const t = await get(`/admin/requests/${fb.request_id}`);
  assert.equal(t.status, 200);
  assert.deepEqual(t.json.attempts.map((a) => [a.provider, a.error, a.next_reason]),
    [['openai', 'retryable', 'retryable'], ['openai', 'retryable', 'retryable'], ['backup', null, null]]);
  // each attempt's place and timings: a retry starts after the one before ended (its backoff
  // is the gap); queue, connect and TTFT fall within the attempt
  const a = t.json.attempts;
  assert.equal(a[0].start_ms, 0);
  for (let i = 0; i < a.length; i++) {
    const x = a[i];
    assert.ok(Number.isInteger(x.latency_ms) && x.latency_ms >= 0 && x.latency_ms < 10000, JSON.stringify(x));
    assert.ok(Number.isInteger(x.queue_ms) && x.queue_ms >= 0 && x.queue_ms <= x.latency_ms, JSON.stringify(x));
    assert.ok(Number.isInteger(x.connect_ms) && x.connect_ms >= 0 && x.connect_ms <= x.latency_ms, JSON.stringify(x));
    assert.ok(Number.isInteger(x.ttft_ms) && x.ttft_ms >= x.queue_ms && x.ttft_ms <= x.latency_ms, JSON.stringify(x));
    if (i) assert.ok(x.start_ms >= a[i - 1].start_ms + a[i - 1].latency_ms, `attempt ${i} starts after the one before: ${JSON.stringify(a)}`);
  }
  assert.ok(a[2].start_ms + a[2].latency_ms <= t.json.latency_ms + 1, 'the attempts end within the request');
  // the failed tries used nothing and cost nothing; the backup's tokens and cost are the request's
  assert.equal(a[0].input_tokens, null);
  assert.equal(a[0].cost_micro, 0);
  assert.ok(a[2].input_tokens > 0 && a[2].output_tokens > 0, JSON.stringify(a[2]));
  assert.equal(a[2].input_tokens, t.json.input_tokens);
  assert.equal(a[2].output_tokens, t.json.output_tokens);
  assert.equal(a[2].cost_micro, t.json.cost_micro);
  assert.ok(a[2].cost_micro > 0);
});

test('payload capture (route dash): the prompt and answer are kept, redacted', async () => {
  const id = traffic[2].info.requestId;
  const t = await until('the captured payload', async () => {
    const r = await get(`/admin/requests/${id}`);
    return r.status === 200 && r.json.payload ? r.json : null;
  });
  assert.ok(t.payload.request.includes(`${n}-c`), t.payload.request);
  assert.ok(t.payload.request.includes('[REDACTED]'), t.payload.request);
  assert.ok(!t.payload.request.includes('sk-fake-openai-dummy'), 'the provider key is redacted');
  const answer = JSON.parse(traffic[2].text).choices[0].message.content;
  assert.ok(answer.length > 0);
  // the fake echoes the prompt: the answer as the client got it, the key redacted there too
  assert.ok(answer.includes('sk-fake-openai-dummy'), answer);
  assert.equal(t.payload.response, answer.replace('sk-fake-openai-dummy', '[REDACTED]'));
  assert.ok(t.payload.captured_ms >= t.time_ms);
  // a route without capture keeps nothing
  const other = await post(chatBody('chat', `not captured ${n}`));
  assert.equal(other.status, 200);
  const o = await until('the chat request in the ledger', async () => {
    const r = await get(`/admin/requests/${other.info.requestId}`);
    return r.status === 200 ? r.json : null;
  });
  assert.equal(o.payload, null);
});

test('in chromium: log in, live, spend with chart and CSV, requests and trace, keys', { timeout: 90000 }, async () => {
  assert.ok(existsSync(CHROMIUM), `chromium is needed at ${CHROMIUM} (apt-get install chromium; tools/install-deps.sh --test)`);
  const puppeteer = (await loadPackage('puppeteer-core')).default;
  rmSync(SHOTS, { recursive: true, force: true });
  mkdirSync(SHOTS, { recursive: true });
  const downloads = path.join(SHOTS, 'downloads');
  mkdirSync(downloads);
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM, headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
  });
  const problems = [];
  try {
    const page = await browser.newPage();
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error' && !/status of 40[13]/.test(m.text())) problems.push(`console: ${m.text()}`); });
    await page.setViewport({ width: 1280, height: 900 });
    const cdp = await page.createCDPSession();
    await cdp.send('Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: downloads });

    // a browser at / lands on the dashboard
    await page.goto(`${GW}/`, { waitUntil: 'networkidle0' });
    assert.match(page.url(), /\/dashboard$/);
    await page.screenshot({ path: path.join(SHOTS, '0-login.png') });

    // a user key is refused with a reason; the admin key gets in
    await page.type('#login-key', USER_KEY);
    await page.click('#login-form button[type=submit]');
    await page.waitForFunction(() => document.getElementById('login-error').textContent.includes('not an admin key'));
    await page.$eval('#login-key', (e) => { e.value = ''; });
    await page.type('#login-key', KEY);
    await page.click('#login-form button[type=submit]');
    await page.waitForSelector('#view-live:not([hidden])');

    // live: the dash route's rows add up to the traffic
    const live = await until('live rows of route dash', async () => {
      const rows = await page.$$eval('#live-series tbody tr', (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
      const dash = rows.filter((r) => r[0] === 'dash');
      const req = dash.reduce((a, r) => a + Number(r[3]), 0), fb = dash.reduce((a, r) => a + Number(r[6]), 0);
      return req === 3 && fb === 1 ? dash : null;
    });
    const served = live.find((r) => r[1] === 'backup');
    assert.equal(served[2], 'm-dash-backup');
    assert.notEqual(served[7], '', 'a p50 latency is shown');
    assert.ok(Number(await page.$eval('#live-requests', (e) => e.textContent)) >= 3);
    // keys with their limits and budgets: the admin key spent at least the dash requests today
    const dashCost = (await get('/admin/requests?route=dash&limit=10')).json.data.reduce((a, r) => a + r.cost_micro, 0);
    const keys = await until('today\'s spend of key tests', async () => {
      const rows = await page.$$eval('#live-limits tbody tr', (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
      const t = rows.find((r) => r[0] === 'tests');
      return t && Number(t[7]) * 1e6 >= dashCost - 0.5 ? rows : null;
    });
    assert.ok(keys.some((r) => r[0] === 'limited'), JSON.stringify(keys));
    assert.deepEqual(keys.find((r) => r[0] === 'tests').slice(8), ['-', '-', '-'], 'no budget: nothing "left"');
    assert.deepEqual(keys.find((r) => r[0] === 'tests').slice(2, 6), ['-', '-', '-', '-'], 'no rpm/tpm: nothing "left"');
    const br = await until('the budgeted key\'s row', async () => {
      const t = await get(`/admin/requests/${budgetRequestId}`);
      if (t.status !== 200) return null;
      const rows = await page.$$eval('#live-limits tbody tr', (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
      const r = rows.find((x) => x[0] === budgetKey);
      return r && Number(r[7]) > 0 ? { r, cost: t.json.cost_micro, used: t.json.input_tokens + t.json.output_tokens } : null;
    });
    assert.ok(br.cost > 0);
    assert.equal(br.r[7], (br.cost / 1e6).toFixed(6), 'spent today: the one request');
    assert.equal(br.r[8], ((1e6 - br.cost) / 1e6).toFixed(6), 'daily budget left: $1 less that');
    assert.equal(br.r[9], '-');
    // rpm and tpm left now: one more request with the key (the first may have left the minute's
    // window by now); /admin/stats counts it at once, and the page shows what is left
    assert.equal(br.r[2], '50');
    assert.equal(br.r[4], '100000');
    const again = await post(chatBody('openai/m-dash-primary', `budgeted again ${n}`, { max_tokens: 16 }), { key: budgetKeySecret });
    assert.equal(again.status, 200, again.text);
    const st = await get('/admin/stats');
    const mine = st.json.keys.find((x) => x.id === budgetKey);
    assert.ok(mine.now.requests >= 1 && mine.now.requests <= 2, JSON.stringify(mine));
    assert.ok(mine.now.tokens > 0 && mine.now.inflight === 0, JSON.stringify(mine));
    assert.deepEqual(st.json.keys.find((x) => x.id === 'tests').now, { requests: 0, tokens: 0, inflight: 0 }, 'a key without limits counts nothing');
    const rl = await until('rpm and tpm left of the limited key', async () => {
      const rows = await page.$$eval('#live-limits tbody tr', (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
      const r = rows.find((x) => x[0] === budgetKey);
      return r && Number(r[3]) < 50 ? r : null;
    });
    assert.ok(Number(rl[3]) >= 48, `rpm left: 50 less one or two requests: ${rl}`);
    assert.ok(Number(rl[5]) < 100000 && Number(rl[5]) >= 100000 - 2 * 5000, `tpm left: 100000 less what they used: ${rl}`);
    const locals = await page.$$eval('#live-local tbody tr', (trs) => trs.map((tr) => tr.cells[0].textContent));
    assert.ok(locals.length >= 1, 'the local models are listed');
    await page.screenshot({ path: path.join(SHOTS, '1-live.png'), fullPage: true });

    // spend by route: the dash row, a chart with bars, CSV export
    await page.click('#tabs button[data-view=spend]');
    await page.select('#spend-by', 'route');
    const spendRow = await until('spend row of route dash', async () => {
      const rows = await page.$$eval('#spend-table tbody tr', (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
      return rows.find((r) => r[0] === 'dash');
    });
    assert.equal(spendRow[1], '3');
    assert.equal(spendRow[2], '0');
    assert.ok(Number(spendRow[5]) > 0, `a cost: ${spendRow}`);
    assert.ok(await page.$$eval('#spend-chart svg rect.bar', (r) => r.length) >= 1, 'the chart has bars');
    await page.screenshot({ path: path.join(SHOTS, '2-spend.png'), fullPage: true });
    await page.click('#spend-csv');
    const file = await until('the CSV download', () => {
      const f = readdirSync(downloads).find((x) => x.endsWith('.csv'));
      return f ? path.join(downloads, f) : null;
    });
    const csv = readFileSync(file, 'utf8').trim().split('\n');
    assert.match(csv[0], /^day,route,requests,/);
    assert.ok(csv.some((l) => /,dash,3,/.test(l)), csv.join('\n'));

    // requests: search finds the three; the fallback's trace shows its three attempts
    await page.click('#tabs button[data-view=requests]');
    await page.type('#req-q', 'dash');
    await page.click('#req-form button[type=submit]');
    const fbId = traffic[0].info.requestId;
    await page.waitForSelector(`#req-table tr[data-id="${fbId}"]`);
    const listed = await page.$$eval('#req-table tbody tr', (trs) => trs.filter((tr) => tr.cells[2].textContent === 'dash').length);
    assert.ok(listed >= 3, `${listed} dash rows listed`);
    await page.click(`#req-table tr[data-id="${fbId}"]`);
    await page.waitForFunction((id) => document.getElementById('trace-id').textContent === id, {}, fbId);
    const att = await page.$$eval('#trace-attempts tbody tr', (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
    assert.equal(att.length, 3);
    assert.deepEqual(att.map((a) => a[1]), ['openai', 'openai', 'backup']);
    assert.match(att[0][3], /^retryable \(500\)/);
    assert.match(att[0][11], /retryable error/);
    assert.match(att[2][3], /^ok \(200\)/);
    assert.equal(att[2][11], '');
    // the timing columns: start, queue, connect, TTFT, total (ms), within the attempt
    for (const r of att) {
      const [start, queue, connect, ttft, total] = r.slice(4, 9).map(Number);
      assert.ok([start, queue, connect, ttft, total].every((v) => Number.isInteger(v) && v >= 0), r.join(' | '));
      assert.ok(queue <= total && connect <= total && ttft <= total && total < 10000, r.join(' | '));
    }
    assert.ok(Number(att[1][4]) >= Number(att[0][4]) + Number(att[0][8]), 'the retry starts after the first try');
    assert.equal(att[0][9], '? / ?', 'a failed try reported no tokens');
    assert.equal(att[0][10], '0.000000');
    assert.match(att[2][9], /^[1-9]\d* \/ [1-9]\d*$/);
    assert.ok(Number(att[2][10]) > 0, `the backup's cost: ${att[2][10]}`);
    const bars = await page.$$eval('#trace-chart svg rect', (r) => [...new Set(r.map((x) => x.dataset.attempt))]);
    assert.deepEqual(bars.sort(), ['0', '1', '2'], 'timeline bars for each attempt');
    await page.screenshot({ path: path.join(SHOTS, '3-trace.png'), fullPage: true });
    // the captured request: its prompt (redacted) and answer in the trace
    const capId = traffic[2].info.requestId;
    await page.click(`#req-table tr[data-id="${capId}"]`);
    await page.waitForFunction((id) => document.getElementById('trace-id').textContent === id, {}, capId);
    await page.waitForSelector('#trace-payload pre');
    const pre = await page.$$eval('#trace-payload pre', (ps) => ps.map((p) => p.textContent));
    assert.ok(pre[0].includes(`${n}-c`) && pre[0].includes('[REDACTED]') && !pre[0].includes('sk-fake-openai-dummy'), pre[0]);
    assert.ok(pre[1].length > 0, 'the answer is shown');
    await page.screenshot({ path: path.join(SHOTS, '3b-payload.png'), fullPage: true });

    // keys: create one (its secret shown once), then revoke it
    await page.click('#tabs button[data-view=keys]');
    const kid = `dash-${n}`.slice(0, 60).replace(/[^A-Za-z0-9._-]/g, '-');
    await page.type('#key-id', kid);
    await page.click('#key-form button[type=submit]');
    await page.waitForFunction(() => !document.getElementById('key-secret').hidden);
    assert.match(await page.$eval('#key-secret', (e) => e.textContent), /sgk-[0-9a-f]{48}/);
    await page.waitForSelector(`xpath/.//tr[td[1][text()="${kid}"]]//button`);
    const [revoke] = await page.$$(`xpath/.//tr[td[1][text()="${kid}"]]//button`);
    await revoke.click();
    // GET /admin/keys lists the live keys: the revoked one leaves the table
    await page.waitForFunction((id) => ![...document.querySelectorAll('#key-table tbody tr')].some((tr) => tr.cells[0].textContent === id), {}, kid);
    const after = await get(`/admin/keys/${kid}`);
    assert.equal(after.status, 200);
    assert.ok(after.json.revoked_at > 0, 'revoked through the page');
    await page.screenshot({ path: path.join(SHOTS, '4-keys.png'), fullPage: true });

    // log out: the key leaves sessionStorage
    await page.click('#logout');
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
  }
  for (const s of ['0-login', '1-live', '2-spend', '3-trace', '3b-payload', '4-keys']) assert.ok(existsSync(path.join(SHOTS, `${s}.png`)), s);
});
