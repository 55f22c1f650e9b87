// matrix.test.mjs: every client package the tests pin (tests/node/package.json), unchanged,
// against every provider type behind smolgate, in three modes, one node:test test per cell:
//
//   rows     the openai SDK (chat.completions; responses), `ai` with @ai-sdk/openai (its
//            default, the Responses API; and .chat()), with @ai-sdk/openai-compatible, and
//            with @ai-sdk/gateway (createGateway, the /v4/ai protocol), @anthropic-ai/sdk
//            (messages), ollama (/api/chat), @langchain/ollama (ChatOllama), @openai/agents
//            (its default model, the Responses API)
//   columns  openai (openai/gpt-4o-mini), anthropic (anthropic/claude-haiku-4-5), google
//            (google/gemini-2.5-flash), openai-compatible (backup/..., an OpenAI-type
//            provider of another name), each on the fake upstreams (tests/fakes/), and
//            local (local/$SMOLGATE_LOCAL_MODEL, gateway.sh's tiny random-weight SmolLM3)
//          x plain, stream, tools
//
// A cell sends real requests through smolgate and asserts what comes back. On the fakes the
// answer is deterministic (tests/fakes/README.md): the text is exactly "echo: PROMPT", the
// finish reason the API's "stop", the input and output token counts the prompt's and the
// answer's words. A tools cell asks for get_weather {"city":"Paris"}, not streamed and then
// streamed: the call must come back with those arguments (valid against the declared
// schema; streamed argument deltas must join into them), and the tool-result round trip
// (done by the SDK where it does one, by hand otherwise) must answer "tool result:
// {"temp_c":21}". Every request must have reached the provider the cell names (the fake's
// log, by the cell's nonce). On the local model the text is random: it must be non-empty,
// with usage, and no request may reach the fakes; its tools cell forces the call
// (tool_choice required / any, parallel calls off), since a random-weight model does not
// pick a tool by itself, and constrained decoding must give one call of the declared tool
// whose arguments validate; the round trip must then answer. @openai/agents' local cells
// ask for a JSON-schema output type (AGENTS_LOCAL says why). A combination a package
// cannot express is a skipped test whose reason is in the table ("n/a"), not left out.
//
// At the end the table (package@version per row, PASS / FAIL / n/a per cell, the failures'
// messages, the n/a reasons and notes under it) is written to MATRIX_REPORT (default
// $TMPDIR/smolgate-client-matrix.md, and then printed too). Run through tests/e2e/gateway.sh
// (group `matrix`), which sets MATRIX_REPORT and prints the file.

import test, { after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GW, KEY, nonce, words, fakeLog, loadPackage } from './lib.mjs';

const LOCAL = process.env.SMOLGATE_LOCAL_MODEL;
if (!LOCAL) throw new Error('SMOLGATE_LOCAL_MODEL is not set: run through tests/e2e/gateway.sh');
const REPORT = process.env.MATRIX_REPORT || path.join(process.env.TMPDIR || os.tmpdir(), 'smolgate-client-matrix.md');

const { default: OpenAI } = await loadPackage('openai');
const { default: Anthropic } = await loadPackage('@anthropic-ai/sdk');
const { Ollama } = await loadPackage('ollama');
const { ChatOllama } = await loadPackage('@langchain/ollama');
const agents = await loadPackage('@openai/agents');
globalThis.AI_SDK_LOG_WARNINGS = false;
const { generateText, streamText, tool, jsonSchema, stepCountIs, wrapLanguageModel } = await loadPackage('ai');
const { createOpenAI } = await loadPackage('@ai-sdk/openai');
const { createOpenAICompatible } = await loadPackage('@ai-sdk/openai-compatible');
const { createGateway } = await loadPackage('@ai-sdk/gateway');
const { default: Ajv } = await loadPackage('ajv');

const NODE_MODULES = new URL('../node/node_modules/', import.meta.url);
const version = (name) => JSON.parse(readFileSync(new URL(`${name}/package.json`, NODE_MODULES), 'utf8')).version;
const pkg = (name) => `${name}@${version(name)}`;

// Where a provider's requests land on the fakes, and the model they name there (Gemini's is in
// the path): a cell's requests carry its nonce, so the fake's log shows they went there.
const UPSTREAM = {
  openai: { fake: 'openai', model: 'gpt-4o-mini' },
  anthropic: { fake: 'anthropic', model: 'claude-haiku-4-5' },
  google: { fake: 'gemini', path: '/models/gemini-2.5-flash:' },
  'openai-compatible': { fake: 'openai', model: 'm-matrix-compat' },
};
async function checkUpstream(c) {
  const log = await fakeLog({ match: c.n });
  if (c.local) return assert.equal(log.length, 0, `the local model answered: no request reached the fakes (${log.map((e) => e.provider)})`);
  const want = UPSTREAM[c.provider];
  assert.ok(log.length >= 1, 'the requests reached the fake upstream');
  for (const e of log) {
    assert.equal(e.provider, want.fake, `a request went to the ${want.fake} fake (${e.path})`);
    if (want.model) assert.equal(e.body?.model, want.model, 'the upstream model');
    if (want.path) assert.ok(e.path.includes(want.path), `the upstream model: ${e.path}`);
  }
}

