// embeddings.test.mjs: embeddings through every client API that asks for them (OpenAI's
// POST /v1/embeddings, Ollama's POST /api/embed and legacy POST /api/embeddings, the AI
// Gateway protocol's POST /v4/ai/embedding-model), through smolgate and the fakes
// (tests/e2e/gateway.sh's configuration: routes emb-fb -> [openai/m-embfb-primary,
// backup/text-embedding-3-small] and emb-fb-ollama (its own primary, so that each test
// has its own circuit breaker), backup/text-embedding-3-small priced $0.02 / M input
// tokens, retries.max 1):
//   - a 500 on the primary (twice: the attempt and its retry) falls back to the backup,
//     whatever the client API (the AI Gateway protocol's through providerOptions.gateway
//     .models); the answer is the fake's vectors in that API's shape
//   - the ledger (SQLite, read with the sqlite3 shell) has the request: the serving
//     target, the provider's token count, its cost, three attempts 500, 500, 200
//   - hostile inputs (malformed JSON, wrong types, 2049 inputs) are 400s in each API's
//     error shape, and nothing goes upstream

import test from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { post, CONFIG, gwInfo, nonce, words, control, fakeLog, sleep } from './lib.mjs';
import { fakeEmbedding } from '../clients/env.mjs';

const ROUTE = 'emb-fb';
const PRIMARY = 'm-embfb-primary';
const BACKUP = 'text-embedding-3-small';   // 1536 dimensions at the fake

const failPrimary = (model = PRIMARY) => control('/control', { provider: 'openai', match: model, faults: [{ status: 500, count: 2 }] });

// The fake's attempts for one nonce: [[model, status]] in order.
async function attempts(n) {
  return (await fakeLog({ match: n })).map((e) => [e.body?.model, e.status]);
}

function assertVector(v, text) {
  const want = fakeEmbedding(text, 1536);
  assert.equal(v.length, 1536, 'the backup\'s dimensions');
  v.forEach((x, i) => assert.ok(Math.abs(x - want[i]) <= 1e-6, `value ${i}: ${x} vs ${want[i]}`));
}

// ---- the ledger ----

function ledgerPath() {
  const m = /sqlite: ([^,}\s]+)/.exec(readFileSync(CONFIG, 'utf8'));
  assert.ok(m, `a sqlite ledger in ${CONFIG}`);
  return m[1];
}
const sql = (q) => {
  const out = execFileSync('sqlite3', ['-json', ledgerPath(), q], { encoding: 'utf8' });
  return out.trim() ? JSON.parse(out) : [];
};
async function ledgerRecord(requestId) {
  assert.match(requestId ?? '', /^[0-9a-f]+$/, 'x-request-id');
  for (let i = 0; i < 100; i++) {
    const rows = sql(`SELECT * FROM requests WHERE request_id = '${requestId}'`);
    if (rows.length) return rows[0];
    await sleep(100);
  }
  assert.fail(`no ledger record for ${requestId}`);
}

test.before(() => execFileSync('sqlite3', ['-version']));   // the ledger checks need it: fail loudly here

// ---- fallback and ledger, per client API ----

test('OpenAI: a 500 on the primary falls back; the ledger records tokens, cost and three attempts', async () => {
  const n = nonce('embo');
  const text = `${n} ${Array.from({ length: 1999 }, (_, i) => `w${i}`).join(' ')}`;   // 2000 words: 40 micro-dollars
  await failPrimary();
  const r = await post({ model: ROUTE, input: [text] }, { path: '/v1/embeddings' });
  assert.equal(r.status, 200, r.text.slice(0, 300));
  const info = gwInfo(r.headers);
  assert.equal(info.provider, 'backup');
  assert.equal(info.model, BACKUP);
  assert.equal(info.attempts, 3);
  assert.equal(r.json.data.length, 1);
  assertVector(r.json.data[0].embedding, text);
  assert.equal(r.json.usage.prompt_tokens, 2000);
  assert.deepEqual(await attempts(n), [[PRIMARY, 500], [PRIMARY, 500], [BACKUP, 200]]);

  const rec = await ledgerRecord(info.requestId);
  assert.equal(rec.status, 200);
  assert.equal(rec.route, ROUTE);
  assert.equal(rec.provider, 'backup');
  assert.equal(rec.model, BACKUP);
  assert.equal(rec.input_tokens, 2000, 'the provider\'s count');
  assert.ok(!rec.output_tokens, `no output tokens: ${rec.output_tokens}`);
  assert.equal(rec.usage_estimated, 0);
  assert.equal(rec.cost_micro, 40, '2000 tokens at $0.02 / M');
  assert.equal(rec.n_attempts, 3);
  const att = sql(`SELECT provider, model, status FROM attempts WHERE request_id = '${info.requestId}' ORDER BY n`);
  assert.deepEqual(att.map((a) => [a.provider, a.model, a.status]),
    [['openai', PRIMARY, 500], ['openai', PRIMARY, 500], ['backup', BACKUP, 200]]);
});

