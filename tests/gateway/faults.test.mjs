// faults.test.mjs: fallback, retries, timeouts, circuit breaker and streaming failover,
// through smolgate, with faults injected at the fake upstreams (tests/fakes/README.md).
//
// Each fault test uses its own route from tests/e2e/gateway.sh's configuration,
// "f-CASE" -> [openai/m-CASE-primary, backup/m-CASE-backup] (openai and backup are two
// OpenAI-compatible providers on the same fake; retries.max 1, base_ms 20; timeouts
// first_token_ms 1500, idle_ms 1000), and queues its faults at the fake scoped by the
// primary's model name, so that the tests do not take each other's faults or trip each
// other's circuit breakers. A nonce in the prompt finds the request's attempts in the
// fake's log (/control/log); each entry's body.model says which target it was.
//
// What is checked, for each fault at each point: the outcome (same target retried, next
// target, or the error relayed), x-smolgate-provider / -model / -attempts / x-request-id,
// and the attempts the fake received:
//   - 429 + retry-after: waited at least retry-after, same target; retry-after past the
//     route's deadline: fallback at once
//   - 500 / 502 / 503 / 529, reset, slow first byte (> first_token_ms), stalled or cut or
//     malformed body: retry, then the next target
//   - 400 / 401 / 404 / 422, insufficient_quota: no retry, no fallback, the status relayed
//     in OpenAI's error shape
//   - context_length_exceeded: the next target whose context_window is larger
//   - every target failing: a clear error with every attempt counted
//   - streaming: a fault before the first byte -> one clean stream from the backup; a
//     fault after the first chunk -> an explicit error event, never [DONE] (the openai SDK
//     throws APIError while iterating)
//   - circuit breaker: opens after 3 failures (targets skipped, visible in /v1/status and
//     /v1/models), probed after the cooldown, a failed probe doubles the cooldown, a good
//     probe closes it (and /v1/status lists it no more)
//   - per request: "models": [...] and "provider": {order, only, ignore}
// Tests named "[needs anthropic provider]", "[needs google provider]" or "[needs anthropic
// endpoint]" depend on the Anthropic/Gemini codecs being wired into the gateway.

import test from 'node:test';
import assert from 'node:assert/strict';
import {
  GW, KEY, LOG_FILE, post, get, chatBody, sseData, streamText, assertOpenAIError, assertGwHeaders,
  nonce, words, control, fakeLog, loadPackage, sleep,
} from './lib.mjs';
import { readFileSync } from 'node:fs';

const { default: OpenAI, APIError } = await loadPackage('openai');
const sdk = new OpenAI({ baseURL: `${GW}/v1`, apiKey: KEY, maxRetries: 0, timeout: 20000 });

// Queues faults at the fake for requests whose body contains `match`.
const queue = (provider, match, faults) => control('/control', { provider, match, faults });
// The fake's log for one request (by nonce): [{model, status, outcome, time}] in order.
async function attempts(n) {
  const log = await fakeLog({ match: n });
  return log.map((e) => ({
    provider: e.provider,
    model: e.body?.model ?? (/models\/([^/:]+)/.exec(e.path)?.[1]),
    status: e.status,
    outcome: e.outcome,
    time: Date.parse(e.time),
  }));
}
const models = (att) => att.map((a) => a.model);
const statuses = (att) => att.map((a) => a.status);

function assertEcho(res, user) {
  assert.equal(res.status, 200, `status 200, got ${res.status}: ${res.text.slice(0, 300)}`);
  assert.equal(res.json?.choices?.[0]?.message?.content, `echo: ${user}`, 'the answer');
  assert.equal(res.json.usage.prompt_tokens, words(user), 'usage.prompt_tokens');
  assert.equal(res.json.usage.completion_tokens, words(`echo: ${user}`), 'usage.completion_tokens');
}

// A clean OpenAI stream: one role chunk first, the whole text, one finish, [DONE] last,
// every chunk from one completion (same id), no error event.
function assertCleanStream(res, user) {
  assert.equal(res.status, 200, `status 200, got ${res.status}: ${res.text.slice(0, 300)}`);
  assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
  const d = sseData(res.text);
  assert.ok(d.length >= 3, `several events, got ${d.length}`);
  assert.equal(d[d.length - 1], '[DONE]', 'the stream ends with [DONE]');
  assert.equal(d.filter((x) => x === '[DONE]').length, 1, 'one [DONE]');
  const chunks = d.slice(0, -1).map((x) => JSON.parse(x));
  for (const c of chunks) assert.ok(!c.error, `no error event: ${JSON.stringify(c)}`);
  assert.equal(chunks[0].choices[0].delta.role, 'assistant', 'the role chunk comes first');
  assert.equal(chunks.filter((c) => c.choices?.[0]?.delta?.role).length, 1, 'one role chunk: one stream, not two spliced');
  assert.equal(new Set(chunks.map((c) => c.id)).size, 1, 'every chunk from one completion');
  assert.equal(streamText(d), `echo: ${user}`);
  assert.equal(chunks.filter((c) => c.choices?.[0]?.finish_reason).length, 1, 'one finish_reason');
}

// A stream that failed after its first chunk: the first chunk came, then an explicit
// error event, and no [DONE].
function assertErroredStream(res) {
  assert.equal(res.status, 200, 'the head (200) was already out when the fault hit');
  const d = sseData(res.text);
  assert.ok(!d.includes('[DONE]'), `no [DONE] after a failure; got:\n${res.text.slice(-600)}`);
  assert.ok(d.length >= 2, `the first chunk and an error event, got ${d.length} events:\n${res.text}`);
  const first = JSON.parse(d[0]);
  assert.equal(first.choices?.[0]?.delta?.role, 'assistant', 'the first chunk reached the client');
  const last = JSON.parse(d[d.length - 1]);
  assert.ok(last.error && typeof last.error.message === 'string', `the last event is an error event: ${d[d.length - 1]}`);
}

