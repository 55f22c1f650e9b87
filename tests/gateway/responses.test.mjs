// responses.test.mjs: POST /v1/responses served by every provider type, and its hostile
// inputs, against the gateway started by tests/e2e/gateway.sh.
//
//   - each provider through the canonical request: the fake OpenAI (gpt-4o-mini), the fake
//     Anthropic (claude-haiku-4-5), the fake Gemini (gemini-2.5-flash): plain, streamed
//     (typed events with increasing sequence numbers, deltas that add up), function tools
//     (function_call items with call_id, name, arguments), the tool result continued by
//     previous_response_id; the local model (local/NAME, random weights): a completed
//     Response, plain and streamed, with usage
//   - x-smolgate-provider says which provider served it
//   - stored responses belong to the key that created them: another key gets 404 on GET
//     and DELETE and 400 on previous_response_id; the admin key sees them; store: false
//     keeps nothing
//   - hostile input: malformed JSON, a body that is not an object, wrong types (input,
//     tools, stream, max_output_tokens), hosted tools, an unknown item type, a huge input
//     array (above the server's body limit: 413; 2000 small items under it: served), a
//     deeply nested content value -> 400 in OpenAI's shape naming the param, nothing sent
//     upstream, the gateway still serving

import test from 'node:test';
import assert from 'node:assert/strict';
import { GW, KEY, post, get, sseData, assertOpenAIError, nonce, words, fakeLog } from './lib.mjs';

const LOCAL = `local/${process.env.SMOLGATE_LOCAL_MODEL || 'smollm3'}`;
const LIMITED = 'sk-smolgate-limited-key';   // may use the route "chat" only
const P = '/v1/responses';
const WEATHER = { type: 'function', name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } };

const del = async (id, key = KEY) => {
  const r = await fetch(`${GW}${P}/${id}`, { method: 'DELETE', headers: { authorization: `Bearer ${key}` } });
  return { status: r.status, json: await r.json() };
};

// The typed events of a streamed answer, checked for order and sequence numbers.
function events(text) {
  const evs = sseData(text).map((d) => JSON.parse(d));
  evs.forEach((e, i) => assert.equal(e.sequence_number, i, `sequence_number of event ${i} (${e.type})`));
  assert.equal(evs[0].type, 'response.created');
  assert.equal(evs[1].type, 'response.in_progress');
  return evs;
}

const PROVIDERS = [
  { model: 'gpt-4o-mini', provider: 'openai' },
  { model: 'claude-haiku-4-5', provider: 'anthropic' },
  { model: 'gemini-2.5-flash', provider: 'google' },
];

for (const { model, provider } of PROVIDERS) {
  test(`${provider} (${model}): plain, streamed, function tools and previous_response_id`, async () => {
    const input = `hello ${nonce('gr')} there`;
    const r = await post({ model, input, instructions: 'Be terse.' }, { path: P });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.info.provider, provider);
    assert.match(r.json.id, /^resp_[0-9a-f]{32}$/);
    assert.equal(r.json.object, 'response');
    assert.equal(r.json.status, 'completed');
    const msg = r.json.output.find((o) => o.type === 'message');
    assert.equal(msg.content[0].type, 'output_text');
    assert.equal(msg.content[0].text, `echo: ${input}`);
    assert.equal(r.json.usage.input_tokens, words('Be terse.') + words(input));
    assert.equal(r.json.usage.output_tokens, words(`echo: ${input}`));
    assert.equal(r.json.usage.total_tokens, r.json.usage.input_tokens + r.json.usage.output_tokens);

    const s = await post({ model, input, stream: true, store: false }, { path: P });
    assert.equal(s.status, 200);
    assert.match(s.headers.get('content-type'), /text\/event-stream/);
    const evs = events(s.text);
    const deltas = evs.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta);
    assert.equal(deltas.join(''), `echo: ${input}`);
    const done = evs.at(-1);
    assert.equal(done.type, 'response.completed');
    assert.equal(done.response.usage.output_tokens, words(`echo: ${input}`));
    assert.equal((await get(`${P}/${done.response.id}`)).status, 404, 'store: false keeps nothing');

    const t = await post({ model, input: 'call:get_weather {"city":"Paris"}', tools: [WEATHER], stream: true }, { path: P });
    const tevs = events(t.text);
    const args = tevs.filter((e) => e.type === 'response.function_call_arguments.delta').map((e) => e.delta).join('');
    assert.deepEqual(JSON.parse(args), { city: 'Paris' });
    const final = tevs.at(-1).response;
    const call = final.output.find((o) => o.type === 'function_call');
    assert.equal(call.name, 'get_weather');
    assert.ok(call.call_id);
    assert.deepEqual(JSON.parse(call.arguments), { city: 'Paris' });
    const added = tevs.find((e) => e.type === 'response.output_item.added' && e.item.type === 'function_call');
    assert.equal(added.item.call_id, call.call_id);

    const r2 = await post({ model, tools: [WEATHER], previous_response_id: final.id,
      input: [{ type: 'function_call_output', call_id: call.call_id, output: '{"temp_c": 21}' }] }, { path: P });
    assert.equal(r2.status, 200, r2.text);
    assert.equal(r2.json.output[0].content[0].text, 'tool result: {"temp_c":21}');
    assert.equal(r2.json.previous_response_id, final.id);
  });
}

