// segments.test.mjs: ordinary chat requests reach the gateway intact however the client's
// bytes are split on the wire. Real requests (OpenAI /v1/chat/completions and Anthropic
// /v1/messages, streamed and not) go over raw sockets:
//   - one byte per write (a small request),
//   - split at random points (head and body alike),
//   - head and body in separate writes,
//   - with `Expect: 100-continue`, the body sent only after the 100,
// with bodies from 1 KB to several MB (up to 120 000 messages, like the repro that once
// came back as `404 unknown endpoint "<heap bytes>"`), and through the official openai
// and anthropic SDKs and the Vercel AI SDK with bodies of 1 KB to several MB. Each must answer 200 with the fake's reply
// ("echo: <last user message>"). The main gateway's max_body_bytes is 64 KiB, so this
// file starts a private gateway (max_body_bytes 32 MiB) on the same fakes, and checks its
// log for sanitizer reports at the end.

import test, { before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  KEY, PORTS, CRASH_RE, writeConfig, startGateway, parseResponses, sseData, streamText, nonce, loadPackage,
} from './lib.mjs';

const { default: OpenAI } = await loadPackage('openai');
const { default: Anthropic } = await loadPackage('@anthropic-ai/sdk');
const ai = await loadPackage('ai');
const { createOpenAICompatible } = await loadPackage('@ai-sdk/openai-compatible');

let gw;
before(async () => {
  const { file } = writeConfig(`# segments.test.mjs: a private gateway that takes bodies of several MB
listen: 127.0.0.1:0
server: {max_body_bytes: 33554432}
providers:
  openai:
    base_url: http://127.0.0.1:${PORTS.openai}/v1
    api_key: sk-fake-openai-dummy
    timeouts: {first_token_ms: 20000, idle_ms: 20000}
    retries: {max: 0}
  anthropic:
    base_url: http://127.0.0.1:${PORTS.anthropic}
    api_key: sk-ant-fake-dummy
    timeouts: {first_token_ms: 20000, idle_ms: 20000}
    retries: {max: 0}
keys:
  - {id: tests, key: ${KEY}}
ledger: {sqlite: smolgate.db, spool_dir: spool}
`);
  gw = await startGateway(file);
});

after(async () => {
  if (!gw) return;
  const r = await gw.stop('SIGTERM', 10000);
  assert.equal(r.code, 0, `the private gateway exits 0 on SIGTERM: ${JSON.stringify(r)}`);
  assert.doesNotMatch(gw.log(), CRASH_RE, 'no sanitizer report or crash in the private gateway log');
});

// A deterministic random source, so a failure can be replayed.
let seed = 0x5eed1234;
const rnd = (n) => {
  seed ^= seed << 13; seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5; seed >>>= 0;
  return seed % n;
};

// A chat body of about `bytes` bytes: short filler messages, then a user message carrying
// the nonce. Anthropic's filler alternates roles (consecutive user turns are merged into
// one, which would change the echo).
function chatOfSize(api, bytes, last, extra = {}) {
  const filler = { role: 'user', content: 'a' };
  let n = Math.max(0, Math.floor((bytes - 200) / (JSON.stringify(filler).length + 6)));
  if (api === 'anthropic') n &= ~1;
  const messages = Array.from({ length: n }, (_, i) => (api === 'anthropic' && i % 2 ? { role: 'assistant', content: 'a' } : filler));
  messages.push({ role: 'user', content: last });
  const body = api === 'openai'
    ? { model: 'gpt-4o-mini', messages, ...extra }
    : { model: 'claude-haiku-4-5', max_tokens: 64, messages, ...extra };
  return Buffer.from(JSON.stringify(body));
}

const tick = () => new Promise((r) => setImmediate(r));
const writeOut = (sock, b) => new Promise((res, rej) => {
  if (sock.destroyed) { rej(new Error('socket closed while writing')); return; }
  if (sock.write(b)) res(); else sock.once('drain', res);
});

// Writes buf as pieces ending at the given cut points, yielding to the event loop between
// pieces so that each leaves as its own write.
async function writeCuts(sock, buf, cuts) {
  let at = 0;
  for (const c of [...cuts, buf.length]) {
    if (c > at) { await writeOut(sock, buf.subarray(at, c)); await tick(); }
    at = c;
  }
}
const randomCuts = (len, count) => [...new Set(Array.from({ length: count }, () => 1 + rnd(Math.max(1, len - 1))))].sort((a, b) => a - b);
const everyByte = (len) => Array.from({ length: len - 1 }, (_, i) => i + 1);
const pieces = (len, max) => { const c = []; for (let at = 1 + rnd(max); at < len; at += 1 + rnd(max)) c.push(at); return c; };

