// responses.test.mjs: the OpenAI Responses API through its clients, unchanged: the
// `openai` SDK's responses.create (plain, streamed with its typed events, function tools,
// the tool result chained by previous_response_id, stored responses read back, their
// input items listed (responses.inputItems.list) and deleted), the Vercel AI SDK's
// default OpenAI model (`@ai-sdk/openai`, which speaks the Responses API) through `ai`'s
// generateText / streamText with and without a tool, and
// one `@openai/agents` agent run. Against the fake OpenAI server (TARGET=fake) or
// smolgate's POST /v1/responses (TARGET=gateway; skipped, saying so, while smolgate
// answers it with "unknown endpoint"). Expected answers follow tests/fakes/README.md.
// Run: node --test tests/clients/responses.test.mjs (env: see env.mjs).

import test from 'node:test';
import assert from 'node:assert/strict';
import { GATEWAY, MODELS, words, nonce, openaiTarget, fakeLog, loadPackage, gatewayLacks } from './env.mjs';

globalThis.AI_SDK_LOG_WARNINGS = false;
const { default: OpenAI, APIError, BadRequestError, NotFoundError } = await loadPackage('openai');
const { generateText, streamText, tool, stepCountIs } = await loadPackage('ai');
const { createOpenAI } = await loadPackage('@ai-sdk/openai');
const agents = await loadPackage('@openai/agents');
const { z } = await loadPackage('zod');

const target = await openaiTarget();
const client = new OpenAI({ ...target, maxRetries: 0, timeout: 20000 });
const model = MODELS.openai;
const skip = await gatewayLacks('POST', '/v1/responses', 'the Responses API (POST /v1/responses)');

const WEATHER = { type: 'function', name: 'get_weather', description: 'Weather in a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false }, strict: true };

function expectUsage(u, input, output) {
  assert.equal(u.input_tokens, input, 'input_tokens');
  assert.equal(u.output_tokens, output, 'output_tokens');
  assert.equal(u.total_tokens, input + output, 'total_tokens');
}

test('responses.create: output_text, a message item, usage; the stored response read back and deleted', { skip }, async () => {
  const n = nonce('rs');
  const instructions = 'You are terse.';
  const input = `hello ${n} world`;
  const r = await client.responses.create({ model, instructions, input });
  assert.equal(r.object, 'response');
  assert.equal(r.status, 'completed');
  assert.equal(typeof r.id, 'string');
  assert.ok(r.id.length > 0);
  assert.equal(r.output_text, `echo: ${input}`);
  const msgs = r.output.filter((o) => o.type === 'message');
  assert.equal(msgs.length, 1);
  assert.equal(msgs[0].role, 'assistant');
  assert.equal(msgs[0].content[0].type, 'output_text');
  assert.equal(msgs[0].content[0].text, `echo: ${input}`);
  expectUsage(r.usage, words(instructions) + words(input), words(`echo: ${input}`));
  if (!GATEWAY) {
    assert.match(r.id, /^resp_/);
    assert.equal(r.model, model);
    const log = await fakeLog({ provider: 'openai', match: n });
    assert.equal(log.length, 1);
    assert.equal(log[0].path, '/v1/responses');
    assert.equal(log[0].body.instructions, instructions);
  }
  const got = await client.responses.retrieve(r.id);
  assert.equal(got.id, r.id);
  assert.equal(got.output_text, r.output_text);
  expectUsage(got.usage, r.usage.input_tokens, r.usage.output_tokens);
  await client.responses.delete(r.id);
  await assert.rejects(client.responses.retrieve(r.id), (e) => {
    assert.ok(e instanceof NotFoundError, `not a NotFoundError: ${e}`);
    assert.equal(e.status, 404);
    return true;
  });
});

test('responses.create streamed: typed events in order, text deltas, response.completed with usage', { skip }, async () => {
  const input = `stream me ${nonce('rss')} please now`;
  const stream = await client.responses.create({ model, input, stream: true });
  const events = [];
  for await (const e of stream) events.push(e);
  const types = events.map((e) => e.type);
  assert.equal(types[0], 'response.created');
  assert.equal(types.at(-1), 'response.completed');
  for (const t of ['response.output_item.added', 'response.content_part.added', 'response.output_text.done', 'response.output_item.done']) {
    assert.ok(types.includes(t), `no ${t} in ${types.join(', ')}`);
  }
  const seqs = events.map((e) => e.sequence_number);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'sequence numbers increase');
  const deltas = events.filter((e) => e.type === 'response.output_text.delta');
  assert.ok(deltas.length > 1, 'text in several deltas');
  assert.equal(deltas.map((e) => e.delta).join(''), `echo: ${input}`);
  const done = events.at(-1).response;
  assert.equal(done.status, 'completed');
  assert.equal(done.id, events[0].response.id);
  expectUsage(done.usage, words(input), words(`echo: ${input}`));
});