async function sdkStreamThrows(model, user) {
  const stream = await sdk.chat.completions.create({ model, stream: true, messages: [{ role: 'user', content: user }] });
  let chunks = 0;
  await assert.rejects(
    (async () => { for await (const _ of stream) chunks++; })(),
    (e) => { assert.ok(e instanceof APIError, `APIError while iterating, got ${e}`); return true; },
    'the openai SDK throws while iterating (a stream that ends cleanly would not)',
  );
  assert.ok(chunks >= 1, 'the first chunk arrived before the error');
}

// ---------------------------------------------------------------------------------------
// Non-streamed: retry and fallback

test('429 with retry-after: 1 on the primary: waits at least 1 s, retries the same target', async () => {
  const n = nonce('f429');
  await queue('openai', 'm-429-primary', [{ status: 429, retryAfter: 1 }]);
  const user = `rate limited ${n}`;
  const res = await post(chatBody('f-429', user));
  assertEcho(res, user);
  assertGwHeaders(res, { provider: 'openai', model: 'm-429-primary', attempts: 2 });
  assert.ok(res.ms >= 950, `the gateway waited for retry-after (1 s): answered in ${res.ms.toFixed(0)} ms`);
  const att = await attempts(n);
  assert.deepEqual(models(att), ['m-429-primary', 'm-429-primary']);
  assert.deepEqual(statuses(att), [429, 200]);
  assert.ok(att[1].time - att[0].time >= 950, `the retry came ${att[1].time - att[0].time} ms after the 429`);
});

test('429 with retry-after past the route deadline (timeout_ms 5000): falls back at once', async () => {
  const n = nonce('f429l');
  await queue('openai', 'm-429long-primary', [{ status: 429, retryAfter: 30 }]);
  const user = `long wait ${n}`;
  const res = await post(chatBody('f-429long', user));
  assertEcho(res, user);
  assertGwHeaders(res, { provider: 'backup', model: 'm-429long-backup', attempts: 2 });
  assert.ok(res.ms < 3000, `no 30 s wait: answered in ${res.ms.toFixed(0)} ms`);
  const att = await attempts(n);
  assert.deepEqual(models(att), ['m-429long-primary', 'm-429long-backup']);
  assert.deepEqual(statuses(att), [429, 200]);
});

for (const status of [500, 502, 503, 529]) {
  test(`${status} from the primary: retried once (retries.max 1), then the backup answers`, async () => {
    const n = nonce(`f${status}`);
    await queue('openai', `m-${status}-primary`, [{ status, count: 2 }]);
    const user = `server error ${status} ${n}`;
    const res = await post(chatBody(`f-${status}`, user));
    assertEcho(res, user);
    assertGwHeaders(res, { provider: 'backup', model: `m-${status}-backup`, attempts: 3 });
    const att = await attempts(n);
    assert.deepEqual(models(att), [`m-${status}-primary`, `m-${status}-primary`, `m-${status}-backup`]);
    assert.deepEqual(statuses(att), [status, status, 200]);
  });
}

test('connection reset before the first byte: retried on the same target, invisibly', async () => {
  const n = nonce('freset');
  await queue('openai', 'm-reset-primary', ['reset']);
  const user = `reset once ${n}`;
  const res = await post(chatBody('f-reset', user));
  assertEcho(res, user);
  assertGwHeaders(res, { provider: 'openai', model: 'm-reset-primary' });
  const att = await attempts(n);
  assert.deepEqual(models(att), ['m-reset-primary', 'm-reset-primary']);
  assert.deepEqual(statuses(att), [null, 200]);
});

test('connection reset on every attempt of the primary: the backup answers', async () => {
  const n = nonce('freset2');
  // enough resets for every request the gateway (or its HTTP client, which may resend on
  // another pooled connection) makes to the primary
  await queue('openai', 'm-reset2-primary', [{ kind: 'reset', afterChunks: 0, count: 12 }]);
  const user = `reset always ${n}`;
  const res = await post(chatBody('f-reset2', user));
  assertEcho(res, user);
  assertGwHeaders(res, { provider: 'backup', model: 'm-reset2-backup' });
  const att = await attempts(n);
  assert.equal(att[att.length - 1].model, 'm-reset2-backup');
  assert.ok(att.slice(0, -1).every((a) => a.model === 'm-reset2-primary' && a.status === null), JSON.stringify(att));
});

test('attempt accounting: a reset on a pooled connection is an attempt (retries.max 0 -> fallback; x-smolgate-attempts = requests sent)', async () => {
  // flaky has retries.max 0: one request per attempt, so a reset must move to the backup.
  // The warm-up leaves a pooled keep-alive connection to the fake.
  const warm = await post(chatBody('f-acct', `warm up ${nonce('facw')}`));
  assertGwHeaders(warm, { provider: 'flaky', attempts: 1 });
  const n = nonce('facct');
  await queue('openai', 'm-acct-primary', ['reset']);
  const user = `accounting ${n}`;
  const res = await post(chatBody('f-acct', user));
  assertEcho(res, user);
  const att = await attempts(n);
  assert.equal(res.info.attempts, att.length,
    `x-smolgate-attempts (${res.info.attempts}) = requests the providers received: ${JSON.stringify(att.map((a) => [a.model, a.status]))}`);
  assertGwHeaders(res, { provider: 'backup', model: 'm-acct-backup', attempts: 2 });
  assert.deepEqual(models(att), ['m-acct-primary', 'm-acct-backup']);
});