test('Ollama /api/embed: the same fallback, Ollama\'s answer, a ledger record', async () => {
  const n = nonce('embl');
  const input = [`${n} one`, 'and two more'];
  await failPrimary('m-embfbl-primary');
  const r = await post({ model: 'emb-fb-ollama', input, truncate: true, keep_alive: '5m', options: {} }, { path: '/api/embed' });
  assert.equal(r.status, 200, r.text.slice(0, 300));
  assert.equal(r.json.model, 'emb-fb-ollama', 'the name the client asked for');
  assert.equal(r.json.embeddings.length, 2);
  r.json.embeddings.forEach((v, i) => assertVector(v, input[i]));
  assert.equal(r.json.prompt_eval_count, words(input[0]) + words(input[1]));
  assert.ok(Number.isInteger(r.json.total_duration) && r.json.total_duration > 0, `total_duration ${r.json.total_duration}`);
  assert.equal(r.json.load_duration, 0);
  assert.deepEqual(await attempts(n), [['m-embfbl-primary', 500], ['m-embfbl-primary', 500], [BACKUP, 200]]);
  const rec = await ledgerRecord(gwInfo(r.headers).requestId);
  assert.equal(rec.route, 'emb-fb-ollama');
  assert.equal(rec.model, BACKUP);
  assert.equal(rec.input_tokens, r.json.prompt_eval_count);
  assert.equal(rec.cost_micro, 0, 'priced: a few tokens round to 0 micro-dollars, not NULL');
});

test('Ollama legacy /api/embeddings: {prompt} -> {embedding}; dimensions go upstream from /api/embed', async () => {
  const n = nonce('embg');
  const prompt = `${n} legacy prompt`;
  const r = await post({ model: `openai/${BACKUP}`, prompt }, { path: '/api/embeddings' });
  assert.equal(r.status, 200, r.text.slice(0, 300));
  assert.deepEqual(Object.keys(r.json), ['embedding']);
  assertVector(r.json.embedding, prompt);
  const d = await post({ model: `openai/${BACKUP}`, input: `${n} dims`, dimensions: 8 }, { path: '/api/embed' });
  assert.equal(d.status, 200, d.text.slice(0, 300));
  assert.equal(d.json.embeddings[0].length, 8);
  const log = await fakeLog({ match: n });
  assert.equal(log.length, 2);
  assert.equal(log[0].body.input, prompt, 'the prompt is the one input');
  assert.equal(log[1].body.dimensions, 8);
});

test('AI Gateway embedding-model: the same fallback, {embeddings, usage.tokens}', async () => {
  const n = nonce('emba');
  const values = [`${n} first`, 'second one here'];
  await failPrimary('m-embfba-primary');
  const r = await post({ values, providerOptions: { openai: { user: 'x' }, gateway: { models: [`backup/${BACKUP}`] } } },
    { path: '/v4/ai/embedding-model', headers: { 'ai-model-id': 'openai/m-embfba-primary', 'ai-embedding-model-specification-version': '4' } });
  assert.equal(r.status, 200, r.text.slice(0, 300));
  assert.equal(r.json.embeddings.length, 2);
  r.json.embeddings.forEach((v, i) => assertVector(v, values[i]));
  assert.equal(r.json.usage.tokens, words(values[0]) + words(values[1]));
  assert.deepEqual(await attempts(n), [['m-embfba-primary', 500], ['m-embfba-primary', 500], [BACKUP, 200]]);
  // providerOptions.gateway.only routes as for the language model: straight to the backup
  const o = await post({ values: [`${n} only`], providerOptions: { gateway: { only: ['backup'] } } },
    { path: '/v4/ai/embedding-model', headers: { 'ai-model-id': ROUTE } });
  assert.equal(o.status, 200, o.text.slice(0, 300));
  assert.equal(gwInfo(o.headers).attempts, 1);
  assert.deepEqual((await attempts(`${n} only`)).map((a) => a[0]), [BACKUP]);
});

// ---- hostile inputs ----

