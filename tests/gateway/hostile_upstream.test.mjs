// hostile_upstream.test.mjs: smolgate against upstreams that misbehave on purpose (the
// fake's hostile faults, tests/fakes/README.md), on a private gateway started here with
// small bounds (upstream: max_response_bytes 4 MiB, max_sse_line_bytes 1 MiB) so that its
// memory can be read alone (/proc/PID/status VmHWM, the peak RSS) and its log checked:
//
//   - an endless chunked body -> 502 upstream_response_too_large in OpenAI's shape, at once;
//     with a fallback target configured -> the fallback's answer; the ledger records the
//     failed attempt (status 502, "retryable") and the fallback
//   - a 2 GiB Content-Length sent slowly -> 502 without waiting for the body
//   - one 64 MiB SSE line without a newline (streamed request) -> 502, in OpenAI's shape and
//     in Anthropic's for an Anthropic client
//   - a per-provider max_response_bytes below an ordinary answer -> 502 there, 200 elsewhere
//   - a slow drip (1 byte per 300 ms) -> ended by the provider's total_ms (504) and by
//     idle_ms (502) when the gap is longer than it
//   - a 401 that echoes the credential (OpenAI's Authorization, Anthropic's x-api-key) ->
//     the client gets the 401 without the key, the log has no key, "[REDACTED]" instead;
//     after SIGHUP with a new key, the new key is redacted too
//   - through all of it: peak RSS under baseline + the bounds + a margin, /healthz 200, no
//     sanitizer report or crash in the log.

import test from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  PORTS, CRASH_RE, post, get, chatBody, sseData, assertOpenAIError, writeConfig, startGateway, nonce, control, fakeLog, sleep,
} from './lib.mjs';

const MiB = 1 << 20;
const MAX_RESPONSE = 4 * MiB;
const MAX_SSE_LINE = 1 * MiB;
// What the gateway may hold beyond its baseline while a hostile upstream runs: the bound,
// the buffer's growth (doubling), the sanitizer build's quarantine of freed blocks, and
// the allocator's slack. Without the bounds these cases reach gigabytes.
const MARGIN = 96 * MiB;

const KEYS = {
  openai: 'sk-hostile-openai-9f8e7d6c5b4a3921',
  backup: 'sk-hostile-backup-0a1b2c3d4e5f6789',
  anthropic: 'sk-ant-hostile-11223344556677',
  tiny: 'sk-hostile-tiny-5566778899aabb',
  dripper: 'sk-hostile-drip-ccddeeff001122',
  idler: 'sk-hostile-idle-33445566778899',
  reloaded: 'sk-hostile-reloaded-aa55aa55aa55',
};
const GW_KEY = 'sk-gw-hostile-key-778899';

function configText(dir, openaiKey = KEYS.openai) {
  const oa = `http://127.0.0.1:${PORTS.openai}/v1`;
  const t = '{connect_ms: 1000, first_token_ms: 3000, idle_ms: 2000, total_ms: 15000}';
  return `listen: 127.0.0.1:0
log_level: info
upstream: {max_response_bytes: ${MAX_RESPONSE}, max_sse_line_bytes: ${MAX_SSE_LINE}}
providers:
  openai: {base_url: ${oa}, api_key: ${openaiKey}, timeouts: ${t}, retries: {max: 0}}
  backup: {type: openai, base_url: ${oa}, api_key: ${KEYS.backup}, timeouts: ${t}, retries: {max: 0}}
  anthropic: {base_url: http://127.0.0.1:${PORTS.anthropic}, api_key: ${KEYS.anthropic}, timeouts: ${t}, retries: {max: 0}}
  tiny: {type: openai, base_url: ${oa}, api_key: ${KEYS.tiny}, timeouts: ${t}, retries: {max: 0}, max_response_bytes: 65536}
  dripper:
    type: openai
    base_url: ${oa}
    api_key: ${KEYS.dripper}
    timeouts: {connect_ms: 1000, first_token_ms: 3000, idle_ms: 2000, total_ms: 2500}
    retries: {max: 0}
  idler:
    type: openai
    base_url: ${oa}
    api_key: ${KEYS.idler}
    timeouts: {connect_ms: 1000, first_token_ms: 3000, idle_ms: 500, total_ms: 15000}
    retries: {max: 0}
routes:
  - name: hu-fallback
    targets: [openai/m-hu-fb-primary, backup/m-hu-fb-backup]
keys:
  - id: hostile
    key: ${GW_KEY}
ledger: {sqlite: ${path.join(dir, 'ledger.db')}, spool_dir: ${path.join(dir, 'spool')}, flush_ms: 100}
`;
}

