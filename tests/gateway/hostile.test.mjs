// hostile.test.mjs: smolgate against bad input and badly behaved clients, over fetch and
// raw TCP sockets (net): the right 4xx in OpenAI's error shape, no crash, and other
// clients unaffected.
//
//   - malformed JSON, a body that is not an object, deep nesting, invalid UTF-8 -> 400
//   - wrong types (messages not an array, model a number, max_tokens a string, ...) -> 400
//     naming the param
//   - a body above server.max_body_bytes (65536 in gateway.sh's configuration) -> 413,
//     with Content-Length and chunked; headers above max_header_bytes -> 431
//   - slowloris (headers dribbled past header_timeout_ms 1500) -> 408 or close, while
//     another client is served at once; a body dribbled past body_timeout_ms -> 408
//   - pipelined requests in one write -> answered in order (a slow one first included)
//   - truncated requests, garbage, a client that leaves while its request is upstream ->
//     no crash, the next client is served; hundreds of idle connections cost nothing
//   - unknown endpoint -> 404 JSON; missing / invalid gateway key -> 401; unknown model ->
//     404 model_not_found; a model, models or provider name with a NUL or control
//     character -> 400 (OpenAI and Anthropic shapes); GET /healthz and /readyz -> 200
//   - signals, on private gateways started here: SIGHUP with a broken file -> "reload
//     refused", the old configuration serves; with a valid changed file -> the new route
//     works; SIGHUP during a stream -> it completes, new routes and keys apply after;
//     SIGTERM during a slow stream -> it completes, /readyz says 503 (or the idle
//     connection closes), new connections are refused, exit 0; SIGTERM with a stalled
//     stream -> exit within shutdown_grace_ms; the same signals with a local model loaded
//   - at the end: the main gateway still answers /healthz and its log shows no sanitizer
//     report or crash.

import test from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import {
  GW, GW_PORT, KEY, PORTS, LOG_FILE, CRASH_RE, post, get, chatBody, sseData, streamText, assertOpenAIError,
  rawExchange, parseResponses, writeConfig, startGateway, nonce, control, sleep,
} from './lib.mjs';

const AUTH = `Authorization: Bearer ${KEY}\r\n`;
const chatJSON = (user, extra = {}) => JSON.stringify(chatBody('chat', user, extra));
const rawPost = (body, { path = '/v1/chat/completions', close = false, extra = '' } = {}) => {
  const b = Buffer.isBuffer(body) ? body : Buffer.from(body);
  return Buffer.concat([Buffer.from(`POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${AUTH}Content-Type: application/json\r\n` +
    `Content-Length: ${b.length}\r\n${extra}${close ? 'Connection: close\r\n' : ''}\r\n`), b]);
};

async function healthy(what) {
  const t0 = performance.now();
  const r = await get('/healthz', { key: null, timeoutMs: 3000 });
  assert.equal(r.status, 200, `${what}: /healthz`);
  return performance.now() - t0;
}

async function echoWorks(what) {
  const user = `still fine ${nonce('hok')}`;
  const r = await post(chatBody('chat', user));
  assert.equal(r.status, 200, `${what}: a normal request: ${r.text.slice(0, 200)}`);
  assert.equal(r.json.choices[0].message.content, `echo: ${user}`);
}

// ---------------------------------------------------------------------------------------
// Bodies

test('malformed JSON -> 400 invalid_request_error in OpenAI shape', async () => {
  for (const body of ['{"model":"chat","messages":[{"role":"user","content":"hi"}]', '{model: chat}', 'not json at all', '{"model":"chat",}']) {
    const r = await post(body);
    assert.equal(r.status, 400, `${body}: ${r.text}`);
    assertOpenAIError(r.json, { type: 'invalid_request_error' });
  }
});

test('a body that is not an object, an empty body, deep nesting -> 400, no crash', async () => {
  for (const body of ['[]', '"chat"', '42', 'null', '', '['.repeat(30000) + ']'.repeat(30000),
    `{"model":"chat","messages":${'['.repeat(20000)}${']'.repeat(20000)}}`]) {
    const r = await post(body);
    assert.equal(r.status, 400, `${body.slice(0, 40)}...: ${r.status} ${r.text.slice(0, 200)}`);
    assertOpenAIError(r.json);
  }
  await healthy('after deep nesting');
});

