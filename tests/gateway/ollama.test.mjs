// ollama.test.mjs: smolgate's Ollama API (/api/*) against bad input and the gateway's rules,
// over fetch: every refusal in Ollama's error shape ({"error": "..."} and nothing else)
// with the right status, and nothing sent upstream for it.
//
//   - malformed JSON, a body that is not an object, wrong types (model, messages, stream,
//     options.*, format, think, tools), images, generate's suffix / raw / context -> 400
//   - a messages array of thousands of entries -> answered (the last user message echoed);
//     a body above server.max_body_bytes -> 413; deep nesting -> 400
//   - no key, a wrong key -> 401; the limited key (routes: [chat]) lists only its route in
//     /api/tags and gets 404 for a model beyond it; an unknown model -> 404 naming it
//   - a private gateway whose key has limits {rpm: 1}: the second request -> 429
//   - streamed answers are application/x-ndjson; the ledger records an Ollama request
//   - GET / and HEAD / -> "Ollama is running"; POST /api/embed answers (more in
//     embeddings.test.mjs)

import test from 'node:test';
import assert from 'node:assert/strict';
import { GW, KEY, PORTS, post, get, nonce, fakeLog, writeConfig, startGateway, sleep } from './lib.mjs';

const LIMITED = 'sk-smolgate-limited-key';

function assertOllamaError(r, status, re) {
  assert.equal(r.status, status, r.text.slice(0, 300));
  assert.ok(r.json && typeof r.json.error === 'string', `Ollama's error shape: ${r.text.slice(0, 300)}`);
  assert.deepEqual(Object.keys(r.json), ['error']);
  if (re) assert.match(r.json.error, re);
}

const chat = (body, opts = {}) => post(body, { path: '/api/chat', ...opts });
const generate = (body, opts = {}) => post(body, { path: '/api/generate', ...opts });
const user = (content) => [{ role: 'user', content }];

test('malformed bodies and wrong types: 400 in Ollama\'s shape, nothing sent upstream', async () => {
  const n = nonce('olh');
  const cases = [
    [chat, `{"model":"chat","messages":[{"role":"user","content":"${n}"`, /JSON/],
    [generate, '{"model":"chat","prompt":', /JSON/],
    [chat, '[1,2,3]', /object/],
    [chat, '"just a string"', /object/],
    [chat, { messages: user(n) }, /model is required/],
    [chat, { model: 42, messages: user(n) }, /model/],
    [chat, { model: 'chat', messages: `hello ${n}` }, /messages/],
    [chat, { model: 'chat', messages: [] }, /messages/],
    [chat, { model: 'chat', messages: [null] }, /messages\[0\]/],
    [chat, { model: 'chat', messages: [{ role: 'wizard', content: n }] }, /messages\[0\]\.role/],
    [chat, { model: 'chat', messages: [{ role: 'user', content: { text: n } }] }, /content/],
    [chat, { model: 'chat', messages: [{ role: 'user', content: n, images: ['aGVsbG8='] }] }, /images/],
    [chat, { model: 'chat', stream: 'yes', messages: user(n) }, /stream/],
    [chat, { model: 'chat', messages: user(n), options: 'hot' }, /options/],
    [chat, { model: 'chat', messages: user(n), options: { temperature: 'hot' } }, /temperature/],
    [chat, { model: 'chat', messages: user(n), options: { num_predict: '10' } }, /num_predict/],
    [chat, { model: 'chat', messages: user(n), options: { stop: [1, 2] } }, /stop/],
    [chat, { model: 'chat', messages: user(n), format: 'yaml' }, /format/],
    [chat, { model: 'chat', messages: user(n), think: 7 }, /think/],
    [chat, { model: 'chat', messages: user(n), tools: { name: 'x' } }, /tools/],
    [chat, { model: 'chat', messages: user(n), tools: [{ type: 'function' }] }, /tools\[0\]/],
    [chat, { model: 'chat\u0000evil', messages: user(n) }, /JSON/],
    [chat, { model: 'chat\u0001evil', messages: user(n) }, /control/],
    [generate, { model: 'chat' }, /prompt/],
    [generate, { model: 'chat', prompt: 7 }, /prompt/],
    [generate, { model: 'chat', prompt: n, suffix: 'the end' }, /suffix/],
    [generate, { model: 'chat', prompt: n, raw: true }, /raw/],
    [generate, { model: 'chat', prompt: n, context: [1, 2, 3] }, /context/],
    [generate, { model: 'chat', prompt: n, images: ['aGVsbG8='] }, /images/],
  ];
  for (const [fn, body, re] of cases) assertOllamaError(await fn(body), 400, re);
  // deep nesting inside a message: refused by the JSON reader, not a crash
  const deep = '{"model":"chat","messages":[{"role":"user","content":' + '['.repeat(5000) + ']'.repeat(5000) + '}]}';
  assertOllamaError(await chat(deep), 400);
  assert.equal((await fakeLog({ match: n })).length, 0, 'nothing reached a provider');
});

