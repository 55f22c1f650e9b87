// local.test.mjs: the local provider end to end. tests/e2e/gateway.sh builds a tiny
// random-weight SmolLM3 (make-model --preset smollm3-tiny, vocab 128256, with the real
// Llama-3 tokenizer) and serves it with --model as local/$SMOLGATE_LOCAL_MODEL; its route
// "chat-local" is [openai/m-local-primary, local/NAME].
//
// Checked with the official openai SDK: /v1/models lists the model; a chat completion,
// streamed and not, answers 200 with text (random weights: any text), finish_reason
// "length" or "stop", usage.prompt_tokens equal to the prompt's token count after the chat
// template (what `smolgate run --chat` counts for the same message), completion_tokens
// <= max_tokens; the x-smolgate-* headers name the local provider; concurrent requests all
// answer; 4 concurrent greedy requests each get the answer they get alone, and /v1/status
// shows they were decoded in batched steps; a shared system prompt and the previous turn of
// a conversation come from the prefix cache (/v1/status counts the reused tokens), with
// the same answer as when computed afresh (speculative decoding on, as by default: the
// answers do not depend on it); and a route whose remote target fails (503, streamed or not) falls back to the
// local model, the fallback of last resort.

import test from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { GW, KEY, BIN, post, get, chatBody, assertGwHeaders, nonce, control, loadPackage } from './lib.mjs';

const NAME = process.env.SMOLGATE_LOCAL_MODEL;
const DIR = process.env.SMOLGATE_LOCAL_DIR;
if (!NAME || !DIR) throw new Error('SMOLGATE_LOCAL_MODEL / SMOLGATE_LOCAL_DIR are not set: run through tests/e2e/gateway.sh');
const MODEL = `local/${NAME}`;

const { default: OpenAI } = await loadPackage('openai');
const client = new OpenAI({ baseURL: `${GW}/v1`, apiKey: KEY, maxRetries: 0, timeout: 60000 });

// The prompt's token count after the chat template, as the engine's CLI counts it.
function promptTokens(user, system) {
  const args = ['run', DIR, '--chat', '-p', user, '-n', '1', '-t', '1'];
  if (system) args.push('--system', system);
  const r = spawnSync(BIN, args, { encoding: 'utf8', timeout: 30000 });
  const m = /\[prompt: (\d+) tokens/.exec(r.stderr ?? '');
  assert.ok(m, `smolgate run --chat printed its prompt count: ${r.stderr}`);
  return Number(m[1]);
}

function checkUsage(u, prompt, maxTokens) {
  assert.ok(u, 'usage');
  assert.ok(u.prompt_tokens > 0, `prompt_tokens > 0: ${u.prompt_tokens}`);
  assert.equal(u.prompt_tokens, prompt, 'prompt_tokens = the templated prompt\'s tokens');
  assert.ok(u.completion_tokens >= 1 && u.completion_tokens <= maxTokens, `1 <= completion_tokens (${u.completion_tokens}) <= ${maxTokens}`);
  assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens, 'total_tokens');
}

test('GET /v1/models lists the local model', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.ok(ids.includes(MODEL), `${MODEL} in ${ids.join(', ')}`);
});

test('local chat completion, not streamed: 200, text, finish_reason, usage, headers', async () => {
  const user = 'Hello there, how are you today?';
  const system = 'You are a tiny test model.';
  const { data: r, response } = await client.chat.completions.create({
    model: MODEL, max_tokens: 8, seed: 1,
    messages: [{ role: 'system', content: system }, { role: 'user', content: user }],
  }).withResponse();
  assert.equal(response.status, 200);
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices.length, 1);
  const c = r.choices[0];
  assert.equal(c.message.role, 'assistant');
  assert.ok(['length', 'stop'].includes(c.finish_reason), `finish_reason: ${c.finish_reason}`);
  assert.equal(typeof c.message.content, 'string');
  if (c.finish_reason === 'length') assert.ok(c.message.content.length > 0, 'text when the answer ran to max_tokens');
  checkUsage(r.usage, promptTokens(user, system), 8);
  if (c.finish_reason === 'length') assert.equal(r.usage.completion_tokens, 8, 'length: max_tokens tokens generated');
  assert.equal(response.headers.get('x-smolgate-provider'), 'local');
  assert.equal(response.headers.get('x-smolgate-model'), NAME);
  assert.equal(response.headers.get('x-smolgate-attempts'), '1');
  assert.match(response.headers.get('x-request-id') ?? '', /\S/);
});

