// embeddings.test.mjs: embeddings, the model lookup and token counting through their
// official clients, unchanged: the `openai` SDK's embeddings.create (floats by default,
// which the SDK asks for as base64 and decodes, explicit float and base64, dimensions,
// several inputs, an OpenAI and a Gemini embedding model) and models.retrieve (a name with
// a slash, 'local/x', goes out percent-encoded as local%2Fx), and the Anthropic SDK's
// messages.countTokens. Against the fakes (TARGET=fake) or smolgate (TARGET=gateway: POST
// /v1/embeddings, GET /v1/models/{id}, POST /v1/messages/count_tokens; each skipped, saying
// so, while smolgate answers it with "unknown endpoint"). The vectors are the fakes'
// (tests/fakes/README.md, "Embeddings"), computed here again by fakeEmbedding.
// Run: node --test tests/clients/embeddings.test.mjs (env: see env.mjs).

import test from 'node:test';
import assert from 'node:assert/strict';
import { GATEWAY, MODELS, words, nonce, openaiTarget, anthropicTarget, fakeLog, haveFakes, loadPackage, gatewayLacks, fakeEmbedding } from './env.mjs';

const { default: OpenAI, APIError } = await loadPackage('openai');
const { default: Anthropic } = await loadPackage('@anthropic-ai/sdk');
const client = new OpenAI({ ...(await openaiTarget()), maxRetries: 0, timeout: 20000 });
const anthropic = new Anthropic({ ...(await anthropicTarget()), maxRetries: 0, timeout: 20000 });
const fakes = await haveFakes();

const skipEmbed = await gatewayLacks('POST', '/v1/embeddings', 'embeddings (POST /v1/embeddings)');
const skipModel = await gatewayLacks('GET', `/v1/models/${encodeURIComponent(MODELS.openai)}`, 'a model lookup (GET /v1/models/{id})');
const skipCount = await gatewayLacks('POST', '/v1/messages/count_tokens', 'token counting (POST /v1/messages/count_tokens)');

