// routing.test.mjs: what the gateway sends upstream and to whom, through smolgate and the
// fakes (tests/e2e/gateway.sh's configuration):
//   - each provider's own key goes upstream (checked by the fake's apiKey rule), with the
//     provider's extra headers; the client's gateway key and its other headers (such as the
//     fakes' x-fake-fault) are not forwarded
//   - the gateway's own request fields ("models", "provider") are not sent upstream
//   - stream_options.include_usage: the usage chunk reaches only clients that asked for it
//   - a long answer (20 000 words) passes through intact, streamed and not
//   - gateway keys: a key given as sha256 works; a key limited to routes [chat] may use
//     that route and nothing else (refused before any upstream call)
//   - provider account limits: a target whose provider is at its rpm is skipped without a
//     request (the next target answers; the ledger records a "limited" attempt); with no
//     target left the client gets 429 with retry-after and nothing goes upstream; the same
//     for one model's limits at a provider (models: limits)
//   - usage nobody reported (an OpenAI-compatible server without usage, streamed and not):
//     the ledger record is estimated, with plausible token counts and a cost

import test from 'node:test';
import assert from 'node:assert/strict';
import { post, get, sleep, chatBody, sseData, streamText, assertOpenAIError, assertGwHeaders, nonce, words, control, fakeLog } from './lib.mjs';

test('each provider\'s own key and headers go upstream; the gateway key does not', async () => {
  const n = nonce('rkey');
  // the fake accepts only these keys for this nonce's requests
  await control('/control', { provider: 'openai', match: `${n}-a`, apiKey: 'sk-fake-openai-dummy' });
  await control('/control', { provider: 'openai', match: `${n}-b`, apiKey: 'sk-fake-backup-dummy' });
  const a = await post(chatBody('chat', `keys ${n}-a`));
  assert.equal(a.status, 200, `openai's key reached the fake: ${a.text.slice(0, 200)}`);
  assertGwHeaders(a, { provider: 'openai' });
  const b = await post({ ...chatBody('chat', `keys ${n}-b`), provider: { only: ['backup'] } });
  assert.equal(b.status, 200, `backup's key reached the fake: ${b.text.slice(0, 200)}`);
  const log = await fakeLog({ match: n });
  assert.equal(log.length, 2);
  for (const e of log) {
    assert.equal(e.auth.present, true);
    assert.equal(e.auth.valid, true, 'the provider key, not the gateway key');
  }
  assert.equal(log[1].headers['x-test-provider'], 'backup', 'the provider\'s configured header');
  assert.equal(log[0].headers['x-test-provider'], undefined);
});

test('client headers are not forwarded upstream (x-fake-fault, cookies)', async () => {
  const n = nonce('rhdr');
  const user = `headers ${n}`;
  const r = await post(chatBody('chat', user), { headers: { 'x-fake-fault': '500', cookie: 'session=secret', 'x-fake-reply': 'injected' } });
  assert.equal(r.status, 200, r.text.slice(0, 200));
  assert.equal(r.json.choices[0].message.content, `echo: ${user}`);
  const [e] = await fakeLog({ match: n });
  assert.equal(e.headers['x-fake-fault'], undefined);
  assert.equal(e.headers.cookie, undefined);
});

test('the gateway\'s own fields ("models", "provider") are not sent upstream', async () => {
  const n = nonce('rown');
  const r = await post({ ...chatBody('chat', `own fields ${n}`), models: ['chat'], provider: { order: ['openai'] } });
  assert.equal(r.status, 200, r.text.slice(0, 200));
  const [e] = await fakeLog({ match: n });
  assert.ok(!('models' in e.body) && !('provider' in e.body), JSON.stringify(e.body));
  assert.equal(e.body.model, 'gpt-4o-mini', 'the upstream model name, not the route name');
});

test('streamed without include_usage: no usage chunk reaches the client; with it: exactly one, last', async () => {
  const user = `usage or not ${nonce('ruse')}`;
  const plain = await post(chatBody('chat', user, { stream: true }));
  const d = sseData(plain.text);
  assert.equal(d[d.length - 1], '[DONE]');
  for (const x of d.slice(0, -1)) {
    const c = JSON.parse(x);
    assert.ok(c.choices.length > 0, `no choices-less (usage) chunk: ${x}`);
    assert.ok(c.usage == null, `no usage: ${x}`);
  }
  assert.equal(streamText(d), `echo: ${user}`);
  const withUsage = await post(chatBody('chat', user, { stream: true, stream_options: { include_usage: true } }));
  const d2 = sseData(withUsage.text).slice(0, -1).map((x) => JSON.parse(x));
  const usage = d2.filter((c) => c.usage);
  assert.equal(usage.length, 1);
  assert.equal(usage[0], d2[d2.length - 1]);
  assert.equal(usage[0].usage.prompt_tokens, words(user));
});

