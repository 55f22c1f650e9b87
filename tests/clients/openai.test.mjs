// openai.test.mjs: the official `openai` SDK, unchanged, against the fake OpenAI server
// (TARGET=fake) or smolgate (TARGET=gateway, SMOLGATE_URL): chat completions streamed and
// not, tool calls (streamed argument fragments by index, the round trip with a tool
// result), usage (stream_options.include_usage), /v1/models and errors as APIError.
// Expected answers follow tests/fakes/README.md: "echo: <last user message>", tool calls
// from "call:NAME {json}" lines, token counts = whitespace-separated words.
// Run: node --test tests/clients/openai.test.mjs (env: see env.mjs).

import test from 'node:test';
import assert from 'node:assert/strict';
import { GATEWAY, MODELS, words, nonce, openaiTarget, control, fakeLog, loadPackage } from './env.mjs';

const { default: OpenAI, APIError, BadRequestError, RateLimitError } = await loadPackage('openai');
const target = await openaiTarget();
const client = new OpenAI({ ...target, maxRetries: 0, timeout: 20000 });
const model = MODELS.openai;

const TOOLS = [
  { type: 'function', function: { name: 'get_weather', description: 'Weather in a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } },
  { type: 'function', function: { name: 'get_time', description: 'Time in a zone', parameters: { type: 'object', properties: { tz: { type: 'string' } }, required: ['tz'] } } },
];

function expectUsage(usage, prompt, completion) {
  assert.equal(usage.prompt_tokens, prompt, 'prompt_tokens');
  assert.equal(usage.completion_tokens, completion, 'completion_tokens');
  assert.equal(usage.total_tokens, prompt + completion, 'total_tokens');
}

test('chat completion, not streamed: content, finish_reason, usage', async () => {
  const n = nonce('oa');
  const system = 'You are terse.';
  const user = `hello ${n} world`;
  const r = await client.chat.completions.create({
    model, messages: [{ role: 'system', content: system }, { role: 'user', content: user }],
  });
  assert.equal(r.object, 'chat.completion');
  assert.equal(typeof r.id, 'string');
  assert.ok(r.id.length > 0);
  assert.equal(typeof r.created, 'number');
  assert.equal(typeof r.model, 'string');
  assert.equal(r.choices.length, 1);
  const c = r.choices[0];
  assert.equal(c.index, 0);
  assert.equal(c.message.role, 'assistant');
  assert.equal(c.message.content, `echo: ${user}`);
  assert.equal(c.finish_reason, 'stop');
  assert.ok(!c.message.tool_calls || c.message.tool_calls.length === 0);
  expectUsage(r.usage, words(system) + words(user), words(`echo: ${user}`));
  if (!GATEWAY) {
    assert.equal(r.model, model);
    assert.equal(c.message.refusal, null);
    assert.equal(r.usage.prompt_tokens_details.cached_tokens, 0);
    assert.equal(r.usage.completion_tokens_details.reasoning_tokens, 0);
    const log = await fakeLog({ provider: 'openai', match: n });
    assert.equal(log.length, 1, 'one request reached the fake');
    assert.equal(log[0].auth.present, true);
    assert.equal(log[0].headers.authorization, '[redacted]');
    assert.equal(log[0].body.model, model);
  }
});

test('chat completion, streamed: role first, content deltas, finish, usage chunk, [DONE]', async () => {
  const n = nonce('oas');
  const user = `stream me ${n} please now`;
  const stream = await client.chat.completions.create({
    model, stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: user }],
  });
  const chunks = [];
  for await (const ch of stream) chunks.push(ch);
  assert.ok(chunks.length >= 3, `got ${chunks.length} chunks`);
  for (const ch of chunks) assert.equal(ch.object, 'chat.completion.chunk');
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  const withChoices = chunks.filter((c) => c.choices.length > 0);
  const text = withChoices.map((c) => c.choices[0].delta.content ?? '').join('');
  assert.equal(text, `echo: ${user}`);
  const contentChunks = withChoices.filter((c) => c.choices[0].delta.content);
  assert.ok(contentChunks.length > 1, 'content arrives in several deltas');
  const finishes = withChoices.filter((c) => c.choices[0].finish_reason);
  assert.equal(finishes.length, 1);
  assert.equal(finishes[0].choices[0].finish_reason, 'stop');
  const last = chunks[chunks.length - 1];
  assert.deepEqual(last.choices, [], 'the usage chunk has no choices');
  expectUsage(last.usage, words(user), words(`echo: ${user}`));
  for (const ch of chunks.slice(0, -1)) assert.ok(ch.usage == null, 'only the last chunk carries usage');
});