test('the SDK stream helper (responses.stream): text events and finalResponse', { skip }, async () => {
  const input = `helper ${nonce('rsh')} text`;
  const stream = client.responses.stream({ model, input });
  let text = '';
  stream.on('response.output_text.delta', (e) => { text += e.delta; });
  const final = await stream.finalResponse();
  assert.equal(text, `echo: ${input}`);
  assert.equal(final.output_text, `echo: ${input}`);
  expectUsage(final.usage, words(input), words(`echo: ${input}`));
});

test('function tools: streamed argument deltas, then the result chained by previous_response_id', { skip }, async () => {
  const n = nonce('rst');
  const input = `call:get_weather {"city":"Paris"}\ncall:get_weather {"city":"Oslo"}\nref ${n}`;
  const stream = await client.responses.create({ model, input, tools: [WEATHER], stream: true });
  const argDeltas = {};
  let final = null;
  for await (const e of stream) {
    if (e.type === 'response.function_call_arguments.delta') (argDeltas[e.output_index] ??= []).push(e.delta);
    if (e.type === 'response.completed') final = e.response;
  }
  const calls = final.output.filter((o) => o.type === 'function_call');
  assert.equal(calls.length, 2);
  assert.deepEqual(calls.map((c) => [c.name, JSON.parse(c.arguments)]), [['get_weather', { city: 'Paris' }], ['get_weather', { city: 'Oslo' }]]);
  assert.notEqual(calls[0].call_id, calls[1].call_id);
  const streamedArgs = Object.values(argDeltas).map((d) => JSON.parse(d.join('')));
  assert.deepEqual(streamedArgs, [{ city: 'Paris' }, { city: 'Oslo' }]);
  if (!GATEWAY) assert.ok(Object.values(argDeltas).every((d) => d.length > 1), 'arguments in several deltas');
  expectUsage(final.usage, words(input), 2);

  const results = ['{"temp_c": 21}', '{"temp_c": -3}'];
  const r2 = await client.responses.create({
    model, tools: [WEATHER], previous_response_id: final.id,
    input: calls.map((c, i) => ({ type: 'function_call_output', call_id: c.call_id, output: results[i] })),
  });
  const want = 'tool result: {"temp_c":21} | {"temp_c":-3}';
  assert.equal(r2.output_text, want);
  assert.equal(r2.previous_response_id, final.id);
  // the prompt: the first input, both calls' arguments, both results (compact JSON: a word each)
  expectUsage(r2.usage, words(input) + 2 + 2, words(want));
});

// The text of an input item's content: a string, or its text parts.
const itemText = (c) => typeof c === 'string' ? c : (c ?? []).map((p) => p.text ?? '').join('');