// One request on its own connection (Connection: close), its bytes written as `how` says:
//   'bytes'   one byte per write        'random'  cut at random points, head and body
//   'split'   head, then body           'expect'  Expect: 100-continue; body after the 100
// Resolves to the parsed response {status, headers, body}.
function exchange(path, body, how, { timeoutMs = 30000 } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port: gw.port, host: '127.0.0.1' });
    sock.setNoDelay(true);
    let data = Buffer.alloc(0);
    let sawContinue = null;
    let continued = null;
    const timer = setTimeout(() => { sock.destroy(); reject(new Error(`${how} ${path}: no complete response in ${timeoutMs} ms; got ${data.toString('latin1').slice(0, 300)}`)); }, timeoutMs);
    sock.on('data', (d) => {
      data = Buffer.concat([data, d]);
      if (sawContinue) {
        const s = data.toString('latin1');
        if (s.startsWith('HTTP/1.1 100 Continue\r\n\r\n')) { data = data.subarray(25); sawContinue(); sawContinue = null; }
        else if (/^HTTP\/1\.1 [2-5]\d\d /.test(s)) { sawContinue(new Error(`a final response instead of 100: ${s.slice(0, 200)}`)); sawContinue = null; }
      }
    });
    sock.on('error', (e) => { clearTimeout(timer); reject(e); });
    sock.on('close', () => {
      clearTimeout(timer);
      const [r, ...more] = parseResponses(data.toString('latin1'));
      if (!r) { reject(new Error(`${how} ${path}: no response: ${data.toString('latin1').slice(0, 300)}`)); return; }
      assert.equal(more.length, 0, 'one response per connection');
      resolve({ ...r, body: Buffer.from(r.body, 'latin1').toString('utf8') });
    });
    sock.on('connect', async () => {
      try {
        const expect = how === 'expect' ? 'Expect: 100-continue\r\n' : '';
        const head = Buffer.from(`POST ${path} HTTP/1.1\r\nHost: 127.0.0.1:${gw.port}\r\nAuthorization: Bearer ${KEY}\r\n` +
          `Content-Type: application/json\r\nanthropic-version: 2023-06-01\r\n${expect}Content-Length: ${body.length}\r\nConnection: close\r\n\r\n`);
        const all = Buffer.concat([head, body]);
        if (how === 'bytes') {
          await writeCuts(sock, all, everyByte(all.length));
        } else if (how === 'random') {
          await writeCuts(sock, all, body.length > 100000 ? pieces(all.length, 65536) : randomCuts(all.length, 40));
        } else if (how === 'split') {
          await writeOut(sock, head);
          await new Promise((r) => setTimeout(r, 20));
          await writeOut(sock, body);
        } else if (how === 'expect') {
          continued = new Promise((res, rej) => { sawContinue = (e) => (e ? rej(e) : res()); });
          await writeCuts(sock, head, randomCuts(head.length, 5));
          await continued;
          await writeCuts(sock, body, pieces(body.length, Math.max(16, body.length >> 6)));
        } else throw new Error(`unknown split ${how}`);
      } catch (e) { clearTimeout(timer); sock.destroy(); reject(e); }
    });
  });
}

// The text of an answer, for each API, streamed or not.
function answerText(api, stream, r) {
  if (api === 'openai' && !stream) return JSON.parse(r.body).choices[0].message.content;
  if (api === 'openai') return streamText(sseData(r.body));
  if (!stream) return JSON.parse(r.body).content.map((b) => b.text ?? '').join('');
  let s = '';
  for (const d of sseData(r.body)) {
    const ev = JSON.parse(d);
    if (ev.type === 'content_block_delta' && ev.delta?.type === 'text_delta') s += ev.delta.text;
  }
  return s;
}

const PATHS = { openai: '/v1/chat/completions', anthropic: '/v1/messages' };

async function roundTrip(api, stream, bytes, how) {
  const last = `segments ${nonce('seg')} ${how} ${bytes}`;
  const body = chatOfSize(api, bytes, last, stream ? { stream: true } : {});
  const r = await exchange(PATHS[api], body, how);
  const what = `${api}${stream ? ' streamed' : ''}, ${body.length} bytes, ${how}`;
  assert.equal(r.status, 200, `${what}: ${r.body.slice(0, 300)}`);
  assert.equal(answerText(api, stream, r), `echo: ${last}`, what);
}