const PROVIDERS = [
  ['openai', 'openai/gpt-4o-mini'],
  ['anthropic', 'anthropic/claude-haiku-4-5'],
  ['google', 'google/gemini-2.5-flash'],
  ['openai-compatible', 'backup/m-matrix-compat'],
  ['local', `local/${LOCAL}`],
];
const MODES = ['plain', 'stream', 'tools'];

// The one tool: bounded arguments, so that a forced call on the local model ends well
// within its token budget.
const TOOL = { name: 'get_weather', description: 'Weather in a city' };
const SCHEMA = { type: 'object', properties: { city: { type: 'string', maxLength: 12 } }, required: ['city'], additionalProperties: false };
const SYSTEM = 'Be brief here.';        // the plain cells' system prompt (the fakes count its words)
const SAY = 'let me check';             // text the fakes put before their tool call
const RESULT = '{"temp_c":21}';            // what every tool returns (compact JSON)
const TOOL_ANSWER = `tool result: ${RESULT}`;
const ajv = new Ajv({ allErrors: true, strict: false });
const validArgs = ajv.compile(SCHEMA);

const openaiClient = new OpenAI({ baseURL: `${GW}/v1`, apiKey: KEY, maxRetries: 0, timeout: 60000 });
const anthropicClient = new Anthropic({ baseURL: GW, apiKey: KEY, maxRetries: 0, timeout: 60000 });
const ollamaClient = new Ollama({ host: GW, headers: { authorization: `Bearer ${KEY}` } });
const aiOpenAI = createOpenAI({ baseURL: `${GW}/v1`, apiKey: KEY });
const aiCompat = createOpenAICompatible({ name: 'smolgate', baseURL: `${GW}/v1`, apiKey: KEY, includeUsage: true });
const aiGateway = createGateway({ baseURL: `${GW}/v4/ai`, apiKey: KEY });
agents.setTracingDisabled(true);
agents.setDefaultOpenAIClient(new OpenAI({ baseURL: `${GW}/v1`, apiKey: KEY, maxRetries: 0, timeout: 60000 }));
agents.setOpenAIAPI('responses');

// ---- what a cell checks, given its provider ----

function cell(provider, model, row) {
  const local = provider === 'local';
  const n = `${nonce('mx')}z`;   // the z: no nonce is a prefix of another (the fake matches substrings)
  const prompt = `matrix ${n} says hello`;
  const expected = `echo: ${prompt}`;
  return {
    provider, model, local, prompt, n,
    sys: row.systemWords ?? 0,   // words of the system prompt (the fakes count them)
    // The plain cells send SYSTEM, each the way its API does: it must reach the upstream.
    system() { this.sys += words(SYSTEM); return SYSTEM; },
    // Local: a few random tokens; the fakes cut by words, so give them room.
    max: local ? 8 : 64,
    // A forced call of one tool (parallel calls off) is a finite language under the grammar:
    // the fixed text, SCHEMA's bounded string and whitespace (at most 21 characters at a time,
    // src/engine/json_schema.c) end well within 300 tokens, so it is never cut.
    toolMax: local ? 300 : 64,
    // The fakes answer text, then a tool call, for these lines; the nonce line they ignore.
    toolPrompt: `say: ${SAY}\ncall:get_weather {"city":"Paris"}\n${n}`,
    // The text that comes with the call: the fakes' `say:` line; none from a forced call.
    preText(t, what = 'the text before the call') {
      if (local) assert.ok(!t, `${what}: none with a forced call: ${JSON.stringify(t)}`);
      else assert.equal(t, SAY, what);
    },
    text(t, what = 'text') {
      assert.equal(typeof t, 'string', `${what} is a string: ${JSON.stringify(t)}`);
      if (local) assert.ok(t.length > 0, `${what}: non-empty`);
      else assert.equal(t, expected, what);
    },
    usage(input, output, what = 'usage', max = this.max) {
      assert.ok(Number.isInteger(input) && input > 0, `${what}: input tokens > 0 (${input})`);
      assert.ok(Number.isInteger(output) && output > 0, `${what}: output tokens > 0 (${output})`);
      if (local) assert.ok(output <= max, `${what}: output tokens <= ${max} (${output})`);
      else {
        assert.equal(input, words(prompt) + this.sys, `${what}: input tokens = the prompt's words`);
        assert.equal(output, words(expected), `${what}: output tokens = the answer's words`);
      }
    },
    // The finish reason: the fakes' is exact; the local model's answer stops or is cut.
    finish(got, fake, localOk, what = 'finish reason') {
      if (local) assert.ok(localOk.includes(got), `${what}: ${got} in ${localOk.join(', ')}`);
      else assert.equal(got, fake, what);
    },
    call(name, args, what = 'tool call') {
      assert.equal(name, TOOL.name, `${what}: the declared tool`);
      const a = typeof args === 'string' ? JSON.parse(args) : args;
      assert.ok(validArgs(a), `${what}: arguments valid against the schema: ${JSON.stringify(a)}: ${ajv.errorsText(validArgs.errors)}`);
      if (!local) assert.deepEqual(a, { city: 'Paris' }, `${what}: the arguments asked for`);
    },
    toolAnswer(t, what = 'answer to the tool result') {
      assert.equal(typeof t, 'string', `${what} is a string: ${JSON.stringify(t)}`);
      if (!local) assert.equal(t, TOOL_ANSWER, what);
    },
  };
}

