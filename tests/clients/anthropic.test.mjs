// anthropic.test.mjs: the official `@anthropic-ai/sdk`, unchanged, against the fake
// Anthropic server (TARGET=fake) or smolgate's /v1/messages (TARGET=gateway,
// SMOLGATE_URL): messages streamed (client.messages.stream, finalMessage) and not,
// tool_use (input_json_delta while streaming, the tool_result round trip), usage, and
// errors as APIError. Expected answers follow tests/fakes/README.md.
// Run: node --test tests/clients/anthropic.test.mjs (env: see env.mjs).

import test from 'node:test';
import assert from 'node:assert/strict';
import { GATEWAY, MODELS, words, nonce, anthropicTarget, control, fakeLog, loadPackage } from './env.mjs';

const { default: Anthropic, APIError, BadRequestError } = await loadPackage('@anthropic-ai/sdk');
const target = await anthropicTarget();
const client = new Anthropic({ ...target, maxRetries: 0, timeout: 20000 });
const model = MODELS.anthropic;

const TOOLS = [
  { name: 'get_weather', description: 'Weather in a city', input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } },
  { name: 'get_time', description: 'Time in a zone', input_schema: { type: 'object', properties: { tz: { type: 'string' } }, required: ['tz'] } },
];

function expectUsage(u, input, output) {
  assert.equal(u.input_tokens, input, 'input_tokens');
  assert.equal(u.output_tokens, output, 'output_tokens');
  assert.equal(u.cache_read_input_tokens ?? 0, 0);
  assert.equal(u.cache_creation_input_tokens ?? 0, 0);
}

test('message, not streamed: text block, stop_reason, usage', async () => {
  const n = nonce('an');
  const system = 'You are terse.';
  const user = `hello ${n} world`;
  const m = await client.messages.create({ model, max_tokens: 256, system, messages: [{ role: 'user', content: user }] });
  assert.equal(m.type, 'message');
  assert.equal(m.role, 'assistant');
  assert.equal(typeof m.id, 'string');
  assert.equal(typeof m.model, 'string');
  assert.equal(m.content.length, 1);
  assert.equal(m.content[0].type, 'text');
  assert.equal(m.content[0].text, `echo: ${user}`);
  assert.equal(m.stop_reason, 'end_turn');
  assert.equal(m.stop_sequence, null);
  expectUsage(m.usage, words(system) + words(user), words(`echo: ${user}`));
  if (!GATEWAY) {
    assert.match(m.id, /^msg_/);
    assert.equal(m.model, model);
    const log = await fakeLog({ provider: 'anthropic', match: n });
    assert.equal(log.length, 1);
    assert.ok(log[0].headers['x-api-key'] === '[redacted]' || log[0].headers.authorization === '[redacted]');
    assert.ok(log[0].headers['anthropic-version']);
    assert.equal(log[0].body.system, system);
  }
});

test('message, streamed with messages.stream(): event order, text deltas, finalMessage usage', async () => {
  const n = nonce('ans');
  const user = `stream me ${n} please now`;
  const stream = client.messages.stream({ model, max_tokens: 256, messages: [{ role: 'user', content: user }] });
  const types = [];
  let text = '';
  stream.on('streamEvent', (e) => types.push(e.type));
  stream.on('text', (t) => { text += t; });
  const m = await stream.finalMessage();
  assert.equal(types[0], 'message_start');
  assert.equal(types[types.length - 1], 'message_stop');
  assert.equal(types[types.length - 2], 'message_delta');
  assert.ok(types.includes('content_block_start') && types.includes('content_block_stop'));
  assert.ok(types.filter((t) => t === 'content_block_delta').length > 1, 'text arrives in several deltas');
  assert.equal(text, `echo: ${user}`);
  assert.equal(m.content[0].type, 'text');
  assert.equal(m.content[0].text, `echo: ${user}`);
  assert.equal(m.stop_reason, 'end_turn');
  expectUsage(m.usage, words(user), words(`echo: ${user}`));
});

test('tool_use, not streamed, and the tool_result round trip', async () => {
  const n = nonce('ant');
  const system = `tools ${n}`;
  const user = `call:get_weather {"city":"Lima"}`;
  const messages = [{ role: 'user', content: user }];
  const m1 = await client.messages.create({ model, max_tokens: 256, system, tools: TOOLS, messages });
  assert.equal(m1.stop_reason, 'tool_use');
  const uses = m1.content.filter((b) => b.type === 'tool_use');
  assert.equal(uses.length, 1);
  assert.equal(uses[0].name, 'get_weather');
  assert.deepEqual(uses[0].input, { city: 'Lima' });
  assert.equal(typeof uses[0].id, 'string');
  if (!GATEWAY) assert.match(uses[0].id, /^toolu_/);
  expectUsage(m1.usage, words(system) + words(user), 1);

  const result = '{"temp_c":19}';
  const m2 = await client.messages.create({
    model, max_tokens: 256, system, tools: TOOLS,
    messages: [...messages, { role: 'assistant', content: m1.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: uses[0].id, content: result }] }],
  });
  const want = `tool result: ${result}`;
  assert.equal(m2.stop_reason, 'end_turn');
  assert.equal(m2.content[0].type, 'text');
  assert.equal(m2.content[0].text, want);
  expectUsage(m2.usage, words(system) + words(user) + 1 + words(result), words(want));
});

