// ollama.test.mjs: smolgate's Ollama API (/api/chat, /api/generate as NDJSON streams,
// /api/tags, /api/show, /api/ps, /api/version, /api/embed) through the official `ollama`
// package and LangChain's ChatOllama (`@langchain/ollama`), unchanged, pointed at
// SMOLGATE_URL with the gateway key as a bearer token. The fakes speak no Ollama, so this
// runs with TARGET=gateway only (skipped otherwise, saying why), and is skipped, saying so,
// while smolgate answers GET /api/version with "unknown endpoint". Answers come from the
// fake OpenAI server behind the gateway (tests/fakes/README.md: "echo: <last user
// message>", `call:NAME {json}` tool calls, words as tokens); the local model is
// SMOLGATE_LOCAL_MODEL (gateway.sh's tinylm).
// Run: TARGET=gateway SMOLGATE_URL=... node --test tests/clients/ollama.test.mjs

import test from 'node:test';
import assert from 'node:assert/strict';
import { GATEWAY, MODELS, words, nonce, fakeLog, haveFakes, loadPackage, gatewayOnly, gatewayLacks, ollamaTarget, fakeEmbedding } from './env.mjs';

const { Ollama } = await loadPackage('ollama');
const { ChatOllama } = await loadPackage('@langchain/ollama');

const skip = gatewayOnly("Ollama's API") || await gatewayLacks('GET', '/api/version', "Ollama's API (/api/*)");
const target = GATEWAY ? ollamaTarget() : { host: 'http://127.0.0.1:1', headers: {} };
const ollama = new Ollama(target);
const model = MODELS.ollama;
const localModel = `local/${process.env.SMOLGATE_LOCAL_MODEL || 'smollm3'}`;
const fakes = GATEWAY && await haveFakes();

test('chat, not streamed: the message, done_reason, token counts', { skip }, async () => {
  const n = nonce('ol');
  const system = 'You are terse.';
  const user = `hello ${n} world`;
  const r = await ollama.chat({ model, messages: [{ role: 'system', content: system }, { role: 'user', content: user }] });
  assert.equal(r.model, model);
  assert.equal(r.message.role, 'assistant');
  assert.equal(r.message.content, `echo: ${user}`);
  assert.equal(r.done, true);
  assert.equal(r.done_reason, 'stop');
  assert.equal(r.prompt_eval_count, words(system) + words(user));
  assert.equal(r.eval_count, words(`echo: ${user}`));
  assert.ok(!Number.isNaN(new Date(r.created_at).getTime()), 'created_at is a date');
  if (fakes) {
    const log = await fakeLog({ provider: 'openai', match: n });
    assert.equal(log.length, 1, 'one request reached the fake');
    assert.equal(log[0].body.stream === true, false, 'a non-streamed chat asks upstream for no stream');
  }
});

test('chat, streamed (NDJSON): content pieces, then one done part with the counts', { skip }, async () => {
  const user = `stream me ${nonce('ols')} please now`;
  const parts = [];
  for await (const p of await ollama.chat({ model, stream: true, messages: [{ role: 'user', content: user }] })) parts.push(p);
  assert.ok(parts.length >= 2, `got ${parts.length} parts`);
  assert.equal(parts.map((p) => p.message?.content ?? '').join(''), `echo: ${user}`);
  assert.ok(parts.slice(0, -1).every((p) => p.done === false), 'only the last part is done');
  const last = parts.at(-1);
  assert.equal(last.done, true);
  assert.equal(last.done_reason, 'stop');
  assert.equal(last.prompt_eval_count, words(user));
  assert.equal(last.eval_count, words(`echo: ${user}`));
});

