// aigateway.test.mjs: the Vercel AI Gateway protocol (POST /v4/ai/language-model, GET
// /v4/ai/config) over plain fetch, against the fakes: what the SDK test
// (tests/clients/aigateway.test.mjs) cannot send.
//
//   - each upstream kind through the protocol: openai, anthropic, google and the local
//     model, not streamed and streamed (the parts in order, finish with usage)
//   - providerOptions.gateway.order puts the listed provider first; .models is the fallback
//     list: the header's model fails (503s), the next one answers
//   - hostile input: malformed JSON, a body that is not an object, wrong types, invalid
//     UTF-8, deep nesting, a missing model header -> 400 in the gateway error shape
//     (type invalid_request_error); a prompt of many messages just below the body limit
//     -> 200; above it -> 413; nothing of it reaches upstream
//   - errors: unknown model -> 404 model_not_found, wrong key -> 401 authentication_error
//     (also on GET /config), embeddings -> a clear 501
// Run by tests/e2e/gateway.sh (group routing).

import test from 'node:test';
import assert from 'node:assert/strict';
import { post, get, nonce, words, fakeLog, control, gwInfo } from './lib.mjs';

const BASE = '/v4/ai';
const user = (text) => ({ role: 'user', content: [{ type: 'text', text }] });
const call = (model, body, { stream = false, headers = {}, key } = {}) =>
  post(body, {
    path: `${BASE}/language-model`,
    headers: { 'ai-language-model-specification-version': '4', 'ai-language-model-id': model, 'ai-language-model-streaming': String(stream), ...headers },
    ...(key !== undefined ? { key } : {}),
  });
const parts = (text) => text.split('\n').filter((l) => l.startsWith('data: ')).map((l) => JSON.parse(l.slice(6)));

function assertGatewayError(r, status, type) {
  assert.equal(r.status, status, r.text.slice(0, 300));
  assert.equal(typeof r.json?.error?.message, 'string', r.text.slice(0, 300));
  assert.ok(r.json.error.message.length > 0);
  assert.equal(r.json.error.type, type, r.text.slice(0, 300));
}

for (const model of ['openai/gpt-4o-mini', 'anthropic/claude-haiku-4-5', 'google/gemini-2.5-flash']) {
  test(`${model}: the answer as content parts, finishReason, usage; streamed as parts`, async () => {
    const text = `hello ${nonce('agx')} there`;
    const r = await call(model, { prompt: [{ role: 'system', content: 'Be brief' }, user(text)] });
    assert.equal(r.status, 200, r.text.slice(0, 300));
    assert.deepEqual(r.json.content, [{ type: 'text', text: `echo: ${text}` }]);
    assert.deepEqual(r.json.finishReason.unified, 'stop');
    assert.equal(r.json.usage.inputTokens.total, words('Be brief') + words(text));
    assert.equal(r.json.usage.outputTokens.total, words(`echo: ${text}`));

    const s = await call(model, { prompt: [user(text)] }, { stream: true });
    assert.equal(s.status, 200, s.text.slice(0, 300));
    assert.match(s.headers.get('content-type') ?? '', /text\/event-stream/);
    const ps = parts(s.text);
    assert.equal(ps[0].type, 'stream-start');
    assert.equal(ps.at(-1).type, 'finish');
    assert.equal(ps.at(-1).finishReason.unified, 'stop');
    assert.equal(ps.at(-1).usage.outputTokens.total, words(`echo: ${text}`));
    assert.equal(ps.filter((p) => p.type === 'text-delta').map((p) => p.delta).join(''), `echo: ${text}`);
    const types = ps.map((p) => p.type);
    assert.ok(types.indexOf('text-start') < types.indexOf('text-delta') && types.indexOf('text-end') < types.indexOf('finish'), types.join());
  });
}

