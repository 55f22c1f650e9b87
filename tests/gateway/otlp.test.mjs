// otlp.test.mjs: request traces out (tracing:, src/gateway/otlp.h), on a private gateway
// whose tracing endpoint is an OTLP/HTTP receiver run here. The receiver checks every
// export against OTLP's JSON or protobuf encoding (POST /v1/traces, application/json,
// resourceSpans/scopeSpans/spans, lower-case hex ids of 32/16 digits, unix nanoseconds
// as decimal strings, SpanKind and status enums, typed attribute values) and keeps the
// spans. Then:
//   - a request that falls back (first target 503, second answers) under a caller's W3C
//     traceparent: one trace (the caller's), a root SERVER span whose parent is the
//     caller's span, and two CLIENT children, one per attempt, with GenAI attributes,
//     outcomes, the retry reason and an error status on the failed one only
//   - a plain request: a new trace of its own, root + 1 child, token usage
//   - a hostile traceparent is ignored (a new trace), the request unharmed
//   - the receiver hanging: requests are not slowed or failed, the queue stays within
//     queue_max and the drops are counted in /metrics
//   - every attempt sent upstream carries a W3C traceparent whose trace is the request's
//     and whose parent is that attempt's exported span (the fake records the headers it
//     got), with the caller's sampled flag and tracestate (several fields joined in order,
//     dropped past 512 bytes); an unsampled caller's flag 00
//     goes on too, and nothing is exported for it
//   - SIGHUP reapplies tracing: (a new service name, tracing off: no spans and no
//     traceparent upstream, on again)
//   - both encodings: http/protobuf (the default; the receiver reads the wire format here,
//     no library, into the same document and checks it the same way) and http/json
//   - the exporter's auth header reaches the receiver and never the gateway's log.

import test from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { PORTS, CRASH_RE, post, get, chatBody, writeConfig, startGateway, nonce, control, fakeLog, sleep } from './lib.mjs';

const GW_KEY = 'sk-gw-otlp-key-4455667788';
const OTLP_TOKEN = 'otlp-secret-token-99aa88bb77';
const QUEUE_MAX = 8;

// ---- the receiver ----
const HEX32 = /^[0-9a-f]{32}$/, HEX16 = /^[0-9a-f]{16}$/, NANOS = /^[0-9]{1,20}$/;
const spans = [];
const problems = [];
let mode = 'ok';            // 'ok' | 'hang'
let exports = 0, auths = new Set();
const hung = [];

function checkValue(v, where) {
  const keys = Object.keys(v);
  if (keys.length !== 1) return problems.push(`${where}: AnyValue with ${keys.length} fields`);
  const [k] = keys;
  if (k === 'stringValue' && typeof v[k] === 'string') return;
  if (k === 'intValue' && typeof v[k] === 'string' && /^-?[0-9]+$/.test(v[k])) return;
  if (k === 'doubleValue' && typeof v[k] === 'number') return;
  if (k === 'boolValue' && typeof v[k] === 'boolean') return;
  problems.push(`${where}: bad AnyValue ${JSON.stringify(v)}`);
}
function checkAttrs(attrs, where) {
  if (!Array.isArray(attrs)) return problems.push(`${where}: attributes is not an array`);
  const seen = new Set();
  for (const a of attrs) {
    if (typeof a.key !== 'string' || !a.key) problems.push(`${where}: attribute without a key`);
    if (seen.has(a.key)) problems.push(`${where}: duplicate attribute ${a.key}`);
    seen.add(a.key);
    checkValue(a.value ?? {}, `${where}.${a.key}`);
  }
}
function validate(doc) {
  if (!Array.isArray(doc.resourceSpans)) return problems.push('no resourceSpans array');
  for (const rs of doc.resourceSpans) {
    checkAttrs(rs.resource?.attributes, 'resource');
    for (const ss of rs.scopeSpans ?? []) {
      if (typeof ss.scope?.name !== 'string') problems.push('scope without a name');
      for (const s of ss.spans ?? []) {
        const w = `span ${s.name}`;
        if (!HEX32.test(s.traceId)) problems.push(`${w}: traceId ${s.traceId}`);
        if (!HEX16.test(s.spanId)) problems.push(`${w}: spanId ${s.spanId}`);
        if (s.parentSpanId !== undefined && !HEX16.test(s.parentSpanId)) problems.push(`${w}: parentSpanId ${s.parentSpanId}`);
        if (typeof s.name !== 'string' || !s.name) problems.push(`${w}: no name`);
        if (![0, 1, 2, 3, 4, 5].includes(s.kind)) problems.push(`${w}: kind ${s.kind}`);
        if (!NANOS.test(s.startTimeUnixNano) || !NANOS.test(s.endTimeUnixNano)) problems.push(`${w}: times not nanosecond strings`);
        else if (BigInt(s.endTimeUnixNano) < BigInt(s.startTimeUnixNano)) problems.push(`${w}: ends before it starts`);
        if (s.status !== undefined && ![0, 1, 2].includes(s.status.code)) problems.push(`${w}: status ${JSON.stringify(s.status)}`);
        checkAttrs(s.attributes, w);
        spans.push({ ...s, resource: rs.resource, attrs: Object.fromEntries(s.attributes.map((a) => [a.key, Object.values(a.value)[0]])) });
      }
    }
  }
}