test('chat with tools: tool_calls with object arguments, then the tool result answered', { skip }, async () => {
  const tools = [{ type: 'function', function: { name: 'get_weather', description: 'Weather in a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
  const messages = [{ role: 'system', content: `tools ${nonce('olt')}` }, { role: 'user', content: 'call:get_weather {"city":"Paris"}' }];
  const r1 = await ollama.chat({ model, messages, tools });
  assert.equal(r1.message.tool_calls.length, 1);
  assert.equal(r1.message.tool_calls[0].function.name, 'get_weather');
  assert.deepEqual(r1.message.tool_calls[0].function.arguments, { city: 'Paris' });
  const result = '{"temp_c":21}';
  const r2 = await ollama.chat({ model, tools, messages: [...messages, r1.message, { role: 'tool', content: result, tool_name: 'get_weather' }] });
  assert.equal(r2.message.content, `tool result: ${result}`);
  assert.equal(r2.done_reason, 'stop');
});

test('generate, not streamed and streamed: the response text and counts', { skip }, async () => {
  const prompt = `complete ${nonce('olg')} this`;
  const system = 'Be brief.';
  const r = await ollama.generate({ model, prompt, system });
  assert.equal(r.model, model);
  assert.equal(r.response, `echo: ${prompt}`);
  assert.equal(r.done, true);
  assert.equal(r.done_reason, 'stop');
  assert.equal(r.prompt_eval_count, words(system) + words(prompt));
  assert.equal(r.eval_count, words(`echo: ${prompt}`));
  const parts = [];
  for await (const p of await ollama.generate({ model, prompt, stream: true })) parts.push(p);
  assert.ok(parts.length >= 2);
  assert.equal(parts.map((p) => p.response ?? '').join(''), `echo: ${prompt}`);
  assert.equal(parts.at(-1).done, true);
  assert.equal(parts.at(-1).eval_count, words(`echo: ${prompt}`));
});

test('generate with options.num_predict cuts the answer: done_reason length', { skip }, async () => {
  const prompt = `one two three four ${nonce('oll')}`;
  const r = await ollama.generate({ model, prompt, options: { num_predict: 3 } });
  assert.equal(r.response, 'echo: one two');
  assert.equal(r.done_reason, 'length');
  assert.equal(r.eval_count, 3);
});

test('tags, show, ps, version', { skip }, async () => {
  const tags = await ollama.list();
  assert.ok(Array.isArray(tags.models) && tags.models.length > 0, 'GET /api/tags lists models');
  for (const m of tags.models) {
    assert.equal(typeof m.name, 'string');
    assert.equal(typeof m.model, 'string');
    assert.equal(typeof m.details, 'object');
  }
  assert.ok(tags.models.some((m) => m.name === localModel || m.model === localModel), `${localModel} in ${tags.models.map((m) => m.name).join(', ')}`);
  const show = await ollama.show({ model: localModel });
  assert.equal(typeof show.details, 'object');
  assert.ok(Array.isArray(show.capabilities) && show.capabilities.includes('completion'), `capabilities: ${show.capabilities}`);
  const ps = await ollama.ps();
  assert.ok(Array.isArray(ps.models), 'GET /api/ps: a list');
  assert.ok(ps.models.some((m) => m.name === localModel || m.model === localModel), 'the loaded local model runs');
  const v = await ollama.version();
  assert.match(v.version, /^\d+\.\d+/);
});

const skipEmbed = skip || await gatewayLacks('POST', '/api/embed', "Ollama's /api/embed (embeddings)");
test('embed: one vector per input (the fakes\' embeddings), prompt_eval_count', { skip: skipEmbed }, async () => {
  const input = [`embed ${nonce('ole')} one`, 'and two'];
  const r = await ollama.embed({ model: MODELS.embedding, input });
  assert.equal(r.embeddings.length, 2);
  r.embeddings.forEach((v, i) => {
    const want = fakeEmbedding(input[i], v.length);
    assert.ok(v.length > 0);
    v.forEach((x, j) => assert.ok(Math.abs(x - want[j]) <= 1e-6, `value ${j}`));
  });
  assert.equal(r.prompt_eval_count, words(input[0]) + words(input[1]));
});

test('errors: an unknown model surfaces as ResponseError with the status', { skip }, async () => {
  await assert.rejects(ollama.chat({ model: 'gpt-nonexistent', messages: [{ role: 'user', content: 'x' }] }), (e) => {
    assert.equal(e.name, 'ResponseError', `not a ResponseError: ${e}`);
    assert.equal(e.status_code, 404);
    assert.equal(typeof e.error, 'string', "Ollama's error shape: {\"error\": \"...\"}");
    assert.match(e.error, /gpt-nonexistent/, 'the message names the model');
    return true;
  });
});

// ---- LangChain's ChatOllama ----

test('@langchain/ollama ChatOllama: invoke (usage metadata) and stream', { skip }, async () => {
  const chat = new ChatOllama({ baseUrl: target.host, headers: target.headers, model, maxRetries: 0 });
  const user = `langchain ${nonce('oll')} says hi`;
  const m = await chat.invoke([['system', 'Be brief.'], ['human', user]]);
  assert.equal(m.content, `echo: ${user}`);
  assert.equal(m.usage_metadata.input_tokens, words('Be brief.') + words(user));
  assert.equal(m.usage_metadata.output_tokens, words(`echo: ${user}`));
  assert.equal(m.usage_metadata.total_tokens, m.usage_metadata.input_tokens + m.usage_metadata.output_tokens);
  const chunks = [];
  for await (const c of await chat.stream([['human', user]])) chunks.push(c.content);
  assert.ok(chunks.length > 1, 'several chunks');
  assert.equal(chunks.join(''), `echo: ${user}`);
});
