// soak.mjs: mixed valid and hostile traffic against a running smolgate for a fixed time,
// printing what it sent and the gateway's resident memory and open descriptors at
// intervals. Started by bench/soak.sh (which starts the fake upstream and the gateway);
// figures, not a pass/fail test: a soak is judged by whether RSS and fds stay flat.
//
// Environment: SMOLGATE_URL, SMOLGATE_API_KEY, SMOLGATE_PID, FAKE_PORTS (as the gateway
// tests), SOAK_SECONDS (default 180), SOAK_INTERVAL (seconds between rows, default 10),
// SOAK_CONCURRENCY (default 16), SOAK_MAX_BODY (the gateway's max_body_bytes).
//
// Each worker loops over a weighted mix: ordinary requests (OpenAI and Anthropic, streamed
// and not, 1 KB to a few MB, some split at random points over a raw socket), bad input
// (malformed JSON, invalid UTF-8, bodies over the limit, bad keys, broken HTTP, a client
// that stalls inside its headers or vanishes mid-stream), and upstream faults queued at the
// fake (resets, stalls, hangs, malformed and cut bodies, 5xx, endless bodies, a 2 GiB
// Content-Length, a 16 MiB SSE line, a slow drip, a 401 quoting the key) that the gateway
// must turn into a fallback answer or a clean error, with no provider key in it. A request whose outcome is not one of those
// its kind allows is counted as unexpected and its first few are printed.

import { readFileSync, readdirSync } from 'node:fs';
import net from 'node:net';

const GW = process.env.SMOLGATE_URL.replace(/\/+$/, '');
const PORT = Number(new URL(GW).port);
const KEY = process.env.SMOLGATE_API_KEY || 'sk-smolgate-soak';
const PID = Number(process.env.SMOLGATE_PID);
const PORTS = JSON.parse(process.env.FAKE_PORTS);
const SECONDS = Number(process.env.SOAK_SECONDS || 180);
const INTERVAL = Number(process.env.SOAK_INTERVAL || 10);
const CONC = Number(process.env.SOAK_CONCURRENCY || 16);
const MAX_BODY = Number(process.env.SOAK_MAX_BODY || 8 * 1024 * 1024);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let seq = 0;
const nonce = () => `soak${process.pid}x${++seq}`;

const counts = new Map();      // kind -> {n, unexpected}
let total = 0, unexpected = 0;
const shown = [];
function record(kind, ok, detail) {
  const c = counts.get(kind) ?? { n: 0, unexpected: 0 };
  c.n++;
  total++;
  if (!ok) {
    detail = String(detail).replace(/\s+/g, ' ');
    c.unexpected++;
    unexpected++;
    if (shown.length < 10) { shown.push(`${kind}: ${detail}`); console.log(`  unexpected ${kind}: ${detail}`); }
  }
  counts.set(kind, c);
}