// OTLP protobuf (http/protobuf): the wire format read field by field, then the same
// document as the JSON encoding gives, checked by validate(). Field numbers from
// opentelemetry-proto (trace.proto, common.proto, resource.proto).
function pbFields(buf) {
  const out = [];
  let i = 0;
  const varint = () => {
    let x = 0n, sh = 0n;
    for (;;) {
      if (i >= buf.length || sh > 63n) throw new Error('truncated varint');
      const c = buf[i++];
      x |= BigInt(c & 0x7f) << sh;
      sh += 7n;
      if (!(c & 0x80)) return x;
    }
  };
  while (i < buf.length) {
    const tag = varint(), num = Number(tag >> 3n), wt = Number(tag & 7n);
    if (wt === 0) out.push({ num, wt, v: varint() });
    else if (wt === 1) {
      if (i + 8 > buf.length) throw new Error('truncated fixed64');
      out.push({ num, wt, v: buf.readBigUInt64LE(i), bytes: buf.subarray(i, i + 8) });
      i += 8;
    } else if (wt === 2) {
      const n = Number(varint());
      if (i + n > buf.length) throw new Error(`field ${num}: length ${n} past the end`);
      out.push({ num, wt, bytes: buf.subarray(i, i + n) });
      i += n;
    } else throw new Error(`field ${num}: wire type ${wt}`);
  }
  return out;
}
const EMPTY = Buffer.alloc(0);
const pbAll = (fs, num, wt) => fs.filter((f) => {
  if (f.num !== num) return false;
  if (f.wt !== wt) problems.push(`protobuf field ${num}: wire type ${f.wt}, not ${wt}`);
  return true;
});
const pbOne = (fs, num, wt) => pbAll(fs, num, wt)[0];
const utf8 = (f) => f && new TextDecoder('utf-8', { fatal: true }).decode(f.bytes);
function pbAny(b) {
  const fs = pbFields(b);
  if (fs.length !== 1) return {};   // checkValue reports it
  const [f] = fs;
  if (f.num === 1 && f.wt === 2) return { stringValue: utf8(f) };
  if (f.num === 2 && f.wt === 0) return { boolValue: f.v !== 0n };
  if (f.num === 3 && f.wt === 0) return { intValue: BigInt.asIntN(64, f.v).toString() };
  if (f.num === 4 && f.wt === 1) return { doubleValue: f.bytes.readDoubleLE(0) };
  return { [`field${f.num}`]: null };
}
function pbKV(b) {
  const fs = pbFields(b);
  return { key: utf8(pbOne(fs, 1, 2)), value: pbAny(pbOne(fs, 2, 2)?.bytes ?? EMPTY) };
}
function pbSpan(b) {
  const fs = pbFields(b);
  const one = (n, wt) => pbOne(fs, n, wt);
  const s = {
    traceId: one(1, 2)?.bytes.toString('hex'), spanId: one(2, 2)?.bytes.toString('hex'), name: utf8(one(5, 2)),
    kind: Number(one(6, 0)?.v ?? 0n), startTimeUnixNano: String(one(7, 1)?.v), endTimeUnixNano: String(one(8, 1)?.v),
    attributes: pbAll(fs, 9, 2).map((f) => pbKV(f.bytes)),
  };
  if (one(4, 2)) s.parentSpanId = one(4, 2).bytes.toString('hex');
  if (one(15, 2)) {
    const st = pbFields(one(15, 2).bytes);
    s.status = { code: Number(pbOne(st, 3, 0)?.v ?? 0n), message: utf8(pbOne(st, 2, 2)) };
  }
  return s;
}
function pbDoc(buf) {
  return {
    resourceSpans: pbAll(pbFields(buf), 1, 2).map((rs) => {
      const f = pbFields(rs.bytes);
      return {
        resource: { attributes: pbAll(pbFields(pbOne(f, 1, 2)?.bytes ?? EMPTY), 1, 2).map((a) => pbKV(a.bytes)) },
        scopeSpans: pbAll(f, 2, 2).map((ss) => {
          const g = pbFields(ss.bytes);
          return { scope: { name: utf8(pbOne(pbFields(pbOne(g, 1, 2)?.bytes ?? EMPTY), 1, 2)) }, spans: pbAll(g, 2, 2).map((x) => pbSpan(x.bytes)) };
        }),
      };
    }),
  };
}
const contentTypes = [];