test('the local model: a completed Response, plain and streamed, with usage', async () => {
  const r = await post({ model: LOCAL, input: 'hi', max_output_tokens: 4 }, { path: P, timeoutMs: 60000 });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.info.provider, 'local');
  assert.ok(['completed', 'incomplete'].includes(r.json.status));
  if (r.json.status === 'incomplete') assert.equal(r.json.incomplete_details.reason, 'max_output_tokens');
  assert.ok(r.json.usage.input_tokens > 0);
  assert.ok(r.json.usage.output_tokens > 0 && r.json.usage.output_tokens <= 4);
  const s = await post({ model: LOCAL, input: 'hi', max_output_tokens: 4, stream: true }, { path: P, timeoutMs: 60000 });
  assert.equal(s.status, 200);
  const evs = events(s.text);
  assert.ok(['response.completed', 'response.incomplete'].includes(evs.at(-1).type));
  assert.ok(evs.at(-1).response.usage.output_tokens > 0);
});

test('a stored response belongs to its key: another key gets 404 / 400; the admin key sees it; DELETE', async () => {
  const r = await post({ model: 'chat', input: `mine ${nonce('own')}` }, { path: P, key: LIMITED });
  assert.equal(r.status, 200, r.text);
  const id = r.json.id;
  assert.equal((await get(`${P}/${id}`, { key: LIMITED })).json.id, id);
  assert.equal((await get(`${P}/${id}`)).status, 200, 'the admin key reads every response');

  const mine = await post({ model: 'gpt-4o-mini', input: 'x' }, { path: P });
  const other = await get(`${P}/${mine.json.id}`, { key: LIMITED });
  assert.equal(other.status, 404);
  assertOpenAIError(other.json, { type: 'invalid_request_error' });
  assert.equal((await del(mine.json.id, LIMITED)).status, 404);
  const cont = await post({ model: 'chat', input: 'x', previous_response_id: mine.json.id }, { path: P, key: LIMITED });
  assert.equal(cont.status, 400);
  assertOpenAIError(cont.json, { code: 'previous_response_not_found', param: 'previous_response_id' });

  const d = await del(id, LIMITED);
  assert.equal(d.status, 200);
  assert.deepEqual(d.json, { id, object: 'response', deleted: true });
  assert.equal((await get(`${P}/${id}`, { key: LIMITED })).status, 404);
  assert.equal((await del(id, LIMITED)).status, 404);
});

test('hostile input: 400 in OpenAI shape naming the param, nothing sent upstream', async () => {
  const n = nonce('rh');
  const cases = [
    [`{"model":"gpt-4o-mini","input":"${n}"`, null, null],
    ['[1,2,3]', 'body', 'invalid_type'],
    ['"just a string"', 'body', 'invalid_type'],
    [{ model: 'gpt-4o-mini', input: 42, metadata: n }, 'input', 'invalid_type'],
    [{ model: 'gpt-4o-mini', input: { role: 'user', content: n } }, 'input', 'invalid_type'],
    [{ model: 'gpt-4o-mini', input: [null, n] }, 'input[0]', 'invalid_type'],
    [{ model: 'gpt-4o-mini', input: [{ type: 'computer_call_output', n }] }, 'input[0]', 'unsupported_value'],
    [{ model: 'gpt-4o-mini', input: [{ role: 'user', content: [{ type: 'input_audio', n }] }] }, 'input[0]', 'unsupported_value'],
    [{ model: 'gpt-4o-mini', input: [{ type: 'function_call_output', output: n }] }, 'input[0].call_id', 'missing_required_parameter'],
    [{ model: 'gpt-4o-mini', input: n, tools: 'all' }, 'tools', 'invalid_type'],
    [{ model: 'gpt-4o-mini', input: n, tools: [{ type: 'web_search' }] }, 'tools[0]', 'unsupported_value'],
    [{ model: 'gpt-4o-mini', input: n, stream: 'yes' }, 'stream', 'invalid_type'],
    [{ model: 'gpt-4o-mini', input: n, max_output_tokens: -5 }, 'max_output_tokens', 'integer_below_min_value'],
    [{ model: 'gpt-4o-mini', input: n, text: { format: { type: 'xml' } } }, 'text.format.type', 'invalid_value'],
    [{ model: 7, input: n }, 'model', 'invalid_type'],
    [{ input: n }, 'model', 'missing_required_parameter'],
  ];
  for (const [body, param, code] of cases) {
    const r = await post(body, { path: P });
    assert.equal(r.status, 400, `${JSON.stringify(body)} -> ${r.status} ${r.text}`);
    assertOpenAIError(r.json, { type: 'invalid_request_error', ...(param ? { param } : {}), ...(code ? { code } : {}) });
  }
  // deep nesting inside a content value
  const deep = `{"model":"gpt-4o-mini","input":[{"role":"user","content":${'['.repeat(5000)}${']'.repeat(5000)}}]}`;
  const d = await post(deep, { path: P });
  assert.equal(d.status, 400);
  assertOpenAIError(d.json);
  assert.equal((await fakeLog({ provider: 'openai', match: n })).length, 0, 'nothing reached the upstream');
});

test('huge input arrays: above the body limit 413; 2000 small items under it are served', async () => {
  const big = { model: 'gpt-4o-mini', input: Array.from({ length: 30000 }, () => ({ role: 'user', content: 'word' })) };
  const r = await post(big, { path: P });
  assert.equal(r.status, 413);
  const n = nonce('many');
  // short items: the body stays under the 64 KiB of gateway.sh's server.max_body_bytes
  const many = { model: 'gpt-4o-mini', store: false, input: [...Array.from({ length: 2000 }, () => ({ role: 'user', content: 'a' })), { role: 'user', content: n }] };
  const body = JSON.stringify(many);
  assert.ok(body.length < 65536, `the body is ${body.length} bytes`);
  const m = await post(body, { path: P });
  assert.equal(m.status, 200, m.text.slice(0, 300));
  assert.equal(m.json.output[0].content[0].text, `echo: ${n}`);
  assert.equal(m.json.usage.input_tokens, 2001);
  assert.equal((await get('/healthz')).status, 200);
});