test('a 20 000-word answer passes through intact, streamed and not', async () => {
  const n = nonce('rbig');
  const reply = Array.from({ length: 20000 }, (_, i) => `w${i}`).join(' ');
  await control('/control', { provider: 'openai', match: n, reply });
  const r = await post(chatBody('chat', `big ${n}`), { timeoutMs: 30000 });
  assert.equal(r.status, 200);
  assert.equal(r.json.choices[0].message.content, reply);
  assert.equal(r.json.usage.completion_tokens, 20000);
  const s = await post(chatBody('chat', `big streamed ${n}`, { stream: true, stream_options: { include_usage: true } }), { timeoutMs: 30000 });
  const d = sseData(s.text);
  assert.equal(d[d.length - 1], '[DONE]');
  assert.equal(streamText(d), reply);
  assert.equal(JSON.parse(d[d.length - 2]).usage.completion_tokens, 20000);
});

test('gateway keys: a key configured as sha256 authenticates', async () => {
  const r = await post(chatBody('chat', `hashed ${nonce('rsha')}`), { key: 'sk-smolgate-hashed-key' });
  assert.equal(r.status, 200, r.text.slice(0, 200));
});

test('gateway keys: a key limited to routes [chat] may use chat, and nothing else reaches upstream', async () => {
  const key = 'sk-smolgate-limited-key';
  const ok = await post(chatBody('chat', `limited ${nonce('rlim')}`), { key });
  assert.equal(ok.status, 200, ok.text.slice(0, 200));
  for (const model of ['f-order', 'gpt-4o-mini', 'openai/gpt-4o-mini', 'backup/gpt-4o-mini']) {
    const n = nonce('rlimx');
    const r = await post(chatBody(model, `limited ${n}`), { key });
    assert.ok(r.status === 403 || r.status === 404 || r.status === 401, `${model}: ${r.status} ${r.text.slice(0, 200)}`);
    assertOpenAIError(r.json);
    assert.equal((await fakeLog({ match: n })).length, 0, `${model}: nothing sent upstream`);
  }
  const viaList = await post({ ...chatBody('chat', `limited list ${nonce('rliml')}`), models: ['chat', 'backup/gpt-4o-mini'] }, { key });
  assert.ok(viaList.status >= 400 && viaList.status < 500, `"models" cannot widen a limited key: ${viaList.status}`);
});

// The ledger's sums for one upstream model (GET /v1/usage), once `want` records are there
// (delivery lags by up to flush_ms).
async function usageOf(model, want) {
  let last = null;
  for (let i = 0; i < 100; i++) {
    const r = await get(`/v1/usage?model=${encodeURIComponent(model)}`);
    assert.equal(r.status, 200, r.text.slice(0, 300));
    last = r.json.total;
    if (last.requests >= want) return last;
    await sleep(100);
  }
  assert.fail(`the ledger has ${last?.requests} records for ${model} after 10 s, expected ${want}`);
}

test('provider limits: past the account\'s rpm the target is skipped unsent and the next one answers', async () => {
  // provider "capped" has limits {rpm: 3}; route capped = [capped/m-capped-a, backup/m-capped-b]
  const served = [];
  for (let i = 0; i < 6; i++) {
    const stream = i % 2 === 1;
    const r = await post(chatBody('capped', `capped ${i} ${nonce('rcap')}`, stream ? { stream: true } : {}));
    assert.equal(r.status, 200, r.text.slice(0, 300));
    if (stream) assert.equal(sseData(r.text).at(-1), '[DONE]');
    served.push(r.info.provider);
    if (i >= 3) assert.equal(r.info.attempts, 1, 'a skipped target is not an attempt sent upstream');
  }
  assert.deepEqual(served, ['capped', 'capped', 'capped', 'backup', 'backup', 'backup']);
  assert.equal((await fakeLog({ match: 'm-capped-a' })).length, 3, 'the capped target saw exactly its rpm');
  assert.equal((await fakeLog({ match: 'm-capped-b' })).length, 3);
  // with no target left: 429, retry-after until the oldest admission leaves the minute
  const n = nonce('rcapx');
  const r = await post(chatBody('capped/m-capped-only', `capped only ${n}`));
  assert.equal(r.status, 429, r.text.slice(0, 300));
  assertOpenAIError(r.json, { code: 'rate_limit_exceeded' });
  assert.match(r.json.error.message, /provider capped rpm/);
  const ra = Number(r.headers.get('retry-after'));
  assert.ok(ra >= 1 && ra <= 60, `retry-after ${r.headers.get('retry-after')}`);
  assert.equal((await fakeLog({ match: n })).length, 0, 'nothing sent upstream');
  // the ledger: the backup's records each carry the skipped attempt (a fallback)
  const b = await usageOf('m-capped-b', 3);
  assert.equal(b.requests, 3);
  assert.equal(b.fallbacks, 3, JSON.stringify(b));
  const a = await usageOf('m-capped-a', 3);
  assert.equal(a.fallbacks, 0, JSON.stringify(a));
  const m = await get('/metrics');
  assert.match(m.text, /smolgate_attempts_total\{route="capped",provider="capped",model="m-capped-a",outcome="limited"\} 3/);
});