const receiver = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (d) => { chunks.push(d); });
  req.on('end', () => {
    if (mode === 'hang') { hung.push(res); return; }   // never answered (until the end)
    exports++;
    const body = Buffer.concat(chunks);
    if (req.headers.authorization) auths.add(req.headers.authorization);
    if (req.method !== 'POST' || req.url !== '/v1/traces') problems.push(`${req.method} ${req.url}`);
    const ct = String(req.headers['content-type']);
    contentTypes.push(ct);
    if (ct === 'application/x-protobuf') {
      try { validate(pbDoc(body)); } catch (e) { problems.push(`not OTLP protobuf: ${e.message}`); }
    } else if (ct.startsWith('application/json')) {
      try { validate(JSON.parse(body.toString('utf8'))); } catch (e) { problems.push(`not JSON: ${e.message}`); }
    } else problems.push(`content-type ${ct}`);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{}');
  });
});
await new Promise((r) => receiver.listen(0, '127.0.0.1', r));
const RECV_PORT = receiver.address().port;

// ---- the gateway ----
const oa = `http://127.0.0.1:${PORTS.openai}/v1`;
const { dir, file } = writeConfig('');
const TRACING = `tracing:
  endpoint: http://127.0.0.1:${RECV_PORT}
  headers: {authorization: "Bearer ${OTLP_TOKEN}"}
  service_name: smolgate-e2e
  flush_ms: 100
  batch_max: 4
  queue_max: ${QUEUE_MAX}
  timeout_ms: 3000
  max_retries: 1
`;
const configText = (tracing) => `listen: 127.0.0.1:0
log_level: info
providers:
  openai: {base_url: ${oa}, api_key: sk-fake-openai-dummy, retries: {max: 0}}
  backup: {type: openai, base_url: ${oa}, api_key: sk-fake-backup-dummy, retries: {max: 0}}
routes:
  - name: otlp-fb
    targets: [openai/m-otlp-primary, backup/m-otlp-backup]
keys:
  - {id: otlp-tests, key: ${GW_KEY}, role: admin}
${tracing}ledger: {sqlite: ${path.join(dir, 'ledger.db')}, spool_dir: ${path.join(dir, 'spool')}}
`;
writeFileSync(file, configText(TRACING));
const gw = await startGateway(file, [], {});
test.after(async () => {
  for (const r of hung) r.destroy();
  await gw.stop();
  receiver.close();
});

const spansOf = (requestId) => {
  const root = spans.find((s) => s.attrs['smolgate.request_id'] === requestId);
  if (!root) return null;
  return { root, children: spans.filter((s) => s.parentSpanId === root.spanId && s.traceId === root.traceId) };
};
async function waitSpans(requestId, n, ms = 5000) {
  for (const t0 = Date.now(); Date.now() - t0 < ms; await sleep(50)) {
    const got = spansOf(requestId);
    if (got && got.children.length >= n) return got;
  }
  assert.fail(`no trace with ${n} attempt spans for request ${requestId} within ${ms} ms; spans: ${JSON.stringify(spans.map((s) => s.name))}`);
}