for (const api of ['openai', 'anthropic']) {
  for (const stream of [false, true]) {
    const name = `${api}${stream ? ' streamed' : ''}`;
    test(`${name}: a small request one byte per write`, async () => {
      await roundTrip(api, stream, 300, 'bytes');
    });
    test(`${name}: split at random points, head and body in separate writes, 1 KB to 4 MB`, async () => {
      for (const bytes of [1000, 64 * 1024, 1 << 20]) {
        await roundTrip(api, stream, bytes, 'random');
        await roundTrip(api, stream, bytes, 'split');
      }
      await roundTrip(api, stream, 4 << 20, stream ? 'split' : 'random');
    });
    test(`${name}: Expect: 100-continue, the body after the 100, 1 KB to 4 MB`, async () => {
      for (const bytes of [1000, 1 << 20, 4 << 20]) await roundTrip(api, stream, bytes, 'expect');
    });
  }
}

test('the repro: 40 000 messages (1.3 MB) split at random points, ten times', async () => {
  for (let i = 0; i < 10; i++) {
    const last = `repro ${nonce('seg')}`;
    const msgs = new Array(40000).fill({ role: 'user', content: 'a' });
    msgs.push({ role: 'user', content: last });
    const body = Buffer.from(JSON.stringify({ model: 'gpt-4o-mini', messages: msgs }));
    const r = await exchange(PATHS.openai, body, i % 2 ? 'random' : 'split');
    assert.equal(r.status, 200, `try ${i}: ${r.body.slice(0, 300)}`);
    assert.equal(JSON.parse(r.body).choices[0].message.content, `echo: ${last}`, `try ${i}`);
  }
});

test('the official openai SDK: bodies of 1 KB to 4 MB, streamed and not', async () => {
  const client = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: KEY, maxRetries: 0, timeout: 30000 });
  for (const bytes of [1000, 64 * 1024, 1 << 20, 4 << 20]) {
    const last = `sdk ${nonce('seg')} ${bytes}`;
    const { messages } = JSON.parse(chatOfSize('openai', bytes, last).toString());
    const c = await client.chat.completions.create({ model: 'gpt-4o-mini', messages });
    assert.equal(c.choices[0].message.content, `echo: ${last}`, `${bytes} bytes`);
    const s = await client.chat.completions.create({ model: 'gpt-4o-mini', messages, stream: true });
    let text = '';
    for await (const ch of s) text += ch.choices[0]?.delta?.content ?? '';
    assert.equal(text, `echo: ${last}`, `${bytes} bytes, streamed`);
  }
});

test('the official anthropic SDK: bodies of 1 KB to 4 MB, streamed and not', async () => {
  const client = new Anthropic({ baseURL: gw.url, apiKey: KEY, maxRetries: 0, timeout: 30000 });
  for (const bytes of [1000, 64 * 1024, 1 << 20, 4 << 20]) {
    const last = `asdk ${nonce('seg')} ${bytes}`;
    const { messages } = JSON.parse(chatOfSize('anthropic', bytes, last).toString());
    const m = await client.messages.create({ model: 'claude-haiku-4-5', max_tokens: 64, messages });
    assert.equal(m.content[0].text, `echo: ${last}`, `${bytes} bytes`);
    const s = client.messages.stream({ model: 'claude-haiku-4-5', max_tokens: 64, messages });
    const f = await s.finalMessage();
    assert.equal(f.content[0].text, `echo: ${last}`, `${bytes} bytes, streamed`);
  }
});

test('the Vercel AI SDK: bodies of 1 KB to 4 MB, generateText and streamText', async () => {
  const provider = createOpenAICompatible({ name: 'smolgate', baseURL: `${gw.url}/v1`, apiKey: KEY });
  for (const bytes of [1000, 1 << 20, 4 << 20]) {
    const last = `ai ${nonce('seg')} ${bytes}`;
    const { messages } = JSON.parse(chatOfSize('openai', bytes, last).toString());
    const g = await ai.generateText({ model: provider('gpt-4o-mini'), messages, maxRetries: 0 });
    assert.equal(g.text, `echo: ${last}`, `${bytes} bytes`);
    const st = ai.streamText({ model: provider('gpt-4o-mini'), messages, maxRetries: 0 });
    let text = '';
    for await (const part of st.textStream) text += part;
    assert.equal(text, `echo: ${last}`, `${bytes} bytes, streamed`);
  }
});