test('the local model through the protocol', async () => {
  const r = await call('local/tinylm', { prompt: [user('hi')], maxOutputTokens: 4 });
  assert.equal(r.status, 200, r.text.slice(0, 300));
  assert.equal(r.json.content[0]?.type, 'text');
  assert.ok(['stop', 'length'].includes(r.json.finishReason.unified));
  assert.ok(r.json.usage.outputTokens.total >= 1 && r.json.usage.outputTokens.total <= 4, JSON.stringify(r.json.usage));
  const s = await call('local/tinylm', { prompt: [user('hi')], maxOutputTokens: 4 }, { stream: true });
  assert.equal(s.status, 200);
  assert.equal(parts(s.text).at(-1).type, 'finish');
});

test('a tool call: tool-call content with the JSON input, finishReason tool-calls', async () => {
  const tools = [{ type: 'function', name: 'get_weather', inputSchema: { type: 'object', properties: { city: { type: 'string' } } } }];
  const r = await call('openai/gpt-4o-mini', { prompt: [user('call:get_weather {"city":"Paris"}')], tools, toolChoice: { type: 'auto' } });
  assert.equal(r.status, 200, r.text.slice(0, 300));
  const tc = r.json.content.find((p) => p.type === 'tool-call');
  assert.equal(tc.toolName, 'get_weather');
  assert.deepEqual(JSON.parse(tc.input), { city: 'Paris' });
  assert.equal(r.json.finishReason.unified, 'tool-calls');
});

test('providerOptions.gateway.order: the listed provider goes first', async () => {
  const n = nonce('agord');
  const r = await call('f-aigorder', { prompt: [user(`order ${n}`)], providerOptions: { gateway: { order: ['backup', 'openai'] } } });
  assert.equal(r.status, 200, r.text.slice(0, 300));
  assert.equal(gwInfo(r.headers).provider, 'backup');
  assert.deepEqual((await fakeLog({ match: n })).map((e) => e.body?.model), ['m-aigorder-backup']);
});

test('providerOptions.gateway.models: when the model fails, the next one answers', async () => {
  const n = nonce('agfb');
  await control('/control', { provider: 'openai', match: 'm-aigfb-dead', faults: [{ status: 503, count: 4 }] });
  const r = await call('openai/m-aigfb-dead', { prompt: [user(`fallback ${n}`)], providerOptions: { gateway: { models: ['backup/m-aigfb-ok'] } } });
  assert.equal(r.status, 200, r.text.slice(0, 300));
  assert.equal(r.json.content[0].text, `echo: fallback ${n}`);
  const models = (await fakeLog({ match: n })).map((e) => e.body?.model);
  assert.equal(models[0], 'm-aigfb-dead');
  assert.equal(models.at(-1), 'm-aigfb-ok');
  assert.equal(gwInfo(r.headers).provider, 'backup');
});

test('hostile input: 400 in the gateway error shape, nothing sent upstream', async () => {
  const n = nonce('aghost');
  const ok = { prompt: [user(n)] };
  const cases = [
    ['malformed JSON', `{"prompt": [${JSON.stringify(user(n))}`],
    ['not an object', JSON.stringify([ok])],
    ['prompt a string', { prompt: n }],
    ['prompt empty', { prompt: [] }],
    ['a message without a role', { prompt: [{ content: [{ type: 'text', text: n }] }] }],
    ['user content a string', { prompt: [{ role: 'user', content: n }] }],
    ['a part without a type', { prompt: [{ role: 'user', content: [{ text: n }] }] }],
    ['maxOutputTokens a string', { ...ok, maxOutputTokens: '10' }],
    ['temperature out of range', { ...ok, temperature: 7 }],
    ['tools an object', { ...ok, tools: { a: 1 } }],
    ['toolChoice unknown', { ...ok, toolChoice: { type: 'sometimes' } }],
    ['gateway.order a string', { ...ok, providerOptions: { gateway: { order: 'openai' } } }],
    ['gateway.models numbers', { ...ok, providerOptions: { gateway: { models: [1, 2] } } }],
    ['a pdf file part', { prompt: [{ role: 'user', content: [{ type: 'file', mediaType: 'application/pdf', data: 'JVBERi0=' }, { type: 'text', text: n }] }] }],
    ['deep nesting', `{"prompt":[${JSON.stringify(user(n))}],"x":${'['.repeat(5000)}${']'.repeat(5000)}}`],
    ['invalid UTF-8', Buffer.concat([Buffer.from(`{"prompt":[{"role":"user","content":[{"type":"text","text":"${n} `), Buffer.from([0xff, 0xfe]), Buffer.from('"}]}]}')])],
  ];
  for (const [what, body] of cases) {
    const r = await call('openai/gpt-4o-mini', body);
    assert.equal(r.status, 400, `${what}: ${r.status} ${r.text.slice(0, 200)}`);
    assertGatewayError(r, 400, 'invalid_request_error');
  }
  const noModel = await post(ok, { path: `${BASE}/language-model` });
  assertGatewayError(noModel, 400, 'invalid_request_error');
  assert.match(noModel.json.error.message, /ai-language-model-id/);
  assert.equal((await fakeLog({ match: n })).length, 0, 'nothing reached upstream');
});