test('slow first byte (3 s > first_token_ms 1500): timeout, then the backup answers', async () => {
  const n = nonce('fslow');
  await queue('openai', 'm-slow-primary', [{ delayMs: 3000, count: 2 }]);
  const user = `slow start ${n}`;
  const res = await post(chatBody('f-slow', user));
  assertEcho(res, user);
  assertGwHeaders(res, { provider: 'backup', model: 'm-slow-backup', attempts: 3 });
  assert.ok(res.ms >= 2 * 1400, `two attempts timed out at ~1.5 s each: ${res.ms.toFixed(0)} ms`);
  assert.ok(res.ms < 2 * 3000, `the gateway did not wait for the slow answers: ${res.ms.toFixed(0)} ms`);
  const att = await attempts(n);
  assert.deepEqual(models(att), ['m-slow-primary', 'm-slow-primary', 'm-slow-backup']);
});

test('non-streamed body stalled after half (idle_ms 1000): timeout, then the backup answers', async () => {
  const n = nonce('fstall');
  await queue('openai', 'm-stall-body-primary', [{ kind: 'stall', afterChunks: 1, count: 2 }]);
  const user = `stalled body ${n}`;
  const res = await post(chatBody('f-stall-body', user));
  assertEcho(res, user);
  assertGwHeaders(res, { provider: 'backup', model: 'm-stall-body-backup', attempts: 3 });
  const att = await attempts(n);
  assert.deepEqual(models(att), ['m-stall-body-primary', 'm-stall-body-primary', 'm-stall-body-backup']);
});

test('non-streamed body cut short (FIN before content-length): retried, then the backup answers', async () => {
  const n = nonce('fclose');
  await queue('openai', 'm-close-body-primary', [{ kind: 'close_mid_body', afterChunks: 1, count: 2 }]);
  const user = `cut body ${n}`;
  const res = await post(chatBody('f-close-body', user));
  assertEcho(res, user);
  assertGwHeaders(res, { provider: 'backup', model: 'm-close-body-backup', attempts: 3 });
});

test('non-streamed 200 with malformed JSON: retried, then the backup answers', async () => {
  const n = nonce('fmal');
  await queue('openai', 'm-malformed-body-primary', [{ kind: 'malformed', afterChunks: 1, count: 2 }]);
  const user = `bad json ${n}`;
  const res = await post(chatBody('f-malformed-body', user));
  assertEcho(res, user);
  assertGwHeaders(res, { provider: 'backup', model: 'm-malformed-body-backup', attempts: 3 });
  const att = await attempts(n);
  assert.deepEqual(models(att), ['m-malformed-body-primary', 'm-malformed-body-primary', 'm-malformed-body-backup']);
});

for (const status of [400, 401, 404, 422]) {
  test(`${status} from the primary: no retry, no fallback, relayed as ${status} in OpenAI's error shape`, async () => {
    const n = nonce(`f${status}`);
    await queue('openai', `m-${status}-primary`, [{ status }]);
    const res = await post(chatBody(`f-${status}`, `client error ${n}`));
    assert.equal(res.status, status, `relayed status: ${res.text.slice(0, 300)}`);
    assertOpenAIError(res.json);
    assertGwHeaders(res, { provider: 'openai', model: `m-${status}-primary`, attempts: 1 });
    const att = await attempts(n);
    assert.deepEqual(models(att), [`m-${status}-primary`], 'one attempt, the backup never called');
  });
}

test('insufficient_quota (429) from the primary: no retry, no fallback, relayed', async () => {
  const n = nonce('fquota');
  await queue('openai', 'm-quota-primary', ['insufficient_quota']);
  const res = await post(chatBody('f-quota', `no money ${n}`));
  assert.equal(res.status, 429, res.text.slice(0, 300));
  assertOpenAIError(res.json, { code: 'insufficient_quota' });
  assertGwHeaders(res, { provider: 'openai', model: 'm-quota-primary', attempts: 1 });
  const att = await attempts(n);
  assert.deepEqual(models(att), ['m-quota-primary']);
});

test('context_length_exceeded: skips the target with the same window, the larger window answers', async () => {
  const n = nonce('fctx');
  await queue('openai', 'm-ctx-small', ['context_length_exceeded']);
  const user = `a very long prompt ${n}`;
  const res = await post(chatBody('ctx', user));
  assertEcho(res, user);
  assertGwHeaders(res, { provider: 'backup', model: 'm-ctx-large', attempts: 2 });
  const att = await attempts(n);
  assert.deepEqual(models(att), ['m-ctx-small', 'm-ctx-large'], 'm-ctx-mid (window 1000, same as the failed one) is skipped');
  assert.deepEqual(statuses(att), [400, 200]);
});

test('every target fails (503): a clear 5xx error in OpenAI shape, every attempt counted', async () => {
  const n = nonce('fall');
  await queue('openai', 'm-all-', [{ status: 503, count: 4 }]);
  const res = await post(chatBody('f-all', `nothing works ${n}`));
  assert.ok(res.status === 503 || res.status === 502, `5xx, got ${res.status}: ${res.text.slice(0, 300)}`);
  assertOpenAIError(res.json);
  assertGwHeaders(res, { attempts: 4 });
  const att = await attempts(n);
  assert.deepEqual(models(att), ['m-all-primary', 'm-all-primary', 'm-all-backup', 'm-all-backup']);
});

test('route timeout_ms 2000: the whole request ends by its deadline with a clear error, whatever the retries', async () => {
  const n = nonce('fdl');
  await queue('openai', 'm-deadline-', [{ delayMs: 5000, count: 4 }]);
  const res = await post(chatBody('f-deadline', `deadline ${n}`));
  assert.ok(res.status === 504 || res.status === 502 || res.status === 503, `a 5xx error: ${res.status} ${res.text.slice(0, 300)}`);
  assertOpenAIError(res.json);
  assert.ok(res.ms >= 1400 && res.ms < 2700, `ended near the 2 s deadline: ${res.ms.toFixed(0)} ms`);
  assertGwHeaders(res);
});