test('responses.inputItems.list: the stored input, newest first, paged with after; a chained response carries the previous turn', { skip }, async () => {
  const n = nonce('rsi');
  const r1 = await client.responses.create({ model, input: `first ${n} turn` });
  const p1 = await client.responses.inputItems.list(r1.id);
  assert.equal(p1.data.length, 1);
  assert.equal(p1.data[0].type, 'message');
  assert.equal(p1.data[0].role, 'user');
  assert.equal(itemText(p1.data[0].content), `first ${n} turn`);
  const r2 = await client.responses.create({ model, previous_response_id: r1.id, input: [{ role: 'user', content: `second ${n} turn` }] });
  const all = [];
  for await (const it of client.responses.inputItems.list(r2.id, { limit: 1 })) all.push(it);   // pages of one, by `after`
  assert.equal(itemText(all[0].content), `second ${n} turn`);
  const asc = await client.responses.inputItems.list(r2.id, { order: 'asc' });
  assert.equal(itemText(asc.data.at(-1).content), `second ${n} turn`);
  if (GATEWAY) {
    // as OpenAI lists it: this input, then what previous_response_id carried (its output, its input)
    assert.equal(all.length, 3, JSON.stringify(all));
    assert.equal(all[1].role, 'assistant');
    assert.equal(itemText(all[1].content), r1.output_text);
    assert.equal(itemText(all[2].content), `first ${n} turn`);
    assert.equal(new Set(all.map((it) => it.id)).size, 3, 'distinct ids');
    assert.deepEqual(asc.data.map((it) => it.id), all.map((it) => it.id).reverse());
    await assert.rejects(client.responses.inputItems.list(r2.id, { limit: 1000 }), (e) => {
      assert.ok(e instanceof BadRequestError, `not a BadRequestError: ${e}`);
      assert.equal(e.error?.param, 'limit');
      return true;
    });
  }
  await assert.rejects(client.responses.inputItems.list(`resp_${n}nope`), (e) => {
    assert.ok(e instanceof NotFoundError, `not a NotFoundError: ${e}`);
    return true;
  });
  await client.responses.delete(r2.id);
  await client.responses.delete(r1.id);
  await assert.rejects(client.responses.inputItems.list(r1.id), NotFoundError);
});

test('a 400 surfaces as APIError (BadRequestError) with the OpenAI error body (unknown previous_response_id)', { skip }, async () => {
  await assert.rejects(client.responses.create({ model, input: 'x', previous_response_id: 'resp_does_not_exist' }), (e) => {
    assert.ok(e instanceof APIError, `not an APIError: ${e}`);
    assert.ok(e instanceof BadRequestError, `not a BadRequestError: ${e.status} ${e.message}`);
    assert.equal(e.status, 400);
    assert.match(e.error.message, /resp_does_not_exist/, 'the message names the unknown response');
    return true;
  });
});

// ---- the Vercel AI SDK's default OpenAI model: the Responses API ----

const aiOpenAI = createOpenAI({ ...target });
const aiModel = aiOpenAI(MODELS.aisdk);   // the provider's default: the Responses API

function expectAiUsage(u, input, output) {
  assert.equal(u.inputTokens, input, 'inputTokens');
  assert.equal(u.outputTokens, output, 'outputTokens');
  assert.equal(u.totalTokens, input + output, 'totalTokens');
}
const TOOL_OUTPUT = JSON.stringify({ city: 'Paris', temp_c: 21 });
const TOOL_ANSWER = `tool result: ${TOOL_OUTPUT}`;
const weatherTool = (calls) => tool({
  description: 'Weather in a city',
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => { calls.push(city); return { city, temp_c: 21 }; },
});

test('ai generateText with @ai-sdk/openai (Responses API): text, finish reason, usage', { skip }, async () => {
  const n = nonce('rai');
  const system = `Be brief ${n}`;
  const prompt = 'what is the answer';
  const r = await generateText({ model: aiModel, system, prompt, maxRetries: 0 });
  assert.equal(r.text, `echo: ${prompt}`);
  assert.equal(r.finishReason, 'stop');
  expectAiUsage(r.usage, words(system) + words(prompt), words(`echo: ${prompt}`));
  if (!GATEWAY) {
    const log = await fakeLog({ provider: 'openai', match: n });
    assert.equal(log.length, 1);
    assert.equal(log[0].path, '/v1/responses', 'the default model speaks the Responses API');
  }
});

