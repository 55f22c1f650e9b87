// aigateway.test.mjs: smolgate as a Vercel AI Gateway: what `@ai-sdk/gateway`'s
// createGateway({ baseURL, apiKey }) sends, through `ai` 7, unchanged: generateText and
// streamText (POST BASE/language-model, the v4 language-model specification), a tool the
// SDK executes, embed / embedMany (POST BASE/embedding-model), the model list (GET
// BASE/config: every model with specification version v4), and errors as the SDK's
// GatewayError classes. BASE is SMOLGATE_AI_GATEWAY_URL, by default SMOLGATE_URL/v4/ai. The
// fakes speak no AI Gateway protocol, so this runs with TARGET=gateway only (skipped
// otherwise, saying why), and is skipped, saying so, while smolgate answers GET BASE/config
// with "unknown endpoint". Answers come from the fakes behind the gateway
// (tests/fakes/README.md). Model ids are smolgate's (AI_GATEWAY_MODEL, default
// openai/gpt-4o-mini).
// Run: TARGET=gateway SMOLGATE_URL=... node --test tests/clients/aigateway.test.mjs

import test from 'node:test';
import assert from 'node:assert/strict';
import { GATEWAY, MODELS, words, nonce, openaiTarget, fakeLog, haveFakes, loadPackage, gatewayOnly, gatewayLacks, aiGatewayTarget, fakeEmbedding } from './env.mjs';

globalThis.AI_SDK_LOG_WARNINGS = false;
const { generateText, streamText, embed, embedMany, tool, stepCountIs } = await loadPackage('ai');
const { createGateway, GatewayError, GatewayAuthenticationError } = await loadPackage('@ai-sdk/gateway');
const { z } = await loadPackage('zod');

const target = GATEWAY ? aiGatewayTarget() : { baseURL: 'http://127.0.0.1:1/v4/ai', apiKey: 'unused' };
const skip = gatewayOnly('The Vercel AI Gateway protocol')
  || await gatewayLacks('GET', `${new URL(target.baseURL).pathname}/config`, 'the Vercel AI Gateway protocol (GET .../config, POST .../language-model)');
const gateway = createGateway({ ...target });
const model = gateway(MODELS.aigateway);
const fakes = GATEWAY && await haveFakes();

function expectUsage(u, input, output) {
  assert.equal(u.inputTokens, input, 'inputTokens');
  assert.equal(u.outputTokens, output, 'outputTokens');
  assert.equal(u.totalTokens, input + output, 'totalTokens');
}
const TOOL_OUTPUT = JSON.stringify({ city: 'Paris', temp_c: 21 });
const TOOL_ANSWER = `tool result: ${TOOL_OUTPUT}`;