test('route retry_budget 1: one retry in all, then each target once', async () => {
  const n = nonce('fbud');
  await queue('openai', 'm-budget-', [{ status: 503, count: 6 }]);
  const res = await post(chatBody('f-budget', `budget ${n}`));
  assert.equal(res.status, 503, res.text.slice(0, 300));
  assertOpenAIError(res.json);
  assertGwHeaders(res, { attempts: 4 });
  assert.deepEqual(models(await attempts(n)), ['m-budget-a', 'm-budget-a', 'm-budget-b', 'm-budget-c']);
});

test('weights: a weight-0 target is only a fallback; two weight-1 targets share the first attempts', async () => {
  const first = { w0: new Map(), w11: new Map() };
  for (let i = 0; i < 30; i++) {
    for (const r of ['w0', 'w11']) {
      const res = await post(chatBody(`f-${r}`, `weights ${i}`));
      assert.equal(res.status, 200);
      first[r].set(res.info.provider, (first[r].get(res.info.provider) ?? 0) + 1);
    }
  }
  assert.deepEqual([...first.w0.keys()], ['openai'], `weight 0 never first: ${JSON.stringify([...first.w0])}`);
  assert.ok((first.w11.get('openai') ?? 0) >= 5 && (first.w11.get('backup') ?? 0) >= 5, `1:1 split: ${JSON.stringify([...first.w11])}`);
});

// ---------------------------------------------------------------------------------------
// Streaming: before the first byte, failover is invisible; after it, an explicit error.

test('stream: reset before the first byte on every primary attempt -> one clean stream from the backup', async () => {
  const n = nonce('fsreset');
  await queue('openai', 'm-s-reset-primary', [{ kind: 'reset', afterChunks: 0, count: 12 }]);
  const user = `stream after reset ${n}`;
  const res = await post(chatBody('f-s-reset', user, { stream: true }));
  assertCleanStream(res, user);
  assertGwHeaders(res, { provider: 'backup', model: 'm-s-reset-backup' });
});

test('stream: 503 before the first byte -> one clean stream from the backup', async () => {
  const n = nonce('fs503');
  await queue('openai', 'm-s-503-primary', [{ status: 503, count: 2 }]);
  const user = `stream after 503 ${n}`;
  const res = await post(chatBody('f-s-503', user, { stream: true, stream_options: { include_usage: true } }));
  assertGwHeaders(res, { provider: 'backup', model: 'm-s-503-backup', attempts: 3 });
  const d = sseData(res.text);
  const usage = JSON.parse(d[d.length - 2]).usage;
  assert.ok(usage, 'the usage chunk (include_usage)');
  assert.equal(usage.prompt_tokens, words(user));
  // the usage chunk has no choices; check the rest as a clean stream
  assertCleanStream({ ...res, text: d.filter((x, i) => i !== d.length - 2).map((x) => `data: ${x}\n\n`).join('') }, user);
});

test('stream: slow first byte (3 s > first_token_ms) -> timeout, one clean stream from the backup', async () => {
  const n = nonce('fsslow');
  await queue('openai', 'm-s-slow-primary', [{ delayMs: 3000, count: 2 }]);
  const user = `stream slow start ${n}`;
  const res = await post(chatBody('f-s-slow', user, { stream: true }));
  assertCleanStream(res, user);
  assertGwHeaders(res, { provider: 'backup', model: 'm-s-slow-backup', attempts: 3 });
});

test('stream: malformed very first chunk -> nothing reached the client, one clean stream from the backup', async () => {
  const n = nonce('fsmal0');
  await queue('openai', 'm-s-malformed0-primary', [{ kind: 'malformed', afterChunks: 0, count: 2 }]);
  const user = `stream bad first ${n}`;
  const res = await post(chatBody('f-s-malformed0', user, { stream: true }));
  assertCleanStream(res, user);
  assertGwHeaders(res, { provider: 'backup', model: 'm-s-malformed0-backup', attempts: 3 });
});

const AFTER = [
  ['s-after-reset', 'reset after the first chunk', { kind: 'reset', afterChunks: 1 }],
  ['s-after-stall', 'stall after 2 chunks past idle_ms', { kind: 'stall', afterChunks: 2 }],
  ['s-after-malformed', 'malformed chunk after the first', { kind: 'malformed', afterChunks: 1 }],
  ['s-after-error', 'in-stream provider error after the first chunk', { kind: 'error_event', afterChunks: 1 }],
  ['s-after-truncate', 'clean end without [DONE] after 2 chunks', { kind: 'close_mid_body', afterChunks: 2 }],
];
for (const [c, what, fault] of AFTER) {
  test(`stream: ${what} -> an explicit error event, never [DONE]; no failover after the first byte`, async () => {
    const n = nonce('fsa');
    await queue('openai', `m-${c}-primary`, [fault]);
    const user = `stream fails late ${n} with more words here`;
    const res = await post(chatBody(`f-${c}`, user, { stream: true }));
    assertErroredStream(res);
    assertGwHeaders(res, { provider: 'openai', model: `m-${c}-primary`, attempts: 1 });
    if (fault.kind === 'stall') assert.ok(res.ms >= 900, `the stall was cut by idle_ms (1000): ${res.ms.toFixed(0)} ms`);
    const att = await attempts(n);
    assert.deepEqual(models(att), [`m-${c}-primary`], 'no second attempt once the client saw a byte');
  });
  test(`stream: ${what} -> the openai SDK throws APIError while iterating`, async () => {
    const n = nonce('fsas');
    await queue('openai', `m-${c}-primary`, [fault]);
    await sdkStreamThrows(`f-${c}`, `stream fails late ${n} with more words here`);
  });
}