test('huge prompts: many messages below the body limit are served; above it, 413', async () => {
  const n = nonce('aghuge');
  const prompt = [];
  for (let i = 0; i < 1000; i++) prompt.push(user(i ? 'w' : n));   // ~55 KB, under max_body_bytes 65536
  const r = await call('openai/gpt-4o-mini', { prompt });
  assert.equal(r.status, 200, r.text.slice(0, 300));
  assert.equal(r.json.usage.inputTokens.total, 1000);
  const big = await call('openai/gpt-4o-mini', { prompt: [user(`${n} ${'x'.repeat(70000)}`)] });
  assert.equal(big.status, 413);
  assert.equal((await fakeLog({ match: n })).length, 1, 'only the first reached upstream');
});

test('errors: unknown model 404 model_not_found, wrong key 401 authentication_error, for embeddings too', async () => {
  assertGatewayError(await call('openai/gpt-nonexistent-x', { prompt: [user('x')] }), 404, 'model_not_found');
  assertGatewayError(await call('no-such-route', { prompt: [user('x')] }), 404, 'model_not_found');
  assertGatewayError(await call('openai/gpt-4o-mini', { prompt: [user('x')] }, { key: 'sk-wrong' }), 401, 'authentication_error');
  const cfg = await get(`${BASE}/config`, { key: 'sk-wrong' });
  assert.equal(cfg.status, 401);
  assert.equal(cfg.json.error.type, 'authentication_error');
  const em = await post({ values: ['x'] }, { path: `${BASE}/embedding-model`, headers: { 'ai-model-id': 'no-such-route' } });
  assertGatewayError(em, 404, 'model_not_found');
  assert.match(em.json.error.message, /no-such-route/);
  const ek = await post({ values: ['x'] }, { path: `${BASE}/embedding-model`, headers: { 'ai-model-id': 'openai/text-embedding-3-small' }, key: 'sk-wrong' });
  assertGatewayError(ek, 401, 'authentication_error');
});

test('GET /config: every model of GET /v1/models, declaring specification v4; a limited key sees its routes only', async () => {
  const c = await get(`${BASE}/config`);
  assert.equal(c.status, 200, c.text.slice(0, 300));
  const ids = c.json.models.map((m) => m.id);
  for (const m of c.json.models) {
    assert.equal(m.specification.specificationVersion, 'v4');
    assert.equal(m.specification.modelId, m.id);
    assert.equal(m.modelType, 'language');
  }
  assert.ok(ids.includes('chat') && ids.includes('local/tinylm'), ids.join());
  const listed = (await get('/v1/models')).json.data.map((m) => m.id);
  assert.deepEqual([...ids].sort(), [...listed].sort());
  const limited = await get(`${BASE}/config`, { key: 'sk-smolgate-limited-key' });
  assert.equal(limited.status, 200);
  assert.deepEqual(limited.json.models.map((m) => m.id), ['chat']);
});