for (const [what, body, param] of [
  ['messages not an array', { model: 'chat', messages: 'hello' }, 'messages'],
  ['messages missing', { model: 'chat' }, 'messages'],
  ['a message not an object', { model: 'chat', messages: ['hello'] }, 'messages'],
  ['model a number', { model: 42, messages: [{ role: 'user', content: 'hi' }] }, 'model'],
  ['max_tokens a string', { model: 'chat', max_tokens: '10', messages: [{ role: 'user', content: 'hi' }] }, 'max_tokens'],
  ['temperature a string', { model: 'chat', temperature: 'hot', messages: [{ role: 'user', content: 'hi' }] }, 'temperature'],
  ['stream a string', { model: 'chat', stream: 'yes', messages: [{ role: 'user', content: 'hi' }] }, 'stream'],
]) {
  test(`wrong type: ${what} -> 400 with param "${param}"`, async () => {
    const r = await post(body);
    assert.equal(r.status, 400, r.text);
    assertOpenAIError(r.json, { type: 'invalid_request_error' });
    assert.ok(r.json.error.param === param || (r.json.error.param ?? '').startsWith(`${param}[`) || (r.json.error.param ?? '').startsWith(`${param}.`),
      `param names ${param}: ${JSON.stringify(r.json.error)}`);
  });
}

test('invalid UTF-8 in the JSON body -> 400, nothing sent upstream', async () => {
  const n = nonce('hutf');
  const body = Buffer.concat([Buffer.from(`{"model":"chat","messages":[{"role":"user","content":"${n} `), Buffer.from([0xff, 0xfe, 0xc3, 0x28]), Buffer.from('"}]}')]);
  const r = await post(body);
  assert.equal(r.status, 400, r.text);
  assertOpenAIError(r.json);
  const log = await control(`/control/log?match=${n}`);
  assert.equal(log.length, 0, 'nothing reached the provider');
  // an overlong encoding and a lone surrogate escape
  for (const bad of [Buffer.from([0xc0, 0xaf]), Buffer.from([0xed, 0xa0, 0x80])]) {
    const r2 = await post(Buffer.concat([Buffer.from('{"model":"chat","messages":[{"role":"user","content":"'), bad, Buffer.from('"}]}')]));
    assert.equal(r2.status, 400, r2.text);
  }
});

test('a body above server.max_body_bytes (65536) -> 413, by Content-Length and chunked', async () => {
  const big = chatJSON('x'.repeat(100000));
  const r = await post(big);
  assert.equal(r.status, 413, r.text.slice(0, 200));
  assertOpenAIError(r.json);
  // chunked: 8 KiB chunks until past the limit
  const chunk = 'y'.repeat(8192);
  const parts = [`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n${AUTH}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`];
  parts.push(`${(10).toString(16)}\r\n{"model":"\r\n`);
  for (let i = 0; i < 10; i++) parts.push(`${chunk.length.toString(16)}\r\n${chunk}\r\n`);
  parts.push('0\r\n\r\n');
  const x = await rawExchange(GW_PORT, parts, { timeoutMs: 5000 });
  const rs = parseResponses(x.data);
  assert.equal(rs[0]?.status, 413, `chunked: ${x.data.slice(0, 300)}`);
  await healthy('after 413');
});

test('a small body sent chunked is accepted', async () => {
  const user = `chunked body ${nonce('hch')}`;
  const body = chatJSON(user);
  const half = Math.floor(body.length / 2);
  const x = await rawExchange(GW_PORT, [
    `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n${AUTH}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`,
    `${half.toString(16)}\r\n${body.slice(0, half)}\r\n`, 50, `${(body.length - half).toString(16)}\r\n${body.slice(half)}\r\n0\r\n\r\n`,
  ], { timeoutMs: 5000 });
  const rs = parseResponses(x.data);
  assert.equal(rs[0]?.status, 200, x.data.slice(0, 300));
  assert.equal(JSON.parse(rs[0].body).choices[0].message.content, `echo: ${user}`);
});

test('headers above max_header_bytes -> 431', async () => {
  const x = await rawExchange(GW_PORT, [`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20000)}\r\n\r\n`], { timeoutMs: 5000 });
  assert.match(x.data, /^HTTP\/1\.1 431 /, x.data.slice(0, 200));
  await healthy('after 431');
});

// ---------------------------------------------------------------------------------------
// Slow, pipelined, truncated, garbage