const DIMS = { 'text-embedding-3-small': 1536, 'text-embedding-3-large': 3072, 'gemini-embedding-001': 3072 };
const dimsOf = (m) => DIMS[m.replace(/^[a-z]+\//, '')] ?? 256;

// The vector matches the fakes' embedding of the text: exactly from the fake, within float32
// rounding through the gateway (which may print the numbers again).
function expectVector(got, text, dims) {
  const want = fakeEmbedding(text, dims);
  assert.equal(got.length, dims, 'dimensions');
  if (!GATEWAY) { assert.deepEqual(Array.from(got), want); return; }
  for (let i = 0; i < dims; i++) assert.ok(Math.abs(got[i] - want[i]) <= 1e-6 * Math.max(1, Math.abs(want[i])), `value ${i}: ${got[i]} != ${want[i]}`);
}

test('embeddings.create, default encoding: the SDK asks for base64 and decodes floats; usage', { skip: skipEmbed }, async () => {
  const n = nonce('em');
  const input = `embed ${n} this text`;
  const r = await client.embeddings.create({ model: MODELS.embedding, input });
  assert.equal(r.object, 'list');
  assert.equal(r.data.length, 1);
  assert.equal(r.data[0].object, 'embedding');
  assert.equal(r.data[0].index, 0);
  expectVector(r.data[0].embedding, input, dimsOf(MODELS.embedding));
  assert.equal(r.usage.prompt_tokens, words(input));
  assert.equal(r.usage.total_tokens, words(input));
  if (fakes) {
    const log = await fakeLog({ provider: 'openai', match: n });
    assert.equal(log.length, 1, 'one request reached the fake');
    assert.equal(log[0].path, '/v1/embeddings');
    if (!GATEWAY) assert.equal(log[0].body.encoding_format, 'base64', 'what the SDK asks for by default');
  }
});

test('embeddings.create, encoding_format float and base64: several inputs, in order, the same values', { skip: skipEmbed }, async () => {
  const inputs = [`first ${nonce('emf')} input`, 'second', 'a third one here'];
  const f = await client.embeddings.create({ model: MODELS.embedding, input: inputs, encoding_format: 'float' });
  assert.deepEqual(f.data.map((d) => d.index), [0, 1, 2]);
  f.data.forEach((d, i) => { assert.ok(Array.isArray(d.embedding)); expectVector(d.embedding, inputs[i], dimsOf(MODELS.embedding)); });
  assert.equal(f.usage.prompt_tokens, inputs.reduce((a, s) => a + words(s), 0));
  const b = await client.embeddings.create({ model: MODELS.embedding, input: inputs, encoding_format: 'base64' });
  assert.equal(b.data.length, 3);
  b.data.forEach((d, i) => {
    assert.equal(typeof d.embedding, 'string', 'base64 stays a string when asked for');
    const buf = Buffer.from(d.embedding, 'base64');
    const v = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
    expectVector(v, inputs[i], dimsOf(MODELS.embedding));
    assert.deepEqual(Array.from(v), f.data[i].embedding.map((x) => Math.fround(x)), 'base64 and float carry the same values');
  });
});

test('embeddings.create with dimensions: the shorter vector', { skip: skipEmbed }, async () => {
  const input = `short ${nonce('emd')} vector`;
  const r = await client.embeddings.create({ model: MODELS.embedding, input, dimensions: 64, encoding_format: 'float' });
  expectVector(r.data[0].embedding, input, 64);
});

test('embeddings.create with a Gemini embedding model (Gemini batchEmbedContents behind the gateway)', { skip: skipEmbed }, async () => {
  const n = nonce('emg');
  const inputs = [`gemini ${n} one`, `gemini ${n} two words`];
  const r = await client.embeddings.create({ model: MODELS.geminiEmbedding, input: inputs, encoding_format: 'float' });
  assert.equal(r.data.length, 2);
  r.data.forEach((d, i) => expectVector(d.embedding, inputs[i], dimsOf(MODELS.geminiEmbedding)));
  assert.ok(Number.isInteger(r.usage.prompt_tokens) && r.usage.prompt_tokens >= 0, 'usage.prompt_tokens');
  if (GATEWAY && fakes) {
    const log = await fakeLog({ provider: 'gemini', match: n });
    assert.ok(log.length >= 1, 'the request reached the Gemini fake');
    assert.match(log[0].path, new RegExp(`/models/${MODELS.geminiEmbedding}:(batchEmbedContents|embedContent)$`));
  }
});

test('embeddings: a bad request surfaces as APIError (400)', { skip: skipEmbed }, async () => {
  await assert.rejects(client.embeddings.create({ model: MODELS.embedding, input: '', encoding_format: 'float' }), (e) => {
    assert.ok(e instanceof APIError, `not an APIError: ${e}`);
    assert.equal(e.status, 400);
    assert.equal(typeof e.error.message, 'string');
    return true;
  });
});

test('models.retrieve: a model; a name with a slash goes out percent-encoded (local%2Fx)', { skip: skipModel }, async () => {
  const m = await client.models.retrieve(MODELS.openai);
  assert.equal(m.id, MODELS.openai);
  assert.equal(m.object, 'model');
  if (!GATEWAY) {
    // The fake knows no local model: it answers 404 naming the decoded id, and its log shows
    // the path as the SDK sent it.
    await assert.rejects(client.models.retrieve('local/x'), (e) => {
      assert.equal(e.status, 404);
      assert.equal(e.error.message, "The model 'local/x' does not exist");
      return true;
    });
    const log = await fakeLog({ provider: 'openai', match: '/v1/models/local' });
    assert.ok(log.some((x) => x.path === '/v1/models/local%2Fx'), JSON.stringify(log.map((x) => x.path)));
  } else {
    // smolgate serves its local model as local/NAME; the SDK sends local%2FNAME
    const local = `local/${process.env.SMOLGATE_LOCAL_MODEL || 'smollm3'}`;
    const l = await client.models.retrieve(local);
    assert.equal(l.id, local);
    await assert.rejects(client.models.retrieve('local/does-not-exist'), (e) => { assert.equal(e.status, 404); return true; });
  }
});

test('anthropic messages.countTokens: the input_tokens the message would use', { skip: skipCount }, async () => {
  const n = nonce('ct');
  const system = 'Be brief.';
  const messages = [{ role: 'user', content: `count ${n} these words` }];
  const c = await anthropic.messages.countTokens({ model: MODELS.anthropic, system, messages });
  assert.equal(c.input_tokens, words(system) + words(messages[0].content));
  const m = await anthropic.messages.create({ model: MODELS.anthropic, max_tokens: 64, system, messages });
  assert.equal(c.input_tokens, m.usage.input_tokens, 'the count of the message itself');
  if (fakes) {
    const log = await fakeLog({ provider: 'anthropic', match: n });
    assert.ok(log.some((x) => x.path === '/v1/messages/count_tokens'), 'count_tokens reached the Anthropic fake');
  }
});