test('generateText: text, finish reason, usage; the request reached the upstream', { skip }, async () => {
  const n = nonce('ag');
  const system = `Be brief ${n}`;
  const prompt = 'what is the answer';
  const r = await generateText({ model, system, prompt, maxRetries: 0 });
  assert.equal(r.text, `echo: ${prompt}`);
  assert.equal(r.finishReason, 'stop');
  expectUsage(r.usage, words(system) + words(prompt), words(`echo: ${prompt}`));
  if (fakes) {
    const log = await fakeLog({ provider: 'openai', match: n });
    assert.equal(log.length, 1, 'one request reached the fake');
    assert.equal(log[0].body.model, MODELS.aigateway.replace(/^openai\//, ''));
  }
});

test('streamText: text deltas, finish reason, usage', { skip }, async () => {
  const prompt = `stream this ${nonce('ags')} text`;
  const r = streamText({ model, prompt, maxRetries: 0 });
  const deltas = [];
  for await (const d of r.textStream) deltas.push(d);
  assert.ok(deltas.length > 1, 'several text deltas');
  assert.equal(deltas.join(''), `echo: ${prompt}`);
  assert.equal(await r.finishReason, 'stop');
  expectUsage(await r.usage, words(prompt), words(`echo: ${prompt}`));
});

test('a tool: the call, its execution by the SDK, the answer (generateText and streamText)', { skip }, async () => {
  for (const streamed of [false, true]) {
    const system = `tool test ${nonce('agt')}`;
    const prompt = 'call:get_weather {"city":"Paris"}';
    const executed = [];
    const tools = { get_weather: tool({ description: 'Weather in a city', inputSchema: z.object({ city: z.string() }), execute: async ({ city }) => { executed.push(city); return { city, temp_c: 21 }; } }) };
    const opts = { model, system, prompt, tools, stopWhen: stepCountIs(3), maxRetries: 0 };
    let steps, text;
    if (streamed) {
      const r = streamText(opts);
      for await (const p of r.fullStream) if (p.type === 'error') throw p.error;
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
    expectUsage(steps[0].usage, p1, 1);
    expectUsage(steps[1].usage, p1 + 1 + words(TOOL_OUTPUT), words(TOOL_ANSWER));
  }
});

const skipEmbed = skip || await gatewayLacks('POST', `${new URL(target.baseURL).pathname}/embedding-model`, 'embeddings through the AI Gateway protocol (POST .../embedding-model)');
test('embed and embedMany: the fakes\' vectors, usage', { skip: skipEmbed }, async () => {
  const em = gateway.embeddingModel(`openai/${MODELS.embedding}`);
  const value = `embed ${nonce('age')} this`;
  const one = await embed({ model: em, value, maxRetries: 0 });
  const want = fakeEmbedding(value, one.embedding.length);
  assert.ok(one.embedding.length > 0);
  one.embedding.forEach((x, i) => assert.ok(Math.abs(x - want[i]) <= 1e-6, `value ${i}`));
  assert.equal(one.usage.tokens, words(value));
  const values = ['first one', 'second one here'];
  const many = await embedMany({ model: em, values, maxRetries: 0 });
  assert.equal(many.embeddings.length, 2);
  many.embeddings.forEach((v, k) => { const w = fakeEmbedding(values[k], v.length); v.forEach((x, i) => assert.ok(Math.abs(x - w[i]) <= 1e-6)); });
  assert.equal(many.usage.tokens, words(values[0]) + words(values[1]));
});

test('the model list (GET .../config): specification v4, the gateway\'s models', { skip }, async () => {
  const { models } = await gateway.getAvailableModels();
  assert.ok(models.length > 0);
  for (const m of models) {
    assert.equal(typeof m.id, 'string');
    assert.equal(typeof m.name, 'string');
    assert.equal(m.specification.specificationVersion, 'v4');
    assert.equal(typeof m.specification.provider, 'string');
    assert.equal(typeof m.specification.modelId, 'string');
  }
  // the same catalogue as smolgate's OpenAI-compatible GET /v1/models
  const oa = await openaiTarget();
  const listed = (await (await fetch(`${oa.baseURL}/models`, { headers: { authorization: `Bearer ${oa.apiKey}` } })).json()).data.map((m) => m.id);
  assert.deepEqual(models.map((m) => m.id).sort(), [...listed].sort());
});

test('errors: a wrong key is a GatewayAuthenticationError (401); an unknown model a GatewayError (404)', { skip }, async () => {
  const wrong = createGateway({ ...target, apiKey: 'sk-not-a-smolgate-key' });
  // what the package throws (the model's doGenerate)...
  const prompt = [{ role: 'user', content: [{ type: 'text', text: 'x' }] }];
  await assert.rejects(wrong(MODELS.aigateway).doGenerate({ prompt }), (e) => {
    assert.ok(GatewayAuthenticationError.isInstance(e), `not a GatewayAuthenticationError: ${e?.name}: ${e?.message}`);
    assert.equal(e.statusCode, 401);
    return true;
  });
  // ...which generateText replaces with its own "unauthenticated" Error of that name (ai's wrapGatewayError)
  await assert.rejects(generateText({ model: wrong(MODELS.aigateway), prompt: 'x', maxRetries: 0 }), { name: 'GatewayAuthenticationError' });
  await assert.rejects(generateText({ model: gateway('openai/gpt-nonexistent'), prompt: 'x', maxRetries: 0 }), (e) => {
    assert.ok(GatewayError.isInstance(e), `not a GatewayError: ${e?.name}: ${e?.message}`);
    assert.equal(e.statusCode, 404);
    return true;
  });
});