// ---------------------------------------------------------------------------------------
// Circuit breaker: flaky (retries.max 0) -> backup; failures 3, cooldown 2000 ms.

async function breaker(target) {
  const s = await get('/v1/status');
  assert.equal(s.status, 200, `/v1/status: ${s.status} ${s.text}`);
  assert.ok(Array.isArray(s.json?.targets), `/v1/status lists targets: ${s.text}`);
  return s.json.targets.find((t) => t.target === target) ?? null;
}

test('circuit breaker: opens after 3 failures, the target is skipped, shown in cooldown, probed after it', async () => {
  const t = 'flaky/m-cb-primary';
  await queue('openai', 'm-cb-primary', [{ status: 503, count: 3 }]);
  for (let i = 0; i < 3; i++) {
    const n = nonce('fcb');
    const res = await post(chatBody('cb', `breaker ${n}`));
    assert.equal(res.status, 200, res.text);
    assertGwHeaders(res, { provider: 'backup', model: 'm-cb-backup', attempts: 2 });
    assert.deepEqual(models(await attempts(n)), ['m-cb-primary', 'm-cb-backup']);
  }
  const b = await breaker(t);
  assert.ok(b, `${t} in /v1/status`);
  assert.equal(b.state, 'open', `after 3 failures: ${JSON.stringify(b)}`);
  const st = await get('/v1/status');
  assert.ok(st.json.breakers.open >= 1 && st.json.breakers.entries >= st.json.breakers.open, `breakers: ${st.text}`);
  assert.ok(st.json.targets.length <= 100, 'the list is bounded');
  assert.ok(st.json.targets.every((x) => x.state !== 'closed' || x.failures > 0), `only open or failing targets: ${st.text}`);
  assert.equal(st.json.ledger.lost, 0, `no ledger record lost: ${st.text}`);
  assert.ok(b.cooldown_ms > 0 && b.cooldown_ms <= 2000, `cooldown_ms: ${b.cooldown_ms}`);
  const m = await get('/v1/models');
  const route = m.json.data.find((x) => x.id === 'cb');
  assert.ok(route, '/v1/models lists the route cb');
  const tm = route.targets?.find((x) => x.provider === 'flaky');
  assert.ok(tm && tm.cooldown_ms > 0, `/v1/models shows the cooldown: ${JSON.stringify(route)}`);

  const before = (await fakeLog({ match: 'm-cb-primary' })).length;
  for (let i = 0; i < 2; i++) {
    const n = nonce('fcbo');
    const res = await post(chatBody('cb', `breaker open ${n}`));
    assert.equal(res.status, 200, res.text);
    assertGwHeaders(res, { provider: 'backup', model: 'm-cb-backup', attempts: 1 });
  }
  assert.equal((await fakeLog({ match: 'm-cb-primary' })).length, before, 'no request reached the target in cooldown');

  await sleep(2100);   // the cooldown passes
  const n = nonce('fcbp');
  const res = await post(chatBody('cb', `breaker probe ${n}`));
  assert.equal(res.status, 200, res.text);
  assertGwHeaders(res, { provider: 'flaky', model: 'm-cb-primary', attempts: 1 });
  assert.deepEqual(models(await attempts(n)), ['m-cb-primary'], 'the probe reached the target again');
  const after = await breaker(t);   // closed and clean: no longer listed
  assert.ok(!after || after.state === 'closed', `a good probe closes it: ${JSON.stringify(after)}`);
  assert.ok(!(await breaker(t)), `a closed breaker without failures is not listed: ${JSON.stringify(after)}`);
});

test('circuit breaker: a failed probe doubles the cooldown', async () => {
  const t = 'flaky/m-cb-primary';
  await queue('openai', 'm-cb-primary', [{ status: 503, count: 4 }]);
  for (let i = 0; i < 3; i++) {
    const res = await post(chatBody('cb', `breaker again ${nonce('fcb2')}`));
    assertGwHeaders(res, { provider: 'backup' });
  }
  assert.equal((await breaker(t)).state, 'open');
  await sleep(2100);
  const n = nonce('fcb2p');
  const res = await post(chatBody('cb', `failed probe ${n}`));
  assert.equal(res.status, 200, res.text);
  assertGwHeaders(res, { provider: 'backup', attempts: 2 });
  assert.deepEqual(models(await attempts(n)), ['m-cb-primary', 'm-cb-backup'], 'the probe went to the target and failed');
  const b = await breaker(t);
  assert.equal(b.state, 'open', JSON.stringify(b));
  assert.ok(b.cooldown_ms > 2000 && b.cooldown_ms <= 4000, `the cooldown doubled to ~4000 ms: ${b.cooldown_ms}`);
});

test('circuit breaker: client errors (400) do not open it', async () => {
  await queue('openai', 'm-cb400-primary', [{ status: 400, count: 4 }]);
  for (let i = 0; i < 4; i++) {
    const res = await post(chatBody('f-cb400', `bad request ${nonce('fcb4')}`));
    assert.equal(res.status, 400);
  }
  const b = await breaker('openai/m-cb400-primary');
  assert.ok(!b || b.state === 'closed', `still closed after 4 client errors: ${JSON.stringify(b)}`);
  const res = await post(chatBody('f-cb400', `fine now ${nonce('fcb4')}`));
  assertGwHeaders(res, { provider: 'openai', attempts: 1 });
});

// ---------------------------------------------------------------------------------------
// Per-request fallback list and provider preferences