// ---- the rows: a client package (API) and its three cells; `na` maps "provider/mode" or
// "*/mode" to the reason a cell cannot exist ----

const rawTools = [{ type: 'function', function: { ...TOOL, parameters: SCHEMA } }];
// The local cells of @openai/agents ask for an output type: a random-weight model's free
// text ends only at the token limit, which the Responses API reports as "incomplete" (as
// OpenAI does), and the Agents SDK rejects an incomplete response; a JSON-schema answer,
// under constrained decoding, ends by itself.
const AGENTS_LOCAL = 'local: with outputType a JSON schema, since a random-weight model\'s free text ends only at max tokens, a Responses "incomplete" that the Agents SDK rejects; tools: the forced call, and the run ends with the tool output (stop_on_first_tool)';
const ANSWER_SCHEMA = { type: 'object', properties: { answer: { type: 'string', maxLength: 12 } }, required: ['answer'], additionalProperties: false };
const validAnswer = ajv.compile(ANSWER_SCHEMA);
const NO_TOOL_CHOICE = "Ollama's API has no tool_choice, and a random-weight model does not pick a tool by itself";

async function aiTools(c, baseModel, providerOptions) {
  // Local: the answer to the tool result is random text to its limit; a short one will do
  // (the forced call needs toolMax, the step after it does not).
  const model = !c.local ? baseModel : wrapLanguageModel({ model: baseModel, middleware: {
    transformParams: async ({ params }) => (params.prompt.at(-1)?.role === 'tool' ? { ...params, maxOutputTokens: c.max } : params),
  } });
  const executed = [];
  const r = await generateText({
    model, prompt: c.toolPrompt, maxOutputTokens: c.toolMax, maxRetries: 0, providerOptions,
    tools: { [TOOL.name]: tool({ description: TOOL.description, inputSchema: jsonSchema(SCHEMA), execute: async (a) => { executed.push(a); return JSON.parse(RESULT); } }) },
    toolChoice: c.local ? 'required' : 'auto',
    // The forced choice is for the first step; the answer to the result is free.
    prepareStep: ({ stepNumber }) => (stepNumber > 0 ? { toolChoice: 'none' } : undefined),
    stopWhen: stepCountIs(2),
  });
  assert.ok(r.steps.length >= 1, 'a step');
  const s1 = r.steps[0];
  assert.equal(s1.finishReason, 'tool-calls', `step 1 finish reason (${JSON.stringify(s1.content)})`);
  assert.equal(s1.toolCalls.length, 1, 'one tool call');
  c.call(s1.toolCalls[0].toolName, s1.toolCalls[0].input);
  c.preText(s1.text);
  assert.equal(executed.length, 1, 'the SDK ran the tool');
  assert.equal(r.steps.length, 2, 'a second step answers the tool result');
  c.toolAnswer(r.text);
  assert.ok(r.totalUsage.inputTokens > 0 && r.totalUsage.outputTokens > 0, `usage: ${JSON.stringify(r.totalUsage)}`);

  // streamed: the input deltas, the call, the SDK's round trip
  const executed2 = [];
  const st = streamText({
    model, prompt: c.toolPrompt, maxOutputTokens: c.toolMax, maxRetries: 0, providerOptions,
    tools: { [TOOL.name]: tool({ description: TOOL.description, inputSchema: jsonSchema(SCHEMA), execute: async (a) => { executed2.push(a); return JSON.parse(RESULT); } }) },
    toolChoice: c.local ? 'required' : 'auto',
    prepareStep: ({ stepNumber }) => (stepNumber > 0 ? { toolChoice: 'none' } : undefined),
    stopWhen: stepCountIs(2),
  });
  const deltas = [], calls = [];
  let pre = '';
  for await (const p of st.fullStream) {
    if (p.type === 'error') throw p.error;
    if (p.type === 'text-delta' && !calls.length) pre += p.text;
    if (p.type === 'tool-input-delta') deltas.push(p.delta);
    if (p.type === 'tool-call') calls.push(p);
  }
  assert.equal(calls.length, 1, `streamed: one tool call (${JSON.stringify((await st.steps).map((x) => x.content))})`);
  c.call(calls[0].toolName, calls[0].input, 'streamed tool call');
  c.preText(pre, 'streamed: the text before the call');
  assert.deepEqual(JSON.parse(deltas.join('')), calls[0].input, 'streamed: the input deltas join into the call\'s input');
  assert.equal(executed2.length, 1, 'streamed: the SDK ran the tool');
  c.toolAnswer(await st.text, 'streamed: the answer to the tool result');
}

