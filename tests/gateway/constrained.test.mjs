// constrained.test.mjs: the local model keeps the API's promises about an answer's form
// (src/gateway/local_constraint.h). tests/e2e/gateway.sh serves a tiny random-weight
// SmolLM3 with the real tokenizer as local/$SMOLGATE_LOCAL_MODEL: its answers mean nothing,
// but under a grammar they must still be valid. Over several seeds and temperatures:
//   - openai SDK: response_format json_schema (strict) -> the content parses and validates
//     with ajv, finish_reason "stop", streamed too; json_object -> a JSON object;
//     tool_choice "required" and a named function -> finish_reason "tool_calls", names
//     declared (or the named one), arguments valid against the tool's schema; parallel
//     false -> exactly one call; a schema or tool parameters with an unsupported feature
//     -> 400 naming it; a length cut -> finish_reason "length" and content that is not
//     JSON (cut answers are excluded from validation, and some must validate);
//     tool_choice "none" -> no tools in the prompt (the prompt counts as without tools, on a
//     second tiny model whose SmolLM3 template renders tools); tool_choice auto (absent, or
//     with parallel_tool_calls false) -> text stays free, any call is declared and valid with
//     "tool_calls" (at most one); auto with response_format json_object -> the object or a call;
//   - Anthropic SDK: tool_choice any / tool -> a tool_use block with valid input,
//     stop_reason "tool_use";
//   - AI SDK (@ai-sdk/openai-compatible): generateText with a forced tool, and with
//     Output.object over a JSON schema.

import test from 'node:test';
import assert from 'node:assert/strict';
import { GW, KEY, loadPackage } from './lib.mjs';

const NAME = process.env.SMOLGATE_LOCAL_MODEL;
if (!NAME) throw new Error('SMOLGATE_LOCAL_MODEL is not set: run through tests/e2e/gateway.sh');
const MODEL = `local/${NAME}`;
// the same shape with SmolLM3's chat template, which renders tools into the prompt
const TOOLS_NAME = process.env.SMOLGATE_LOCAL_TOOLS_MODEL;
if (!TOOLS_NAME) throw new Error('SMOLGATE_LOCAL_TOOLS_MODEL is not set: run through tests/e2e/gateway.sh');
const TOOLS_MODEL = `local/${TOOLS_NAME}`;

const { default: OpenAI } = await loadPackage('openai');
const { default: Anthropic } = await loadPackage('@anthropic-ai/sdk');
const { default: Ajv } = await loadPackage('ajv');
globalThis.AI_SDK_LOG_WARNINGS = false;
const { generateText, Output, jsonSchema, tool } = await loadPackage('ai');
const { createOpenAICompatible } = await loadPackage('@ai-sdk/openai-compatible');

const client = new OpenAI({ baseURL: `${GW}/v1`, apiKey: KEY, maxRetries: 0, timeout: 60000 });
const anthropic = new Anthropic({ baseURL: GW, apiKey: KEY, maxRetries: 0, timeout: 60000 });
const ajv = new Ajv({ allErrors: true, strict: false });

// A typical nested object: enums, bounded strings and arrays, numbers, an optional field.
const PERSON = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 12 },
    age: { type: 'integer' },
    role: { enum: ['admin', 'user', 'guest'] },
    address: {
      type: 'object',
      properties: { city: { type: 'string', maxLength: 10 }, zip: { type: 'string', pattern: '^[0-9]{5}$' } },
      required: ['city', 'zip'],
      additionalProperties: false,
    },
    tags: { type: 'array', items: { enum: ['a', 'b', 'c'] }, maxItems: 3 },
    active: { type: 'boolean' },
    score: { type: ['number', 'null'] },
  },
  required: ['name', 'age', 'role', 'address', 'tags', 'active', 'score'],
  additionalProperties: false,
};