test('a fallback under a caller traceparent: one trace, root + 2 attempt spans, GenAI attributes', async () => {
  const n = nonce('otlpfb');
  await control('/control', { provider: 'openai', match: 'm-otlp-primary', faults: [{ status: 503, count: 1 }] });
  const traceId = '4bf92f3577b34da6a3ce929d0e0e4736', parent = '00f067aa0ba902b7';
  const res = await post(chatBody('otlp-fb', `hello ${n}`), { key: GW_KEY, base: gw.url,
    headers: { traceparent: `00-${traceId}-${parent}-01`, tracestate: 'vendor1=opaque-a,other=b' } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-smolgate-attempts'), '2');
  const rid = res.headers.get('x-request-id');
  const { root, children } = await waitSpans(rid, 2);
  assert.deepEqual(problems, []);
  assert.equal(root.traceId, traceId);
  assert.equal(root.parentSpanId, parent);
  assert.equal(root.kind, 2);
  assert.equal(root.name, 'chat otlp-fb');
  assert.equal(root.status, undefined);
  const ra = root.attrs;
  assert.equal(ra['gen_ai.operation.name'], 'chat');
  assert.equal(ra['gen_ai.request.model'], 'otlp-fb');
  assert.equal(ra['gen_ai.response.model'], 'm-otlp-backup');
  assert.equal(ra['gen_ai.provider.name'], 'backup');
  assert.equal(ra['http.response.status_code'], '200');
  assert.equal(ra['smolgate.key_id'], 'otlp-tests');
  assert.equal(ra['smolgate.route'], 'otlp-fb');
  assert.equal(ra['smolgate.attempts'], '2');
  assert.ok(Number(ra['gen_ai.usage.input_tokens']) > 0, JSON.stringify(ra));
  assert.ok(Number(ra['gen_ai.usage.output_tokens']) > 0, JSON.stringify(ra));
  const svc = root.resource.attributes.find((a) => a.key === 'service.name');
  assert.equal(svc.value.stringValue, 'smolgate-e2e');
  assert.equal(children.length, 2);
  children.sort((a, b) => Number(a.attrs['smolgate.attempt']) - Number(b.attrs['smolgate.attempt']));
  const [a1, a2] = children;
  assert.equal(a1.kind, 3);
  assert.equal(a1.name, 'chat m-otlp-primary');
  assert.equal(a1.attrs['gen_ai.provider.name'], 'openai');
  assert.equal(a1.attrs['http.response.status_code'], '503');
  assert.equal(a1.attrs['smolgate.outcome'], 'retryable');
  assert.equal(a1.status.code, 2);
  assert.equal(a2.name, 'chat m-otlp-backup');
  assert.equal(a2.attrs['gen_ai.provider.name'], 'backup');
  assert.equal(a2.attrs['smolgate.outcome'], 'ok');
  assert.equal(a2.attrs['smolgate.retry_reason'], 'retryable');
  // the attempt that answered: its own usage and timings
  assert.ok(Number(a2.attrs['gen_ai.usage.output_tokens']) > 0, JSON.stringify(a2.attrs));
  assert.ok(Number(a2.attrs['smolgate.ttft_ms']) >= 0, JSON.stringify(a2.attrs));
  assert.ok(Number(a2.attrs['smolgate.queue_ms']) >= 0, JSON.stringify(a2.attrs));
  assert.equal(a2.status, undefined);
  assert.notEqual(a1.spanId, a2.spanId);
  assert.notEqual(a1.spanId, root.spanId);
  // the attempts lie inside the request, the second after the first began
  assert.ok(BigInt(a1.startTimeUnixNano) >= BigInt(root.startTimeUnixNano));
  assert.ok(BigInt(a2.endTimeUnixNano) <= BigInt(root.endTimeUnixNano));
  assert.ok(BigInt(a2.startTimeUnixNano) >= BigInt(a1.startTimeUnixNano));
  // each attempt went upstream as a child of its own span, in the caller's trace
  const up = (await fakeLog({ match: n })).sort((x, y) => x.seq - y.seq);
  assert.equal(up.length, 2);
  assert.equal(up[0].body.model, 'm-otlp-primary');
  assert.equal(up[0].headers.traceparent, `00-${traceId}-${a1.spanId}-01`);
  assert.equal(up[1].headers.traceparent, `00-${traceId}-${a2.spanId}-01`);
  assert.equal(up[0].headers.tracestate, 'vendor1=opaque-a,other=b');
  assert.equal(up[1].headers.tracestate, 'vendor1=opaque-a,other=b');
  assert.ok(auths.has(`Bearer ${OTLP_TOKEN}`), 'the configured header reaches the receiver');
});

test('a plain request starts a trace of its own; a hostile traceparent is ignored', async () => {
  const n = nonce('otlpplain');
  const res = await post(chatBody('openai/m-otlp-plain', `plain ${n}`), { key: GW_KEY, base: gw.url, headers: { tracestate: 'lone=1' } });
  assert.equal(res.status, 200);
  const { root, children } = await waitSpans(res.headers.get('x-request-id'), 1);
  assert.equal(root.parentSpanId, undefined);
  assert.equal(children.length, 1);
  const [up] = await fakeLog({ match: n });
  assert.equal(up.headers.traceparent, `00-${root.traceId}-${children[0].spanId}-01`);
  assert.equal(up.headers.tracestate, undefined, 'a tracestate without a valid traceparent is not passed on');
  assert.equal(res.headers.get('traceparent'), null, 'no trace header in the response (x-request-id finds the trace)');
  assert.equal(root.attrs['smolgate.route'], undefined);
  assert.notEqual(root.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
  for (const tp of ['00-00000000000000000000000000000000-00f067aa0ba902b7-01', 'ff-' + 'a'.repeat(32) + '-' + 'b'.repeat(16) + '-01',
    '00-ZZf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', 'x'.repeat(4000)]) {
    const r2 = await post(chatBody('openai/m-otlp-plain', 'hostile'), { key: GW_KEY, base: gw.url, headers: { traceparent: tp } });
    assert.equal(r2.status, 200);
    const got = await waitSpans(r2.headers.get('x-request-id'), 1);
    assert.equal(got.root.parentSpanId, undefined, `a root of its own for ${tp.slice(0, 60)}`);
    assert.notEqual(got.root.traceId, 'a'.repeat(32));
    assert.notEqual(got.root.traceId, '0'.repeat(32));
  }
  assert.deepEqual(problems, []);
});

// A POST whose tracestate arrives as several header fields (fetch would join them itself).
function postFields(body, fields) {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(gw.url + '/v1/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${GW_KEY}`, 'content-length': Buffer.byteLength(payload), ...fields },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text }));
    });
    req.on('error', reject);
    req.end(payload);
  });
}

