// upstream.test.mjs: checks the fake upstreams themselves (tests/fakes/upstream.mjs) at
// the wire level, with raw HTTP: the Gemini API (which no client test covers), the auth
// and version checks, every fault kind as a client sees it (statuses and bodies, slow
// first byte, slow chunks, stalls, resets before and after the first chunk, malformed
// chunks, bodies cut short, mid-stream error events, hangs, the hostile ones: endless and
// huge bodies, a huge SSE line, a drip, a key echo), the control API (queued
// faults with count and match, rules, the request log, reset), keep-alive, and the other
// endpoints: the OpenAI Responses API (typed stream events, stored responses,
// previous_response_id, function calls, its stream faults), embeddings (OpenAI float and
// base64, Gemini embedContent / batchEmbedContents), Anthropic count_tokens and
// GET /v1/models/{id}.
// It starts its own fake, so /control/reset here disturbs no other test file.
// Run: node --test tests/fakes/upstream.test.mjs

import test from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startFake, words } from '../clients/env.mjs';

const ports = await startFake();
const HOST = '127.0.0.1';
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

// One request; collects the status, headers and body chunks (with arrival times) until
// the response ends, fails, or `waitMs` passes (then timedOut, and the socket is cut).
function raw(port, path, { method = 'POST', headers = {}, body, waitMs = 3000, useAgent = agent } = {}) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const out = { status: null, headers: null, chunks: [], text: '', error: null, ended: false, timedOut: false, firstByteMs: null };
    let done = false;
    const finish = () => { if (!done) { done = true; clearTimeout(timer); out.text = out.chunks.map((c) => c.data).join(''); resolve(out); } };
    const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const req = http.request({ host: HOST, port, path, method, agent: useAgent, headers: { 'content-type': 'application/json', ...headers } }, (res) => {
      out.status = res.statusCode;
      out.headers = res.headers;
      out.firstByteMs = Date.now() - t0;
      res.setEncoding('utf8');
      res.on('data', (d) => out.chunks.push({ t: Date.now() - t0, data: d }));
      res.on('end', () => { out.ended = true; finish(); });
      res.on('error', (e) => { out.error = e; finish(); });
      res.on('aborted', () => { out.error ??= new Error('aborted'); });
      res.on('close', finish);
    });
    req.on('error', (e) => { out.error = e; finish(); });
    const timer = setTimeout(() => { out.timedOut = true; req.destroy(); finish(); }, waitMs);
    req.end(payload);
  });
}

async function ctl(path, body) {
  const r = await fetch(`http://${HOST}:${ports.control}${path}`, body === undefined ? {} : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, json: await r.json() };
}