test('per request "models": [failing, backup] falls back along the list', async () => {
  const n = nonce('fmods');
  await queue('openai', 'm-req-models-primary', [{ status: 503, count: 2 }]);
  const user = `my own list ${n}`;
  const res = await post({ ...chatBody('openai/m-req-models-primary', user), models: ['openai/m-req-models-primary', 'backup/m-req-models-backup'] });
  assertEcho(res, user);
  assertGwHeaders(res, { provider: 'backup', model: 'm-req-models-backup', attempts: 3 });
  assert.deepEqual(models(await attempts(n)), ['m-req-models-primary', 'm-req-models-primary', 'm-req-models-backup']);
  for (const e of await fakeLog({ match: n })) {
    assert.ok(!('models' in e.body) && !('provider' in e.body), `the gateway's own fields are not sent upstream: ${JSON.stringify(e.body)}`);
  }
});

test('per request "models" with an unknown first id: 404 model_not_found naming it', async () => {
  const res = await post({ ...chatBody('chat', 'x'), models: ['nosuchprovider/x', 'backup/gpt-4o-mini'] });
  assert.equal(res.status, 404, res.text);
  assertOpenAIError(res.json, { code: 'model_not_found' });
  assert.match(res.json.error.message, /nosuchprovider/);
});

test('provider.order: the listed provider goes first', async () => {
  const n = nonce('ford');
  const user = `order ${n}`;
  const res = await post({ ...chatBody('f-order', user), provider: { order: ['backup', 'openai'] } });
  assertEcho(res, user);
  assertGwHeaders(res, { provider: 'backup', model: 'm-order-backup', attempts: 1 });
  assert.deepEqual(models(await attempts(n)), ['m-order-backup']);
});

test('provider.only: other providers are never tried, even when the only one fails', async () => {
  const n = nonce('fonly');
  await queue('openai', 'm-only-backup', [{ status: 503, count: 2 }]);
  const res = await post({ ...chatBody('f-only', `only ${n}`), provider: { only: ['backup'] } });
  assert.equal(res.status, 503, res.text);
  assertOpenAIError(res.json);
  assertGwHeaders(res, { provider: 'backup', attempts: 2 });
  assert.deepEqual(models(await attempts(n)), ['m-only-backup', 'm-only-backup'], 'openai was not tried');
});

test('provider.ignore: the ignored provider is skipped', async () => {
  const n = nonce('fign');
  const user = `ignore ${n}`;
  const res = await post({ ...chatBody('f-ignore', user), provider: { ignore: ['openai'] } });
  assertEcho(res, user);
  assertGwHeaders(res, { provider: 'backup', model: 'm-ignore-backup', attempts: 1 });
  assert.deepEqual(models(await attempts(n)), ['m-ignore-backup']);
});

test('provider.only naming no target of the route: a 400 in OpenAI shape, nothing sent upstream', async () => {
  const n = nonce('fnone');
  const res = await post({ ...chatBody('f-only', `nobody ${n}`), provider: { only: ['nobody'] } });
  assert.equal(res.status, 400, res.text);
  assertOpenAIError(res.json);
  assert.equal((await attempts(n)).length, 0);
});

// ---------------------------------------------------------------------------------------
// Headers on every response, and the request id in the log

test('every proxied response has x-request-id (unique, logged), x-smolgate-provider, -model, -attempts', async () => {
  const n = nonce('fhdr');
  await queue('openai', 'm-hdr-primary', [{ status: 400 }]);
  const rs = [];
  rs.push(await post(chatBody('f-hdr', `relayed error ${n}`)));                       // relayed 400
  rs.push(await post(chatBody('f-hdr', `ok ${n}`)));                                  // 200
  rs.push(await post(chatBody('f-hdr', `ok stream ${n}`, { stream: true })));        // 200 stream
  rs.push(await post(chatBody('gpt-4o-mini', `direct ${n}`)));                        // direct model id
  assert.deepEqual(rs.map((r) => r.status), [400, 200, 200, 200]);
  for (const r of rs) assertGwHeaders(r);
  assert.deepEqual(rs.map((r) => r.info.provider), ['openai', 'openai', 'openai', 'openai']);
  const ids = rs.map((r) => r.info.requestId);
  assert.equal(new Set(ids).size, ids.length, `unique request ids: ${ids}`);
  if (LOG_FILE) {
    await sleep(100);
    const log = readFileSync(LOG_FILE, 'utf8');
    for (const id of ids) assert.match(log, new RegExp(`id=${id}\\b`), `request ${id} is in the gateway log`);
    // the whole line of the 200: every field, in order
    const line = log.split('\n').find((l) => l.includes(`request id=${ids[1]} `));
    assert.match(line ?? '', new RegExp(`^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}\\.\\d{3}Z INFO request id=${ids[1]} ` +
      'model=f-hdr route=f-hdr provider=openai upstream_model=m-hdr-primary attempts=1 status=200 ms=\\d+ ' +
      'input=-?\\d+ cache_read=-?\\d+ output=-?\\d+ cost=(unpriced|\\d+\\.\\d{6})$'), line);
  }
  const bad = await post(chatBody('no-such-model-anywhere', 'x'));
  assert.equal(bad.status, 404);
  assert.match(bad.info.requestId ?? '', /\S/, 'x-request-id on an error before any attempt');
  assert.equal(bad.info.attempts, 0, 'x-smolgate-attempts: 0 when nothing was tried');
});

// ---------------------------------------------------------------------------------------
// Providers being integrated: Anthropic and Gemini upstreams, the Anthropic endpoint.