function aiRow(label, packages, modelOf, providerOptionsOf = () => undefined) {
  return {
    label, packages,
    async plain(c) {
      const r = await generateText({ model: modelOf(c.model), system: c.system(), prompt: c.prompt, maxOutputTokens: c.max, maxRetries: 0 });
      c.text(r.text);
      c.finish(r.finishReason, 'stop', ['stop', 'length']);
      c.usage(r.usage.inputTokens, r.usage.outputTokens);
    },
    async stream(c) {
      const r = streamText({ model: modelOf(c.model), prompt: c.prompt, maxOutputTokens: c.max, maxRetries: 0 });
      const parts = [];
      for await (const p of r.fullStream) {
        if (p.type === 'error') throw p.error;
        if (p.type === 'text-delta') parts.push(p.text);
      }
      assert.ok(parts.length >= 1, 'text deltas');
      c.text(parts.join(''), 'the deltas joined');
      const u = await r.usage;
      c.usage(u.inputTokens, u.outputTokens);
      c.finish(await r.finishReason, 'stop', ['stop', 'length']);
    },
    async tools(c) {
      await aiTools(c, modelOf(c.model), c.local ? providerOptionsOf() : undefined);
    },
  };
}

const ROWS = [
  {
    label: 'openai: chat.completions', packages: ['openai'],
    async plain(c) {
      const r = await openaiClient.chat.completions.create({ model: c.model, max_tokens: c.max,
        messages: [{ role: 'system', content: c.system() }, { role: 'user', content: c.prompt }] });
      c.text(r.choices[0].message.content);
      c.finish(r.choices[0].finish_reason, 'stop', ['stop', 'length']);
      c.usage(r.usage.prompt_tokens, r.usage.completion_tokens);
      assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens, 'total_tokens');
    },
    async stream(c) {
      const s = await openaiClient.chat.completions.create({ model: c.model, max_tokens: c.max, stream: true,
        stream_options: { include_usage: true }, messages: [{ role: 'user', content: c.prompt }] });
      let text = '', usage = null, finish = null;
      for await (const ch of s) {
        text += ch.choices[0]?.delta?.content ?? '';
        finish = ch.choices[0]?.finish_reason ?? finish;
        if (ch.usage) usage = ch.usage;
      }
      c.finish(finish, 'stop', ['stop', 'length']);
      c.text(text, 'the deltas joined');
      assert.ok(usage, 'a usage chunk');
      c.usage(usage.prompt_tokens, usage.completion_tokens);
    },
    async tools(c) {
      const messages = [{ role: 'user', content: c.toolPrompt }];
      const r1 = await openaiClient.chat.completions.create({ model: c.model, max_tokens: c.toolMax, messages, tools: rawTools,
        ...(c.local ? { tool_choice: 'required', parallel_tool_calls: false } : {}) });
      const m = r1.choices[0].message;
      assert.equal(r1.choices[0].finish_reason, 'tool_calls', `finish_reason (${JSON.stringify(m)})`);
      assert.equal(m.tool_calls?.length, 1, 'one tool call');
      const tc = m.tool_calls[0];
      c.call(tc.function.name, tc.function.arguments);
      c.preText(m.content);
      assert.ok(r1.usage.prompt_tokens > 0 && r1.usage.completion_tokens > 0, 'usage');
      const r2 = await openaiClient.chat.completions.create({ model: c.model, max_tokens: c.max, tools: rawTools,
        messages: [...messages, m, { role: 'tool', tool_call_id: tc.id, content: RESULT }] });
      c.toolAnswer(r2.choices[0].message.content);

      const s = await openaiClient.chat.completions.create({ model: c.model, max_tokens: c.toolMax, messages, tools: rawTools, stream: true,
        ...(c.local ? { tool_choice: 'required', parallel_tool_calls: false } : {}) });
      const calls = [];
      let finish = null, pre = '';
      for await (const ch of s) {
        pre += ch.choices[0]?.delta?.content ?? '';
        for (const d of ch.choices[0]?.delta?.tool_calls ?? []) {
          calls[d.index] ??= { id: '', name: '', args: '' };
          calls[d.index].id += d.id ?? '';
          calls[d.index].name += d.function?.name ?? '';
          calls[d.index].args += d.function?.arguments ?? '';
        }
        finish = ch.choices[0]?.finish_reason ?? finish;
      }
      assert.equal(finish, 'tool_calls', 'streamed: finish_reason');
      assert.equal(calls.length, 1, 'streamed: one tool call');
      assert.ok(calls[0].id, 'streamed: the call has an id');
      c.call(calls[0].name, calls[0].args, 'streamed tool call');
      c.preText(pre, 'streamed: the text before the call');
    },
  },
  {
    label: 'openai: responses', packages: ['openai'],
    async plain(c) {
      const r = await openaiClient.responses.create({ model: c.model, instructions: c.system(), input: c.prompt, max_output_tokens: c.max, store: false });
      c.text(r.output_text);
      c.finish(r.status, 'completed', ['completed', 'incomplete'], 'status');
      c.usage(r.usage.input_tokens, r.usage.output_tokens);
    },
    async stream(c) {
      const s = await openaiClient.responses.create({ model: c.model, input: c.prompt, max_output_tokens: c.max, store: false, stream: true });
      let text = '', done = null;
      for await (const ev of s) {
        if (ev.type === 'response.output_text.delta') text += ev.delta;
        if (ev.type === 'response.completed' || ev.type === 'response.incomplete') done = ev.response;
        if (ev.type === 'error' || ev.type === 'response.failed') throw new Error(`stream: ${JSON.stringify(ev)}`);
      }
      assert.ok(done, 'response.completed or response.incomplete');
      c.finish(done.status, 'completed', ['completed', 'incomplete'], 'status');
      c.text(text, 'the deltas joined');
      c.text(done.output_text ?? done.output.flatMap((o) => o.content ?? []).map((p) => p.text ?? '').join(''), 'the final response text');
      c.usage(done.usage.input_tokens, done.usage.output_tokens);
    },
    async tools(c) {
      const tools = [{ type: 'function', ...TOOL, parameters: SCHEMA, strict: true }];
      const input = [{ role: 'user', content: c.toolPrompt }];
      const r1 = await openaiClient.responses.create({ model: c.model, input, tools, max_output_tokens: c.toolMax, store: false,
        ...(c.local ? { tool_choice: 'required', parallel_tool_calls: false } : {}) });
      const calls = r1.output.filter((o) => o.type === 'function_call');
      assert.equal(calls.length, 1, `one function_call item (${JSON.stringify(r1.output)})`);
      c.call(calls[0].name, calls[0].arguments);
      c.preText(r1.output_text);
      assert.ok(r1.usage.input_tokens > 0 && r1.usage.output_tokens > 0, 'usage');
      const r2 = await openaiClient.responses.create({ model: c.model, tools, max_output_tokens: c.max, store: false,
        input: [...input, calls[0], { type: 'function_call_output', call_id: calls[0].call_id, output: RESULT }] });
      c.toolAnswer(r2.output_text);

      const s = await openaiClient.responses.create({ model: c.model, input, tools, max_output_tokens: c.toolMax, store: false, stream: true,
        ...(c.local ? { tool_choice: 'required', parallel_tool_calls: false } : {}) });
      let args = '', done = null, pre = '';
      for await (const ev of s) {
        if (ev.type === 'response.output_text.delta') pre += ev.delta;
        if (ev.type === 'response.function_call_arguments.delta') args += ev.delta;
        if (ev.type === 'response.completed' || ev.type === 'response.incomplete') done = ev.response;
        if (ev.type === 'error' || ev.type === 'response.failed') throw new Error(`stream: ${JSON.stringify(ev)}`);
      }
      assert.equal(done?.status, 'completed', 'streamed: response.completed');
      const sc = done.output.filter((o) => o.type === 'function_call');
      assert.equal(sc.length, 1, `streamed: one function_call item (${JSON.stringify(done.output)})`);
      c.call(sc[0].name, sc[0].arguments, 'streamed tool call');
      c.preText(pre, 'streamed: the text before the call');
      assert.equal(args, sc[0].arguments, 'streamed: the argument deltas join into the arguments');
    },
  },
  aiRow('ai + @ai-sdk/openai (Responses)', ['ai', '@ai-sdk/openai'], (m) => aiOpenAI(m),
    () => ({ openai: { parallelToolCalls: false } })),
  aiRow('ai + @ai-sdk/openai .chat()', ['ai', '@ai-sdk/openai'], (m) => aiOpenAI.chat(m),
    () => ({ openai: { parallelToolCalls: false } })),
  // The package sends its provider's options (but its own) as body fields.
  aiRow('ai + @ai-sdk/openai-compatible', ['ai', '@ai-sdk/openai-compatible'], (m) => aiCompat.chatModel(m),
    () => ({ smolgate: { parallel_tool_calls: false } })),
  aiRow('ai + @ai-sdk/gateway', ['ai', '@ai-sdk/gateway'], (m) => aiGateway(m),
    () => ({ openai: { parallelToolCalls: false } })),
  {
    label: '@anthropic-ai/sdk: messages', packages: ['@anthropic-ai/sdk'],
    async plain(c) {
      const m = await anthropicClient.messages.create({ model: c.model, max_tokens: c.max, system: c.system(), messages: [{ role: 'user', content: c.prompt }] });
      c.text(m.content.filter((b) => b.type === 'text').map((b) => b.text).join(''));
      c.finish(m.stop_reason, 'end_turn', ['end_turn', 'max_tokens'], 'stop_reason');
      c.usage(m.usage.input_tokens, m.usage.output_tokens);
    },
    async stream(c) {
      const s = anthropicClient.messages.stream({ model: c.model, max_tokens: c.max, messages: [{ role: 'user', content: c.prompt }] });
      let text = '';
      for await (const ev of s) if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') text += ev.delta.text;
      const m = await s.finalMessage();
      c.text(text, 'the deltas joined');
      c.finish(m.stop_reason, 'end_turn', ['end_turn', 'max_tokens'], 'stop_reason');
      c.usage(m.usage.input_tokens, m.usage.output_tokens);
    },
    async tools(c) {
      const tools = [{ ...TOOL, input_schema: SCHEMA }];
      const messages = [{ role: 'user', content: c.toolPrompt }];
      const m1 = await anthropicClient.messages.create({ model: c.model, max_tokens: c.toolMax, messages, tools,
        ...(c.local ? { tool_choice: { type: 'any', disable_parallel_tool_use: true } } : {}) });
      assert.equal(m1.stop_reason, 'tool_use', `stop_reason (${JSON.stringify(m1.content)})`);
      const uses = m1.content.filter((b) => b.type === 'tool_use');
      assert.equal(uses.length, 1, 'one tool_use block');
      c.call(uses[0].name, uses[0].input);
      c.preText(m1.content.filter((b) => b.type === 'text').map((b) => b.text).join(''));
      assert.ok(m1.usage.input_tokens > 0 && m1.usage.output_tokens > 0, 'usage');
      const m2 = await anthropicClient.messages.create({ model: c.model, max_tokens: c.max, tools, messages: [...messages,
        { role: 'assistant', content: m1.content },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: uses[0].id, content: RESULT }] }] });
      c.toolAnswer(m2.content.filter((b) => b.type === 'text').map((b) => b.text).join(''));

      const s = anthropicClient.messages.stream({ model: c.model, max_tokens: c.toolMax, messages, tools,
        ...(c.local ? { tool_choice: { type: 'any', disable_parallel_tool_use: true } } : {}) });
      let json = '', pre = '';
      for await (const ev of s) {
        if (ev.type === 'content_block_delta' && ev.delta.type === 'input_json_delta') json += ev.delta.partial_json;
        if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') pre += ev.delta.text;
      }
      const fm = await s.finalMessage();
      assert.equal(fm.stop_reason, 'tool_use', 'streamed: stop_reason');
      const su = fm.content.filter((b) => b.type === 'tool_use');
      assert.equal(su.length, 1, 'streamed: one tool_use block');
      c.call(su[0].name, su[0].input, 'streamed tool call');
      c.preText(pre, 'streamed: the text before the call');
      assert.deepEqual(JSON.parse(json), su[0].input, 'streamed: the input_json_delta pieces join into the input');
    },
  },
  {
    label: 'ollama: chat', packages: ['ollama'], na: { 'local/tools': NO_TOOL_CHOICE },
    async plain(c) {
      const r = await ollamaClient.chat({ model: c.model, options: { num_predict: c.max },
        messages: [{ role: 'system', content: c.system() }, { role: 'user', content: c.prompt }] });
      c.text(r.message.content);
      c.finish(r.done_reason, 'stop', ['stop', 'length'], 'done_reason');
      c.usage(r.prompt_eval_count, r.eval_count);
    },
    async stream(c) {
      const parts = [];
      for await (const p of await ollamaClient.chat({ model: c.model, stream: true, messages: [{ role: 'user', content: c.prompt }], options: { num_predict: c.max } })) parts.push(p);
      assert.equal(parts.at(-1).done, true, 'the last part is done');
      c.finish(parts.at(-1).done_reason, 'stop', ['stop', 'length'], 'done_reason');
      c.text(parts.map((p) => p.message?.content ?? '').join(''), 'the parts joined');
      c.usage(parts.at(-1).prompt_eval_count, parts.at(-1).eval_count);
    },
    async tools(c) {
      const messages = [{ role: 'user', content: c.toolPrompt }];
      const r1 = await ollamaClient.chat({ model: c.model, messages, tools: rawTools, options: { num_predict: c.toolMax } });
      assert.equal(r1.message.tool_calls?.length, 1, `one tool call (${JSON.stringify(r1.message)})`);
      c.call(r1.message.tool_calls[0].function.name, r1.message.tool_calls[0].function.arguments);
      c.preText(r1.message.content);
      assert.ok(r1.prompt_eval_count > 0 && r1.eval_count > 0, 'counts');
      const r2 = await ollamaClient.chat({ model: c.model, tools: rawTools, options: { num_predict: c.max },
        messages: [...messages, r1.message, { role: 'tool', content: RESULT, tool_name: TOOL.name }] });
      c.toolAnswer(r2.message.content);

      const parts = [];
      for await (const p of await ollamaClient.chat({ model: c.model, messages, tools: rawTools, stream: true, options: { num_predict: c.toolMax } })) parts.push(p);
      const sc = parts.flatMap((p) => p.message?.tool_calls ?? []);
      assert.equal(sc.length, 1, 'streamed: one tool call');
      c.call(sc[0].function.name, sc[0].function.arguments, 'streamed tool call');
      c.preText(parts.map((p) => p.message?.content ?? '').join(''), 'streamed: the text before the call');
      assert.equal(parts.at(-1).done, true, 'streamed: the last part is done');
    },
  },
  {
    label: '@langchain/ollama: ChatOllama', packages: ['@langchain/ollama', '@langchain/core'], na: { 'local/tools': NO_TOOL_CHOICE },
    chat: (c, max) => new ChatOllama({ baseUrl: GW, headers: { authorization: `Bearer ${KEY}` }, model: c.model, maxRetries: 0, numPredict: max }),
    async plain(c) {
      const m = await this.chat(c, c.max).invoke([['system', c.system()], ['human', c.prompt]]);
      c.text(m.content);
      c.usage(m.usage_metadata?.input_tokens, m.usage_metadata?.output_tokens);
    },
    async stream(c) {
      let acc = null, n = 0;
      for await (const ch of await this.chat(c, c.max).stream([['human', c.prompt]])) { acc = acc ? acc.concat(ch) : ch; n++; }
      assert.ok(n >= 1, 'chunks');
      c.text(acc.content, 'the chunks joined');
      c.usage(acc.usage_metadata?.input_tokens, acc.usage_metadata?.output_tokens);
    },
    async tools(c) {
      const llm = this.chat(c, c.toolMax).bindTools(rawTools);
      const messages = [['human', c.toolPrompt]];
      const m1 = await llm.invoke(messages);
      assert.equal(m1.tool_calls?.length, 1, `one tool call (${JSON.stringify(m1)})`);
      c.call(m1.tool_calls[0].name, m1.tool_calls[0].args);
      c.preText(m1.content);
      const m2 = await llm.invoke([...messages, m1, { role: 'tool', content: RESULT, tool_call_id: m1.tool_calls[0].id, name: TOOL.name }]);
      c.toolAnswer(m2.content);

      let acc = null;
      for await (const ch of await llm.stream(messages)) acc = acc ? acc.concat(ch) : ch;
      assert.equal(acc.tool_calls?.length, 1, `streamed: one tool call (${JSON.stringify(acc)})`);
      c.call(acc.tool_calls[0].name, acc.tool_calls[0].args, 'streamed tool call');
      c.preText(acc.content, 'streamed: the text before the call');
    },
  },
  {
    label: '@openai/agents: run (Responses)', packages: ['@openai/agents', 'openai'], notes: { 'local/*': AGENTS_LOCAL },
    systemWords: words('Answer.'),
    // Local: a JSON-schema output type, whose constrained answer ends by itself (see AGENTS_LOCAL).
    agent: (c, { tools = [], settings = {}, behavior } = {}) => new agents.Agent({ name: 'matrix', instructions: 'Answer.',
      model: c.model, tools, modelSettings: { maxTokens: c.local ? c.toolMax : c.max, ...settings },
      ...(behavior ? { toolUseBehavior: behavior } : {}),
      ...(c.local ? { outputType: { type: 'json_schema', name: 'answer', strict: true, schema: ANSWER_SCHEMA } } : {}) }),
    lastUsage(r) {
      const u = r.rawResponses.at(-1)?.usage;
      assert.ok(u, 'usage on the model response');
      return u;
    },
    final(c, out, what) {
      if (!c.local) return c.text(out, what);
      assert.ok(validAnswer(out), `${what}: the output type's schema: ${JSON.stringify(out)}: ${ajv.errorsText(validAnswer.errors)}`);
    },
    async plain(c) {
      const r = await agents.run(this.agent(c), c.prompt);
      this.final(c, r.finalOutput, 'finalOutput');
      const u = this.lastUsage(r);
      c.usage(u.inputTokens, u.outputTokens, 'usage', c.toolMax);
    },
    async stream(c) {
      const s = await agents.run(this.agent(c), c.prompt, { stream: true });
      let text = '';
      for await (const t of s.toTextStream()) text += t;
      await s.completed;
      if (s.error) throw s.error;
      this.final(c, c.local ? JSON.parse(text) : text, 'the text stream');
      this.final(c, s.finalOutput, 'finalOutput');
      const u = this.lastUsage(s);
      c.usage(u.inputTokens, u.outputTokens, 'usage', c.toolMax);
    },
    async tools(c) {
      const asked = [];
      const getWeather = agents.tool({ ...TOOL, parameters: SCHEMA, strict: true,
        execute: async (a) => { asked.push(a); return RESULT; } });
      // Local: the call is forced, and the run ends with the tool's output. After a tool
      // result the SDK resets tool_choice to auto, where the random model may call again
      // (auto with an output type allows the JSON answer or a call), turn after turn.
      const settings = c.local ? { toolChoice: 'required', parallelToolCalls: false } : {};
      const behavior = c.local ? 'stop_on_first_tool' : undefined;
      const r = await agents.run(this.agent(c, { tools: [getWeather], settings, behavior }), c.toolPrompt, { maxTurns: 3 });
      assert.equal(asked.length, 1, 'the SDK ran the tool once');
      const calls = r.newItems.filter((i) => i.type === 'tool_call_item');
      assert.equal(calls.length, 1, 'one tool call item');
      c.call(calls[0].rawItem.name, calls[0].rawItem.arguments);
      if (c.local) assert.deepEqual(r.finalOutput, JSON.parse(RESULT), 'finalOutput: the tool result');
      else c.toolAnswer(r.finalOutput);

      const s = await agents.run(this.agent(c, { tools: [getWeather], settings, behavior }), c.toolPrompt, { maxTurns: 3, stream: true });
      for await (const ev of s) void ev;
      await s.completed;
      if (s.error) throw s.error;
      assert.equal(asked.length, 2, 'streamed: the SDK ran the tool');
      const sc = s.newItems.filter((i) => i.type === 'tool_call_item');
      assert.equal(sc.length, 1, 'streamed: one tool call item');
      c.call(sc[0].rawItem.name, sc[0].rawItem.arguments, 'streamed tool call');
      if (c.local) assert.deepEqual(s.finalOutput, JSON.parse(RESULT), 'streamed: finalOutput: the tool result');
      else c.toolAnswer(s.finalOutput, 'streamed: the answer to the tool result');
    },
  },
];