async function control(body) {
  const r = await fetch(`http://127.0.0.1:${PORTS.control}/control`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  await r.text();
}

async function post(path, body, { key = KEY, headers = {}, timeoutMs = 30000, signal } = {}) {
  const h = { 'content-type': 'application/json', ...headers };
  if (key) h.authorization = `Bearer ${key}`;
  if (path === '/v1/messages') h['anthropic-version'] = '2023-06-01';
  const r = await fetch(GW + path, { method: 'POST', headers: h, body, signal: signal ?? AbortSignal.timeout(timeoutMs) });
  const text = await r.text();
  return { status: r.status, text };
}

const chat = (user, extra = {}) => JSON.stringify({ model: 'chat', messages: [{ role: 'user', content: user }], ...extra });

// A chat body of about `bytes` bytes: many short messages, as a long conversation has.
function bigChat(bytes, tag) {
  const msg = { role: 'user', content: 'lorem ipsum dolor sit amet ' + tag };
  const one = JSON.stringify(msg).length + 1;
  const n = Math.max(1, Math.floor((bytes - 40) / one));
  const messages = new Array(n).fill(msg);
  messages[n - 1] = { role: 'user', content: `last ${tag}` };
  return JSON.stringify({ model: 'chat', messages });
}

// Raw request split at random points, answered with Connection: close.
function rawSplit(body) {
  return new Promise((resolve) => {
    const head = `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n`;
    const all = Buffer.from(head + body);
    const cuts = [];
    for (let i = 0; i < 6; i++) cuts.push(Math.floor(Math.random() * all.length));
    cuts.sort((a, b) => a - b);
    const chunks = [];
    const s = net.connect(PORT, '127.0.0.1');
    const timer = setTimeout(() => s.destroy(), 30000);
    s.on('data', (d) => chunks.push(d));
    s.on('error', () => {});
    s.on('close', () => { clearTimeout(timer); resolve(Buffer.concat(chunks).toString('latin1')); });
    s.on('connect', async () => {
      let at = 0;
      for (const c of [...cuts, all.length]) {
        if (c > at) { s.write(all.subarray(at, c)); at = c; await sleep(Math.random() * 5); }
      }
    });
  });
}

// Opens a connection, writes `data`, waits `ms`, closes; resolves to what came back.
function rawThenClose(data, ms) {
  return new Promise((resolve) => {
    const chunks = [];
    const s = net.connect(PORT, '127.0.0.1');
    s.on('data', (d) => chunks.push(d));
    s.on('error', () => {});
    s.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    s.on('connect', async () => { s.write(data); await sleep(ms); s.destroy(); });
  });
}

const faults = ['reset', 'stall:0', 'stall:1', 'hang', '500', '503', 'malformed:1', 'close_mid_body:1', 'reset:2', '429:0',
  'endless_body', 'huge_length', 'huge_sse_line:16', 'drip:300', 'echo_key'];

const kinds = [
  // [weight, name, fn]: fn returns [ok, detail]
  [20, 'openai', async () => {
    const n = nonce();
    const r = await post('/v1/chat/completions', chat(`hello ${n}`));
    return [r.status === 200 && r.text.includes(n), `${r.status} ${r.text.slice(0, 120)}`];
  }],
  [10, 'openai-stream', async () => {
    const n = nonce();
    const r = await post('/v1/chat/completions', chat(`hi ${n}`, { stream: true }));
    return [r.status === 200 && r.text.includes('[DONE]'), `${r.status} ${r.text.slice(-120)}`];
  }],
  [8, 'anthropic', async () => {
    const n = nonce();
    const r = await post('/v1/messages', JSON.stringify({ model: 'chat', max_tokens: 64, messages: [{ role: 'user', content: `hey ${n}` }] }));
    return [r.status === 200 && r.text.includes(n), `${r.status} ${r.text.slice(0, 120)}`];
  }],
  [4, 'big-body', async () => {
    const n = nonce();
    const size = 1024 * Math.floor(1 + Math.random() * Math.min(4096, MAX_BODY / 1024 - 64));
    const r = await post('/v1/chat/completions', bigChat(size, n));
    return [r.status === 200 && r.text.includes(`last ${n}`), `${size} B: ${r.status} ${r.text.slice(0, 120)}`];
  }],
  [6, 'split', async () => {
    const n = nonce();
    const body = Math.random() < 0.5 ? chat(`split ${n}`) : bigChat(200 * 1024, n);
    const raw = await rawSplit(body);
    return [/^HTTP\/1\.1 200/.test(raw) && raw.includes(n), raw.slice(0, 120)];
  }],
  [8, 'upstream-fault', async () => {
    const n = nonce();
    const f = faults[Math.floor(Math.random() * faults.length)];
    await control({ provider: 'openai', match: n, faults: [f] });
    const stream = Math.random() < 0.5;
    const r = await post('/v1/chat/completions', chat(`fault ${n}`, stream ? { stream: true } : {}));
    // The backup answers, or (a fault after the stream began) the stream ends with an error
    // event; either way a well-formed answer, never a hang or a dropped connection.
    // No provider key ever comes back, whatever the upstream wrote.
    const leaked = r.text.includes('sk-soak-upstream');
    // A 401 of the provider's is relayed (not retried elsewhere), redacted.
    const relayed = f === 'echo_key' && r.status === 401 && r.text.includes('[REDACTED]');
    const ok = !leaked && (relayed || (r.status === 200 && (r.text.includes(n) || (stream && r.text.includes('"error"')))));
    return [ok, `${f}${stream ? ' stream' : ''}: ${r.status} ${r.text.slice(0, 120)}`];
  }],
  [5, 'malformed-json', async () => {
    const r = await post('/v1/chat/completions', '{"model":"chat","messages":[{"role":"user","content":"x"}');
    return [r.status === 400 && r.text.includes('"error"'), `${r.status} ${r.text.slice(0, 120)}`];
  }],
  [3, 'invalid-utf8', async () => {
    const body = Buffer.concat([Buffer.from('{"model":"chat","messages":[{"role":"user","content":"'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}]}')]);
    const r = await post('/v1/chat/completions', body);
    return [r.status === 400, `${r.status} ${r.text.slice(0, 120)}`];
  }],
  [2, 'too-large', async () => {
    const r = await post('/v1/chat/completions', 'x'.repeat(MAX_BODY + 1));
    return [r.status === 413, `${r.status} ${r.text.slice(0, 120)}`];
  }],
  [3, 'bad-key', async () => {
    const r = await post('/v1/chat/completions', chat('x'), { key: 'sk-wrong' });
    return [r.status === 401, `${r.status} ${r.text.slice(0, 120)}`];
  }],
  [3, 'broken-http', async () => {
    const junk = ['GET / HTTP/9.9\r\n\r\n', 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n',
      'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', '\x00\x01\x02garbage\r\n\r\n', `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\nX: a\rb\r\nContent-Length: 2\r\n\r\n{}`];
    const raw = await rawThenClose(junk[Math.floor(Math.random() * junk.length)], 300);
    return [/^HTTP\/1\.1 [45]\d\d/.test(raw), raw.slice(0, 80) || '(nothing)'];
  }],
  [2, 'stalled-headers', async () => {
    // Half a request, then silence for a while, then gone: the gateway must not hold on.
    await rawThenClose('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le', 500 + Math.random() * 1500);
    return [true, ''];
  }],
  [3, 'client-gone', async () => {
    const ac = new AbortController();
    const n = nonce();
    await control({ provider: 'openai', match: n, faults: [{ chunkDelayMs: 50 }] });
    try {
      const r = await fetch(GW + '/v1/chat/completions', {
        method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
        body: chat(`one two three four five six seven eight ${n}`, { stream: true }), signal: ac.signal,
      });
      const rd = r.body.getReader();
      await rd.read();
      ac.abort();
    } catch { /* aborted */ }
    return [true, ''];
  }],
];
const weightSum = kinds.reduce((s, k) => s + k[0], 0);
function pick() {
  let w = Math.random() * weightSum;
  for (const k of kinds) { if ((w -= k[0]) < 0) return k; }
  return kinds[0];
}

function gatewayStats() {
  let rss = 0, fds = 0;
  try {
    const st = readFileSync(`/proc/${PID}/status`, 'utf8');
    rss = Number(/VmRSS:\s+(\d+)/.exec(st)?.[1] ?? 0);
    fds = readdirSync(`/proc/${PID}/fd`).length;
  } catch { /* gone */ }
  return { rss, fds };
}

const t0 = Date.now();
const end = t0 + SECONDS * 1000;
let stop = false;
async function worker() {
  while (!stop && Date.now() < end) {
    const [, name, fn] = pick();
    try {
      const [ok, detail] = await fn();
      record(name, ok, detail);
    } catch (e) {
      record(name, false, `threw ${e.name}: ${e.message}`);
    }
  }
}

const first = gatewayStats();
console.log(`soak: ${SECONDS} s, ${CONC} workers, gateway pid ${PID}; at start RSS ${(first.rss / 1024).toFixed(1)} MB, ${first.fds} fds`);
console.log('   t(s)  requests   req/s  unexpected   RSS(MB)   fds');
let lastTotal = 0, lastT = t0;
const rows = [];
const sampler = setInterval(() => {
  const now = Date.now();
  const { rss, fds } = gatewayStats();
  const rate = (total - lastTotal) / ((now - lastT) / 1000);
  lastTotal = total; lastT = now;
  rows.push({ rss, fds });
  console.log(`${String(Math.round((now - t0) / 1000)).padStart(7)} ${String(total).padStart(9)} ${rate.toFixed(0).padStart(7)} ${String(unexpected).padStart(11)} ${(rss / 1024).toFixed(1).padStart(9)} ${String(fds).padStart(5)}`);
  if (!rss) { console.log('soak: the gateway is gone'); stop = true; }
}, INTERVAL * 1000);

await Promise.all(Array.from({ length: CONC }, worker));
clearInterval(sampler);
await sleep(2000);   // let closed connections settle before the last reading
const last = gatewayStats();
console.log(`soak: done, ${total} requests, ${unexpected} unexpected; at end (idle) RSS ${(last.rss / 1024).toFixed(1)} MB, ${last.fds} fds`);
for (const [k, c] of [...counts].sort()) console.log(`  ${k.padEnd(16)} ${String(c.n).padStart(7)}  unexpected ${c.unexpected}`);
if (rows.length >= 4) {
  const half = rows.slice(Math.floor(rows.length / 2));
  const early = rows.slice(1, Math.max(2, Math.floor(rows.length / 2)));
  const mx = (a, f) => Math.max(...a.map(f));
  console.log(`soak: RSS max first half ${(mx(early, (r) => r.rss) / 1024).toFixed(1)} MB, second half ${(mx(half, (r) => r.rss) / 1024).toFixed(1)} MB; fds max ${mx(early, (r) => r.fds)} / ${mx(half, (r) => r.fds)}`);
}