test('ai streamText with @ai-sdk/openai: text deltas and usage', { skip }, async () => {
  const prompt = `stream this ${nonce('rais')} text`;
  const r = streamText({ model: aiModel, prompt, maxRetries: 0 });
  const deltas = [];
  for await (const d of r.textStream) deltas.push(d);
  assert.ok(deltas.length > 1, 'several text deltas');
  assert.equal(deltas.join(''), `echo: ${prompt}`);
  assert.equal(await r.finishReason, 'stop');
  expectAiUsage(await r.usage, words(prompt), words(`echo: ${prompt}`));
});

test('ai generateText and streamText with @ai-sdk/openai and a tool: the call, its execution, the answer', { skip }, async () => {
  for (const streamed of [false, true]) {
    const system = `tool test ${nonce('rait')}`;
    const prompt = 'call:get_weather {"city":"Paris"}';
    const executed = [];
    const opts = { model: aiModel, system, prompt, tools: { get_weather: weatherTool(executed) }, stopWhen: stepCountIs(3), maxRetries: 0 };
    let steps, text;
    if (streamed) {
      const r = streamText(opts);
      const parts = [];
      for await (const p of r.fullStream) { if (p.type === 'error') throw p.error; parts.push(p); }
      const inputDeltas = parts.filter((p) => p.type === 'tool-input-delta').map((p) => p.delta);
      assert.deepEqual(JSON.parse(inputDeltas.join('')), { city: 'Paris' });
      steps = await r.steps;
      text = await r.text;
    } else {
      const r = await generateText(opts);
      steps = r.steps;
      text = r.text;
    }
    assert.deepEqual(executed, ['Paris']);
    assert.equal(steps.length, 2);
    assert.equal(steps[0].finishReason, 'tool-calls');
    assert.equal(steps[0].toolCalls[0].toolName, 'get_weather');
    assert.deepEqual(steps[0].toolCalls[0].input, { city: 'Paris' });
    assert.equal(text, TOOL_ANSWER);
    const p1 = words(system) + words(prompt);
    expectAiUsage(steps[0].usage, p1, 1);
    expectAiUsage(steps[1].usage, p1 + 1 + words(TOOL_OUTPUT), words(TOOL_ANSWER));
  }
});

// ---- the OpenAI Agents SDK (its default model speaks the Responses API) ----

test('@openai/agents: one agent run, and one with a function tool', { skip }, async () => {
  agents.setTracingDisabled(true);
  agents.setDefaultOpenAIClient(new OpenAI({ ...target, maxRetries: 0, timeout: 20000 }));
  agents.setOpenAIAPI('responses');
  const n = nonce('rag');
  const plain = new agents.Agent({ name: 'echo', instructions: `Answer briefly ${n}`, model });
  const input = 'hello agents world';
  const r = await agents.run(plain, input);
  assert.equal(r.finalOutput, `echo: ${input}`);
  if (!GATEWAY) {
    const log = await fakeLog({ provider: 'openai', match: n });
    assert.equal(log.length, 1);
    assert.equal(log[0].path, '/v1/responses');
  }
  const asked = [];
  const getWeather = agents.tool({
    name: 'get_weather', description: 'Weather in a city',
    parameters: z.object({ city: z.string() }),
    execute: async ({ city }) => { asked.push(city); return `sunny in ${city}`; },
  });
  const withTool = new agents.Agent({ name: 'weather', instructions: `Use the tool ${n}`, model, tools: [getWeather] });
  const r2 = await agents.run(withTool, 'call:get_weather {"city":"Lima"}');
  assert.deepEqual(asked, ['Lima']);
  assert.equal(r2.finalOutput, 'tool result: sunny in Lima');
});