test('local chat completion, streamed with include_usage: role, deltas, one finish, usage chunk', async () => {
  const user = 'Tell me a short story about a robot.';
  const stream = await client.chat.completions.create({
    model: MODEL, max_tokens: 12, seed: 2, stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: user }],
  });
  const chunks = [];
  for await (const ch of stream) chunks.push(ch);
  assert.ok(chunks.length >= 2, `${chunks.length} chunks`);
  for (const ch of chunks) assert.equal(ch.object, 'chat.completion.chunk');
  assert.equal(chunks[0].choices[0].delta.role, 'assistant', 'the role comes first');
  const withChoices = chunks.filter((c) => c.choices.length > 0);
  const text = withChoices.map((c) => c.choices[0].delta.content ?? '').join('');
  const finishes = withChoices.filter((c) => c.choices[0].finish_reason).map((c) => c.choices[0].finish_reason);
  assert.equal(finishes.length, 1, `one finish_reason: ${finishes}`);
  assert.ok(['length', 'stop'].includes(finishes[0]), finishes[0]);
  if (finishes[0] === 'length') assert.ok(text.length > 0, 'text');
  const last = chunks[chunks.length - 1];
  assert.deepEqual(last.choices, [], 'the usage chunk comes last, without choices');
  checkUsage(last.usage, promptTokens(user), 12);
});

test('the same request with the same seed, streamed and not: the same text', async () => {
  const req = { model: MODEL, max_tokens: 12, seed: 7, messages: [{ role: 'user', content: 'Count to three.' }] };
  const a = await client.chat.completions.create(req);
  const s = await client.chat.completions.create({ ...req, stream: true });
  let text = '';
  for await (const ch of s) text += ch.choices[0]?.delta?.content ?? '';
  assert.ok(text.length > 0, 'text');
  assert.equal(text, a.choices[0].message.content);
});

test('concurrent requests to the local model all answer', async () => {
  const rs = await Promise.all(Array.from({ length: 6 }, (_, i) => post(chatBody(MODEL, `parallel request ${i}`, { max_tokens: 4 }), { timeoutMs: 60000 })));
  for (const r of rs) {
    assert.equal(r.status, 200, r.text.slice(0, 200));
    assert.ok(r.json.usage.completion_tokens <= 4);
    assertGwHeaders(r, { provider: 'local', model: NAME });
  }
});

// The local provider's scheduler counters from /v1/status.
async function localBatch() {
  const s = await get('/v1/status');
  assert.equal(s.status, 200, s.text);
  const e = (s.json?.local ?? []).find((l) => l.name === NAME);
  assert.ok(e?.batch, `/v1/status has the batch counters of ${NAME}: ${s.text}`);
  return e.batch;
}