const TOOLS = [
  { type: 'function', function: { name: 'get_weather', description: 'Weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 12 }, unit: { enum: ['c', 'f'] } },
                  required: ['city', 'unit'], additionalProperties: false } } },
  { type: 'function', function: { name: 'add', description: 'Adds two integers',
    parameters: { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'], additionalProperties: false } } },
  { type: 'function', function: { name: 'now', description: 'The time' } },
];
const TOOL_SCHEMA = Object.fromEntries(TOOLS.map((t) => [t.function.name, t.function.parameters ?? { type: 'object', maxProperties: 0 }]));

const RUNS = [[1, 0], [2, 0.7], [3, 1.0], [4, 1.3], [5, 0.7], [6, 1.0]];   // [seed, temperature]

function validate(schema, value, what) {
  const ok = ajv.validate(schema, value);
  assert.ok(ok, `${what} validates: ${JSON.stringify(value)}: ${ajv.errorsText()}`);
}

// A length cut is reported as such, and its content is visibly not a whole JSON value.
function assertCut(content, what) {
  assert.throws(() => JSON.parse(content ?? ''), SyntaxError, `${what}: a cut answer is not valid JSON: ${content}`);
}

test('response_format json_schema (strict): every whole answer validates, cuts are "length"', async () => {
  let valid = 0;
  for (const [seed, temperature] of RUNS) {
    const r = await client.chat.completions.create({
      model: MODEL, seed, temperature, max_tokens: 160,
      messages: [{ role: 'user', content: 'Describe a person.' }],
      response_format: { type: 'json_schema', json_schema: { name: 'person', strict: true, schema: PERSON } },
    });
    const c = r.choices[0];
    if (c.finish_reason === 'length') { assertCut(c.message.content, `seed ${seed}`); continue; }
    assert.equal(c.finish_reason, 'stop', `seed ${seed}: finish_reason`);
    validate(PERSON, JSON.parse(c.message.content), `seed ${seed} t ${temperature}`);
    valid++;
  }
  assert.ok(valid >= 2, `at least 2 of ${RUNS.length} answers whole and valid (${valid})`);
});

test('response_format json_schema, streamed: the deltas join into a valid answer', async () => {
  let valid = 0;
  for (const [seed, temperature] of RUNS.slice(0, 3)) {
    const stream = await client.chat.completions.create({
      model: MODEL, seed, temperature, max_tokens: 160, stream: true,
      messages: [{ role: 'user', content: 'Describe a person.' }],
      response_format: { type: 'json_schema', json_schema: { name: 'person', strict: true, schema: PERSON } },
    });
    let text = '', finish = null;
    for await (const ch of stream) {
      text += ch.choices[0]?.delta?.content ?? '';
      finish = ch.choices[0]?.finish_reason ?? finish;
    }
    if (finish === 'length') { assertCut(text, `seed ${seed}`); continue; }
    assert.equal(finish, 'stop');
    validate(PERSON, JSON.parse(text), `streamed seed ${seed}`);
    valid++;
  }
  assert.ok(valid >= 1, `a streamed answer whole and valid (${valid})`);
});

test('response_format json_schema cut by max_tokens: "length", not JSON', async () => {
  const r = await client.chat.completions.create({
    model: MODEL, seed: 7, max_tokens: 3, messages: [{ role: 'user', content: 'Describe a person.' }],
    response_format: { type: 'json_schema', json_schema: { name: 'person', strict: true, schema: PERSON } },
  });
  assert.equal(r.choices[0].finish_reason, 'length');
  assertCut(r.choices[0].message.content, 'max_tokens 3');
  assert.ok(r.choices[0].message.content.startsWith('{'), `the cut answer starts the object: ${r.choices[0].message.content}`);
});

test('response_format json_object: a JSON object', async () => {
  let valid = 0;
  for (const [seed, temperature] of RUNS) {
    const r = await client.chat.completions.create({
      model: MODEL, seed, temperature, max_tokens: 120,
      messages: [{ role: 'user', content: 'Answer in JSON.' }], response_format: { type: 'json_object' },
    });
    const c = r.choices[0];
    if (c.finish_reason === 'length') { assertCut(c.message.content, `seed ${seed}`); continue; }
    assert.equal(c.finish_reason, 'stop');
    const v = JSON.parse(c.message.content);
    assert.ok(v !== null && typeof v === 'object' && !Array.isArray(v), `an object: ${c.message.content}`);
    valid++;
  }
  assert.ok(valid >= 1, `a json_object answer whole (${valid})`);
});

test('an unsupported schema feature is a 400 naming it, for response_format and for tool parameters', async () => {
  const bad = { type: 'object', properties: { a: { not: { type: 'string' } } }, required: ['a'] };
  await assert.rejects(client.chat.completions.create({
    model: MODEL, max_tokens: 10, messages: [{ role: 'user', content: 'x' }],
    response_format: { type: 'json_schema', json_schema: { name: 'bad', strict: true, schema: bad } },
  }), (e) => e.status === 400 && /'not'/.test(e.message) && /response_format/.test(e.message));
  await assert.rejects(client.chat.completions.create({
    model: MODEL, max_tokens: 10, messages: [{ role: 'user', content: 'x' }], tool_choice: 'required',
    tools: [{ type: 'function', function: { name: 'f', parameters: bad } }],
  }), (e) => e.status === 400 && /'not'/.test(e.message) && /tools\[0\]/.test(e.message));
  await assert.rejects(client.chat.completions.create({
    model: MODEL, max_tokens: 10, messages: [{ role: 'user', content: 'x' }], tools: TOOLS,
    tool_choice: { type: 'function', function: { name: 'missing' } },
  }), (e) => e.status === 400 && /missing/.test(e.message));
});

function checkCalls(c, { only, one, what }) {
  const calls = c.message.tool_calls ?? [];
  assert.ok(calls.length >= 1, `${what}: a tool call (${JSON.stringify(c.message)})`);
  if (one) assert.equal(calls.length, 1, `${what}: exactly one call`);
  for (const call of calls) {
    const name = call.function.name;
    assert.ok(name in TOOL_SCHEMA, `${what}: a declared tool: ${name}`);
    if (only) assert.equal(name, only, `${what}: the named tool`);
    validate(TOOL_SCHEMA[name], JSON.parse(call.function.arguments), `${what}: ${name} arguments`);
  }
  assert.ok(!c.message.content, `${what}: no text besides the calls: ${c.message.content}`);
}

for (const [choice, label] of [['required', 'required'], [{ type: 'function', function: { name: 'add' } }, 'named add'],
                               [{ type: 'function', function: { name: 'get_weather' } }, 'named get_weather']]) {
  for (const parallel of [false, true]) {
    test(`tool_choice ${label}, parallel_tool_calls ${parallel}: declared names, valid arguments, "tool_calls"`, async () => {
      let valid = 0;
      for (const [seed, temperature] of RUNS.slice(0, 4)) {
        const r = await client.chat.completions.create({
          model: MODEL, seed, temperature, max_tokens: 120, tools: TOOLS, tool_choice: choice, parallel_tool_calls: parallel,
          messages: [{ role: 'user', content: 'What is the weather in Paris?' }],
        });
        const c = r.choices[0];
        if (c.finish_reason === 'length') continue;
        assert.equal(c.finish_reason, 'tool_calls', `seed ${seed}: finish_reason (${JSON.stringify(c.message)})`);
        checkCalls(c, { only: typeof choice === 'object' ? choice.function.name : null, one: !parallel, what: `seed ${seed}` });
        valid++;
      }
      assert.ok(valid >= 1, `a whole forced call (${valid} of 4)`);
    });
  }
}

test('tool_choice required, streamed: the call arrives whole', async () => {
  const stream = await client.chat.completions.create({
    model: MODEL, seed: 11, temperature: 0.7, max_tokens: 120, tools: TOOLS, tool_choice: 'required',
    parallel_tool_calls: false, stream: true, messages: [{ role: 'user', content: 'Add 2 and 3.' }],
  });
  const calls = [];
  let finish = null;
  for await (const ch of stream) {
    for (const tc of ch.choices[0]?.delta?.tool_calls ?? []) {
      calls[tc.index] ??= { name: '', args: '' };
      calls[tc.index].name += tc.function?.name ?? '';
      calls[tc.index].args += tc.function?.arguments ?? '';
    }
    finish = ch.choices[0]?.finish_reason ?? finish;
  }
  if (finish === 'length') return;
  assert.equal(finish, 'tool_calls');
  assert.equal(calls.length, 1);
  validate(TOOL_SCHEMA[calls[0].name], JSON.parse(calls[0].args), 'streamed call');
});

test('tool_choice "none": the prompt offers no tools (SmolLM3 template, which renders them otherwise)', async () => {
  const messages = [{ role: 'user', content: 'Hello.' }];
  const ask = (extra) => client.chat.completions.create({ model: TOOLS_MODEL, seed: 1, max_tokens: 2, messages, ...extra });
  const none = await ask({ tools: TOOLS, tool_choice: 'none' });
  const bare = await ask({});
  const auto = await ask({ tools: TOOLS });
  assert.ok(auto.usage.prompt_tokens > bare.usage.prompt_tokens + 50,
    `the template renders the tools: ${auto.usage.prompt_tokens} prompt tokens with them, ${bare.usage.prompt_tokens} without`);
  assert.equal(none.usage.prompt_tokens, bare.usage.prompt_tokens, 'tool_choice none: the prompt as without tools');
});

// A call in an answer, whatever its tool_choice: a declared tool, arguments valid, and
// finish_reason "tool_calls" exactly when there are calls.
function checkAnswer(c, { one, what }) {
  const calls = c.message.tool_calls ?? [];
  if (c.finish_reason === 'length') return 'cut';
  if (!calls.length) {
    assert.equal(c.finish_reason, 'stop', `${what}: finish_reason of a text answer (${JSON.stringify(c.message)})`);
    return 'text';
  }
  assert.equal(c.finish_reason, 'tool_calls', `${what}: finish_reason of an answer with calls`);
  if (one) assert.equal(calls.length, 1, `${what}: at most one call`);
  for (const call of calls) {
    assert.ok(call.function.name in TOOL_SCHEMA, `${what}: a declared tool: ${call.function.name}`);
    validate(TOOL_SCHEMA[call.function.name], JSON.parse(call.function.arguments), `${what}: ${call.function.name} arguments`);
  }
  return 'calls';
}

test('tool_choice auto (SmolLM3 template, thinking on): text stays free, any call is valid', async (t) => {
  const seen = { text: 0, calls: 0, cut: 0 };
  for (const [seed, temperature] of RUNS) {
    for (const [extra, one] of [[{}, false], [{ tool_choice: 'auto', parallel_tool_calls: false }, true]]) {
      const r = await client.chat.completions.create({
        model: TOOLS_MODEL, seed, temperature, max_tokens: 40, tools: TOOLS, ...extra,
        messages: [{ role: 'user', content: 'What is the weather in Paris?' }],
      });
      seen[checkAnswer(r.choices[0], { one, what: `seed ${seed} ${JSON.stringify(extra)}` })]++;
    }
  }
  t.diagnostic(`answers: ${JSON.stringify(seen)}`);
  // random weights answer in text: auto must not force a call (as "required" does)
  assert.ok(seen.text + seen.cut >= 1, `some answers in free text (${JSON.stringify(seen)})`);
});

test('tool_choice auto with response_format json_object: the object or a call, never free text', async (t) => {
  const seen = { object: 0, calls: 0 };
  for (const [seed, temperature] of RUNS) {
    const r = await client.chat.completions.create({
      model: TOOLS_MODEL, seed, temperature, max_tokens: 100, tools: TOOLS, parallel_tool_calls: false,
      response_format: { type: 'json_object' }, messages: [{ role: 'user', content: 'Answer in JSON.' }],
    });
    const c = r.choices[0];
    if (c.finish_reason === 'length') continue;
    if (checkAnswer(c, { one: true, what: `seed ${seed}` }) === 'calls') { seen.calls++; continue; }
    const v = JSON.parse(c.message.content);
    assert.ok(v !== null && typeof v === 'object' && !Array.isArray(v), `an object: ${c.message.content}`);
    seen.object++;
  }
  t.diagnostic(`answers: ${JSON.stringify(seen)}`);
  assert.ok(seen.object + seen.calls >= 1, `a whole answer (${JSON.stringify(seen)})`);
});

test('Anthropic tool_choice any and tool: a tool_use block with valid input, stop_reason tool_use', async () => {
  const tools = TOOLS.map((t) => ({ name: t.function.name, description: t.function.description,
                                    input_schema: t.function.parameters ?? { type: 'object', properties: {} } }));
  let valid = 0;
  for (const [i, choice] of [{ type: 'any' }, { type: 'tool', name: 'get_weather' }, { type: 'any', disable_parallel_tool_use: true },
                             { type: 'tool', name: 'add' }].entries()) {
    const temperature = [0, 0.5, 0.8, 1][i];   // Anthropic's range, and no seed
    const m = await anthropic.messages.create({
      model: MODEL, max_tokens: 120, temperature, tools, tool_choice: choice,
      messages: [{ role: 'user', content: 'Weather in Paris?' }],
    });
    if (m.stop_reason === 'max_tokens') continue;
    assert.equal(m.stop_reason, 'tool_use', `${JSON.stringify(choice)}: ${JSON.stringify(m.content)}`);
    const uses = m.content.filter((b) => b.type === 'tool_use');
    assert.ok(uses.length >= 1, 'a tool_use block');
    if (choice.disable_parallel_tool_use) assert.equal(uses.length, 1, 'disable_parallel_tool_use: one call');
    for (const u of uses) {
      assert.ok(u.name in TOOL_SCHEMA, `declared: ${u.name}`);
      if (choice.type === 'tool') assert.equal(u.name, choice.name);
      validate(TOOL_SCHEMA[u.name], u.input, `anthropic ${u.name} input`);
    }
    valid++;
  }
  assert.ok(valid >= 1, `a whole tool_use answer (${valid} of 4)`);
});

test('AI SDK: generateText with a forced tool and with Output.object', async () => {
  const provider = createOpenAICompatible({ name: 'smolgate', baseURL: `${GW}/v1`, apiKey: KEY, supportsStructuredOutputs: true });
  const model = provider.chatModel(MODEL);
  const addSchema = TOOL_SCHEMA.add;
  let calls = 0;
  for (const seed of [1, 2, 3]) {
    const r = await generateText({
      model, seed, temperature: 0.8, maxOutputTokens: 100, prompt: 'Add 2 and 3.',
      tools: { add: tool({ description: 'Adds two integers', inputSchema: jsonSchema(addSchema) }) },
      toolChoice: { type: 'tool', toolName: 'add' },
    });
    if (r.finishReason === 'length') continue;
    assert.equal(r.finishReason, 'tool-calls');
    assert.equal(r.toolCalls.length, 1);
    assert.equal(r.toolCalls[0].toolName, 'add');
    validate(addSchema, r.toolCalls[0].input, 'AI SDK tool input');
    calls++;
  }
  assert.ok(calls >= 1, `a whole forced call through the AI SDK (${calls} of 3)`);

  const small = { type: 'object', properties: { mood: { enum: ['happy', 'sad'] }, level: { type: 'integer' } },
                  required: ['mood', 'level'], additionalProperties: false };
  let objects = 0;
  for (const seed of [1, 2, 3]) {
    try {
      const r = await generateText({ model, seed, temperature: 0.8, maxOutputTokens: 60, prompt: 'How are you?',
                                     output: Output.object({ schema: jsonSchema(small) }) });
      validate(small, r.output, 'AI SDK Output.object');
      objects++;
    } catch (e) {
      assert.equal(e.finishReason, 'length', `only a length cut may fail: ${e.message}`);
    }
  }
  assert.ok(objects >= 1, `an object through the AI SDK (${objects} of 3)`);
});