test('provider limits: a failed target, then one at its limit: the client gets the failure, named by the target tried', async () => {
  // fill provider capped's rpm (3) if the test before has not
  for (let i = 0; i < 5; i++) {
    const f = await post(chatBody('capped/m-capfail-fill', `fill ${i} ${nonce('rfill')}`));
    if (f.status === 429) break;
    assert.equal(f.status, 200, f.text.slice(0, 300));
  }
  const n = nonce('rcapf');
  await control('/control', { provider: 'openai', match: n, faults: [{ status: 500, count: 2 }] });
  const r = await post(chatBody('capfail', `capfail ${n}`));
  assert.equal(r.status, 500, r.text.slice(0, 300));
  assert.equal(r.info.provider, 'openai', 'the target that was tried, not the skipped one');
  assert.equal(r.info.attempts, 2);
  assert.equal((await fakeLog({ match: n })).length, 2, 'two attempts on openai, none on capped');
});

test('model limits: past one model\'s rpm at its provider that target is skipped, other models are not held', async () => {
  // models: backup/m-mcap-a: {limits: {rpm: 2}}; route mcap = [backup/m-mcap-a, openai/m-mcap-b]
  const served = [];
  for (let i = 0; i < 4; i++) {
    const r = await post(chatBody('mcap', `mcap ${i} ${nonce('rmcap')}`));
    assert.equal(r.status, 200, r.text.slice(0, 300));
    served.push(`${r.info.provider}/${r.info.model}`);
  }
  assert.deepEqual(served, ['backup/m-mcap-a', 'backup/m-mcap-a', 'openai/m-mcap-b', 'openai/m-mcap-b']);
  assert.equal((await fakeLog({ match: 'm-mcap-a' })).length, 2);
  // the same provider's other models still pass
  const other = await post({ ...chatBody('backup/gpt-4o-mini', `mcap other ${nonce('rmcapo')}`) });
  assert.equal(other.status, 200, other.text.slice(0, 300));
  assert.equal(other.info.provider, 'backup');
});

for (const stream of [true, false]) {
  test(`usage the provider never reported (${stream ? 'streamed' : 'not streamed'}) is estimated, priced and marked`, async () => {
    const n = nonce('rest');
    const model = stream ? 'm-est-s' : 'm-est-n';   // priced in gateway.sh's models:
    await control('/control', { provider: 'openai', match: n, usage: false });
    const user = `estimate ${n} ` + Array.from({ length: 40 }, (_, i) => `word${i}`).join(' ');
    const r = await post(chatBody(`openai/${model}`, user, stream ? { stream: true, stream_options: { include_usage: true } } : {}));
    assert.equal(r.status, 200, r.text.slice(0, 300));
    if (stream) {
      const d = sseData(r.text);
      assert.equal(d.at(-1), '[DONE]');
      assert.equal(streamText(d), `echo: ${user}`);
    } else {
      assert.equal(r.json.choices[0].message.content, `echo: ${user}`);
    }
    const u = await usageOf(model, 1);
    assert.equal(u.requests, 1);
    assert.equal(u.estimated_requests, 1, JSON.stringify(u));
    // 42 words of prompt and 43 of answer: any tokenizer's count is within these bounds
    assert.ok(u.input_tokens >= 42 && u.input_tokens <= 250, `input_tokens ${u.input_tokens}`);
    assert.ok(u.output_tokens >= 43 && u.output_tokens <= 250, `output_tokens ${u.output_tokens}`);
    assert.equal(u.unpriced_requests, 0);
    // price: input $10 / M, output $20 / M (rounded up to a micro-dollar)
    assert.equal(u.cost_micro, u.input_tokens * 10 + u.output_tokens * 20, JSON.stringify(u));
  });
}

test('a long answer with no usage (over 256 KiB of text) is estimated in pieces, none lost', async () => {
  const n = nonce('restl');
  const reply = Array.from({ length: 60000 }, (_, i) => `w${i}`).join(' ');   // ~400 KB
  await control('/control', { provider: 'openai', match: n, usage: false, reply });
  const r = await post(chatBody('openai/m-est-l', `long ${n}`, { stream: true }), { timeoutMs: 30000 });
  assert.equal(r.status, 200);
  assert.equal(streamText(sseData(r.text)), reply);
  const u = await usageOf('m-est-l', 1);
  assert.equal(u.estimated_requests, 1);
  // every word is at least one token, at most a few for any tokenizer
  assert.ok(u.output_tokens >= 60000 && u.output_tokens <= 250000, `output_tokens ${u.output_tokens}`);
});