test('streamed tool calls: argument fragments by index, finish_reason tool_calls, usage', async () => {
  const n = nonce('oat');
  const user = `call:get_weather {"city":"Paris"}\ncall:get_time {"tz":"Europe/Paris"}`;
  const system = `tools test ${n}`;
  const stream = await client.chat.completions.create({
    model, stream: true, stream_options: { include_usage: true }, tools: TOOLS,
    messages: [{ role: 'system', content: system }, { role: 'user', content: user }],
  });
  const calls = [];   // by index: {id, name, args, fragments}
  let finish = null, usage = null;
  for await (const ch of stream) {
    if (ch.usage) usage = ch.usage;
    const ch0 = ch.choices[0];
    if (!ch0) continue;
    if (ch0.finish_reason) finish = ch0.finish_reason;
    for (const tc of ch0.delta.tool_calls ?? []) {
      assert.equal(typeof tc.index, 'number');
      const slot = (calls[tc.index] ??= { id: null, name: '', args: '', fragments: 0 });
      if (tc.id) { assert.equal(slot.id, null, 'the id comes once, with the first fragment'); slot.id = tc.id; }
      if (tc.function?.name) slot.name += tc.function.name;
      if (tc.function?.arguments) { slot.args += tc.function.arguments; slot.fragments++; }
    }
  }
  assert.equal(finish, 'tool_calls');
  assert.equal(calls.length, 2);
  assert.equal(calls[0].name, 'get_weather');
  assert.deepEqual(JSON.parse(calls[0].args), { city: 'Paris' });
  assert.equal(calls[1].name, 'get_time');
  assert.deepEqual(JSON.parse(calls[1].args), { tz: 'Europe/Paris' });
  for (const c of calls) assert.ok(typeof c.id === 'string' && c.id.length > 0);
  assert.notEqual(calls[0].id, calls[1].id);
  if (!GATEWAY) assert.ok(calls.every((c) => c.fragments > 1), 'arguments arrive in several fragments');
  assert.ok(usage, 'usage chunk');
  expectUsage(usage, words(system) + words(user), 2);  // compact argument JSON: one word each
});

test('tool call round trip, not streamed: tool_calls, then the tool result answered', async () => {
  const n = nonce('oar');
  const user = `call:get_weather {"city":"Oslo"}`;
  const system = `round trip ${n}`;
  const messages = [{ role: 'system', content: system }, { role: 'user', content: user }];
  const r1 = await client.chat.completions.create({ model, tools: TOOLS, messages });
  const m1 = r1.choices[0].message;
  assert.equal(r1.choices[0].finish_reason, 'tool_calls');
  assert.equal(m1.tool_calls.length, 1);
  const tc = m1.tool_calls[0];
  assert.equal(tc.type, 'function');
  assert.equal(tc.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(tc.function.arguments), { city: 'Oslo' });
  expectUsage(r1.usage, words(system) + words(user), 1);

  const result = '{"temp_c":-3,"sky":"snow"}';
  const r2 = await client.chat.completions.create({
    model, tools: TOOLS,
    messages: [...messages, m1, { role: 'tool', tool_call_id: tc.id, content: result }],
  });
  const want = `tool result: ${result}`;
  assert.equal(r2.choices[0].message.content, want);
  assert.equal(r2.choices[0].finish_reason, 'stop');
  expectUsage(r2.usage, words(system) + words(user) + 1 + words(result), words(want));
});