test('[needs anthropic provider] route ending in anthropic: 503 on the OpenAI primary, Anthropic answers in OpenAI format', async () => {
  const n = nonce('ftoa');
  await queue('openai', 'm-toanth-primary', [{ status: 503, count: 2 }]);
  const user = `to anthropic ${n}`;
  const res = await post(chatBody('to-anthropic', user));
  assertEcho(res, user);
  assertGwHeaders(res, { provider: 'anthropic', model: 'claude-haiku-4-5', attempts: 3 });
  const att = await attempts(n);
  assert.deepEqual(att.map((a) => a.provider), ['openai', 'openai', 'anthropic']);
});

test('[needs anthropic provider] route ending in anthropic, streamed: one clean OpenAI stream from Anthropic', async () => {
  const n = nonce('ftoas');
  await queue('openai', 'm-toanths-primary', [{ status: 503, count: 2 }]);
  const user = `to anthropic streamed ${n}`;
  const res = await post(chatBody('to-anthropic-s', user, { stream: true }));
  assertCleanStream(res, user);
  assertGwHeaders(res, { provider: 'anthropic', attempts: 3 });
});

test('[needs anthropic provider] 529 overloaded_error from Anthropic: falls back to the backup', async () => {
  const n = nonce('fa529');
  await queue('anthropic', 'claude-529-primary', [{ status: 529, count: 2 }]);
  const user = `overloaded ${n}`;
  const res = await post(chatBody('anth-529', user));
  assertEcho(res, user);
  assertGwHeaders(res, { provider: 'backup', model: 'm-anth529-backup' });
  const att = await attempts(n);
  assert.ok(att.length >= 2, JSON.stringify(att));
  assert.ok(att.slice(0, -1).every((a) => a.provider === 'anthropic' && a.status === 529), JSON.stringify(att));
  assert.equal(res.info.attempts, att.length, 'x-smolgate-attempts counts every attempt');
});

test('[needs anthropic provider] Anthropic "credit balance is too low" (quota): no fallback, relayed', async () => {
  const n = nonce('faq');
  await queue('anthropic', 'claude-quota-primary', ['insufficient_quota']);
  const res = await post(chatBody('anth-quota', `no credit ${n}`));
  assert.equal(res.status, 400, res.text);
  assertOpenAIError(res.json);
  assert.match(res.json.error.message, /credit balance/i);
  assertGwHeaders(res, { provider: 'anthropic', attempts: 1 });
  assert.deepEqual((await attempts(n)).map((a) => a.provider), ['anthropic']);
});

test('[needs anthropic provider] Anthropic 429 with retry-after 1: waits, retries Anthropic', async () => {
  const n = nonce('fa429');
  await queue('anthropic', 'claude-429-primary', [{ status: 429, retryAfter: 1 }]);
  const user = `anthropic busy ${n}`;
  const res = await post(chatBody('anth-429', user));
  assertEcho(res, user);
  assertGwHeaders(res, { provider: 'anthropic', attempts: 2 });
  assert.ok(res.ms >= 950, `waited for retry-after: ${res.ms.toFixed(0)} ms`);
});

test('[needs anthropic provider] stream: Anthropic 529 before the first byte -> one clean OpenAI stream from the backup', async () => {
  const n = nonce('fas');
  await queue('anthropic', 'claude-s-primary', [{ status: 529, count: 2 }]);
  const user = `anthropic stream fails early ${n}`;
  const res = await post(chatBody('anth-s', user, { stream: true }));
  assertCleanStream(res, user);
  assertGwHeaders(res, { provider: 'backup', model: 'm-anths-backup' });
});

for (const [what, fault] of [['an overloaded_error event', { kind: 'error_event', afterChunks: 4 }], ['a reset', { kind: 'reset', afterChunks: 4 }],
  ['a clean end without message_stop', { kind: 'close_mid_body', afterChunks: 4 }]]) {
  test(`[needs anthropic provider] stream: ${what} after text went out -> an explicit error event, never [DONE]`, async () => {
    const n = nonce('fasl');
    await queue('anthropic', 'claude-slate-primary', [fault]);
    const res = await post(chatBody('anth-s-late', `anthropic late ${n} one two three four five`, { stream: true }));
    assertErroredStream(res);
    assertGwHeaders(res, { provider: 'anthropic', attempts: 1 });
    assert.match(streamText(sseData(res.text).slice(0, -1)), /^echo:/, 'text came before the error');
  });
}

test('[needs google provider] stream: Gemini 503 before the first byte -> one clean OpenAI stream from the backup', async () => {
  const n = nonce('fgs');
  await queue('gemini', 'gemini-s-primary', [{ status: 503, count: 2 }]);
  const user = `gemini stream fails early ${n}`;
  const res = await post(chatBody('google-s', user, { stream: true }));
  assertCleanStream(res, user);
  assertGwHeaders(res, { provider: 'backup', model: 'm-gs-backup' });
});

for (const [what, fault] of [['an in-stream error', { kind: 'error_event', afterChunks: 1 }], ['a reset', { kind: 'reset', afterChunks: 1 }],
  ['a clean end without finishReason', { kind: 'close_mid_body', afterChunks: 1 }]]) {
  test(`[needs google provider] stream: ${what} after text went out -> an explicit error event, never [DONE]`, async () => {
    const n = nonce('fgsl');
    await queue('gemini', 'gemini-slate-primary', [fault]);
    const res = await post(chatBody('google-s-late', `gemini late ${n} one two three four five`, { stream: true }));
    assertErroredStream(res);
    assertGwHeaders(res, { provider: 'google', attempts: 1 });
    assert.match(streamText(sseData(res.text).slice(0, -1)), /^echo:/, 'text came before the error');
  });
}