test('tool_use, streamed: input_json_delta fragments assembled by the SDK, with text before', async () => {
  const n = nonce('ants');
  const user = `say: Checking both.\ncall:get_weather {"city":"Cairo"}\ncall:get_time {"tz":"Africa/Cairo"}\nref ${n}`;
  const stream = client.messages.stream({ model, max_tokens: 256, tools: TOOLS, messages: [{ role: 'user', content: user }] });
  let jsonDeltas = 0;
  stream.on('inputJson', () => { jsonDeltas++; });
  const m = await stream.finalMessage();
  assert.equal(m.stop_reason, 'tool_use');
  const text = m.content.filter((b) => b.type === 'text').map((b) => b.text).join('');
  assert.equal(text, 'Checking both.');
  const uses = m.content.filter((b) => b.type === 'tool_use');
  assert.deepEqual(uses.map((u) => u.name), ['get_weather', 'get_time']);
  assert.deepEqual(uses[0].input, { city: 'Cairo' });
  assert.deepEqual(uses[1].input, { tz: 'Africa/Cairo' });
  assert.notEqual(uses[0].id, uses[1].id);
  assert.ok(jsonDeltas >= 2, `input_json_delta events: ${jsonDeltas}`);
  if (!GATEWAY) assert.ok(jsonDeltas > 2, 'arguments arrive in several fragments');
  expectUsage(m.usage, words(user), words('Checking both.') + 2);
});

test('max_tokens and stop_sequences end the answer with their stop_reason', async () => {
  const user = `one two three four ${nonce('anl')}`;
  const m1 = await client.messages.create({ model, max_tokens: 2, messages: [{ role: 'user', content: user }] });
  assert.equal(m1.content[0].text, 'echo: one');
  assert.equal(m1.stop_reason, 'max_tokens');
  assert.equal(m1.usage.output_tokens, 2);
  const m2 = await client.messages.create({ model, max_tokens: 100, stop_sequences: [' three'], messages: [{ role: 'user', content: user }] });
  assert.equal(m2.content[0].text, 'echo: one two');
  assert.equal(m2.stop_reason, 'stop_sequence');
  assert.equal(m2.stop_sequence, ' three');
});

test('a 400 surfaces as APIError (BadRequestError) with the Anthropic error body', async () => {
  await assert.rejects(
    client.messages.create({ model, max_tokens: 16, messages: [] }),
    (e) => {
      assert.ok(e instanceof APIError, `not an APIError: ${e}`);
      assert.ok(e instanceof BadRequestError);
      assert.equal(e.status, 400);
      assert.equal(e.error.type, 'error');
      assert.equal(e.error.error.type, 'invalid_request_error');
      return true;
    },
  );
});

test('fake: 529 overloaded_error and 429 rate_limit_error with their headers', { skip: GATEWAY && 'fault injection targets the fake' }, async () => {
  const req = { model, max_tokens: 16, messages: [{ role: 'user', content: 'x' }] };
  await assert.rejects(client.messages.create(req, { headers: { 'x-fake-fault': '529' } }), (e) => {
    assert.ok(e instanceof APIError);
    assert.equal(e.status, 529);
    assert.equal(e.error.error.type, 'overloaded_error');
    assert.match(e.requestID, /^req_/);
    return true;
  });
  await assert.rejects(client.messages.create(req, { headers: { 'x-fake-fault': '429:4' } }), (e) => {
    assert.equal(e.status, 429);
    assert.equal(e.error.error.type, 'rate_limit_error');
    assert.equal(e.headers.get('retry-after'), '4');
    assert.equal(e.headers.get('anthropic-ratelimit-requests-remaining'), '0');
    assert.ok(!Number.isNaN(Date.parse(e.headers.get('anthropic-ratelimit-requests-reset'))));
    return true;
  });
});

test('fake: cache read / creation counts set through the control port', { skip: GATEWAY && 'usage counts are set at the fake' }, async () => {
  const n = nonce('anc');
  await control('/control', { provider: 'anthropic', match: n, usage: { cached: 3, cacheCreation: 1 } });
  const user = `a b c d e ${n}`;
  const stream = client.messages.stream({ model, max_tokens: 64, messages: [{ role: 'user', content: user }] });
  const m = await stream.finalMessage();
  assert.equal(m.usage.input_tokens, 6 - 3 - 1);
  assert.equal(m.usage.cache_read_input_tokens, 3);
  assert.equal(m.usage.cache_creation_input_tokens, 1);
  assert.equal(m.usage.output_tokens, words(`echo: ${user}`));
});