const OA = { authorization: 'Bearer sk-test' };
const AN = { 'x-api-key': 'sk-ant-test', 'anthropic-version': '2023-06-01' };
const GE = { 'x-goog-api-key': 'g-test' };
const oaBody = (content, extra = {}) => ({ model: 'gpt-4o-mini', messages: [{ role: 'user', content }], ...extra });
const anBody = (content, extra = {}) => ({ model: 'claude-haiku-4-5', max_tokens: 100, messages: [{ role: 'user', content }], ...extra });
const geBody = (text, extra = {}) => ({ contents: [{ role: 'user', parts: [{ text }] }], ...extra });
const GEN = '/v1beta/models/gemini-2.5-flash:generateContent';
const SGEN = '/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse';
const sseData = (text) => text.split(/\r?\n\r?\n/).filter(Boolean).map((ev) => ev.split(/\r?\n/).filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n'));

test.after(() => agent.destroy());

test('the ports line names four distinct ports', () => {
  const ps = [ports.openai, ports.anthropic, ports.gemini, ports.control];
  assert.ok(ps.every((p) => Number.isInteger(p) && p > 0));
  assert.equal(new Set(ps).size, 4);
});

test('gemini generateContent: candidates, usageMetadata, modelVersion; key by query or header', async () => {
  for (const [path, headers] of [[`${GEN}?key=abc`, {}], [GEN, GE]]) {
    const r = await raw(ports.gemini, path, { headers, body: geBody('one two three', { systemInstruction: { parts: [{ text: 'be kind' }] } }) });
    assert.equal(r.status, 200);
    const j = JSON.parse(r.text);
    assert.deepEqual(j.candidates[0].content, { parts: [{ text: 'echo: one two three' }], role: 'model' });
    assert.equal(j.candidates[0].finishReason, 'STOP');
    assert.equal(j.candidates[0].index, 0);
    assert.equal(j.usageMetadata.promptTokenCount, 5);
    assert.equal(j.usageMetadata.candidatesTokenCount, 4);
    assert.equal(j.usageMetadata.totalTokenCount, 9);
    assert.equal(j.modelVersion, 'gemini-2.5-flash');
  }
});

test('gemini streamGenerateContent?alt=sse: CRLF-framed chunks, cumulative usage, functionCall', async () => {
  const r = await raw(ports.gemini, SGEN, { headers: GE, body: geBody('a b c d e') });
  assert.equal(r.status, 200);
  assert.match(r.headers['content-type'], /^text\/event-stream/);
  assert.ok(r.text.includes('\r\n\r\n'));
  const cs = sseData(r.text).map((d) => JSON.parse(d));
  assert.ok(cs.length > 1);
  assert.equal(cs.map((c) => c.candidates[0].content.parts[0].text).join(''), 'echo: a b c d e');
  assert.equal(cs.at(-1).candidates[0].finishReason, 'STOP');
  assert.ok(cs.slice(0, -1).every((c) => !c.candidates[0].finishReason));
  const counts = cs.map((c) => c.usageMetadata.candidatesTokenCount);
  assert.deepEqual(counts, [...counts].sort((a, b) => a - b), 'cumulative');
  assert.equal(counts.at(-1), 6);

  const tools = [{ functionDeclarations: [{ name: 'get_weather', parameters: { type: 'object' } }] }];
  const t = await raw(ports.gemini, SGEN, { headers: GE, body: geBody('call:get_weather {"city":"Rome"}', { tools }) });
  const last = JSON.parse(sseData(t.text).at(-1));
  assert.deepEqual(last.candidates[0].content.parts, [{ functionCall: { name: 'get_weather', args: { city: 'Rome' } } }]);
  assert.equal(last.candidates[0].finishReason, 'STOP');

  // A functionResponse as the last turn is answered.
  const fr = await raw(ports.gemini, GEN, {
    headers: GE,
    body: { tools, contents: [{ role: 'user', parts: [{ text: 'call:get_weather {"city":"Rome"}' }] }, { role: 'model', parts: [{ functionCall: { name: 'get_weather', args: { city: 'Rome' } } }] }, { role: 'user', parts: [{ functionResponse: { name: 'get_weather', response: { temp: 30 } } }] }] },
  });
  assert.equal(JSON.parse(fr.text).candidates[0].content.parts[0].text, 'tool result: {"temp":30}');
});

test('gemini streamGenerateContent without alt=sse streams one JSON array', async () => {
  const r = await raw(ports.gemini, '/v1beta/models/gemini-2.5-flash:streamGenerateContent', { headers: GE, body: geBody('x y z') });
  const arr = JSON.parse(r.text);
  assert.ok(Array.isArray(arr) && arr.length >= 2);
});

test('gemini errors: RESOURCE_EXHAUSTED with RetryInfo, UNAVAILABLE, missing and wrong keys', async () => {
  let r = await raw(ports.gemini, GEN, { headers: { ...GE, 'x-fake-fault': '429:9' }, body: geBody('x') });
  assert.equal(r.status, 429);
  let e = JSON.parse(r.text).error;
  assert.equal(e.code, 429);
  assert.equal(e.status, 'RESOURCE_EXHAUSTED');
  assert.equal(e.details[0].retryDelay, '9s');
  r = await raw(ports.gemini, GEN, { headers: { ...GE, 'x-fake-fault': '503' }, body: geBody('x') });
  assert.equal(r.status, 503);
  assert.equal(JSON.parse(r.text).error.status, 'UNAVAILABLE');
  r = await raw(ports.gemini, GEN, { body: geBody('x') });
  assert.equal(r.status, 403);
  assert.equal(JSON.parse(r.text).error.status, 'PERMISSION_DENIED');
  r = await raw(ports.gemini, GEN, { headers: GE, body: { contents: [] } });
  assert.equal(r.status, 400);
  assert.equal(JSON.parse(r.text).error.status, 'INVALID_ARGUMENT');
});

test('anthropic: 401 without a key, 400 without anthropic-version, both in the error shape with request-id', async () => {
  let r = await raw(ports.anthropic, '/v1/messages', { headers: { 'anthropic-version': '2023-06-01' }, body: anBody('x') });
  assert.equal(r.status, 401);
  let j = JSON.parse(r.text);
  assert.equal(j.type, 'error');
  assert.equal(j.error.type, 'authentication_error');
  assert.match(r.headers['request-id'], /^req_/);
  r = await raw(ports.anthropic, '/v1/messages', { headers: { 'x-api-key': 'k' }, body: anBody('x') });
  assert.equal(r.status, 400);
  j = JSON.parse(r.text);
  assert.deepEqual(j.error, { type: 'invalid_request_error', message: 'anthropic-version: header is required' });
  r = await raw(ports.anthropic, '/v1/messages', { headers: AN, body: { model: 'claude-haiku-4-5', messages: [{ role: 'user', content: 'x' }] } });
  assert.equal(r.status, 400);
  assert.match(JSON.parse(r.text).error.message, /max_tokens/);
});

test('anthropic stream: the event sequence and framing', async () => {
  const r = await raw(ports.anthropic, '/v1/messages', { headers: AN, body: anBody('hi there', { stream: true }) });
  assert.equal(r.status, 200);
  const events = r.text.split('\n\n').filter(Boolean).map((ev) => ev.split('\n')[0].replace('event: ', ''));
  assert.deepEqual(events, ['message_start', 'content_block_start', 'ping', 'content_block_delta', 'content_block_delta', 'content_block_delta', 'content_block_stop', 'message_delta', 'message_stop']);
  const delta = JSON.parse(sseData(r.text)[7]);
  assert.deepEqual(delta.usage, { input_tokens: 2, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 3 });
});

test('openai: 401 without a key; 404 for an unknown model; usage without include_usage is absent', async () => {
  let r = await raw(ports.openai, '/v1/chat/completions', { body: oaBody('x') });
  assert.equal(r.status, 401);
  assert.equal(JSON.parse(r.text).error.type, 'invalid_request_error');
  r = await raw(ports.openai, '/v1/chat/completions', { headers: OA, body: { ...oaBody('x'), model: 'gpt-nonexistent' } });
  assert.equal(r.status, 404);
  assert.equal(JSON.parse(r.text).error.code, 'model_not_found');
  r = await raw(ports.openai, '/v1/chat/completions', { headers: OA, body: oaBody('a b', { stream: true }) });
  const data = sseData(r.text);
  assert.equal(data.at(-1), '[DONE]');
  assert.ok(data.slice(0, -1).every((d) => !('usage' in JSON.parse(d))));
});

test('status faults carry each provider\'s error shape and headers', async () => {
  const cases = [
    ['openai', '/v1/chat/completions', OA, oaBody('x'), 'insufficient_quota', 429, (j) => j.error.code === 'insufficient_quota'],
    ['openai', '/v1/chat/completions', OA, oaBody('x'), 'context_length_exceeded', 400, (j) => j.error.code === 'context_length_exceeded'],
    ['openai', '/v1/chat/completions', OA, oaBody('x'), '500', 500, (j) => j.error.type === 'server_error'],
    ['openai', '/v1/chat/completions', OA, oaBody('x'), '502', 502, (j) => typeof j.error.message === 'string'],
    ['openai', '/v1/chat/completions', OA, oaBody('x'), '401', 401, (j) => j.error.code === 'invalid_api_key'],
    ['anthropic', '/v1/messages', AN, anBody('x'), '500', 500, (j) => j.error.type === 'api_error'],
    ['anthropic', '/v1/messages', AN, anBody('x'), 'insufficient_quota', 400, (j) => /credit balance/.test(j.error.message)],
    ['anthropic', '/v1/messages', AN, anBody('x'), 'context_length_exceeded', 400, (j) => /prompt is too long/.test(j.error.message)],
    ['gemini', GEN, GE, geBody('x'), 'insufficient_quota', 429, (j) => j.error.status === 'RESOURCE_EXHAUSTED'],
    ['gemini', GEN, GE, geBody('x'), '500', 500, (j) => j.error.status === 'INTERNAL'],
  ];
  for (const [prov, path, h, body, fault, status, check] of cases) {
    const r = await raw(ports[prov], path, { headers: { ...h, 'x-fake-fault': fault }, body });
    assert.equal(r.status, status, `${prov} ${fault}`);
    assert.ok(check(JSON.parse(r.text)), `${prov} ${fault}: ${r.text}`);
  }
  const r = await raw(ports.openai, '/v1/chat/completions', { headers: { ...OA, 'x-fake-fault': '{"status":503,"retryAfter":2,"retryAfterMs":2500,"headers":{"x-extra":"1"}}' }, body: oaBody('x') });
  assert.equal(r.status, 503);
  assert.equal(r.headers['retry-after'], '2');
  assert.equal(r.headers['retry-after-ms'], '2500');
  assert.equal(r.headers['x-extra'], '1');
});

test('slow first byte and slow chunks', async () => {
  let r = await raw(ports.openai, '/v1/chat/completions', { headers: { ...OA, 'x-fake-fault': 'slow_first_byte:250' }, body: oaBody('x') });
  assert.equal(r.status, 200);
  assert.ok(r.firstByteMs >= 240, `first byte after ${r.firstByteMs} ms`);
  r = await raw(ports.openai, '/v1/chat/completions', { headers: { ...OA, 'x-fake-fault': 'slow_chunks:60' }, body: oaBody('a b', { stream: true }) });
  assert.ok(r.ended);
  assert.equal(sseData(r.text).at(-1), '[DONE]');
  const span = r.chunks.at(-1).t - r.chunks[0].t;
  assert.ok(span >= 4 * 55, `chunks spread over ${span} ms`);
});

test('stall: headers and N chunks, then silence with the connection open', async () => {
  const r = await raw(ports.openai, '/v1/chat/completions', { headers: { ...OA, 'x-fake-fault': 'stall:2' }, body: oaBody('a b c d', { stream: true }), waitMs: 1000 });
  assert.equal(r.status, 200);
  assert.ok(r.timedOut, 'still open');
  assert.equal(sseData(r.text).length, 2);
  const n = await raw(ports.anthropic, '/v1/messages', { headers: { ...AN, 'x-fake-fault': 'stall' }, body: anBody('x'), waitMs: 1000 });
  assert.equal(n.status, 200);
  assert.ok(n.timedOut);
  assert.ok(n.text.length > 0 && n.text.length < Number(n.headers['content-length']), 'part of the body');
});

test('hang: nothing at all is sent', async () => {
  const r = await raw(ports.gemini, GEN, { headers: { ...GE, 'x-fake-fault': 'hang' }, body: geBody('x'), waitMs: 300 });
  assert.equal(r.status, null);
  assert.ok(r.timedOut);
});

test('reset before any byte, and after the first chunk', async () => {
  let r = await raw(ports.openai, '/v1/chat/completions', { headers: { ...OA, 'x-fake-fault': 'reset' }, body: oaBody('x'), useAgent: false });
  assert.equal(r.status, null);
  assert.equal(r.error?.code, 'ECONNRESET');
  r = await raw(ports.anthropic, '/v1/messages', { headers: { ...AN, 'x-fake-fault': 'reset_after_first_chunk' }, body: anBody('a b c', { stream: true }), useAgent: false });
  assert.equal(r.status, 200);
  assert.ok(r.error, 'the response fails');
  assert.ok(!r.ended);
  assert.equal(sseData(r.text).length, 1);
  assert.equal(JSON.parse(sseData(r.text)[0]).type, 'message_start');
});

test('malformed chunk: invalid JSON in a data: line, then the stream goes on', async () => {
  const r = await raw(ports.openai, '/v1/chat/completions', { headers: { ...OA, 'x-fake-fault': 'malformed:1' }, body: oaBody('a b', { stream: true }) });
  const data = sseData(r.text);
  assert.doesNotThrow(() => JSON.parse(data[0]));
  assert.throws(() => JSON.parse(data[1]));
  assert.equal(data.at(-1), '[DONE]');
  const nb = await raw(ports.gemini, GEN, { headers: { ...GE, 'x-fake-fault': 'malformed' }, body: geBody('x') });
  assert.equal(nb.status, 200);
  assert.throws(() => JSON.parse(nb.text));
});

test('close_mid_body: short non-streamed body; stream ends cleanly without its end marker', async () => {
  const r = await raw(ports.openai, '/v1/chat/completions', { headers: { ...OA, 'x-fake-fault': 'close_mid_body' }, body: oaBody('x'), useAgent: false });
  assert.equal(r.status, 200);
  assert.ok(r.error || !r.ended, 'premature close');
  assert.ok(r.text.length < Number(r.headers['content-length']));
  const s = await raw(ports.anthropic, '/v1/messages', { headers: { ...AN, 'x-fake-fault': 'close_mid_body:3' }, body: anBody('a b c', { stream: true }) });
  assert.ok(s.ended && !s.error, 'a clean end');
  assert.equal(sseData(s.text).length, 3);
  assert.ok(!s.text.includes('message_stop'));
});

test('error_event: the provider\'s in-stream error after N chunks', async () => {
  const a = await raw(ports.anthropic, '/v1/messages', { headers: { ...AN, 'x-fake-fault': 'error_event:2' }, body: anBody('a b c', { stream: true }) });
  assert.ok(a.text.includes('event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'));
  const o = await raw(ports.openai, '/v1/chat/completions', { headers: { ...OA, 'x-fake-fault': 'error_event' }, body: oaBody('a b', { stream: true }) });
  const d = sseData(o.text);
  assert.equal(d.length, 2);
  assert.equal(JSON.parse(d[1]).error.type, 'server_error');
});

test('hostile faults: endless body, huge Content-Length, huge SSE line, drip, key echo', async () => {
  // endless: far more than any answer within the wait, still going when cut
  const e = await raw(ports.openai, '/v1/chat/completions', { headers: { ...OA, 'x-fake-fault': 'endless_body' }, body: oaBody('a'), waitMs: 500 });
  assert.equal(e.status, 200);
  assert.ok(e.timedOut && !e.ended, 'never ends');
  assert.ok(e.text.startsWith('{"id":"chatcmpl-endless","pad":"xxx'));
  assert.ok(e.text.length > 1 << 20, `${e.text.length} bytes in 500 ms`);
  // huge_length: the declared length, a trickle of it
  const h = await raw(ports.openai, '/v1/chat/completions', { headers: { ...OA, 'x-fake-fault': 'huge_length' }, body: oaBody('a'), waitMs: 350 });
  assert.equal(h.headers['content-length'], '2147483648');
  assert.ok(h.text.length > 0 && h.text.length <= 4 * 65536, `${h.text.length} bytes in 350 ms`);
  // huge_sse_line:2 -> one data line of 2 MiB, no newline, then the end
  const l = await raw(ports.openai, '/v1/chat/completions', { headers: { ...OA, 'x-fake-fault': 'huge_sse_line:2' }, body: oaBody('a', { stream: true }) });
  assert.ok(l.ended, 'the body ends');
  assert.equal(l.headers['content-type'], 'text/event-stream');
  assert.equal(l.text.length, 'data: {"pad":"'.length + (2 << 20));
  assert.ok(!l.text.includes('\n'));
  // drip:20 -> the normal answer, a byte at a time
  const d = await raw(ports.openai, '/v1/chat/completions', { headers: { ...OA, 'x-fake-fault': 'drip:20' }, body: oaBody('x y'), waitMs: 20000 });
  assert.equal(JSON.parse(d.text).choices[0].message.content, 'echo: x y');
  assert.ok(d.chunks.length > 50, `${d.chunks.length} pieces`);
  // echo_key: the credential quoted back, in each provider's error shape
  const o = await raw(ports.openai, '/v1/chat/completions', { headers: { ...OA, 'x-fake-fault': 'echo_key' }, body: oaBody('a') });
  assert.equal(o.status, 401);
  assert.equal(JSON.parse(o.text).error.message, 'Incorrect API key provided: sk-test. The request had "Authorization: Bearer sk-test".');
  const an = await raw(ports.anthropic, '/v1/messages', { headers: { ...AN, 'x-fake-fault': 'echo_key' }, body: anBody('a') });
  assert.equal(an.status, 401);
  assert.match(JSON.parse(an.text).error.message, /sk-ant-test.*x-api-key: sk-ant-test/);
  const g = await raw(ports.gemini, GEN, { headers: { ...GE, 'x-fake-fault': 'echo_key' }, body: geBody('a') });
  assert.equal(g.status, 400);
  assert.match(JSON.parse(g.text).error.message, /g-test/);
});

test('control: queued faults are consumed in order, with count and match; the log records attempts', async () => {
  await ctl('/control/reset', {});
  let q = await ctl('/control', { provider: 'openai', faults: [{ status: 429, retryAfter: 0, count: 2 }, '503'] });
  assert.deepEqual(q.json, { ok: true, queued: 3, rule: false });
  q = await ctl('/control', { provider: 'openai', match: 'special', faults: ['500'] });
  const statuses = [];
  for (let i = 0; i < 4; i++) statuses.push((await raw(ports.openai, '/v1/chat/completions', { headers: OA, body: oaBody(`plain ${i}`) })).status);
  assert.deepEqual(statuses, [429, 429, 503, 200]);
  assert.equal((await raw(ports.openai, '/v1/chat/completions', { headers: OA, body: oaBody('the special one') })).status, 500);
  assert.equal((await raw(ports.openai, '/v1/chat/completions', { headers: OA, body: oaBody('the special one') })).status, 200);
  const log = (await ctl('/control/log?provider=openai')).json;
  assert.deepEqual(log.map((e) => e.status), [429, 429, 503, 200, 500, 200]);
  assert.deepEqual(log.map((e) => e.body.messages[0].content).slice(0, 2), ['plain 0', 'plain 1']);
  assert.equal(log[0].headers.authorization, '[redacted]');
  assert.equal(log[0].auth.present, true);
  assert.equal((await ctl('/control/log?match=special')).json.length, 2);
  const bad = await ctl('/control', { provider: 'nope', faults: ['500'] });
  assert.equal(bad.status, 400);
  const bad2 = await ctl('/control', { provider: 'openai', faults: ['explode'] });
  assert.equal(bad2.status, 400);
});

test('control: rules for the reply, usage, context window and API key', async () => {
  await ctl('/control/reset', {});
  await ctl('/control', { provider: '*', reply: 'fixed answer here' });
  let r = await raw(ports.gemini, GEN, { headers: GE, body: geBody('anything') });
  assert.equal(JSON.parse(r.text).candidates[0].content.parts[0].text, 'fixed answer here');
  await ctl('/control', { provider: 'gemini', usage: { cached: 1, reasoning: 4 } });
  r = await raw(ports.gemini, GEN, { headers: GE, body: geBody('two words') });
  const u = JSON.parse(r.text).usageMetadata;
  assert.deepEqual([u.promptTokenCount, u.cachedContentTokenCount, u.candidatesTokenCount, u.thoughtsTokenCount, u.totalTokenCount], [2, 1, 3, 4, 9]);
  await ctl('/control', { provider: 'anthropic', contextWindow: 3 });
  r = await raw(ports.anthropic, '/v1/messages', { headers: AN, body: anBody('one two three four') });
  assert.equal(r.status, 400);
  assert.equal(JSON.parse(r.text).error.message, 'prompt is too long: 4 tokens > 3 maximum');
  await ctl('/control', { provider: 'openai', apiKey: 'sk-right' });
  r = await raw(ports.openai, '/v1/chat/completions', { headers: { authorization: 'Bearer sk-wrong' }, body: oaBody('x') });
  assert.equal(r.status, 401);
  r = await raw(ports.openai, '/v1/chat/completions', { headers: { authorization: 'Bearer sk-right' }, body: oaBody('x') });
  assert.equal(r.status, 200);
  const log = (await ctl('/control/log?provider=openai')).json;
  assert.deepEqual(log.map((e) => e.auth.valid), [false, true]);
  await ctl('/control/reset', {});
  r = await raw(ports.openai, '/v1/chat/completions', { headers: { authorization: 'Bearer sk-wrong' }, body: oaBody('x') });
  assert.equal(r.status, 200);
  assert.equal(JSON.parse(r.text).choices[0].message.content, 'echo: x');
});

test('control: a usage rule of false leaves usage out of OpenAI bodies and streams', async () => {
  await ctl('/control/reset', {});
  const bad = await ctl('/control', { provider: 'openai', usage: 'none' });
  assert.equal(bad.status, 400);
  await ctl('/control', { provider: 'openai', match: 'nousage', usage: false });
  let r = await raw(ports.openai, '/v1/chat/completions', { headers: OA, body: oaBody('nousage here') });
  const j = JSON.parse(r.text);
  assert.equal(j.choices[0].message.content, 'echo: nousage here');
  assert.ok(!('usage' in j), r.text);
  r = await raw(ports.openai, '/v1/chat/completions', { headers: OA, body: oaBody('nousage streamed', { stream: true, stream_options: { include_usage: true } }) });
  const d = sseData(r.text);
  assert.equal(d[d.length - 1], '[DONE]');
  assert.ok(d.slice(0, -1).every((x) => !('usage' in JSON.parse(x))), r.text);
  assert.ok(d.some((x) => JSON.parse(x).choices[0]?.finish_reason === 'stop'));
  r = await raw(ports.openai, '/v1/chat/completions', { headers: OA, body: oaBody('other', { stream: true, stream_options: { include_usage: true } }) });
  assert.equal(JSON.parse(sseData(r.text).at(-2)).usage.prompt_tokens, 1, 'requests the rule does not match keep their usage');
  await ctl('/control/reset', {});
});

test('keep-alive: several requests share one connection', async () => {
  const one = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const seen = new Set();
  for (let i = 0; i < 3; i++) {
    await new Promise((resolve, reject) => {
      const req = http.request({ host: HOST, port: ports.openai, path: '/v1/chat/completions', method: 'POST', agent: one, headers: { ...OA, 'content-type': 'application/json' } }, (res) => {
        seen.add(res.socket.localPort);
        res.resume();
        res.on('end', resolve);
      });
      req.on('error', reject);
      req.end(JSON.stringify(oaBody(`k ${i}`)));
    });
  }
  one.destroy();
  assert.equal(seen.size, 1);
});

// ---- the other endpoints: Responses API, embeddings, count_tokens, a model ----

// SSE events with their names: [{event, data}] (data parsed when JSON).
const sseEvents = (text) => text.split(/\n\n/).filter(Boolean).map((ev) => {
  const lines = ev.split('\n');
  const event = lines.find((l) => l.startsWith('event: '))?.slice(7) ?? null;
  const raw = lines.filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
  let data = raw;
  try { data = JSON.parse(raw); } catch { /* not JSON */ }
  return { event, data };
});
const RESP = '/v1/responses';
const W_TOOL = { type: 'function', name: 'get_weather', description: 'Weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] }, strict: false };
const f32 = (b64) => { const b = Buffer.from(b64, 'base64'); return Array.from(new Float32Array(b.buffer, b.byteOffset, b.length / 4)); };
const norm = (v) => Math.sqrt(v.reduce((a, x) => a + x * x, 0));

test('responses: a non-streamed response, stored: GET returns it, input_items lists its input, DELETE removes it', async () => {
  const r = await raw(ports.openai, RESP, { headers: OA, body: { model: 'gpt-4o-mini', instructions: 'be terse', input: 'one two three' } });
  assert.equal(r.status, 200);
  assert.match(r.headers['x-request-id'], /^req_/);
  const j = JSON.parse(r.text);
  assert.match(j.id, /^resp_/);
  assert.equal(j.object, 'response');
  assert.equal(j.status, 'completed');
  assert.equal(j.model, 'gpt-4o-mini');
  assert.equal(j.instructions, 'be terse');
  assert.equal(j.store, true);
  assert.equal(j.output.length, 1);
  const m = j.output[0];
  assert.equal(m.type, 'message');
  assert.equal(m.role, 'assistant');
  assert.equal(m.status, 'completed');
  assert.match(m.id, /^msg_/);
  assert.deepEqual(m.content, [{ type: 'output_text', annotations: [], logprobs: [], text: 'echo: one two three' }]);
  assert.deepEqual(j.usage, { input_tokens: 5, input_tokens_details: { cached_tokens: 0 }, output_tokens: 4, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: 9 });
  const g = await raw(ports.openai, `${RESP}/${j.id}`, { method: 'GET', headers: OA });
  assert.equal(g.status, 200);
  assert.deepEqual(JSON.parse(g.text), j);
  const items = JSON.parse((await raw(ports.openai, `${RESP}/${j.id}/input_items`, { method: 'GET', headers: OA })).text);
  assert.equal(items.object, 'list');
  assert.equal(items.data.length, 1);
  assert.equal(items.data[0].role, 'user');
  assert.equal(items.data[0].content, 'one two three');
  assert.equal(items.first_id, items.data[0].id);
  const d = await raw(ports.openai, `${RESP}/${j.id}`, { method: 'DELETE', headers: OA });
  assert.equal(d.status, 200);
  assert.deepEqual(JSON.parse(d.text), { id: j.id, object: 'response', deleted: true });
  for (const method of ['GET', 'DELETE']) {
    const x = await raw(ports.openai, `${RESP}/${j.id}`, { method, headers: OA });
    assert.equal(x.status, 404);
    assert.equal(JSON.parse(x.text).error.message, `Response with id '${j.id}' not found.`);
  }
  // store: false keeps nothing
  const ns = JSON.parse((await raw(ports.openai, RESP, { headers: OA, body: { model: 'gpt-4o-mini', input: 'x', store: false } })).text);
  assert.equal(ns.store, false);
  assert.equal((await raw(ports.openai, `${RESP}/${ns.id}`, { method: 'GET', headers: OA })).status, 404);
});

test('responses streamed: the typed events in order, sequence numbers, text deltas, usage on response.completed', async () => {
  const r = await raw(ports.openai, RESP, { headers: OA, body: { model: 'gpt-4o-mini', input: [{ role: 'user', content: [{ type: 'input_text', text: 'alpha beta gamma' }] }], stream: true } });
  assert.equal(r.status, 200);
  assert.match(r.headers['content-type'], /^text\/event-stream/);
  const evs = sseEvents(r.text);
  for (const e of evs) assert.equal(e.event, e.data.type, 'the event name is the data type');
  assert.deepEqual(evs.map((e) => e.data.sequence_number), evs.map((_, i) => i));
  const types = evs.map((e) => e.event);
  assert.deepEqual(types, ['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added',
    ...Array(4).fill('response.output_text.delta'), 'response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.completed']);
  assert.equal(evs[0].data.response.status, 'in_progress');
  assert.equal(evs[0].data.response.usage, null);
  assert.deepEqual(evs[0].data.response.output, []);
  const deltas = evs.filter((e) => e.event === 'response.output_text.delta');
  assert.equal(deltas.map((e) => e.data.delta).join(''), 'echo: alpha beta gamma');
  const itemId = evs[2].data.item.id;
  assert.ok(deltas.every((e) => e.data.item_id === itemId && e.data.output_index === 0 && e.data.content_index === 0));
  assert.equal(evs.find((e) => e.event === 'response.output_text.done').data.text, 'echo: alpha beta gamma');
  const done = evs.at(-1).data.response;
  assert.equal(done.status, 'completed');
  assert.equal(done.id, evs[0].data.response.id);
  assert.equal(done.output[0].content[0].text, 'echo: alpha beta gamma');
  assert.deepEqual([done.usage.input_tokens, done.usage.output_tokens, done.usage.total_tokens], [3, 4, 7]);
  assert.ok(!r.text.includes('[DONE]'), 'no [DONE] in the Responses API');
  // the streamed response is stored like the others
  assert.deepEqual(JSON.parse((await raw(ports.openai, `${RESP}/${done.id}`, { method: 'GET', headers: OA })).text), done);
});

test('responses: function calls (streamed argument deltas), the result through previous_response_id, max_output_tokens', async () => {
  const body = { model: 'gpt-4o-mini', tools: [W_TOOL], input: 'say: Looking.\ncall:get_weather {"city":"Paris"}\ncall:get_weather {"city":"Rome"}' };
  const s = await raw(ports.openai, RESP, { headers: OA, body: { ...body, stream: true } });
  const evs = sseEvents(s.text);
  const added = evs.filter((e) => e.event === 'response.output_item.added').map((e) => e.data.item);
  assert.deepEqual(added.map((i) => i.type), ['message', 'function_call', 'function_call']);
  assert.equal(added[1].arguments, '');
  assert.equal(added[1].name, 'get_weather');
  const argDeltas = evs.filter((e) => e.event === 'response.function_call_arguments.delta' && e.data.output_index === 1);
  assert.ok(argDeltas.length > 1, 'arguments in several fragments');
  assert.deepEqual(JSON.parse(argDeltas.map((e) => e.data.delta).join('')), { city: 'Paris' });
  const argsDone = evs.filter((e) => e.event === 'response.function_call_arguments.done');
  assert.deepEqual(argsDone.map((e) => JSON.parse(e.data.arguments)), [{ city: 'Paris' }, { city: 'Rome' }]);
  const final = evs.at(-1).data.response;
  const calls = final.output.filter((o) => o.type === 'function_call');
  assert.equal(calls.length, 2);
  assert.notEqual(calls[0].call_id, calls[1].call_id);
  assert.match(calls[0].id, /^fc_/);
  assert.match(calls[0].call_id, /^call_/);
  assert.equal(final.output[0].content[0].text, 'Looking.');
  assert.equal(final.usage.output_tokens, 1 + 2);   // "Looking." and one word per compact argument JSON
  // the tool results, chained to the stored response
  const P1 = words(body.input);
  const r2 = await raw(ports.openai, RESP, { headers: OA, body: { model: 'gpt-4o-mini', tools: [W_TOOL], previous_response_id: final.id,
    input: [{ type: 'function_call_output', call_id: calls[0].call_id, output: '{"temp_c": 21}' }, { type: 'function_call_output', call_id: calls[1].call_id, output: 'sunny' }] } });
  const j2 = JSON.parse(r2.text);
  assert.equal(j2.previous_response_id, final.id);
  assert.equal(j2.output[0].content[0].text, 'tool result: {"temp_c":21} | sunny');
  // prompt: the first input, the previous output (text and both calls' arguments), both results
  assert.equal(j2.usage.input_tokens, P1 + 1 + 2 + 2);
  const bad = await raw(ports.openai, RESP, { headers: OA, body: { model: 'gpt-4o-mini', previous_response_id: 'resp_nope', input: 'x' } });
  assert.equal(bad.status, 400);
  assert.deepEqual(JSON.parse(bad.text).error, { message: "Previous response with id 'resp_nope' not found.", type: 'invalid_request_error', param: 'previous_response_id', code: 'previous_response_not_found' });
  // max_output_tokens: incomplete, with the reason, and response.incomplete when streamed
  const inc = JSON.parse((await raw(ports.openai, RESP, { headers: OA, body: { model: 'gpt-4o-mini', input: 'a b c d', max_output_tokens: 2 } })).text);
  assert.equal(inc.status, 'incomplete');
  assert.deepEqual(inc.incomplete_details, { reason: 'max_output_tokens' });
  assert.equal(inc.output[0].content[0].text, 'echo: a');
  const incS = sseEvents((await raw(ports.openai, RESP, { headers: OA, body: { model: 'gpt-4o-mini', input: 'a b c d', max_output_tokens: 2, stream: true } })).text);
  assert.equal(incS.at(-1).event, 'response.incomplete');
  // validation: the OpenAI error shape
  const nomodel = await raw(ports.openai, RESP, { headers: OA, body: { input: 'x' } });
  assert.equal(nomodel.status, 400);
  assert.equal(JSON.parse(nomodel.text).error.param, 'model');
  const role = await raw(ports.openai, RESP, { headers: OA, body: { model: 'gpt-4o-mini', input: [{ role: 'robot', content: 'x' }] } });
  assert.equal(JSON.parse(role.text).error.param, 'input[0].role');
  assert.equal((await raw(ports.openai, RESP, { headers: OA, body: { model: 'gpt-nonexistent', input: 'x' } })).status, 404);
  assert.equal((await raw(ports.openai, RESP, { body: { model: 'gpt-4o-mini', input: 'x' } })).status, 401);
});

test('responses: stream faults in the Responses framing (error event, malformed, stall) and queued faults', async () => {
  const body = { model: 'gpt-4o-mini', input: 'a b c', stream: true };
  const e = await raw(ports.openai, RESP, { headers: { ...OA, 'x-fake-fault': 'error_event:2' }, body });
  const evs = sseEvents(e.text);
  assert.equal(evs.length, 3);
  assert.equal(evs[2].event, 'error');
  assert.equal(evs[2].data.type, 'error');
  assert.equal(evs[2].data.code, 'server_error');
  const m = await raw(ports.openai, RESP, { headers: { ...OA, 'x-fake-fault': 'malformed:1' }, body });
  assert.ok(m.text.includes('event: response.output_text.delta\ndata: {"type":"response.output_text.delta","item_id":"msg_x","delta":"\n\n'));
  assert.equal(sseEvents(m.text).at(-1).event, 'response.completed');
  const st = await raw(ports.openai, RESP, { headers: { ...OA, 'x-fake-fault': 'stall:2' }, body, waitMs: 400 });
  assert.ok(st.timedOut);
  assert.equal(sseEvents(st.text).length, 2);
  await ctl('/control', { provider: 'openai', match: 'resp-queued', faults: ['503'] });
  const q1 = await raw(ports.openai, RESP, { headers: OA, body: { model: 'gpt-4o-mini', input: 'resp-queued' } });
  assert.equal(q1.status, 503);
  assert.equal(JSON.parse(q1.text).error.type, 'server_error');
  const q2 = await raw(ports.openai, RESP, { headers: OA, body: { model: 'gpt-4o-mini', input: 'resp-queued' } });
  assert.equal(q2.status, 200);
  const log = (await ctl('/control/log?provider=openai&match=resp-queued')).json;
  assert.deepEqual(log.map((x) => [x.path, x.status]), [[RESP, 503], [RESP, 200]]);
});

test('embeddings: deterministic unit vectors, float and base64 alike, dimensions, token inputs, usage, errors', async () => {
  const E = '/v1/embeddings';
  const f = JSON.parse((await raw(ports.openai, E, { headers: OA, body: { model: 'text-embedding-3-small', input: ['hello world', 'bye'], encoding_format: 'float' } })).text);
  assert.equal(f.object, 'list');
  assert.equal(f.model, 'text-embedding-3-small');
  assert.deepEqual(f.usage, { prompt_tokens: 3, total_tokens: 3 });
  assert.deepEqual(f.data.map((d) => [d.object, d.index, d.embedding.length]), [['embedding', 0, 1536], ['embedding', 1, 1536]]);
  assert.ok(Math.abs(norm(f.data[0].embedding) - 1) < 1e-5);
  assert.notDeepEqual(f.data[0].embedding, f.data[1].embedding);
  assert.ok(f.data[0].embedding.every((x) => Math.fround(x) === x), 'float32 values');
  const b = JSON.parse((await raw(ports.openai, E, { headers: OA, body: { model: 'text-embedding-3-small', input: 'hello world', encoding_format: 'base64' } })).text);
  assert.equal(typeof b.data[0].embedding, 'string');
  assert.deepEqual(f32(b.data[0].embedding), f.data[0].embedding, 'base64 = the float32 bytes of the same vector');
  // dimensions: the first d values of the full vector, scaled to unit length
  const d8 = JSON.parse((await raw(ports.openai, E, { headers: OA, body: { model: 'text-embedding-3-small', input: 'hello world', dimensions: 8 } })).text).data[0].embedding;
  assert.equal(d8.length, 8);
  const head = f.data[0].embedding.slice(0, 8);
  head.forEach((x, i) => assert.ok(Math.abs(x / norm(head) - d8[i]) < 1e-6));
  // token arrays count their length
  const t = JSON.parse((await raw(ports.openai, E, { headers: OA, body: { model: 'text-embedding-3-small', input: [[1, 2, 3], [4]] } })).text);
  assert.equal(t.usage.prompt_tokens, 4);
  // other models: 256 dimensions
  assert.equal(JSON.parse((await raw(ports.openai, E, { headers: OA, body: { model: 'm-embed', input: 'x' } })).text).data[0].embedding.length, 256);
  for (const [bodyX, param] of [[{ model: 'text-embedding-3-small', input: 'x', encoding_format: 'hex' }, 'encoding_format'], [{ model: 'text-embedding-3-small' }, 'input'],
    [{ model: 'text-embedding-3-small', input: '' }, null], [{ model: 'text-embedding-3-small', input: 'x', dimensions: 5000 }, 'dimensions']]) {
    const r = await raw(ports.openai, E, { headers: OA, body: bodyX });
    assert.equal(r.status, 400, JSON.stringify(bodyX));
    assert.equal(JSON.parse(r.text).error.param, param);
  }
  const q = await raw(ports.openai, E, { headers: { ...OA, 'x-fake-fault': '429:3' }, body: { model: 'text-embedding-3-small', input: 'x' } });
  assert.equal(q.status, 429);
  assert.equal(q.headers['retry-after'], '3');
  const c = await raw(ports.openai, E, { headers: { ...OA, 'x-fake-fault': 'close_mid_body' }, body: { model: 'text-embedding-3-small', input: 'x' } });
  assert.ok(c.text.length < Number(c.headers['content-length']), 'the body is cut short');
});

test('gemini embedContent and batchEmbedContents: the same vectors, outputDimensionality, errors and faults', async () => {
  const EMB = '/v1beta/models/gemini-embedding-001:embedContent';
  const BATCH = '/v1beta/models/gemini-embedding-001:batchEmbedContents';
  const one = JSON.parse((await raw(ports.gemini, EMB, { headers: GE, body: { content: { parts: [{ text: 'hello world' }] } } })).text);
  assert.deepEqual(Object.keys(one), ['embedding']);
  assert.equal(one.embedding.values.length, 3072);
  const oa = JSON.parse((await raw(ports.openai, '/v1/embeddings', { headers: OA, body: { model: 'm-embed', input: 'hello world', dimensions: 64 } })).text).data[0].embedding;
  const g64 = JSON.parse((await raw(ports.gemini, EMB, { headers: GE, body: { content: { parts: [{ text: 'hello world' }] }, outputDimensionality: 64, taskType: 'RETRIEVAL_QUERY' } })).text).embedding.values;
  assert.deepEqual(g64, oa, 'one embedding function for every provider');
  const batch = JSON.parse((await raw(ports.gemini, BATCH, { headers: GE, body: { requests: [
    { model: 'models/gemini-embedding-001', content: { parts: [{ text: 'hello world' }] }, outputDimensionality: 64 },
    { model: 'models/gemini-embedding-001', content: { parts: [{ text: 'bye' }] } }] } })).text);
  assert.equal(batch.embeddings.length, 2);
  assert.deepEqual(batch.embeddings[0].values, g64);
  assert.equal(batch.embeddings[1].values.length, 3072);
  const mism = await raw(ports.gemini, BATCH, { headers: GE, body: { requests: [{ model: 'models/other', content: { parts: [{ text: 'x' }] } }] } });
  assert.equal(mism.status, 400);
  assert.equal(JSON.parse(mism.text).error.status, 'INVALID_ARGUMENT');
  assert.equal((await raw(ports.gemini, EMB, { headers: GE, body: {} })).status, 400);
  assert.equal((await raw(ports.gemini, EMB, { body: { content: { parts: [{ text: 'x' }] } } })).status, 403);
  assert.equal((await raw(ports.gemini, '/v1beta/models/gemini-nonexistent:embedContent', { headers: GE, body: { content: { parts: [{ text: 'x' }] } } })).status, 404);
  const f = await raw(ports.gemini, EMB, { headers: { ...GE, 'x-fake-fault': '503' }, body: { content: { parts: [{ text: 'x' }] } } });
  assert.equal(f.status, 503);
  assert.equal(JSON.parse(f.text).error.status, 'UNAVAILABLE');
});

test('anthropic count_tokens: the input_tokens a message would use; version, validation and faults', async () => {
  const body = { model: 'claude-haiku-4-5', system: 'be brief', messages: [{ role: 'user', content: 'one two three' }] };
  const c = await raw(ports.anthropic, '/v1/messages/count_tokens', { headers: AN, body });
  assert.equal(c.status, 200);
  assert.match(c.headers['request-id'], /^req_/);
  assert.deepEqual(JSON.parse(c.text), { input_tokens: 5 });
  const m = JSON.parse((await raw(ports.anthropic, '/v1/messages', { headers: AN, body: { ...body, max_tokens: 10 } })).text);
  assert.equal(m.usage.input_tokens, 5, 'the same count as the message');
  const nov = await raw(ports.anthropic, '/v1/messages/count_tokens', { headers: { 'x-api-key': 'k' }, body });
  assert.equal(nov.status, 400);
  const nomsg = await raw(ports.anthropic, '/v1/messages/count_tokens', { headers: AN, body: { model: 'claude-haiku-4-5' } });
  assert.equal(nomsg.status, 400);
  assert.equal(JSON.parse(nomsg.text).error.message, 'messages: Field required');
  const f = await raw(ports.anthropic, '/v1/messages/count_tokens', { headers: { ...AN, 'x-fake-fault': '529' }, body });
  assert.equal(f.status, 529);
  assert.equal(JSON.parse(f.text).error.type, 'overloaded_error');
});

test('GET /v1/models/{id}: a known model, an unknown one, a percent-encoded name', async () => {
  const g = await raw(ports.openai, '/v1/models/gpt-4o-mini', { method: 'GET', headers: OA });
  assert.deepEqual(JSON.parse(g.text), { id: 'gpt-4o-mini', object: 'model', created: 1721172741, owned_by: 'system' });
  assert.equal(JSON.parse((await raw(ports.openai, '/v1/models/text-embedding-3-small', { method: 'GET', headers: OA })).text).id, 'text-embedding-3-small');
  const l = await raw(ports.openai, '/v1/models/local%2Fx', { method: 'GET', headers: OA });
  assert.equal(l.status, 404);
  assert.deepEqual(JSON.parse(l.text).error, { message: "The model 'local/x' does not exist", type: 'invalid_request_error', param: 'model', code: 'model_not_found' });
  assert.equal((await raw(ports.openai, '/v1/models/gpt-4o-mini', { method: 'GET' })).status, 401);
  assert.equal((await raw(ports.openai, '/v1/models/gpt-4o-mini', { method: 'GET', headers: { ...OA, 'x-fake-fault': '500' } })).status, 500);
});
