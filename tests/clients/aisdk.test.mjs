// aisdk.test.mjs: the Vercel AI SDK (`ai` with `@ai-sdk/openai-compatible`), unchanged,
// against the fake OpenAI server (TARGET=fake) or smolgate (TARGET=gateway, SMOLGATE_URL):
// generateText and streamText, plain and with a tool the SDK executes (two steps: the
// tool call, then the answer to its result), asserting the text, the tool calls and the
// usage the SDK reports. Expected answers follow tests/fakes/README.md.
// Run: node --test tests/clients/aisdk.test.mjs (env: see env.mjs).

import test from 'node:test';
import assert from 'node:assert/strict';
import { GATEWAY, MODELS, words, nonce, openaiTarget, control, loadPackage } from './env.mjs';

globalThis.AI_SDK_LOG_WARNINGS = false;
const { generateText, streamText, tool, stepCountIs } = await loadPackage('ai');
const { createOpenAICompatible } = await loadPackage('@ai-sdk/openai-compatible');
const { z } = await loadPackage('zod');

const target = await openaiTarget();
const provider = createOpenAICompatible({ name: 'smolgate', ...target, includeUsage: true });
const model = provider.chatModel(MODELS.aisdk);

function weatherTool(calls) {
  return tool({
    description: 'Weather in a city',
    inputSchema: z.object({ city: z.string() }),
    execute: async ({ city }) => { calls.push(city); return { city, temp_c: 21 }; },
  });
}

function expectUsage(u, input, output) {
  assert.equal(u.inputTokens, input, 'inputTokens');
  assert.equal(u.outputTokens, output, 'outputTokens');
  assert.equal(u.totalTokens, input + output, 'totalTokens');
}

// The tool's output as the SDK sends it back (JSON), and the fake's answer to it.
const TOOL_OUTPUT = JSON.stringify({ city: 'Paris', temp_c: 21 });
const TOOL_ANSWER = `tool result: ${TOOL_OUTPUT}`;

test('generateText: text and usage', async () => {
  const system = `Be brief ${nonce('ai')}`;
  const prompt = 'what is the answer';
  const r = await generateText({ model, system, prompt, maxRetries: 0 });
  assert.equal(r.text, `echo: ${prompt}`);
  assert.equal(r.finishReason, 'stop');
  expectUsage(r.usage, words(system) + words(prompt), words(`echo: ${prompt}`));
});

test('generateText with a tool: the call, its execution, the answer; usage per step and in total', async () => {
  const system = `tool test ${nonce('ait')}`;
  const prompt = 'call:get_weather {"city":"Paris"}';
  const executed = [];
  const r = await generateText({
    model, system, prompt, tools: { get_weather: weatherTool(executed) }, stopWhen: stepCountIs(3), maxRetries: 0,
  });
  assert.deepEqual(executed, ['Paris']);
  assert.equal(r.steps.length, 2);
  const [s1, s2] = r.steps;
  assert.equal(s1.finishReason, 'tool-calls');
  assert.equal(s1.toolCalls.length, 1);
  assert.equal(s1.toolCalls[0].toolName, 'get_weather');
  assert.deepEqual(s1.toolCalls[0].input, { city: 'Paris' });
  assert.equal(typeof s1.toolCalls[0].toolCallId, 'string');
  assert.deepEqual(s1.toolResults[0].output, { city: 'Paris', temp_c: 21 });
  assert.equal(s2.finishReason, 'stop');
  assert.equal(r.text, TOOL_ANSWER);
  const p1 = words(system) + words(prompt);
  expectUsage(s1.usage, p1, 1);
  // Step 2's prompt adds the call's arguments and the tool result (compact JSON, one word each).
  expectUsage(s2.usage, p1 + 1 + words(TOOL_OUTPUT), words(TOOL_ANSWER));
  expectUsage(r.totalUsage, p1 + p1 + 2, 1 + words(TOOL_ANSWER));
});

test('streamText: text deltas and usage', async () => {
  const prompt = `stream this ${nonce('ais')} text`;
  const r = streamText({ model, prompt, maxRetries: 0 });
  const deltas = [];
  for await (const d of r.textStream) deltas.push(d);
  assert.ok(deltas.length > 1, 'several text deltas');
  assert.equal(deltas.join(''), `echo: ${prompt}`);
  assert.equal(await r.text, `echo: ${prompt}`);
  assert.equal(await r.finishReason, 'stop');
  expectUsage(await r.usage, words(prompt), words(`echo: ${prompt}`));
});

test('streamText with a tool: streamed input deltas, the call, the answer; usage', async () => {
  const system = `stream tool ${nonce('aist')}`;
  const prompt = 'call:get_weather {"city":"Paris"}';
  const executed = [];
  const r = streamText({
    model, system, prompt, tools: { get_weather: weatherTool(executed) }, stopWhen: stepCountIs(3), maxRetries: 0,
  });
  const parts = [];
  for await (const p of r.fullStream) {
    if (p.type === 'error') throw p.error;
    parts.push(p);
  }
  const types = parts.map((p) => p.type);
  const inputDeltas = parts.filter((p) => p.type === 'tool-input-delta').map((p) => p.delta);
  assert.ok(inputDeltas.length >= 1, 'tool input streamed');
  if (!GATEWAY) assert.ok(inputDeltas.length > 1, 'tool input in several fragments');
  assert.deepEqual(JSON.parse(inputDeltas.join('')), { city: 'Paris' });
  const call = parts.find((p) => p.type === 'tool-call');
  assert.equal(call.toolName, 'get_weather');
  assert.deepEqual(call.input, { city: 'Paris' });
  assert.ok(types.includes('tool-result'));
  assert.deepEqual(executed, ['Paris']);
  assert.equal(await r.text, TOOL_ANSWER);
  const steps = await r.steps;
  assert.equal(steps.length, 2);
  const p1 = words(system) + words(prompt);
  expectUsage(steps[0].usage, p1, 1);
  expectUsage(steps[1].usage, p1 + 1 + words(TOOL_OUTPUT), words(TOOL_ANSWER));
  expectUsage(await r.totalUsage, 2 * p1 + 2, 1 + words(TOOL_ANSWER));
});

test('fake: cached and reasoning tokens reach the SDK usage details', { skip: GATEWAY && 'usage counts are set at the fake' }, async () => {
  const n = nonce('aiu');
  await control('/control', { provider: 'openai', match: n, usage: { cached: 1, reasoning: 3 } });
  const prompt = `details ${n} here`;
  const r = await generateText({ model, prompt, maxRetries: 0 });
  expectUsage(r.usage, 3, words(`echo: ${prompt}`) + 3);
  assert.equal(r.usage.inputTokenDetails.cacheReadTokens, 1);
  assert.equal(r.usage.inputTokenDetails.noCacheTokens, 2);
  assert.equal(r.usage.outputTokenDetails.reasoningTokens, 3);
});