// ---- the cells, and the table ----

const results = new Map();   // "row|provider|mode" -> {status, note}
const short = (e) => String(e?.message ?? e).replace(/\s+/g, ' ').slice(0, 300);

for (const row of ROWS) {
  for (const [provider, model] of PROVIDERS) {
    for (const mode of MODES) {
      const key = `${row.label}|${provider}|${mode}`;
      const na = row.na?.[`${provider}/${mode}`] ?? row.na?.[`*/${mode}`];
      const name = `${row.label} × ${provider} × ${mode}`;
      if (na) {
        results.set(key, { status: 'n/a', note: na });
        test(name, { skip: `n/a: ${na}` }, () => {});
        continue;
      }
      const note = row.notes?.[`${provider}/${mode}`] ?? row.notes?.[`${provider}/*`];
      test(name, async () => {
        try {
          const c = cell(provider, model, row);
          await row[mode].call(row, c);
          await checkUpstream(c);
          results.set(key, { status: 'PASS', note });
        } catch (e) {
          results.set(key, { status: 'FAIL', note: short(e) });
          throw e;
        }
      });
    }
  }
}

function table() {
  const lines = [];
  lines.push(`# Client matrix: smolgate at ${GW}`, '');
  lines.push(`Providers: ${PROVIDERS.map(([p, m]) => `${p} = \`${m}\``).join(', ')}; the first four on the fake upstreams, local on a random-weight SmolLM3.`, '');
  const cols = PROVIDERS.flatMap(([p]) => MODES.map((m) => `${p} ${m}`));
  lines.push(`| client (package@version) | ${cols.join(' | ')} |`);
  lines.push(`|---|${cols.map(() => '---').join('|')}|`);
  const notes = [];
  for (const row of ROWS) {
    const cells = [];
    for (const [p] of PROVIDERS) {
      for (const m of MODES) {
        const r = results.get(`${row.label}|${p}|${m}`) ?? { status: 'not run' };
        if (r.note) {
          let i = notes.indexOf(r.note);
          if (i < 0) i = notes.push(r.note) - 1;
          cells.push(`${r.status} [${i + 1}]`);
        } else cells.push(r.status);
      }
    }
    lines.push(`| ${row.label} (${row.packages.map(pkg).join(', ')}) | ${cells.join(' | ')} |`);
  }
  const count = (s) => [...results.values()].filter((r) => r.status === s).length;
  lines.push('', `${count('PASS')} PASS, ${count('FAIL')} FAIL, ${count('n/a')} n/a.`);
  if (notes.length) lines.push('', ...notes.map((t, i) => `[${i + 1}] ${t}`));
  return lines.join('\n') + '\n';
}

// gateway.sh names the file and prints it; run alone, the table goes to stdout as well.
after(() => {
  const md = table();
  writeFileSync(REPORT, md);
  if (!process.env.MATRIX_REPORT) console.log(md);
  console.log(`matrix.test.mjs: the table is in ${REPORT}`);
});
