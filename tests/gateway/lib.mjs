// lib.mjs: what the gateway tests (tests/gateway/*.test.mjs) share; not a test file.
//
// The tests run against a smolgate started by tests/e2e/gateway.sh, which sets:
//   SMOLGATE_URL       the gateway, e.g. http://127.0.0.1:41234 (required)
//   SMOLGATE_API_KEY   the gateway key its configuration declares (default sk-smolgate-test)
//   FAKE_PORTS         the ports line of tests/fakes/upstream.mjs the gateway points at (required)
//   SMOLGATE_BIN       the binary (default build/smolgate), for tests that start their own gateway
//   SMOLGATE_CONFIG    the main gateway's configuration file (a template for private gateways)
//   SMOLGATE_LOG_FILE  the main gateway's log (hostile.test.mjs reads it at the end)
//   SMOLGATE_LOCAL_MODEL  the local model's name (local.test.mjs), SMOLGATE_LOCAL_DIR its folder
//
// Helpers: raw fetch with the x-smolgate-* headers pulled out, an SSE splitter, raw TCP
// exchanges (net), the fake's control API (from ../clients/env.mjs), and a private gateway
// (startGateway) with its log captured and a bounded stop.

import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, existsSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';

export { nonce, words, control, fakeLog, loadPackage } from '../clients/env.mjs';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run these tests through tests/e2e/gateway.sh`);
  return v;
}

export const GW = need('SMOLGATE_URL').replace(/\/+$/, '');
export const GW_PORT = Number(new URL(GW).port);
export const KEY = process.env.SMOLGATE_API_KEY || 'sk-smolgate-test';
export const PORTS = JSON.parse(need('FAKE_PORTS'));
export const BIN = path.resolve(ROOT, process.env.SMOLGATE_BIN || 'build/smolgate');
export const CONFIG = process.env.SMOLGATE_CONFIG || '';
export const LOG_FILE = process.env.SMOLGATE_LOG_FILE || '';
export const ROOT_DIR = ROOT;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------
// HTTP through fetch

// The gateway's response headers that say what happened.
export function gwInfo(h) {
  const a = h.get('x-smolgate-attempts');
  return {
    provider: h.get('x-smolgate-provider'),
    model: h.get('x-smolgate-model'),
    attempts: a === null ? null : Number(a),
    requestId: h.get('x-request-id'),
  };
}

// POST a chat completion (or anything) to the gateway; never throws on an HTTP status.
// Returns {status, headers, info, text, json, ms}. json is null when the body is not JSON.
export async function post(body, { path: p = '/v1/chat/completions', headers = {}, key = KEY, base = GW, timeoutMs = 20000 } = {}) {
  const h = { 'content-type': 'application/json', ...headers };
  if (key) h.authorization = `Bearer ${key}`;
  const t0 = performance.now();
  const r = await fetch(base + p, {
    method: 'POST', headers: h, body: typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await r.text();
  const ms = performance.now() - t0;
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, info: gwInfo(r.headers), text, json, ms };
}

export async function get(p, { key = KEY, base = GW, timeoutMs = 10000 } = {}) {
  const h = {};
  if (key) h.authorization = `Bearer ${key}`;
  const r = await fetch(base + p, { headers: h, signal: AbortSignal.timeout(timeoutMs) });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, text, json };
}

// A chat request body with the nonce in the user message.
export const chatBody = (model, user, extra = {}) => ({ model, messages: [{ role: 'user', content: user }], ...extra });

// SSE: the data payloads of a text/event-stream body, in order.
export function sseData(text) {
  const out = [];
  for (const ev of text.split(/\r?\n\r?\n/)) {
    const lines = ev.split(/\r?\n/).filter((l) => l.startsWith('data:'));
    if (lines.length) out.push(lines.map((l) => l.slice(5).replace(/^ /, '')).join('\n'));
  }
  return out;
}

// The assembled text of OpenAI stream chunks; throws on a chunk that is not JSON.
export function streamText(datas) {
  let s = '';
  for (const d of datas) {
    if (d === '[DONE]') continue;
    const j = JSON.parse(d);
    for (const c of j.choices ?? []) s += c.delta?.content ?? '';
  }
  return s;
}

// OpenAI's error shape: {"error":{"message","type","param","code"}}.
export function assertOpenAIError(json, { status, code, type, param } = {}) {
  assert.ok(json && typeof json === 'object', `an error body in JSON, got ${JSON.stringify(json)}`);
  assert.ok(json.error && typeof json.error === 'object', `{"error":{...}}, got ${JSON.stringify(json)}`);
  const e = json.error;
  assert.equal(typeof e.message, 'string', 'error.message');
  assert.ok(e.message.length > 0, 'error.message is not empty');
  assert.equal(typeof e.type, 'string', 'error.type');
  assert.ok('param' in e, 'error.param present (may be null)');
  assert.ok('code' in e, 'error.code present (may be null)');
  if (code !== undefined) assert.equal(e.code, code, `error.code (status ${status})`);
  if (type !== undefined) assert.equal(e.type, type, 'error.type');
  if (param !== undefined) assert.equal(e.param, param, 'error.param');
}

// Every proxied response names the provider, model, attempts and a request id.
export function assertGwHeaders(res, want = {}) {
  const i = res.info;
  assert.match(i.requestId ?? '', /\S/, 'x-request-id');
  assert.ok(Number.isInteger(i.attempts) && i.attempts >= 1, `x-smolgate-attempts: ${i.attempts}`);
  assert.match(i.provider ?? '', /\S/, 'x-smolgate-provider');
  assert.match(i.model ?? '', /\S/, 'x-smolgate-model');
  if (want.provider !== undefined) assert.equal(i.provider, want.provider, 'x-smolgate-provider');
  if (want.model !== undefined) assert.equal(i.model, want.model, 'x-smolgate-model');
  if (want.attempts !== undefined) assert.equal(i.attempts, want.attempts, 'x-smolgate-attempts');
}

// ---------------------------------------------------------------------------------------
// Raw TCP

// Sends `parts` (strings/Buffers; numbers are pauses in ms) on one connection and collects
// what comes back until the peer closes or `timeoutMs` passes. Resolves to
// {data (string), closed (peer closed), reset (ECONNRESET), error, ms}.
export function rawExchange(port, parts, { timeoutMs = 5000, host = '127.0.0.1', endAfterWrite = false } = {}) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const sock = net.connect({ port, host });
    const chunks = [];
    let done = false, closed = false, reset = false, error = null;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ data: Buffer.concat(chunks).toString('latin1'), closed, reset, error, ms: performance.now() - t0 });
    };
    const timer = setTimeout(finish, timeoutMs);
    sock.on('data', (d) => chunks.push(d));
    sock.on('end', () => { closed = true; finish(); });
    sock.on('close', () => { closed = true; finish(); });
    sock.on('error', (e) => { error = e; if (e.code === 'ECONNRESET') reset = true; closed = true; finish(); });
    sock.on('connect', async () => {
      for (const p of parts) {
        if (done) return;
        if (typeof p === 'number') await sleep(p);
        else if (!sock.destroyed) sock.write(p);
      }
      if (endAfterWrite && !sock.destroyed) sock.end();
    });
  });
}

// Splits raw HTTP/1.1 responses (Content-Length or chunked bodies) out of a byte string.
export function parseResponses(raw) {
  const out = [];
  let s = raw;
  while (s.length) {
    const he = s.indexOf('\r\n\r\n');
    if (he < 0) break;
    const head = s.slice(0, he);
    const lines = head.split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
    if (!m) break;
    const headers = {};
    for (const l of lines.slice(1)) {
      const k = l.indexOf(':');
      if (k > 0) headers[l.slice(0, k).trim().toLowerCase()] = l.slice(k + 1).trim();
    }
    let rest = s.slice(he + 4);
    let body = '';
    if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      body = rest.slice(0, n);
      rest = rest.slice(n);
    } else if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
      for (;;) {
        const nl = rest.indexOf('\r\n');
        if (nl < 0) { rest = ''; break; }
        const size = parseInt(rest.slice(0, nl), 16);
        rest = rest.slice(nl + 2);
        if (!size) { const e = rest.indexOf('\r\n'); rest = e < 0 ? '' : rest.slice(e + 2); break; }
        body += rest.slice(0, size);
        rest = rest.slice(size + 2);
      }
    } else { body = rest; rest = ''; }
    out.push({ status: Number(m[1]), headers, body });
    s = rest;
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Private gateways (signal tests, local model tests)

// A configuration text written to a new temp folder (removed when the test process exits).
export function writeConfig(text) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'smolgate-gwtest-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));   // even when a test fails early
  const file = path.join(dir, 'smolgate.yaml');
  writeFileSync(file, text);
  return { dir, file };
}

export function mainConfigText() {
  if (!CONFIG || !existsSync(CONFIG)) throw new Error('SMOLGATE_CONFIG is not set or missing');
  return readFileSync(CONFIG, 'utf8');
}

// Starts `smolgate serve --config FILE --listen 127.0.0.1:0 ...args`; resolves once it
// prints its port (bounded). Returns {url, port, proc, log(), waitLog(re, ms), stop(sig, ms)}.
export function startGateway(configFile, args = [], { startMs = 15000 } = {}) {
  return new Promise((resolve, reject) => {
    const proc = spawn(BIN, ['serve', '--config', configFile, '--listen', '127.0.0.1:0', ...args],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SMOLGATE_LOG: 'info' } });
    let log = '';
    let exited = null;
    const waiters = new Set();
    const onData = (d) => {
      log += d;
      for (const w of waiters) w();
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    const exitP = new Promise((r) => {
      const done = (x) => { if (exited) return; exited = x; for (const w of waiters) w(); r(exited); };
      proc.on('exit', (code, signal) => done({ code, signal }));
      proc.on('error', (e) => { log += `spawn ${BIN}: ${e.message}\n`; done({ code: null, signal: null, error: e.message }); });
    });
    process.on('exit', () => { if (!exited) proc.kill('SIGKILL'); });

    const waitLog = (re, ms = 10000) => new Promise((res, rej) => {
      const check = () => {
        const m = re.exec(log);
        if (m) { waiters.delete(check); clearTimeout(t); res(m); return true; }
        if (exited) { waiters.delete(check); clearTimeout(t); rej(new Error(`gateway exited (${JSON.stringify(exited)}) before ${re}; log:\n${log}`)); return true; }
        return false;
      };
      const t = setTimeout(() => { waiters.delete(check); rej(new Error(`no ${re} in the gateway log within ${ms} ms; log:\n${log}`)); }, ms);
      if (!check()) waiters.add(check);
    });

    // exitP, or null after ms; the timer is cleared either way (a pending one would keep
    // the test process alive that long after its last test).
    const exitWithin = (ms) => {
      let t;
      return Promise.race([exitP, new Promise((r) => { t = setTimeout(() => r(null), ms); })]).finally(() => clearTimeout(t));
    };
    const stop = async (sig = 'SIGTERM', ms = 10000) => {
      if (!exited) proc.kill(sig);
      const r = await exitWithin(ms);
      if (!r) { proc.kill('SIGKILL'); await exitWithin(5000); return { code: null, signal: 'timeout' }; }
      return r;
    };

    waitLog(/smolgate listening on \S+ \(port (\d+)\)/, startMs).then((m) => {
      const port = Number(m[1]);
      resolve({ url: `http://127.0.0.1:${port}`, port, proc, log: () => log, waitLog, stop, exited: () => exited, exitP });
    }, (e) => { proc.kill('SIGKILL'); reject(e); });
  });
}

// Sanitizer reports and crash signatures in a log.
export const CRASH_RE = /AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:|Segmentation fault|SIGSEGV|SIGABRT|Assertion .* failed|stack-buffer|heap-use-after-free|double free|free\(\): invalid/;