let gw, cfg, baseline;
const req = (body, opts = {}) => post(body, { base: gw.url, key: GW_KEY, timeoutMs: 30000, ...opts });

function memKiB(field) {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${gw.proc.pid}/status`, 'utf8'));
  assert.ok(m, `${field} in /proc/${gw.proc.pid}/status`);
  return Number(m[1]);
}
const peakRSS = () => memKiB('VmHWM') * 1024;

// Before a case: the peak RSS is reset to the current RSS (clear_refs 5, our own child),
// which becomes the case's baseline; where the kernel refuses, the start-up baseline and
// the peak since then are used (a looser check, still one that fails).
function markMemory() {
  try {
    writeFileSync(`/proc/${gw.proc.pid}/clear_refs`, '5');
    baseline = memKiB('VmRSS') * 1024;
  } catch (e) {
    console.log(`# clear_refs: ${e.code}: measuring the peak since start-up`);
  }
}

// The gateway's peak RSS stays within baseline + bound + margin; returns it (bytes).
function assertMemory(what, bound) {
  const peak = peakRSS();
  const limit = baseline + bound + MARGIN;
  console.log(`# ${what}: peak RSS ${(peak / MiB).toFixed(1)} MiB (baseline ${(baseline / MiB).toFixed(1)} MiB, limit ${(limit / MiB).toFixed(1)} MiB), RSS now ${(memKiB('VmRSS') / 1024).toFixed(1)} MiB`);
  assert.ok(peak < limit, `${what}: peak RSS ${(peak / MiB).toFixed(1)} MiB over ${(limit / MiB).toFixed(1)} MiB`);
  return peak;
}

async function healthy(what) {
  const r = await get('/healthz', { base: gw.url, key: null, timeoutMs: 3000 });
  assert.equal(r.status, 200, `${what}: /healthz`);
}

const queue = (provider, match, fault) => control('/control', { provider, match, faults: [fault] });

// The ledger's attempts of one upstream model, once `want` are there (sqlite3 CLI).
async function attemptsOf(model, want) {
  let rows = [];
  for (let i = 0; i < 50; i++) {
    const out = execFileSync('sqlite3', ['-json', path.join(cfg.dir, 'ledger.db'),
      `SELECT provider, model, status, error FROM attempts WHERE model = '${model}' ORDER BY n`], { encoding: 'utf8' });
    rows = out.trim() ? JSON.parse(out) : [];
    if (rows.length >= want) return rows;
    await sleep(100);
  }
  assert.fail(`the ledger has ${rows.length} attempts for ${model}, expected ${want}`);
}

test.before(async () => {
  execFileSync('sqlite3', ['-version']);   // the ledger checks need it: fail here, loudly, if missing
  cfg = writeConfig('');
  writeFileSync(cfg.file, configText(cfg.dir));
  gw = await startGateway(cfg.file);
  // warm up (a normal answer through each path) before the baseline
  const r = await req(chatBody('openai/m-hu-warm', `warm ${nonce('huw')}`));
  assert.equal(r.status, 200, r.text.slice(0, 300));
  const s = await req(chatBody('openai/m-hu-warm', `warm ${nonce('huw')}`, { stream: true }));
  assert.equal(s.status, 200);
  baseline = peakRSS();
  console.log(`# baseline: peak RSS ${(baseline / MiB).toFixed(1)} MiB`);
});

test.after(async () => {
  if (gw) await gw.stop('SIGTERM', 10000);
});

test('endless chunked body -> 502 upstream_response_too_large at once, bounded memory', async () => {
  const n = nonce('huend');
  await queue('openai', n, 'endless_body');
  markMemory();
  const r = await req(chatBody('openai/m-hu-endless', `endless ${n}`));
  assert.equal(r.status, 502, r.text.slice(0, 300));
  assertOpenAIError(r.json, { code: 'upstream_response_too_large' });
  assert.match(r.json.error.message, /too large.*4194304.*max_response_bytes/);
  assert.ok(r.ms < 10000, `answered in ${r.ms} ms`);
  const log = await fakeLog({ match: n });
  assert.equal(log.length, 1);
  assertMemory('endless body', MAX_RESPONSE);
  const att = await attemptsOf('m-hu-endless', 1);
  assert.deepEqual(att.map((a) => [a.status, a.error]), [[502, 'retryable']]);
  await healthy('after an endless body');
});