test('tracestate in several fields goes upstream as one list, in order; too long a list is dropped', async () => {
  const traceId = '5bf92f3577b34da6a3ce929d0e0e4736';
  const n = nonce('otlpts');
  const res = await postFields(chatBody('openai/m-otlp-plain', `fields ${n}`),
    { traceparent: `00-${traceId}-00f067aa0ba902b7-01`, tracestate: ['congo=t61rcWkgMzE', ' rojo=00f067aa0ba902b7 '] });
  assert.equal(res.status, 200);
  const [up] = await fakeLog({ match: n });
  assert.equal(up.headers.tracestate, 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7');
  const n2 = nonce('otlpts2');
  const res2 = await postFields(chatBody('openai/m-otlp-plain', `fields ${n2}`),
    { traceparent: `00-${traceId}-00f067aa0ba902b7-01`, tracestate: ['a=' + 'x'.repeat(300), 'b=' + 'y'.repeat(300)] });
  assert.equal(res2.status, 200);
  const [up2] = await fakeLog({ match: n2 });
  assert.equal(up2.headers.tracestate, undefined, 'over 512 bytes together: not passed on');
  assert.ok(/^00-5bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/.test(up2.headers.traceparent ?? ''));
});

const metric = async (name) => {
  const m = await get('/metrics', { key: GW_KEY, base: gw.url });
  return Number((new RegExp(`^${name} (\\d+)$`, 'm').exec(m.text) ?? [])[1] ?? NaN);
};

test('an unsampled caller: its trace and flag 00 go upstream, nothing is exported', async () => {
  const n = nonce('otlpun');
  const traceId = '0af7651916cd43dd8448eb211c80319c';
  const before = await metric('smolgate_otlp_sampled_out_total');
  const res = await post(chatBody('openai/m-otlp-unsampled', `unsampled ${n}`), { key: GW_KEY, base: gw.url,
    headers: { traceparent: `00-${traceId}-b7ad6b7169203331-00`, tracestate: 'congo=t61rcWkgMzE' } });
  assert.equal(res.status, 200);
  const [up] = await fakeLog({ match: n });
  const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-00$/.exec(up.headers.traceparent ?? '');
  assert.ok(m, `traceparent upstream: ${up.headers.traceparent}`);
  assert.equal(m[1], traceId);
  assert.notEqual(m[2], 'b7ad6b7169203331', 'the parent named upstream is our attempt span, not the caller\'s');
  assert.equal(up.headers.tracestate, 'congo=t61rcWkgMzE');
  assert.equal(await metric('smolgate_otlp_sampled_out_total'), before + 1);
  await sleep(400);   // past flush_ms: had it been queued, it would be exported by now
  assert.equal(spansOf(res.headers.get('x-request-id')), null);
});

async function reloadWith(tracing) {
  writeFileSync(file, configText(tracing));
  const n = (gw.log().match(/configuration reloaded/g) ?? []).length;
  gw.proc.kill('SIGHUP');
  await gw.waitLog(new RegExp(`(?:configuration reloaded[^]*){${n + 1}}`), 5000);
}

test('SIGHUP reapplies tracing: a new service name, then off (no spans, no traceparent upstream), then on again', async () => {
  await reloadWith(TRACING.replace('service_name: smolgate-e2e', 'service_name: smolgate-reloaded'));
  let n = nonce('otlprl1');
  let res = await post(chatBody('openai/m-otlp-reload', `reload ${n}`), { key: GW_KEY, base: gw.url });
  assert.equal(res.status, 200);
  let got = await waitSpans(res.headers.get('x-request-id'), 1);
  assert.equal(got.root.resource.attributes.find((a) => a.key === 'service.name').value.stringValue, 'smolgate-reloaded');

  await reloadWith('');
  await gw.waitLog(/tracing: off/, 5000);
  n = nonce('otlprl2');
  res = await post(chatBody('openai/m-otlp-reload', `reload ${n}`), { key: GW_KEY, base: gw.url });
  assert.equal(res.status, 200);
  const [up] = await fakeLog({ match: n });
  assert.equal(up.headers.traceparent, undefined, 'tracing off: no traceparent upstream');
  const m = await get('/metrics', { key: GW_KEY, base: gw.url });
  assert.doesNotMatch(m.text, /smolgate_otlp_/, 'tracing off: no exporter counters');
  await sleep(400);
  assert.equal(spansOf(res.headers.get('x-request-id')), null, 'tracing off: no spans');

  await reloadWith(TRACING);
  n = nonce('otlprl3');
  res = await post(chatBody('openai/m-otlp-reload', `reload ${n}`), { key: GW_KEY, base: gw.url });
  assert.equal(res.status, 200);
  got = await waitSpans(res.headers.get('x-request-id'), 1);
  assert.equal(got.root.resource.attributes.find((a) => a.key === 'service.name').value.stringValue, 'smolgate-e2e');
  const [up3] = await fakeLog({ match: n });
  assert.equal(up3.headers.traceparent, `00-${got.root.traceId}-${got.children[0].spanId}-01`);
  assert.deepEqual(problems, []);
});

test('the encodings: http/protobuf by default, http/json on request (a reload), the same spans and traceparents', async () => {
  assert.ok(contentTypes.length > 0 && contentTypes.every((c) => c === 'application/x-protobuf'), JSON.stringify([...new Set(contentTypes)]));
  await reloadWith(TRACING + '  protocol: http/json\n');
  await gw.waitLog(/otlp: traces to \S+ \(http\/json,/, 5000);
  const seen = contentTypes.length;
  const n = nonce('otlpjson');
  await control('/control', { provider: 'openai', match: 'm-otlp-primary', faults: [{ status: 503, count: 1 }] });
  const traceId = '5bf92f3577b34da6a3ce929d0e0e4737';
  const res = await post(chatBody('otlp-fb', `json ${n} \u00e9t\u00e9`), { key: GW_KEY, base: gw.url,
    headers: { traceparent: `00-${traceId}-10f067aa0ba902b8-01` } });
  assert.equal(res.status, 200);
  const { root, children } = await waitSpans(res.headers.get('x-request-id'), 2);
  assert.ok(contentTypes.slice(seen).length > 0 && contentTypes.slice(seen).every((c) => c.startsWith('application/json')),
    JSON.stringify(contentTypes.slice(seen)));
  assert.deepEqual(problems, []);
  assert.equal(root.traceId, traceId);
  assert.equal(root.parentSpanId, '10f067aa0ba902b8');
  assert.equal(root.kind, 2);
  assert.equal(root.name, 'chat otlp-fb');
  assert.equal(root.attrs['gen_ai.response.model'], 'm-otlp-backup');
  assert.equal(root.attrs['http.response.status_code'], '200');
  assert.equal(root.attrs['smolgate.attempts'], '2');
  assert.equal(root.attrs['smolgate.stream'], false);
  assert.ok(Number(root.attrs['gen_ai.usage.input_tokens']) > 0);
  assert.equal(root.resource.attributes.find((a) => a.key === 'service.name').value.stringValue, 'smolgate-e2e');
  children.sort((a, b) => Number(a.attrs['smolgate.attempt']) - Number(b.attrs['smolgate.attempt']));
  assert.equal(children[0].kind, 3);
  assert.equal(children[0].status.code, 2);
  assert.equal(children[0].status.message, 'retryable');
  assert.equal(children[1].attrs['smolgate.retry_reason'], 'retryable');
  assert.ok(BigInt(children[0].startTimeUnixNano) >= BigInt(root.startTimeUnixNano));
  const up = (await fakeLog({ match: n })).sort((x, y) => x.seq - y.seq);
  assert.equal(up.length, 2);
  assert.equal(up[0].headers.traceparent, `00-${traceId}-${children[0].spanId}-01`);
  assert.equal(up[1].headers.traceparent, `00-${traceId}-${children[1].spanId}-01`);
  // back to the default (a new exporter, counters from zero): protobuf again
  await reloadWith(TRACING);
  const seen2 = contentTypes.length;
  const r2 = await post(chatBody('openai/m-otlp-plain', 'protobuf again'), { key: GW_KEY, base: gw.url });
  await waitSpans(r2.headers.get('x-request-id'), 1);
  assert.ok(contentTypes.slice(seen2).every((c) => c === 'application/x-protobuf'), JSON.stringify(contentTypes.slice(seen2)));
});

test('the receiver hanging slows and fails no request; the queue stays bounded; drops are counted', async () => {
  mode = 'hang';
  await sleep(300);   // the exporter's next batch goes to a receiver that never answers
  const t0 = Date.now();
  for (let i = 0; i < 40; i++) {
    const r = await post(chatBody('openai/m-otlp-hang', `hang ${i}`), { key: GW_KEY, base: gw.url });
    assert.equal(r.status, 200);
  }
  const took = Date.now() - t0;
  // 40 requests while each export waits 3 s (timeout_ms) and retries: were they waiting on
  // the exporter, this would take minutes; it takes well under a second on an idle machine
  assert.ok(took < 20000, `40 requests took ${took} ms with the receiver hanging`);
  const m = await get('/metrics', { key: GW_KEY, base: gw.url });
  const text = m.text;
  const val = (name) => Number((new RegExp(`^${name} (\\d+)$`, 'm').exec(text) ?? [])[1]);
  assert.ok(val('smolgate_otlp_pending') <= QUEUE_MAX, text);
  assert.ok(val('smolgate_otlp_dropped_queue_full_total') > 0, `drops counted:\n${text}`);
  assert.ok(val('smolgate_otlp_spans_exported_total') > 0);
  const health = await get('/healthz', { key: GW_KEY, base: gw.url });
  assert.equal(health.status, 200);
});

test('the gateway log: no exporter secret, no crash', async () => {
  const log = gw.log();
  assert.ok(!log.includes(OTLP_TOKEN), 'the exporter token is not logged');
  assert.match(log, /otlp: traces to http:\/\/127\.0\.0\.1:\d+\/v1\/traces/);
  assert.doesNotMatch(log, CRASH_RE);
});