test('[needs google provider] route ending in google: 503 on the OpenAI primary, Gemini answers in OpenAI format', async () => {
  const n = nonce('ftog');
  await queue('openai', 'm-togoogle-primary', [{ status: 503, count: 2 }]);
  const user = `to gemini ${n}`;
  const res = await post(chatBody('to-google', user));
  assertEcho(res, user);
  assertGwHeaders(res, { provider: 'google', model: 'gemini-2.5-flash', attempts: 3 });
});

test('[needs google provider] Gemini 503 UNAVAILABLE: retried, then the backup answers', async () => {
  const n = nonce('fg503');
  await queue('gemini', 'gemini-503-primary', [{ status: 503, count: 2 }]);
  const user = `gemini down ${n}`;
  const res = await post(chatBody('google-503', user));
  assertEcho(res, user);
  assertGwHeaders(res, { provider: 'backup', model: 'm-g503-backup', attempts: 3 });
});

test('[needs google provider] Gemini RESOURCE_EXHAUSTED with RetryInfo 1s: waits, retries Gemini', async () => {
  const n = nonce('fg429');
  await queue('gemini', 'gemini-429-primary', [{ status: 429, retryAfter: 1 }]);
  const user = `gemini busy ${n}`;
  const res = await post(chatBody('google-429', user));
  assertEcho(res, user);
  assertGwHeaders(res, { provider: 'google', attempts: 2 });
  assert.ok(res.ms >= 950, `waited for retryDelay 1s: ${res.ms.toFixed(0)} ms`);
});

test('[needs anthropic provider] bare claude-* and anthropic/ ids reach Anthropic; tools come back as OpenAI tool_calls', async () => {
  const n = nonce('fat');
  const user = `hello ${n}`;
  for (const model of ['claude-haiku-4-5', 'anthropic/claude-haiku-4-5']) {
    const res = await post(chatBody(model, user));
    assertEcho(res, user);
    assertGwHeaders(res, { provider: 'anthropic', model: 'claude-haiku-4-5', attempts: 1 });
  }
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
  const r = await sdk.chat.completions.create({ model: 'anthropic/claude-haiku-4-5', tools, messages: [{ role: 'system', content: n }, { role: 'user', content: 'call:get_weather {"city":"Rome"}' }] });
  assert.equal(r.choices[0].finish_reason, 'tool_calls');
  assert.equal(r.choices[0].message.tool_calls[0].function.name, 'get_weather');
  assert.deepEqual(JSON.parse(r.choices[0].message.tool_calls[0].function.arguments), { city: 'Rome' });
});

test('[needs google provider] bare gemini-* and google/ ids reach Gemini, streamed and not, with usage', async () => {
  const n = nonce('fgt');
  const user = `hello gemini ${n} again`;
  for (const model of ['gemini-2.5-flash', 'google/gemini-2.5-flash']) {
    const res = await post(chatBody(model, user));
    assertEcho(res, user);
    assertGwHeaders(res, { provider: 'google', model: 'gemini-2.5-flash', attempts: 1 });
  }
  const res = await post(chatBody('google/gemini-2.5-flash', user, { stream: true, stream_options: { include_usage: true } }));
  assert.equal(res.status, 200);
  const d = sseData(res.text);
  assert.equal(d[d.length - 1], '[DONE]');
  assert.equal(streamText(d), `echo: ${user}`);
  const u = JSON.parse(d[d.length - 2]).usage;
  assert.equal(u.prompt_tokens, words(user));
  assert.equal(u.completion_tokens, words(`echo: ${user}`));
});

test('[needs anthropic endpoint] /v1/messages: 503 on the primary falls back invisibly (Anthropic SDK)', async () => {
  const { default: Anthropic } = await loadPackage('@anthropic-ai/sdk');
  const client = new Anthropic({ baseURL: GW, apiKey: KEY, maxRetries: 0, timeout: 20000 });
  const n = nonce('fam');
  await queue('openai', 'm-a-503-primary', [{ status: 503, count: 2 }]);
  const user = `anthropic client ${n}`;
  const { data: m, response } = await client.messages.create({ model: 'f-a-503', max_tokens: 64, messages: [{ role: 'user', content: user }] }).withResponse();
  assert.equal(m.content[0].text, `echo: ${user}`);
  assert.equal(response.headers.get('x-smolgate-provider'), 'backup');
  assert.equal(response.headers.get('x-smolgate-attempts'), '3');
});

test('[needs anthropic endpoint] /v1/messages streamed: a reset after text went out ends in an Anthropic error event (the SDK throws)', async () => {
  const { default: Anthropic, APIError: AnthropicAPIError } = await loadPackage('@anthropic-ai/sdk');
  const client = new Anthropic({ baseURL: GW, apiKey: KEY, maxRetries: 0, timeout: 20000 });
  const n = nonce('fams');
  // OpenAI upstream chunks: role, "echo:", " late", ...; after 3 the client has text.
  await queue('openai', 'm-a-after-reset-primary', [{ kind: 'reset', afterChunks: 3 }]);
  const stream = client.messages.stream({ model: 'f-a-after-reset', max_tokens: 64, messages: [{ role: 'user', content: `late failure ${n} more words` }] });
  let text = '';
  stream.on('text', (t) => { text += t; });
  await assert.rejects(stream.finalMessage(), (e) => {
    assert.ok(e instanceof AnthropicAPIError, `APIError, got ${e}`);
    return true;
  });
  assert.ok(text.startsWith('echo:'), `text reached the client before the error: ${JSON.stringify(text)}`);
  const raw = await post({ model: 'f-a-after-reset', max_tokens: 64, stream: true, messages: [{ role: 'user', content: `late again ${nonce('famr')} more words` }] },
    { path: '/v1/messages', headers: { 'anthropic-version': '2023-06-01' } });
  assert.equal(raw.status, 200);   // no fault queued for this one: a clean Anthropic stream
  assert.match(raw.text, /event: message_stop/);
});