test('endless body on the primary of a route -> the fallback answers, the ledger has both attempts', async () => {
  const n = nonce('hufb');
  await queue('openai', n, 'endless_body');
  markMemory();
  const user = `fallback ${n}`;
  const r = await req(chatBody('hu-fallback', user));
  assert.equal(r.status, 200, r.text.slice(0, 300));
  assert.equal(r.json.choices[0].message.content, `echo: ${user}`);
  assert.equal(r.info.provider, 'backup');
  assert.equal(r.info.attempts, 2);
  assert.deepEqual((await attemptsOf('m-hu-fb-primary', 1)).map((a) => [a.provider, a.status, a.error]), [['openai', 502, 'retryable']]);
  assert.match(gw.log(), /attempt failed id=\S+ provider=openai model=m-hu-fb-primary status=502 kind=retryable: the provider's response is too large/);
  assertMemory('endless body with fallback', MAX_RESPONSE);
});

test('a 2 GiB Content-Length sent slowly -> 502 at once, nothing buffered', async () => {
  const n = nonce('hulen');
  await queue('openai', n, 'huge_length');
  markMemory();
  const r = await req(chatBody('openai/m-hu-length', `length ${n}`));
  assert.equal(r.status, 502, r.text.slice(0, 300));
  assertOpenAIError(r.json, { code: 'upstream_response_too_large' });
  assert.match(r.json.error.message, /2147483648/);
  assert.ok(r.ms < 2000, `answered in ${r.ms} ms: it must not wait for the body`);
  assertMemory('huge Content-Length', MAX_RESPONSE);
  await healthy('after a huge Content-Length');
});

test('one 64 MiB SSE line without a newline -> 502 in the client\'s format (OpenAI, Anthropic)', async () => {
  const n = nonce('husse');
  await queue('openai', n, 'huge_sse_line:64');
  markMemory();
  const r = await req(chatBody('openai/m-hu-sse', `sse ${n}`, { stream: true }));
  assert.equal(r.status, 502, r.text.slice(0, 300));
  assertOpenAIError(r.json, { code: 'upstream_response_too_large' });
  assert.match(r.json.error.message, /SSE line larger than 1048576 bytes.*max_sse_line_bytes/);
  assertMemory('huge SSE line (OpenAI client)', MAX_SSE_LINE);

  const a = nonce('husse');
  await queue('anthropic', a, 'huge_sse_line:64');
  markMemory();
  const ar = await req({ model: 'anthropic/claude-hu-sse', max_tokens: 50, stream: true, messages: [{ role: 'user', content: `sse ${a}` }] },
    { path: '/v1/messages' });
  assert.equal(ar.status, 502, ar.text.slice(0, 300));
  assert.equal(ar.json?.type, 'error', ar.text.slice(0, 300));
  assert.equal(typeof ar.json.error?.type, 'string');
  assert.match(ar.json.error.message, /SSE line larger than 1048576 bytes/);
  assertMemory('huge SSE line (Anthropic client)', MAX_SSE_LINE);
  await healthy('after a huge SSE line');
});

test('a provider\'s own max_response_bytes: an answer over it is 502 there, the same answer passes elsewhere', async () => {
  const n = nonce('hutiny');
  const reply = 'word '.repeat(20000).trim();   // about 100 KB of JSON: over tiny's 64 KiB
  await control('/control', { provider: 'openai', match: n, reply });
  const t = await req(chatBody('tiny/m-hu-tiny', `tiny ${n}`));
  assert.equal(t.status, 502, t.text.slice(0, 300));
  assertOpenAIError(t.json, { code: 'upstream_response_too_large' });
  assert.match(t.json.error.message, /65536/);
  const o = await req(chatBody('openai/m-hu-tiny', `tiny ${n}`));
  assert.equal(o.status, 200, o.text.slice(0, 300));
  assert.equal(o.json.choices[0].message.content, reply);
});

test('a slow drip is ended by total_ms (504), and by idle_ms when the gap is longer', async () => {
  const n = nonce('hudrip');
  await queue('openai', n, 'drip:300');
  markMemory();   // 3 bytes a second: beats idle_ms 2000, not total_ms 2500
  const r = await req(chatBody('dripper/m-hu-drip', `drip ${n}`));
  assert.equal(r.status, 504, r.text.slice(0, 300));
  assertOpenAIError(r.json);
  assert.match(r.json.error.message, /not complete within 2500 ms/);
  assert.ok(r.ms >= 2000 && r.ms < 6000, `ended after ${r.ms} ms`);

  const m = nonce('hudrip');
  await queue('openai', m, 'drip:1000');  // a gap of 1 s: over idler's idle_ms 500
  const s = await req(chatBody('idler/m-hu-idle', `idle ${m}`));
  assert.equal(s.status, 502, s.text.slice(0, 300));
  assert.match(s.json.error.message, /stalled: no bytes for 500 ms/);
  assert.ok(s.ms < 4000, `ended after ${s.ms} ms`);
  assertMemory('slow drips', 0);
  await healthy('after a drip');
});

test('a 401 that echoes the provider key: neither the client nor the log sees the key', async () => {
  const n = nonce('huecho');
  await queue('openai', n, 'echo_key');
  const r = await req(chatBody('openai/m-hu-echo', `echo key ${n}`));
  assert.equal(r.status, 401, r.text.slice(0, 300));
  assertOpenAIError(r.json);
  assert.ok(!r.text.includes(KEYS.openai), `the client got the key: ${r.text}`);
  assert.match(r.json.error.message, /Incorrect API key provided: \[REDACTED\]/);
  assert.match(r.json.error.message, /Authorization: Bearer \[REDACTED\]/);
  assert.equal(r.json.error.param, '[REDACTED]');
  assert.equal((await fakeLog({ match: n }))[0]?.status, 401, 'the fake did answer the echo');

  const a = nonce('huecho');
  await queue('anthropic', a, 'echo_key');
  const ar = await req({ model: 'anthropic/claude-hu-echo', max_tokens: 50, messages: [{ role: 'user', content: `echo ${a}` }] },
    { path: '/v1/messages' });
  assert.equal(ar.status, 401, ar.text.slice(0, 300));
  assert.equal(ar.json?.type, 'error');
  assert.ok(!ar.text.includes(KEYS.anthropic), `the Anthropic client got the key: ${ar.text}`);
  assert.match(ar.json.error.message, /x-api-key: \[REDACTED\]/);

  await gw.waitLog(/attempt failed id=\S+ provider=anthropic model=claude-hu-echo status=401 kind=client: .*\[REDACTED\]/, 5000);
  const log = gw.log();
  for (const [name, k] of Object.entries(KEYS)) assert.ok(!log.includes(k), `the gateway log has the ${name} key`);
  assert.ok(!log.includes(GW_KEY), 'the gateway log has the gateway key');
  assert.match(log, /attempt failed id=\S+ provider=openai model=m-hu-echo status=401 kind=client: Incorrect API key provided: \[REDACTED\]/);
});

test('after SIGHUP with a new provider key, the new key is the one redacted', async () => {
  writeFileSync(cfg.file, configText(cfg.dir, KEYS.reloaded));
  gw.proc.kill('SIGHUP');
  await gw.waitLog(/configuration reloaded from/, 5000);
  const n = nonce('hureload');
  await queue('openai', n, 'echo_key');
  const r = await req(chatBody('openai/m-hu-reload', `reload ${n}`));
  assert.equal(r.status, 401, r.text.slice(0, 300));
  const sent = await fakeLog({ match: n });
  assert.equal(sent.length, 1);
  assert.equal(sent[0].auth.present, true, 'the reloaded key went upstream');
  assert.ok(!r.text.includes(KEYS.reloaded), `the client got the reloaded key: ${r.text}`);
  assert.match(r.json.error.message, /\[REDACTED\]/);
  await sleep(200);
  assert.ok(!gw.log().includes(KEYS.reloaded), 'the gateway log has the reloaded key');
});

test('through all of it: healthy, bounded, no sanitizer report or crash', async () => {
  markMemory();
  await healthy('at the end');
  const r = await req(chatBody('openai/m-hu-end', `still fine ${nonce('huok')}`));
  assert.equal(r.status, 200, r.text.slice(0, 300));
  assertMemory('all hostile upstreams', MAX_RESPONSE);
  assert.equal(gw.exited(), null, 'the gateway is running');
  assert.doesNotMatch(gw.log(), CRASH_RE);
});