test('a huge messages array is answered; a body past max_body_bytes is 413', async () => {
  const n = nonce('olbig');
  const many = Array.from({ length: 1500 }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: String(i % 10) }));
  many.push({ role: 'user', content: `last ${n}` });
  const body = { model: 'chat', stream: false, messages: many };
  assert.ok(JSON.stringify(body).length < 65536, 'under the test configuration\'s max_body_bytes');
  const r = await chat(body);
  assert.equal(r.status, 200, r.text.slice(0, 300));
  assert.equal(r.json.message.content, `echo: last ${n}`);
  const log = await fakeLog({ match: n });
  assert.equal(log.length, 1);
  assert.equal(log[0].body.messages.length, 1501, 'every message went upstream');
  const over = { model: 'chat', stream: false, messages: Array.from({ length: 6000 }, () => ({ role: 'user', content: 'x'.repeat(20) })) };
  const r2 = await chat(over);
  assert.equal(r2.status, 413);
});

test('keys: 401 without or with a wrong key; the limited key sees and uses its route only', async () => {
  const body = { model: 'chat', stream: false, messages: user(`auth ${nonce('olk')}`) };
  assertOllamaError(await chat(body, { key: null }), 401);
  assertOllamaError(await chat(body, { key: 'sk-wrong' }), 401);
  assertOllamaError(await get('/api/tags', { key: null }), 401);
  assertOllamaError(await get('/api/version', { key: 'sk-wrong' }), 401);
  const tags = await get('/api/tags', { key: LIMITED });
  assert.equal(tags.status, 200);
  assert.deepEqual(tags.json.models.map((m) => m.name), ['chat']);
  const all = await get('/api/tags');
  assert.ok(all.json.models.length > 1 && all.json.models.some((m) => m.name === 'chat'));
  assert.equal((await chat(body, { key: LIMITED })).status, 200);
  assertOllamaError(await chat({ ...body, model: 'openai/gpt-4o-mini' }, { key: LIMITED }), 404, /gpt-4o-mini/);
  assertOllamaError(await post({ model: 'openai/gpt-4o-mini' }, { path: '/api/show', key: LIMITED }), 404, /^model 'openai\/gpt-4o-mini' not found$/);
  assertOllamaError(await post({ model: 'nope' }, { path: '/api/show' }), 404, /^model 'nope' not found$/);
  assertOllamaError(await post({}, { path: '/api/show' }), 400, /model/);
  assertOllamaError(await chat({ ...body, model: 'no-such-model' }), 404, /no-such-model/);
  assertOllamaError(await get('/api/nothing-here'), 404, /\/api\/nothing-here/);
});

test('streamed answers are NDJSON; the ledger has the request', async () => {
  const n = nonce('olnd');
  const res = await fetch(`${GW}/api/generate`, {
    method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'openai/m-ollama-ledger', prompt: `ledger ${n} words` }),
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^application\/x-ndjson/);
  const lines = (await res.text()).split('\n').filter(Boolean).map((l) => JSON.parse(l));
  assert.equal(lines.map((l) => l.response).join(''), `echo: ledger ${n} words`);
  assert.equal(lines.at(-1).done, true);
  assert.ok(lines.slice(0, -1).every((l) => l.done === false));
  let total = null;
  for (let i = 0; i < 100 && !(total?.requests >= 1); i++) {
    const u = await get('/v1/usage?model=m-ollama-ledger');
    assert.equal(u.status, 200, u.text.slice(0, 300));
    total = u.json.total;
    if (!(total?.requests >= 1)) await sleep(100);
  }
  assert.equal(total.requests, 1, 'one ledger record');
  assert.equal(total.output_tokens, lines.at(-1).eval_count, 'the ledger counts what the done line says');
});

test('probes: GET / and HEAD / say "Ollama is running"; /api/embed answers in Ollama\'s shape', async () => {
  const r = await fetch(`${GW}/`);
  assert.equal(r.status, 200);
  assert.equal(await r.text(), 'Ollama is running');
  const h = await fetch(`${GW}/`, { method: 'HEAD' });
  assert.equal(h.status, 200);
  const em = await post({ model: 'openai/text-embedding-3-small', input: 'x' }, { path: '/api/embed' });   // vectors: embeddings.test.mjs
  assert.equal(em.status, 200, em.text.slice(0, 300));
  assert.equal(em.json.embeddings.length, 1);
  assertOllamaError(await post({ model: 'chat', input: 7 }, { path: '/api/embed' }), 400, /input/);
  const v = await get('/api/version');
  assert.match(v.json.version, /^\d+\.\d+\.\d+$/);
});

test('limits: a key with rpm 1 gets 429 in Ollama\'s shape on its second request', async () => {
  const { file } = writeConfig(`# ollama.test.mjs: a private gateway with a rate-limited key
listen: 127.0.0.1:0
providers:
  openai:
    base_url: http://127.0.0.1:${PORTS.openai}/v1
    api_key: sk-fake-openai-dummy
    retries: {max: 0}
routes:
  - {name: r, targets: [openai/m-ollama-rpm]}
keys:
  - {id: slow, key: sk-ollama-rpm-limited-key, limits: {rpm: 1}}
`);
  const gw = await startGateway(file);
  try {
    const body = { model: 'r', stream: false, messages: user(`rpm ${nonce('olr')}`) };
    const r1 = await chat(body, { base: gw.url, key: 'sk-ollama-rpm-limited-key' });
    assert.equal(r1.status, 200, r1.text);
    const r2 = await chat(body, { base: gw.url, key: 'sk-ollama-rpm-limited-key' });
    assertOllamaError(r2, 429);
  } finally {
    await gw.stop();
  }
});