test('slowloris: headers dribbled past header_timeout_ms (1500) -> 408 or close; another client is served meanwhile', async () => {
  const parts = ['GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: '];
  for (let i = 0; i < 30; i++) parts.push(200, 'a');   // 6 s of dribbling if never cut
  const slow = rawExchange(GW_PORT, parts, { timeoutMs: 8000 });
  await sleep(300);
  const lat = [];
  for (let i = 0; i < 4; i++) {
    lat.push(await healthy('during slowloris'));
    await echoWorks('during slowloris');
    await sleep(150);
  }
  assert.ok(Math.max(...lat) < 500, `other clients answered at once: ${lat.map((x) => x.toFixed(0))} ms`);
  const x = await slow;
  assert.ok(x.closed, 'the slow connection was closed');
  assert.ok(x.ms < 4000, `closed after about header_timeout_ms, took ${x.ms.toFixed(0)} ms`);
  if (x.data) assert.match(x.data, /^HTTP\/1\.1 408 /, x.data.slice(0, 200));
});

test('a body dribbled past body_timeout_ms (3000) -> 408 or close', async () => {
  const body = chatJSON('slow body');
  const parts = [`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n${AUTH}Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`];
  for (let i = 0; i < 20; i++) parts.push(body[i], 300);
  const x = await rawExchange(GW_PORT, parts, { timeoutMs: 9000 });
  assert.ok(x.closed, 'closed');
  assert.ok(x.ms < 6000, `closed after about body_timeout_ms: ${x.ms.toFixed(0)} ms`);
  if (x.data) assert.match(x.data, /^HTTP\/1\.1 408 /, x.data.slice(0, 200));
});

test('pipelined requests in one write are answered in order', async () => {
  const user = `pipelined ${nonce('hpipe')}`;
  const req = Buffer.concat([
    Buffer.from('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'),
    rawPost(chatJSON(user)),
    Buffer.from(`GET /v1/models HTTP/1.1\r\nHost: x\r\n${AUTH}\r\n`),
    rawPost(chatJSON(`${user} second`, { stream: true })),
    Buffer.from('GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'),
  ]);
  const x = await rawExchange(GW_PORT, [req], { timeoutMs: 8000 });
  const rs = parseResponses(x.data);
  assert.deepEqual(rs.map((r) => r.status), [200, 200, 200, 200, 200], x.data.slice(0, 500));
  assert.equal(JSON.parse(rs[0].body).status, 'ok');
  assert.equal(JSON.parse(rs[1].body).choices[0].message.content, `echo: ${user}`);
  assert.equal(JSON.parse(rs[2].body).object, 'list');
  assert.equal(streamText(sseData(rs[3].body)), `echo: ${user} second`);
  assert.equal(JSON.parse(rs[4].body).status, 'ready');
  assert.ok(x.closed, 'Connection: close honoured');
});

test('pipelined: a slow upstream answer first still comes first', async () => {
  const n1 = nonce('hps'), n2 = nonce('hpf');
  await control('/control', { provider: 'openai', match: n1, faults: [{ delayMs: 600 }] });
  const x = await rawExchange(GW_PORT, [Buffer.concat([rawPost(chatJSON(`slow ${n1}`)), rawPost(chatJSON(`fast ${n2}`), { close: true })])], { timeoutMs: 8000 });
  const rs = parseResponses(x.data);
  assert.equal(rs.length, 2, x.data.slice(0, 500));
  assert.equal(JSON.parse(rs[0].body).choices[0].message.content, `echo: slow ${n1}`);
  assert.equal(JSON.parse(rs[1].body).choices[0].message.content, `echo: fast ${n2}`);
});

test('truncated requests then close: no crash, the next client is served', async () => {
  const body = chatJSON('truncated');
  const cases = [
    'GET /healthz HTT',
    'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le',
    `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n${AUTH}Content-Length: ${body.length}\r\n\r\n${body.slice(0, 10)}`,
    `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n${AUTH}Transfer-Encoding: chunked\r\n\r\n10\r\n{"model":`,
  ];
  for (const c of cases) {
    const x = await rawExchange(GW_PORT, [c], { timeoutMs: 300, endAfterWrite: true });
    assert.ok(!x.data || /^HTTP\/1\.1 4\d\d /.test(x.data), `${JSON.stringify(c.slice(0, 30))}: ${x.data.slice(0, 100)}`);
  }
  // the same, closed abruptly (RST) instead of FIN
  for (const c of cases) {
    await new Promise((resolve) => {
      const s = net.connect(GW_PORT, '127.0.0.1', () => { s.write(c); setTimeout(() => { s.resetAndDestroy?.() ?? s.destroy(); resolve(); }, 20); });
      s.on('error', () => {});
    });
  }
  await sleep(100);
  await healthy('after truncated requests');
  await echoWorks('after truncated requests');
});