const ollamaShape = (r) => assert.equal(typeof r.json?.error, 'string', `{"error": "..."}: ${r.text.slice(0, 200)}`);
const openaiShape = (r) => assert.equal(typeof r.json?.error?.message, 'string', `{"error": {message}}: ${r.text.slice(0, 200)}`);
const aigShape = (r) => {
  openaiShape(r);
  assert.equal(r.json.error.type, 'invalid_request_error');
};

test('hostile inputs: 400 in each API\'s shape, nothing sent upstream', async () => {
  const n = nonce('embh');
  const many = Array.from({ length: 2049 }, (_, i) => `${n} ${i}`);
  const aig = { path: '/v4/ai/embedding-model', headers: { 'ai-model-id': ROUTE } };
  const cases = [
    // [label, path or opts, body (a string is sent as it is), shape, message]
    ['openai malformed', '/v1/embeddings', `{"model":"${ROUTE}","input":"${n}`, openaiShape, /JSON/],
    ['openai input number', '/v1/embeddings', { model: ROUTE, input: 5, n }, openaiShape, /input/],
    ['openai model number', '/v1/embeddings', { model: 7, input: n }, openaiShape, /model/],
    ['openai 2049 inputs', '/v1/embeddings', { model: ROUTE, input: many }, openaiShape, /2048/],
    ['embed malformed', '/api/embed', `{"model":"${ROUTE}","input":["${n}"`, ollamaShape, /JSON/],
    ['embed not an object', '/api/embed', `["${n}"]`, ollamaShape, /object/],
    ['embed input number', '/api/embed', { model: ROUTE, input: 5, n }, ollamaShape, /input/],
    ['embed input mixed', '/api/embed', { model: ROUTE, input: [n, 1] }, ollamaShape, /input/],
    ['embed input empty', '/api/embed', { model: ROUTE, input: [], n }, ollamaShape, /input/],
    ['embed no model', '/api/embed', { input: n }, ollamaShape, /model/],
    ['embed truncate string', '/api/embed', { model: ROUTE, input: n, truncate: 'yes' }, ollamaShape, /truncate/],
    ['embed dimensions string', '/api/embed', { model: ROUTE, input: n, dimensions: 'big' }, ollamaShape, /dimensions/],
    ['embed 2049 inputs', '/api/embed', { model: ROUTE, input: many }, ollamaShape, /2048/],
    ['embeddings prompt array', '/api/embeddings', { model: ROUTE, prompt: [n] }, ollamaShape, /prompt/],
    ['embeddings no prompt', '/api/embeddings', { model: ROUTE, input: n }, ollamaShape, /prompt/],
    ['aig malformed', aig, `{"values":["${n}"]`, aigShape, /JSON/],
    ['aig values string', aig, { values: n }, aigShape, /values/],
    ['aig values numbers', aig, { values: [n, 3] }, aigShape, /values/],
    ['aig 2049 values', aig, { values: many }, aigShape, /2048/],
    ['aig gateway options', aig, { values: [n], providerOptions: { gateway: { only: 'backup' } } }, aigShape, /only/],
    ['aig no model id', { path: aig.path }, { values: [n] }, aigShape, /ai-model-id/],
  ];
  for (const [label, where, body, shape, re] of cases) {
    const opts = typeof where === 'string' ? { path: where } : where;
    const r = await post(body, opts);   // a string goes as it is
    assert.equal(r.status, 400, `${label}: ${r.text.slice(0, 200)}`);
    shape(r);
    const msg = typeof r.json.error === 'string' ? r.json.error : r.json.error.message;
    assert.match(msg, re, label);
  }
  assert.deepEqual(await fakeLog({ match: n }), [], 'nothing went upstream');
});

test('errors in Ollama\'s shape: an unknown model 404, a provider without embeddings refused', async () => {
  const u = await post({ model: 'no-such-route', input: 'x' }, { path: '/api/embed' });
  assert.equal(u.status, 404, u.text.slice(0, 200));
  ollamaShape(u);
  assert.match(u.json.error, /no-such-route/);
  const n = nonce('embe');
  const a = await post({ model: 'anthropic/claude-haiku-4-5', input: n }, { path: '/api/embed' });
  assert.ok(a.status >= 400 && a.status < 500, `${a.status}: ${a.text.slice(0, 200)}`);
  ollamaShape(a);
  assert.match(a.json.error, /embeddings/);
  assert.deepEqual(await fakeLog({ match: n }), [], 'nothing went upstream');
});