test('4 concurrent greedy requests: each the answer it gets alone, decoded in batched steps', async () => {
  const questions = ['Name a colour.', 'Count to five, please.', 'Say hello in French.', 'What is two plus two? Explain.'];
  const body = (q) => chatBody(MODEL, `${q} ${nonce('batch')}`, { max_tokens: 24, temperature: 0 });
  const bodies = questions.map(body);
  const alone = [];
  for (const b of bodies) {
    const r = await post(b, { timeoutMs: 60000 });
    assert.equal(r.status, 200, r.text.slice(0, 200));
    alone.push(r.json);
  }
  const before = await localBatch();
  assert.equal(before.parallel, 4, 'four sequences by default');
  const together = await Promise.all(bodies.map((b) => post(b, { timeoutMs: 60000 })));
  const after = await localBatch();
  for (let i = 0; i < bodies.length; i++) {
    const r = together[i];
    assert.equal(r.status, 200, r.text.slice(0, 200));
    assert.equal(r.json.choices[0].message.content, alone[i].choices[0].message.content, `request ${i}: the same text`);
    assert.equal(r.json.choices[0].finish_reason, alone[i].choices[0].finish_reason, `request ${i}: finish_reason`);
    // the same counts; how many prompt tokens came from the prefix cache differs (the
    // second time round, the prompt is already cached)
    assert.equal(r.json.usage.prompt_tokens, alone[i].usage.prompt_tokens, `request ${i}: prompt_tokens`);
    assert.equal(r.json.usage.completion_tokens, alone[i].usage.completion_tokens, `request ${i}: completion_tokens`);
  }
  assert.ok(after.batched_steps > before.batched_steps, `batched steps: ${before.batched_steps} -> ${after.batched_steps}`);
  assert.ok(after.max_active >= 2, `max_active ${after.max_active}`);
  assert.equal(after.active, 0, 'every slot is free again');
  // speculation is on by default: its counts are there, and never more accepted than drafted
  assert.ok(Number.isInteger(after.drafted_tokens) && Number.isInteger(after.accepted_draft_tokens), 'draft counts');
  assert.ok(after.accepted_draft_tokens <= after.drafted_tokens, `accepted ${after.accepted_draft_tokens} <= drafted ${after.drafted_tokens}`);
});

test('a shared system prompt and the previous turn come from the prefix cache, with the same answers', async () => {
  const system = `You are a careful assistant. ${'Answer briefly, politely and precisely. '.repeat(12)}${nonce('sys')}`;
  const ask = (messages) => post({ model: MODEL, messages, max_tokens: 6, temperature: 0 }, { timeoutMs: 60000 });
  const turn1 = [{ role: 'system', content: system }, { role: 'user', content: 'What is a cat?' }];
  const a = await ask(turn1);
  assert.equal(a.status, 200, a.text);
  // another question under the same system prompt: the system prompt's tokens are reused
  const b0 = await localBatch();
  const b = await ask([{ role: 'system', content: system }, { role: 'user', content: 'And a dog?' }]);
  assert.equal(b.status, 200, b.text);
  const b1 = await localBatch();
  // a lower bound: without a system message the template writes a (shorter) default one
  const sysTokens = promptTokens('x', system) - promptTokens('x');
  assert.ok(sysTokens > 50, `system prompt tokens: ${sysTokens}`);
  assert.ok(b1.reused_prompt_tokens - b0.reused_prompt_tokens >= sysTokens,
    `reused ${b1.reused_prompt_tokens - b0.reused_prompt_tokens} of a ${sysTokens}-token system prompt`);
  // reported as OpenAI reports cached prompt tokens
  const cached = b.json.usage.prompt_tokens_details?.cached_tokens ?? 0;
  assert.ok(cached >= sysTokens && cached < b.json.usage.prompt_tokens,
    `cached_tokens ${cached} of ${b.json.usage.prompt_tokens}, system prompt ${sysTokens}`);
  // the next turn of the first conversation: its whole first prompt is reused
  const turn2 = [...turn1, { role: 'assistant', content: a.json.choices[0].message.content ?? '' }, { role: 'user', content: 'Why?' }];
  const c = await ask(turn2);
  assert.equal(c.status, 200, c.text);
  const b2 = await localBatch();
  assert.ok(b2.reused_prompt_tokens - b1.reused_prompt_tokens >= a.json.usage.prompt_tokens - 1,
    `reused ${b2.reused_prompt_tokens - b1.reused_prompt_tokens}, the first turn's prompt was ${a.json.usage.prompt_tokens} tokens`);
  // the same answers as computed from nothing: fill every slot's cache with other prompts
  // first, so that nothing of these prompts is left to reuse
  await Promise.all([0, 1, 2, 3].map((i) => ask([{ role: 'user', content: `flush ${i} ${nonce('f')}` }])));
  const b3 = await localBatch();
  const c2 = await ask(turn2);
  const b4 = await localBatch();
  assert.equal(c2.status, 200, c2.text);
  assert.ok(b4.reused_prompt_tokens - b3.reused_prompt_tokens < sysTokens, 'recomputed, not reused');
  assert.equal(c2.json.choices[0].message.content, c.json.choices[0].message.content, 'the same answer');
});