test('garbage and bad request lines -> 400 (or close), no crash', async () => {
  for (const g of ['\x00\x01\x02\x03\r\n\r\n', 'HELLO\r\n\r\n', 'GET / HTTP/9.9\r\n\r\n', 'GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n',
    'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    'GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n', '\r\n'.repeat(5000)]) {
    const x = await rawExchange(GW_PORT, [g], { timeoutMs: 2500 });
    assert.ok(!x.data || /^HTTP\/1\.1 (4\d\d|505) /.test(x.data), `${JSON.stringify(g.slice(0, 40))}: ${x.data.slice(0, 120)}`);
  }
  await healthy('after garbage');
});

test('a client that leaves while its request is upstream: no crash, the upstream call is cut', async () => {
  const n = nonce('hgone');
  await control('/control', { provider: 'openai', match: n, faults: [{ delayMs: 800 }] });
  await new Promise((resolve) => {
    const s = net.connect(GW_PORT, '127.0.0.1', () => { s.write(rawPost(chatJSON(`gone ${n}`))); setTimeout(() => { s.destroy(); resolve(); }, 200); });
    s.on('error', () => {});
  });
  const n2 = nonce('hgones');
  await control('/control', { provider: 'openai', match: n2, faults: [{ chunkDelayMs: 300 }] });
  await new Promise((resolve) => {
    const s = net.connect(GW_PORT, '127.0.0.1', () => { s.write(rawPost(chatJSON(`gone streaming ${n2} a b c d e f`, { stream: true }))); });
    s.once('data', () => { s.destroy(); resolve(); });
    s.on('error', () => resolve());
    setTimeout(resolve, 3000);
  });
  await sleep(1200);
  await healthy('after clients left');
  await echoWorks('after clients left');
  const log = await control(`/control/log?match=${n}`);
  assert.equal(log.length, 1, 'no retry for a client that left');
});

test('a client that leaves during a retry-after wait: the retry is not sent', async () => {
  const n = nonce('hwait');
  await control('/control', { provider: 'openai', match: n, faults: [{ status: 429, retryAfter: 1 }] });
  await new Promise((resolve) => {
    const s = net.connect(GW_PORT, '127.0.0.1', () => { s.write(rawPost(chatJSON(`waiting ${n}`))); setTimeout(() => { s.destroy(); resolve(); }, 300); });
    s.on('error', () => {});
  });
  await sleep(1500);
  const log = await control(`/control/log?match=${n}`);
  assert.deepEqual(log.map((e) => e.status), [429], 'one attempt, no retry for a client that is gone');
  await healthy('after a client left during a backoff');
});

test('Expect: 100-continue gets "100 Continue" before the body; HTTP/1.0 is answered and closed', async () => {
  const user = `expect ${nonce('hexp')}`;
  const body = chatJSON(user);
  let got100 = false;
  const x = await new Promise((resolve) => {
    const s = net.connect(GW_PORT, '127.0.0.1');
    let data = '';
    const timer = setTimeout(() => { s.destroy(); resolve(data); }, 5000);
    s.on('connect', () => s.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n${AUTH}Content-Type: application/json\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`));
    s.on('data', (d) => {
      data += d;
      if (!got100 && /^HTTP\/1\.1 100 /.test(data)) { got100 = true; data = data.replace(/^HTTP\/1\.1 100 [^\r]*\r\n\r\n/, ''); s.write(body); }
    });
    s.on('close', () => { clearTimeout(timer); resolve(data); });
    s.on('error', () => {});
  });
  assert.ok(got100, 'a 100 Continue came before the body was sent');
  const rs = parseResponses(x);
  assert.equal(rs[0]?.status, 200, x.slice(0, 300));
  assert.equal(JSON.parse(rs[0].body).choices[0].message.content, `echo: ${user}`);

  const y = await rawExchange(GW_PORT, ['GET /healthz HTTP/1.0\r\n\r\n'], { timeoutMs: 3000 });
  assert.match(y.data, /^HTTP\/1\.[01] 200 /, y.data.slice(0, 200));
  assert.ok(y.closed && y.ms < 2500, 'HTTP/1.0 without keep-alive: closed after the answer');
});

test('500 idle connections do not stop a new client from being served', async () => {
  const socks = [];
  try {
    await Promise.all(Array.from({ length: 500 }, () => new Promise((resolve) => {
      const s = net.connect(GW_PORT, '127.0.0.1', resolve);
      s.on('error', resolve);
      socks.push(s);
    })));
    const lat = await healthy('with 500 idle connections');
    assert.ok(lat < 500, `served in ${lat.toFixed(0)} ms`);
    await echoWorks('with 500 idle connections');
  } finally {
    for (const s of socks) s.destroy();
  }
});

// ---------------------------------------------------------------------------------------
// Endpoints, keys, models

test('unknown endpoint -> 404 JSON in OpenAI shape', async () => {
  for (const p of ['/v1/nothing', '/v2/chat/completions', '/v1', '/v1/chat/completions/extra']) {
    const r = await get(p);
    assert.equal(r.status, 404, `${p}: ${r.status} ${r.text}`);
    assert.match(r.headers.get('content-type') ?? '', /application\/json/);
    assertOpenAIError(r.json);
  }
  const r = await get('/v1/chat/completions');
  assert.ok(r.status === 405 || r.status === 404, `GET on a POST endpoint: ${r.status}`);
  assertOpenAIError(r.json);
});

test('missing or invalid gateway key -> 401 in OpenAI shape; Bearer and x-api-key accepted', async () => {
  const body = chatBody('chat', `keys ${nonce('hkey')}`);
  const none = await post(body, { key: null });
  assert.equal(none.status, 401, none.text);
  assertOpenAIError(none.json);
  const wrong = await post(body, { key: 'sk-smolgate-wrong-key' });
  assert.equal(wrong.status, 401, wrong.text);
  assertOpenAIError(wrong.json);
  const prefix = await post(body, { key: KEY.slice(0, -1) });
  assert.equal(prefix.status, 401, 'a prefix of the key is not the key');
  const longer = await post(body, { key: `${KEY}x` });
  assert.equal(longer.status, 401, 'the key plus a character is not the key');
  const xkey = await post(body, { key: null, headers: { 'x-api-key': KEY } });
  assert.equal(xkey.status, 200, `x-api-key: ${xkey.text}`);
  const models = await get('/v1/models', { key: null });
  assert.equal(models.status, 401, '/v1/models needs the key too');
  assert.doesNotMatch(JSON.stringify([none.json, wrong.json]), /sk-smolgate-test/, 'the key is not echoed');
});

test('unknown model -> 404 model_not_found, nothing sent upstream', async () => {
  for (const model of ['no-such-model', 'nosuchprovider/gpt-4o-mini', 'local/no-such-local-model', '']) {
    const r = await post(chatBody(model, `unknown ${nonce('hum')}`));
    assert.ok(r.status === 404 || (model === '' && r.status === 400), `${JSON.stringify(model)}: ${r.status} ${r.text}`);
    assertOpenAIError(r.json);
    if (r.status === 404) {
      assert.equal(r.json.error.code, 'model_not_found');
      // what may be asked for instead: the routes this key may use, and the local model
      assert.match(r.json.error.message, /served here: .*routes: [^;]*\bchat\b/, r.json.error.message);
      assert.match(r.json.error.message, /local models: local\//, r.json.error.message);
    }
  }
});

test('a model or provider name with a NUL or control character -> 400 in the client\'s shape, nothing sent upstream', async () => {
  const n = nonce('hnul');
  // "chat\u0000evil" once matched the route "chat" (a C comparison stops at the NUL)
  const bodies = [
    chatBody('chat\u0000evil', `nul ${n}`),
    chatBody('chat\u0000evil', `nul stream ${n}`, { stream: true }),
    chatBody('chat\u0001', `ctl ${n}`),
    chatBody('openai/gpt-4o-mini\r\nx-evil: 1', `crlf ${n}`),
    chatBody('chat', `models ${n}`, { models: ['chat\u0000evil'] }),
    chatBody('chat', `models ctl ${n}`, { models: ['chat', 'chat\t'] }),
    chatBody('chat', `order ${n}`, { provider: { order: ['openai\u0000x'] } }),
    chatBody('chat', `only ${n}`, { provider: { only: ['openai\n'] } }),
  ];
  for (const body of bodies) {
    const r = await post(body);
    assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.status} ${r.text}`);
    assertOpenAIError(r.json, { type: 'invalid_request_error' });
  }
  const h = { 'anthropic-version': '2023-06-01' };
  for (const model of ['chat\u0000evil', 'chat\u001b[31m', 'chat\r\n']) {
    const r = await post({ model, max_tokens: 10, messages: [{ role: 'user', content: `anth ${n}` }] }, { path: '/v1/messages', headers: h });
    assert.equal(r.status, 400, `${JSON.stringify(model)}: ${r.status} ${r.text}`);
    assert.equal(r.json?.type, 'error', r.text);
    assert.equal(r.json?.error?.type, 'invalid_request_error', r.text);
  }
  const log = await control(`/control/log?match=${n}`);
  assert.equal(log.length, 0, 'nothing reached the provider');
});

test('GET /healthz and /readyz -> 200 without a key; HEAD too', async () => {
  for (const p of ['/healthz', '/readyz']) {
    const r = await get(p, { key: null });
    assert.equal(r.status, 200, `${p}: ${r.text}`);
    assert.ok(r.json, `${p} answers JSON`);
    const h = await fetch(GW + p, { method: 'HEAD' });
    assert.equal(h.status, 200, `HEAD ${p}`);
  }
});

test('200 concurrent requests, half streamed: every one answered with its own text', async () => {
  const base = nonce('hconc');
  const rs = await Promise.all(Array.from({ length: 200 }, (_, i) => post(chatBody('chat', `concurrent ${base} ${i}`, { stream: i % 2 === 1 }), { timeoutMs: 30000 })));
  rs.forEach((r, i) => {
    assert.equal(r.status, 200, `request ${i}: ${r.text.slice(0, 200)}`);
    const text = i % 2 ? streamText(sseData(r.text)) : r.json.choices[0].message.content;
    assert.equal(text, `echo: concurrent ${base} ${i}`);
  });
});

test('[needs anthropic endpoint] /v1/messages errors in Anthropic\'s shape: malformed JSON, wrong types, no key, unknown model', async () => {
  const h = { 'anthropic-version': '2023-06-01' };
  const shape = (r, status) => {
    assert.equal(r.status, status, r.text);
    assert.equal(r.json?.type, 'error', `{"type":"error",...}: ${r.text}`);
    assert.equal(typeof r.json?.error?.type, 'string', r.text);
    assert.equal(typeof r.json?.error?.message, 'string', r.text);
  };
  shape(await post('{"model":', { path: '/v1/messages', headers: h }), 400);
  shape(await post({ model: 'chat', max_tokens: 'ten', messages: [{ role: 'user', content: 'x' }] }, { path: '/v1/messages', headers: h }), 400);
  shape(await post({ model: 'chat', max_tokens: 10, messages: 'x' }, { path: '/v1/messages', headers: h }), 400);
  shape(await post({ model: 'no-such-model', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }, { path: '/v1/messages', headers: h }), 404);
  shape(await post({ model: 'chat', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }, { path: '/v1/messages', headers: h, key: null }), 401);
});

// ---------------------------------------------------------------------------------------
// Signals, on private gateways

function privateConfig(routes, { grace = 10000, key = KEY } = {}) {
  return `# hostile.test.mjs: a private gateway for the signal tests
listen: 127.0.0.1:0
server: {shutdown_grace_ms: ${grace}}
providers:
  openai:
    base_url: http://127.0.0.1:${PORTS.openai}/v1
    api_key: sk-fake-openai-dummy
    timeouts: {first_token_ms: 5000, idle_ms: 60000}
    retries: {max: 0}
routes:
${routes}
keys:
  - {id: tests, key: ${key}}
ledger: {sqlite: smolgate.db, spool_dir: spool}
`;
}

// Reads a streamed response to the end (bounded by the fetch's signal).
async function readAll(res) {
  const reader = res.body.getReader();
  let text = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return text;
    text += Buffer.from(value).toString();
  }
}
const streamReq = (url, model, user, key = KEY) => fetch(`${url}/v1/chat/completions`, {
  method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
  body: JSON.stringify(chatBody(model, user, { stream: true })), signal: AbortSignal.timeout(20000),
});

test('SIGHUP: a broken file is refused ("reload refused"), the old configuration serves; a valid one takes over', async () => {
  const { dir, file } = writeConfig(privateConfig('  - {name: old-route, targets: [openai/m-hup-old]}'));
  const gw = await startGateway(file);
  try {
    const r0 = await post(chatBody('old-route', 'before'), { base: gw.url });
    assert.equal(r0.status, 200, r0.text);

    writeFileSync(file, 'routes:\n  - name: [unclosed\n   targets: oops: :\n');
    gw.proc.kill('SIGHUP');
    await gw.waitLog(/reload refused/, 5000);
    const r1 = await post(chatBody('old-route', 'after a bad reload'), { base: gw.url });
    assert.equal(r1.status, 200, `the old configuration still serves: ${r1.text}`);
    assert.equal(r1.json.choices[0].message.content, 'echo: after a bad reload');

    // valid YAML, invalid configuration (unknown provider): refused too
    writeFileSync(file, privateConfig('  - {name: old-route, targets: [opneai/m-hup-old]}'));
    const refused = (gw.log().match(/reload refused/g) ?? []).length;
    gw.proc.kill('SIGHUP');
    await gw.waitLog(new RegExp(`(?:reload refused[^]*){${refused + 1}}`), 5000);
    assert.equal((await post(chatBody('old-route', 'x'), { base: gw.url })).status, 200);

    writeFileSync(file, privateConfig('  - {name: new-route, targets: [openai/m-hup-new]}'));
    gw.proc.kill('SIGHUP');
    await gw.waitLog(/configuration reloaded/, 5000);
    const r2 = await post(chatBody('new-route', 'after a good reload'), { base: gw.url });
    assert.equal(r2.status, 200, `the new route works: ${r2.text}`);
    assert.equal(r2.info.model, 'm-hup-new');
    const r3 = await post(chatBody('old-route', 'gone'), { base: gw.url });
    assert.equal(r3.status, 404, `the old route is gone: ${r3.text}`);
    assert.ok(!gw.exited(), 'still running');
  } finally {
    const ex = await gw.stop('SIGTERM', 10000);
    assert.equal(ex.code, 0, `exit: ${JSON.stringify(ex)}\n${gw.log()}`);
    assert.doesNotMatch(gw.log(), CRASH_RE);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('SIGHUP during a slow stream: it finishes with its configuration; the new one (routes, keys) applies to new requests', async () => {
  const { dir, file } = writeConfig(privateConfig('  - {name: old-route, targets: [openai/m-hup-inflight]}'));
  const gw = await startGateway(file);
  try {
    const n = nonce('hhup');
    await control('/control', { provider: 'openai', match: n, faults: [{ chunkDelayMs: 200 }] });
    const user = `in flight ${n} one two three four five`;
    const res = await streamReq(gw.url, 'old-route', user);
    assert.equal(res.status, 200);
    const all = readAll(res);
    await sleep(300);
    writeFileSync(file, privateConfig('  - {name: new-route, targets: [openai/m-hup-next]}', { key: 'sk-smolgate-rotated-key' }));
    gw.proc.kill('SIGHUP');
    await gw.waitLog(/configuration reloaded/, 5000);
    const d = sseData(await all);
    assert.equal(d[d.length - 1], '[DONE]', 'the stream in flight completed');
    assert.equal(streamText(d), `echo: ${user}`);
    const oldKey = await post(chatBody('new-route', 'x'), { base: gw.url });
    assert.equal(oldKey.status, 401, 'the old key is gone after the reload');
    const newKey = await post(chatBody('new-route', 'with the new key'), { base: gw.url, key: 'sk-smolgate-rotated-key' });
    assert.equal(newKey.status, 200, newKey.text);
  } finally {
    const ex = await gw.stop('SIGTERM', 10000);
    assert.equal(ex.code, 0, `exit: ${JSON.stringify(ex)}`);
    assert.doesNotMatch(gw.log(), CRASH_RE);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('SIGTERM with a stalled stream: shutdown_grace_ms (1000) bounds the wait, exit 0, the stream is not ended as a success', async () => {
  const { dir, file } = writeConfig(privateConfig('  - {name: chat, targets: [openai/gpt-4o-mini]}', { grace: 1000 }));
  const gw = await startGateway(file);
  try {
    const n = nonce('hgrace');
    await control('/control', { provider: 'openai', match: n, faults: [{ kind: 'stall', afterChunks: 2 }] });
    const res = await streamReq(gw.url, 'chat', `stalled ${n} one two three`);
    assert.equal(res.status, 200);
    const all = readAll(res).catch((e) => `read error: ${e}`);
    await sleep(300);
    const t0 = performance.now();
    gw.proc.kill('SIGTERM');
    const ex = await gw.stop('SIGTERM', 8000);
    const ms = performance.now() - t0;
    assert.equal(ex.code, 0, `exit: ${JSON.stringify(ex)}\n${gw.log()}`);
    assert.ok(ms < 4000, `exited ${ms.toFixed(0)} ms after SIGTERM (grace 1000 ms)`);
    const text = await all;
    assert.ok(!sseData(typeof text === 'string' ? text : '').includes('[DONE]'), 'no [DONE] for a stream cut by the shutdown');
    assert.doesNotMatch(gw.log(), CRASH_RE);
  } finally {
    await gw.stop('SIGKILL', 2000);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('SIGTERM during a slow stream: the stream completes, new connections are refused, exit 0', async () => {
  const { dir, file } = writeConfig(privateConfig('  - {name: chat, targets: [openai/gpt-4o-mini]}'));
  const gw = await startGateway(file);
  try {
    const n = nonce('hterm');
    await control('/control', { provider: 'openai', match: n, faults: [{ chunkDelayMs: 250 }] });
    const user = `slow stream ${n} one two three four five six`;
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
      body: JSON.stringify(chatBody('chat', user, { stream: true })), signal: AbortSignal.timeout(15000),
    });
    assert.equal(res.status, 200);
    const reader = res.body.getReader();
    let text = '';
    const first = await reader.read();
    text += Buffer.from(first.value).toString();
    // an idle keep-alive connection, opened (and accepted) before the signal
    const keep = net.connect(gw.port, '127.0.0.1');
    const kept = { data: '', closed: false };
    keep.on('data', (d) => { kept.data += d; });
    keep.on('close', () => { kept.closed = true; });
    keep.on('error', () => {});
    await new Promise((r) => keep.on('connect', r));
    await sleep(100);
    gw.proc.kill('SIGTERM');
    await gw.waitLog(/shutting down/, 3000);
    await sleep(100);
    if (!kept.closed) keep.write('GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n');
    for (let i = 0; i < 20 && !kept.closed && !/\r\n\r\n/.test(kept.data); i++) await sleep(100);
    const ready = kept.data || (kept.closed ? 'closed' : 'timeout');
    keep.destroy();
    assert.ok(ready === 'closed' || /^HTTP\/1\.1 503 /.test(ready), `/readyz while shutting down: 503 or a closed connection, got ${JSON.stringify(ready.slice(0, 40))}`);
    // new connections are refused (or closed without an answer) while the stream goes on
    const refused = await new Promise((resolve) => {
      const s = net.connect(gw.port, '127.0.0.1');
      s.on('error', (e) => resolve(e.code));
      s.on('connect', () => { s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'); });
      s.on('data', (d) => { s.destroy(); resolve(`answered: ${String(d).slice(0, 60)}`); });
      s.on('close', () => resolve('closed'));
      setTimeout(() => { s.destroy(); resolve('timeout'); }, 2000);
    });
    assert.ok(refused === 'ECONNREFUSED' || refused === 'ECONNRESET' || refused === 'closed', `a new connection after SIGTERM: ${refused}`);
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += Buffer.from(value).toString();
    }
    const d = sseData(text);
    assert.equal(d[d.length - 1], '[DONE]', 'the stream in flight completed');
    assert.equal(streamText(d), `echo: ${user}`);
    const ex = await gw.stop('SIGTERM', 10000);   // already stopping: waits for the exit
    assert.equal(ex.code, 0, `exit status: ${JSON.stringify(ex)}\n${gw.log()}`);
    assert.doesNotMatch(gw.log(), CRASH_RE);
  } finally {
    await gw.stop('SIGKILL', 2000);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('SIGHUP and SIGTERM with a local model loaded (--model): the gateway reloads, then exits 0', async () => {
  const modelDir = process.env.SMOLGATE_LOCAL_DIR;
  assert.ok(modelDir, 'SMOLGATE_LOCAL_DIR (set by gateway.sh) names the local model folder');
  const { dir, file } = writeConfig(privateConfig('  - {name: chat, targets: [openai/gpt-4o-mini]}'));
  const gw = await startGateway(file, ['--model', modelDir]);
  try {
    gw.proc.kill('SIGHUP');
    await sleep(500);
    assert.ok(!gw.exited(), `SIGHUP killed the gateway: ${JSON.stringify(gw.exited())}\n${gw.log()}`);
    await gw.waitLog(/configuration reloaded/, 3000);
    assert.equal((await post(chatBody('chat', 'after HUP'), { base: gw.url })).status, 200);
    const ex = await gw.stop('SIGTERM', 10000);
    assert.equal(ex.code, 0, `SIGTERM exit: ${JSON.stringify(ex)}\n${gw.log()}`);
    assert.match(gw.log(), /shutting down/);
  } finally {
    await gw.stop('SIGKILL', 2000);
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------

test('after everything: the main gateway answers /healthz and a chat, its log shows no sanitizer report or crash', async () => {
  await healthy('at the end');
  await echoWorks('at the end');
  assert.ok(LOG_FILE, 'SMOLGATE_LOG_FILE names the main gateway log');
  const log = readFileSync(LOG_FILE, 'utf8');
  const m = CRASH_RE.exec(log);
  assert.equal(m, null, `the log shows: ${m?.[0]}`);
});