test('the SDK stream helper assembles tool calls (finalChatCompletion)', async () => {
  const n = nonce('oah');
  const user = `call:get_time {"tz":"Asia/Tokyo","format":"24h"}`;
  const stream = client.chat.completions.stream({
    model, tools: TOOLS, stream_options: { include_usage: true },
    messages: [{ role: 'system', content: n }, { role: 'user', content: user }],
  });
  const final = await stream.finalChatCompletion();
  const tc = final.choices[0].message.tool_calls;
  assert.equal(tc.length, 1);
  assert.equal(tc[0].function.name, 'get_time');
  assert.deepEqual(JSON.parse(tc[0].function.arguments), { tz: 'Asia/Tokyo', format: '24h' });
  assert.equal(final.choices[0].finish_reason, 'tool_calls');
  expectUsage(final.usage, 1 + words(user), 1);
});

test('max_tokens cuts the answer with finish_reason length', async () => {
  const user = `one two three four five ${nonce('oal')}`;
  const r = await client.chat.completions.create({ model, max_tokens: 3, messages: [{ role: 'user', content: user }] });
  assert.equal(r.choices[0].message.content, 'echo: one two');
  assert.equal(r.choices[0].finish_reason, 'length');
  expectUsage(r.usage, words(user), 3);
});

test('GET /v1/models lists models', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.ok(ids.length > 0);
  if (!GATEWAY) assert.ok(ids.includes('gpt-4o-mini'));
});

test('a 400 surfaces as APIError (BadRequestError) with the OpenAI error body', async () => {
  await assert.rejects(
    client.chat.completions.create({ model, messages: [] }),
    (e) => {
      assert.ok(e instanceof APIError, `not an APIError: ${e}`);
      assert.ok(e instanceof BadRequestError);
      assert.equal(e.status, 400);
      assert.equal(e.type, 'invalid_request_error');
      assert.equal(typeof e.error.message, 'string');
      return true;
    },
  );
});

// Faults are injected at the fake, so these look at the fake directly.
test('fake: a 429 with retry-after surfaces as RateLimitError with its headers', { skip: GATEWAY && 'fault injection targets the fake' }, async () => {
  await assert.rejects(
    client.chat.completions.create(
      { model, messages: [{ role: 'user', content: 'x' }] },
      { headers: { 'x-fake-fault': '429:7' } },
    ),
    (e) => {
      assert.ok(e instanceof RateLimitError);
      assert.equal(e.status, 429);
      assert.equal(e.code, 'rate_limit_exceeded');
      assert.equal(e.headers.get('retry-after'), '7');
      assert.equal(e.headers.get('x-ratelimit-remaining-requests'), '0');
      assert.match(e.headers.get('x-request-id'), /^req_/);
      return true;
    },
  );
});

test('fake: the SDK retries a queued 503 and the log shows both attempts', { skip: GATEWAY && 'fault injection targets the fake' }, async () => {
  const n = nonce('oa503');
  await control('/control', { provider: 'openai', match: n, faults: [{ status: 503, retryAfterMs: 5 }] });
  const retrying = new OpenAI({ ...target, maxRetries: 2 });
  const r = await retrying.chat.completions.create({ model, messages: [{ role: 'user', content: n }] });
  assert.equal(r.choices[0].message.content, `echo: ${n}`);
  const log = await fakeLog({ provider: 'openai', match: n });
  assert.deepEqual(log.map((e) => e.status), [503, 200]);
  assert.equal(log[0].fault.status, 503);
});

test('fake: cached and reasoning token counts set through the control port', { skip: GATEWAY && 'usage counts are set at the fake' }, async () => {
  const n = nonce('oau');
  await control('/control', { provider: 'openai', match: n, usage: { cached: 2, reasoning: 5 } });
  const user = `count ${n} these words`;
  const r = await client.chat.completions.create({ model, messages: [{ role: 'user', content: user }] });
  expectUsage(r.usage, 4, words(`echo: ${user}`) + 5);
  assert.equal(r.usage.prompt_tokens_details.cached_tokens, 2);
  assert.equal(r.usage.completion_tokens_details.reasoning_tokens, 5);
});