test('a client that leaves mid-generation frees the local model for the next request', async () => {
  const ac = new AbortController();
  const res = await fetch(`${GW}/v1/chat/completions`, {
    method: 'POST', signal: ac.signal, headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
    body: JSON.stringify({ model: MODEL, max_tokens: 4000, seed: 3, stream: true, messages: [{ role: 'user', content: 'Write a very long essay.' }] }),
  });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  await reader.read();
  ac.abort();
  await reader.read().catch(() => {});
  const t0 = performance.now();
  const r = await post(chatBody(MODEL, 'short one', { max_tokens: 2 }), { timeoutMs: 60000 });
  const ms = performance.now() - t0;
  assert.equal(r.status, 200, r.text);
  assert.ok(ms < 1500, `the next request did not wait for 4000 tokens nobody reads: ${ms.toFixed(0)} ms`);
});

test('a healthy remote target is preferred over the local model', async () => {
  const user = `remote first ${nonce('lrf')}`;
  const r = await post(chatBody('chat-local', user));
  assert.equal(r.status, 200, r.text);
  assertGwHeaders(r, { provider: 'openai', model: 'm-local-primary', attempts: 1 });
  assert.equal(r.json.choices[0].message.content, `echo: ${user}`);
});

test('the local model is the fallback of last resort: a 503ing remote target falls back to it', async () => {
  const n = nonce('lfb');
  await control('/control', { provider: 'openai', match: 'm-local-primary', faults: [{ status: 503, count: 2 }] });
  const user = `fall back to me ${n}`;
  const r = await post(chatBody('chat-local', user, { max_tokens: 5 }), { timeoutMs: 60000 });
  assert.equal(r.status, 200, r.text.slice(0, 300));
  assertGwHeaders(r, { provider: 'local', model: NAME, attempts: 3 });
  assert.equal(typeof r.json.choices[0].message.content, 'string');
  checkUsage(r.json.usage, promptTokens(user), 5);
  const log = await control(`/control/log?match=${n}`);
  assert.deepEqual(log.map((e) => e.status), [503, 503], 'the remote target was tried first');
});

test('fallback to the local model, streamed: one clean stream from the local model', async () => {
  const n = nonce('lfbs');
  await control('/control', { provider: 'openai', match: 'm-local-primary', faults: [{ status: 503, count: 2 }] });
  const r = await post(chatBody('chat-local', `stream from local ${n}`, { max_tokens: 5, stream: true }), { timeoutMs: 60000 });
  assert.equal(r.status, 200, r.text.slice(0, 300));
  const log = await control(`/control/log?match=${n}`);
  const why = `fake log: ${JSON.stringify(log.map((e) => [e.body?.model, e.fault, e.status, e.outcome]))}; queued: ${JSON.stringify(await control('/control/faults'))}`;
  assert.equal(r.info.provider, 'local', why);
  assertGwHeaders(r, { provider: 'local', model: NAME });
  const events = r.text.split(/\n\n/).filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
  assert.equal(events[events.length - 1], '[DONE]', 'a clean end');
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
  assert.ok(chunks.every((c) => !c.error), 'no error event');
  assert.equal(chunks.filter((c) => c.choices?.[0]?.delta?.role).length, 1, 'one role chunk');
  assert.equal(chunks.filter((c) => c.choices?.[0]?.finish_reason).length, 1, 'one finish');
});
