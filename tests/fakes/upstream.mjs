#!/usr/bin/env node
// upstream.mjs: fake OpenAI, Anthropic and Google Gemini servers for smolgate's tests.
//
// One process, four loopback ports: the OpenAI Chat Completions, Responses (stored
// responses included) and embeddings APIs and a model lookup, the Anthropic Messages API
// and its token counting, the Gemini generateContent and embedContent /
// batchEmbedContents APIs, and a control port through which a test
// queues faults, fixes replies and reads back every request the fakes received. Node's
// standard library only.
//
//   node tests/fakes/upstream.mjs [--openai P] [--anthropic P] [--gemini P] [--control P]
//                                 [--host 127.0.0.1] [--keep-alive-ms 30000] [--no-log]
//                                 [--exit-on-stdin-eof]
//
// Port 0 (the default) picks a free port. When every server listens, one JSON line goes to
// stdout, e.g. {"openai":41001,"anthropic":41002,"gemini":41003,"control":41004}, and
// nothing else is ever written there. SIGTERM / SIGINT close everything (stalled
// connections included) and exit 0.
//
// Wire formats follow the real services: bodies, status codes, error shapes, headers
// (request ids, rate-limit headers, retry-after) and SSE framing (OpenAI `data: ...\n\n`
// with `data: [DONE]`; Anthropic `event:`/`data:` pairs; Gemini `data: ...\r\n\r\n`).
// Answers are deterministic functions of the request; see tests/fakes/README.md for the
// conventions (echo replies, `call:NAME {json}` tool calls, word-count usage) and for the
// control API and the fault list.

import http from 'node:http';
import { createHash } from 'node:crypto';
import { parseArgs } from 'node:util';

// ---------------------------------------------------------------------------------------
// Command line and state

const { values: opts } = parseArgs({
  options: {
    openai: { type: 'string', default: '0' },
    anthropic: { type: 'string', default: '0' },
    gemini: { type: 'string', default: '0' },
    control: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    'keep-alive-ms': { type: 'string', default: '30000' },
    'no-log': { type: 'boolean', default: false },
    'exit-on-stdin-eof': { type: 'boolean', default: false },
  },
});

const PROVIDERS = ['openai', 'anthropic', 'gemini'];
const LOG_MAX = 10000;            // oldest entries are dropped past this
const BODY_MAX = 32 << 20;        // request bodies above this get a 413
const RESET_GRACE_MS = 30;        // lets bytes already written reach the client before a RST

const state = {
  seq: 0,                         // request counter, all providers together
  log: [],
  faults: { openai: [], anthropic: [], gemini: [] },   // queued: {fault, left, match}
  rules: [],                      // {provider, match, reply, usage, contextWindow, apiKey}
  responses: new Map(),           // OpenAI Responses API: id -> {response, input, conversation, deleted}
  items: new Map(),               // and the items of stored responses, by id (item_reference)
  logging: !opts['no-log'],
};
const sockets = new Set();        // every open connection, for shutdown and /control/reset

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const words = (s) => (String(s ?? '').match(/\S+/g) || []).length;
const pad = (n, w = 6) => String(n).padStart(w, '0');

// ---------------------------------------------------------------------------------------
// Faults

// A fault: {kind, status?, error?, retryAfter?, retryAfterMs?, afterChunks?, delayMs?,
// chunkDelayMs?, headers?, body?, count?}. Shorthand strings name the common ones, and a
// comma-separated list of shorthands merges them ("slow_first_byte:300,stall:2").
function shorthand(tok) {
  const m = /^([a-z_0-9]+)(?::(\d+))?$/i.exec(tok.trim());
  if (!m) throw new Error(`unknown fault "${tok}"`);
  const name = m[1].toLowerCase();
  const n = m[2] === undefined ? undefined : Number(m[2]);
  if (/^\d{3}$/.test(name)) {
    const f = { kind: 'status', status: Number(name) };
    if (n !== undefined) f.retryAfter = n;
    return f;
  }
  switch (name) {
    case 'ok': case 'none': return { kind: 'none' };
    case 'rate_limit': return { kind: 'status', status: 429, retryAfter: n };
    case 'overloaded': return { kind: 'status', status: 529 };
    // Their status is the provider's own (insufficient_quota: 429 OpenAI / Gemini, 400 Anthropic).
    case 'insufficient_quota': return { kind: 'status', error: 'insufficient_quota' };
    case 'context_length_exceeded': case 'context_length':
      return { kind: 'status', error: 'context_length_exceeded' };
    case 'slow_first_byte': return { delayMs: n ?? 1000 };
    case 'slow_chunks': return { chunkDelayMs: n ?? 100 };
    case 'hang': return { kind: 'hang' };
    case 'stall': return { kind: 'stall', afterChunks: n ?? 1 };
    case 'reset': case 'reset_before': return { kind: 'reset', afterChunks: n ?? 0 };
    case 'reset_after_first_chunk': return { kind: 'reset', afterChunks: 1 };
    case 'malformed': return { kind: 'malformed', afterChunks: n ?? 1 };
    case 'close_mid_body': case 'truncate': return { kind: 'close_mid_body', afterChunks: n ?? 1 };
    case 'error_event': return { kind: 'error_event', afterChunks: n ?? 1 };
    // Hostile upstreams: what a broken or malicious server may do to the gateway.
    case 'endless_body': return { kind: 'endless_body' };
    case 'huge_length': return { kind: 'huge_length', ...(n !== undefined ? { length: n } : {}) };
    case 'huge_sse_line': return { kind: 'huge_sse_line', ...(n !== undefined ? { lineBytes: n << 20 } : {}) };
    case 'drip': return { kind: 'drip', ...(n !== undefined ? { dripMs: n } : {}) };
    case 'echo_key': return { kind: 'echo_key' };
    default: throw new Error(`unknown fault "${tok}"`);
  }
}

const HOSTILE = new Set(['endless_body', 'huge_length', 'huge_sse_line', 'drip']);
const KINDS = new Set(['none', 'status', 'hang', 'stall', 'reset', 'malformed', 'close_mid_body', 'error_event', 'echo_key', ...HOSTILE]);

function normFault(f) {
  if (typeof f === 'number') f = String(f);
  if (typeof f === 'string') f = f.split(',').filter((t) => t.trim()).reduce((a, t) => ({ ...a, ...shorthand(t) }), {});
  if (!f || typeof f !== 'object' || Array.isArray(f)) throw new Error('a fault is a string or an object');
  const out = { ...f };
  if (out.status !== undefined && out.kind === undefined) out.kind = 'status';
  if (out.error && out.kind === undefined) out.kind = 'status';
  out.kind ??= 'none';
  if (!KINDS.has(out.kind)) throw new Error(`unknown fault kind "${out.kind}"`);
  if (out.error !== undefined && out.error !== 'insufficient_quota' && out.error !== 'context_length_exceeded') {
    throw new Error('error must be "insufficient_quota" or "context_length_exceeded"');
  }
  if (out.kind === 'status' && out.status === undefined && !out.error) throw new Error('a status fault needs a status');
  if (out.status !== undefined && !(Number.isInteger(out.status) && out.status >= 200 && out.status <= 599)) throw new Error('status must be 200..599');
  if (out.kind === 'status' && out.status === 429 && out.retryAfter === undefined && !out.error) out.retryAfter = 1;
  if (out.afterChunks === undefined) out.afterChunks = out.kind === 'reset' ? 0 : 1;
  if (out.kind === 'huge_length') out.length ??= 2147483648;
  if (out.kind === 'huge_sse_line') out.lineBytes ??= 64 << 20;
  if (out.kind === 'drip') out.dripMs ??= 1000;
  if (out.kind === 'huge_length' || out.kind === 'endless_body') out.chunkBytes ??= 65536;
  out.count = out.count === undefined ? 1 : Number(out.count);
  return out;
}

function parseFaultHeader(v) {
  v = v.trim();
  if (v.startsWith('{') || v.startsWith('[')) {
    const j = JSON.parse(v);
    return normFault(Array.isArray(j) ? j[0] : j);
  }
  return normFault(v);
}

// The fault for this request: the x-fake-fault header, else the first queued fault of the
// provider whose match (if any) occurs in the path or body.
function takeFault(provider, req, haystack) {
  const h = req.headers['x-fake-fault'];
  if (h) return parseFaultHeader(h);
  const q = state.faults[provider];
  for (let i = 0; i < q.length; i++) {
    const e = q[i];
    if (e.match && !haystack.includes(e.match)) continue;
    if (--e.left <= 0) q.splice(i, 1);
    return e.fault;
  }
  return null;
}

function rulesFor(provider, haystack) {
  const r = {};
  for (const rule of state.rules) {
    if (rule.provider !== '*' && rule.provider !== provider) continue;
    if (rule.match && !haystack.includes(rule.match)) continue;
    for (const k of ['reply', 'usage', 'contextWindow', 'apiKey']) if (rule[k] !== undefined) r[k] = rule[k];
  }
  return r;
}

// ---------------------------------------------------------------------------------------
// The answer: what the fake model "says", from a provider-neutral view of the request.
//
// conv = {model, stream, maxTokens, stop[], hasTools, promptTexts[], lastUserText,
//         toolResults (string[] when the conversation ends with tool results, else null)}

function planAnswer(conv, rules, headerReply) {
  let text = null;
  const calls = [];
  const lines = (conv.lastUserText || '').split('\n');
  if (!conv.toolResults && conv.hasTools && lines.some((l) => /^\s*call:/.test(l))) {
    for (const l of lines) {
      let m = /^\s*call:\s*([A-Za-z0-9_.\-]+)\s*(.*)$/.exec(l);
      if (m) {
        const raw = m[2].trim();
        let args = {}, valid = true;
        if (raw) { try { args = JSON.parse(raw); } catch { valid = false; } }
        if (valid && (typeof args !== 'object' || args === null || Array.isArray(args))) valid = false;
        calls.push({ name: m[1], args: valid ? args : {}, argsJson: valid ? JSON.stringify(args) : raw });
        continue;
      }
      m = /^\s*say:\s?(.*)$/.exec(l);
      if (m) text = (text ? text + ' ' : '') + m[1];
    }
  } else if (conv.toolResults) {
    text = 'tool result: ' + conv.toolResults.join(' | ');
  } else {
    text = 'echo: ' + (conv.lastUserText || '');
  }
  const fixed = headerReply ?? rules.reply;
  if (fixed !== undefined && fixed !== null) text = String(fixed);
  text ??= '';

  let finish = calls.length ? 'tool_calls' : 'stop';
  let stopSeq = null;
  if (conv.stop.length && text) {
    let at = -1;
    for (const s of conv.stop) {
      const i = s ? text.indexOf(s) : -1;
      if (i >= 0 && (at < 0 || i < at)) { at = i; stopSeq = s; }
    }
    if (at >= 0) text = text.slice(0, at);
    else stopSeq = null;
  }
  if (conv.maxTokens != null && !calls.length && words(text) > conv.maxTokens) {
    text = (text.match(/\s*\S+/g) || []).slice(0, conv.maxTokens).join('');
    finish = 'length';
    stopSeq = null;
  }

  const u = rules.usage || {};
  const omitUsage = rules.usage === false;   // OpenAI: no usage anywhere (some compatible servers)
  const prompt = u.prompt ?? conv.promptTexts.reduce((a, t) => a + words(t), 0);
  const visible = u.completion ?? (words(text) + calls.reduce((a, c) => a + words(c.argsJson), 0));
  const usage = {
    prompt,                                   // all prompt tokens, cached included
    cached: Math.min(u.cached ?? 0, prompt),  // of prompt: read from the cache
    cacheCreation: u.cacheCreation ?? 0,      // Anthropic: written to the cache
    visible,                                  // completion tokens that are text / tool calls
    reasoning: u.reasoning ?? 0,              // completion tokens spent on reasoning
  };
  return { text, calls, finish, stopSeq, usage, omitUsage };
}

// Text pieces as a stream delivers them: one word (with its leading space) per chunk.
const pieces = (text) => text.match(/\s*\S+/g) || [];
// Argument JSON fragments, as OpenAI and Anthropic stream them.
function fragments(s, n = 8) {
  const out = [];
  for (let i = 0; i < s.length; i += n) out.push(s.slice(i, i + n));
  return out;
}

// ---------------------------------------------------------------------------------------
// HTTP plumbing

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > BODY_MAX) { reject(Object.assign(new Error('too large'), { tooLarge: true })); req.destroy(); return; }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function sendJson(res, status, obj, headers = {}) {
  const body = typeof obj === 'string' ? obj : JSON.stringify(obj);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    ...headers,
  });
  res.end(body);
}

const SECRET_HEADERS = new Set(['authorization', 'x-api-key', 'x-goog-api-key', 'api-key', 'proxy-authorization', 'cookie']);

function logEntry(provider, req, url, rawBody) {
  const headers = {};
  for (const [k, v] of Object.entries(req.headers)) headers[k] = SECRET_HEADERS.has(k) ? '[redacted]' : v;
  const query = {};
  for (const [k, v] of url.searchParams) query[k] = k === 'key' ? '[redacted]' : v;
  let body = null;
  if (rawBody) { try { body = JSON.parse(rawBody); } catch { body = rawBody; } }
  const entry = {
    seq: ++state.seq, time: new Date().toISOString(), provider,
    method: req.method, path: url.pathname, query, headers,
    auth: { present: false, valid: null },
    body, fault: null, status: null, outcome: null,
  };
  if (state.logging) {
    state.log.push(entry);
    if (state.log.length > LOG_MAX) state.log.splice(0, state.log.length - LOG_MAX);
  }
  return entry;
}

// ---------------------------------------------------------------------------------------
// Provider: OpenAI (Chat Completions)

const openai = {
  name: 'openai',
  ids(seq) { return { id: `chatcmpl-fake${pad(seq)}`, request: `req_fake${pad(seq, 12)}` }; },

  headers(ctx, extra = {}) {
    return {
      'x-request-id': ctx.ids.request,
      'openai-version': '2020-10-01',
      'openai-organization': 'org-fake',
      'openai-processing-ms': '1',
      'x-ratelimit-limit-requests': '10000',
      'x-ratelimit-limit-tokens': '10000000',
      'x-ratelimit-remaining-requests': '9999',
      'x-ratelimit-remaining-tokens': '9999000',
      'x-ratelimit-reset-requests': '6ms',
      'x-ratelimit-reset-tokens': '0s',
      ...extra,
    };
  },

  error(ctx, status, errKind, fault = {}) {
    const model = ctx.model || 'gpt-4o-mini';
    let e = { message: 'The server had an error while processing your request. Sorry about that!', type: 'server_error', param: null, code: null };
    const h = {};
    if (errKind === 'insufficient_quota') {
      e = { message: 'You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.', type: 'insufficient_quota', param: null, code: 'insufficient_quota' };
    } else if (errKind === 'context_length_exceeded') {
      const lim = fault.contextWindow ?? 128000;
      const got = Math.max(fault.promptTokens ?? lim + 1, lim + 1);
      e = { message: `This model's maximum context length is ${lim} tokens. However, your messages resulted in ${got} tokens. Please reduce the length of the messages.`, type: 'invalid_request_error', param: 'messages', code: 'context_length_exceeded' };
    } else if (status === 400) {
      e = { message: fault.message ?? 'Invalid request (fake fault).', type: 'invalid_request_error', param: null, code: null };
    } else if (status === 401) {
      e = ctx.noKey
        ? { message: "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username. You can obtain an API key from https://platform.openai.com/account/api-keys.", type: 'invalid_request_error', param: null, code: null }
        : { message: 'Incorrect API key provided: sk-fake***. You can find your API key at https://platform.openai.com/account/api-keys.', type: 'invalid_request_error', param: null, code: 'invalid_api_key' };
    } else if (status === 403) {
      e = { message: 'You are not allowed to sample from this model', type: 'invalid_request_error', param: null, code: null };
    } else if (status === 404) {
      e = { message: `The model \`${model}\` does not exist or you do not have access to it.`, type: 'invalid_request_error', param: null, code: 'model_not_found' };
    } else if (status === 408) {
      e = { message: 'Request timed out.', type: 'timeout', param: null, code: null };
    } else if (status === 409) {
      e = { message: 'Conflict.', type: 'invalid_request_error', param: null, code: null };
    } else if (status === 413) {
      e = { message: 'Request too large.', type: 'invalid_request_error', param: null, code: null };
    } else if (status === 422) {
      e = { message: 'Unprocessable entity.', type: 'invalid_request_error', param: null, code: null };
    } else if (status === 429) {
      const s = fault.retryAfter ?? 1;
      e = { message: `Rate limit reached for ${model} in organization org-fake on requests per min (RPM): Limit 10000, Used 10000, Requested 1. Please try again in ${s}s. Visit https://platform.openai.com/account/rate-limits to learn more.`, type: 'requests', param: null, code: 'rate_limit_exceeded' };
      Object.assign(h, { 'x-ratelimit-remaining-requests': '0', 'x-ratelimit-reset-requests': `${s}s` });
    } else if (status === 502) {
      e = { message: 'Bad gateway.', type: 'cf_bad_gateway', param: null, code: 502 };
    } else if (status === 503) {
      e = { message: 'The server is overloaded or not ready yet.', type: 'server_error', param: null, code: null };
    } else if (status === 529) {
      e = { message: 'Overloaded', type: 'server_error', param: null, code: null };
    } else if (status < 500) {
      e = { message: `Request failed with status ${status} (fake fault).`, type: 'invalid_request_error', param: null, code: null };
    }
    return { status, headers: this.headers(ctx, h), body: { error: e } };
  },

  // The Responses API's stream has its own error event (ResponseErrorEvent) and framing.
  midStreamError(ctx) {
    const message = 'The server had an error while processing your request. Sorry about that!';
    if (ctx.routeKind === 'responses') return `event: error\ndata: ${JSON.stringify({ type: 'error', code: 'server_error', message, param: null, sequence_number: 0 })}\n\n`;
    return `data: ${JSON.stringify({ error: { message, type: 'server_error', param: null, code: null } })}\n\n`;
  },
  malformed(ctx) {
    if (ctx.routeKind === 'responses') return 'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","item_id":"msg_x","delta":"\n\n';
    return `data: {"id":"${ctx.ids.id}","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"\n\n`;
  },

  // Returns {conv} or {error: {status, message, param, code}}
  parse(ctx, j) {
    if (j === undefined) return { error: { status: 400, message: 'We could not parse the JSON body of your request. (HINT: This likely means you aren\'t using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)', param: null, code: null } };
    if (typeof j !== 'object' || j === null || Array.isArray(j)) return { error: { status: 400, message: 'Invalid type for request body: expected an object.', param: null, code: 'invalid_type' } };
    if (typeof j.model !== 'string' || !j.model) return { error: { status: 400, message: 'you must provide a model parameter', param: null, code: null } };
    if (j.messages === undefined) return { error: { status: 400, message: "Missing required parameter: 'messages'.", param: 'messages', code: 'missing_required_parameter' } };
    if (!Array.isArray(j.messages)) return { error: { status: 400, message: `Invalid type for 'messages': expected an array, but got ${typeof j.messages} instead.`, param: 'messages', code: 'invalid_type' } };
    if (j.messages.length === 0) return { error: { status: 400, message: "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.", param: 'messages', code: 'empty_array' } };
    const texts = [];
    let lastUserText = '';
    const partsText = (c) => typeof c === 'string' ? c
      : Array.isArray(c) ? c.filter((p) => p && p.type === 'text').map((p) => p.text ?? '').join(' ') : '';
    for (let i = 0; i < j.messages.length; i++) {
      const m = j.messages[i];
      if (!m || typeof m !== 'object' || typeof m.role !== 'string') {
        return { error: { status: 400, message: `Missing required parameter: 'messages[${i}].role'.`, param: `messages[${i}].role`, code: 'missing_required_parameter' } };
      }
      if (!['system', 'developer', 'user', 'assistant', 'tool', 'function'].includes(m.role)) {
        return { error: { status: 400, message: `Invalid value: '${m.role}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'.`, param: `messages[${i}].role`, code: 'invalid_value' } };
      }
      const t = partsText(m.content);
      if (m.role === 'tool') texts.push(compactJson(t)); else texts.push(t);
      if (m.role === 'user') lastUserText = t;
      for (const tc of m.tool_calls || []) texts.push(compactJson(tc?.function?.arguments ?? ''));
    }
    // The conversation ends with tool results: the trailing run of role "tool" messages.
    let toolResults = null;
    for (let i = j.messages.length - 1; i >= 0 && j.messages[i].role === 'tool'; i--) {
      (toolResults ??= []).unshift(compactJson(partsText(j.messages[i].content)));
    }
    const stop = j.stop == null ? [] : Array.isArray(j.stop) ? j.stop : [j.stop];
    return {
      conv: {
        model: j.model, stream: j.stream === true,
        includeUsage: j.stream_options?.include_usage === true,
        maxTokens: j.max_completion_tokens ?? j.max_tokens ?? null,
        stop: stop.filter((s) => typeof s === 'string'),
        hasTools: Array.isArray(j.tools) && j.tools.length > 0,
        promptTexts: texts, lastUserText, toolResults,
      },
    };
  },

  usage(u) {
    return {
      prompt_tokens: u.prompt,
      completion_tokens: u.visible + u.reasoning,
      total_tokens: u.prompt + u.visible + u.reasoning,
      prompt_tokens_details: { cached_tokens: u.cached, audio_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: u.reasoning, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
    };
  },

  toolCallId(ctx, i) { return `call_fake${pad(ctx.seq)}_${i}`; },

  complete(ctx, conv, a) {
    const message = { role: 'assistant', content: a.calls.length && !a.text ? null : a.text, refusal: null, annotations: [] };
    if (a.calls.length) {
      message.tool_calls = a.calls.map((c, i) => ({ id: this.toolCallId(ctx, i), type: 'function', function: { name: c.name, arguments: c.argsJson } }));
    }
    return {
      id: ctx.ids.id, object: 'chat.completion', created: ctx.created, model: conv.model,
      choices: [{ index: 0, message, logprobs: null, finish_reason: a.finish }],
      ...(a.omitUsage ? {} : { usage: this.usage(a.usage) }),
      service_tier: 'default',
      system_fingerprint: 'fp_fake',
    };
  },

  streamEvents(ctx, conv, a) {
    const base = { id: ctx.ids.id, object: 'chat.completion.chunk', created: ctx.created, model: conv.model, service_tier: 'default', system_fingerprint: 'fp_fake' };
    const withUsage = conv.includeUsage && !a.omitUsage ? { usage: null } : {};
    const ev = (delta, finish = null) => `data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }], ...withUsage })}\n\n`;
    const out = [];
    const textPieces = pieces(a.text);
    if (a.calls.length && !textPieces.length) out.push(ev({ role: 'assistant', content: null, refusal: null }));
    else out.push(ev({ role: 'assistant', content: '', refusal: null }));
    for (const p of textPieces) out.push(ev({ content: p }));
    a.calls.forEach((c, i) => {
      out.push(ev({ tool_calls: [{ index: i, id: this.toolCallId(ctx, i), type: 'function', function: { name: c.name, arguments: '' } }] }));
      for (const f of fragments(c.argsJson)) out.push(ev({ tool_calls: [{ index: i, function: { arguments: f } }] }));
    });
    out.push(ev({}, a.finish));
    if (conv.includeUsage && !a.omitUsage) out.push(`data: ${JSON.stringify({ ...base, choices: [], usage: this.usage(a.usage) })}\n\n`);
    out.push('data: [DONE]\n\n');
    return out;
  },

  streamHeaders(ctx) { return this.headers(ctx, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' }); },

  models() {
    const ids = ['gpt-4o-mini', 'gpt-4o', 'gpt-4.1', 'gpt-4.1-mini', 'o4-mini', 'gpt-5-mini'];
    return { object: 'list', data: ids.map((id) => ({ id, object: 'model', created: 1721172741, owned_by: 'system' })) };
  },

  // Checks the key; returns an error response or null.
  auth(ctx, req, rules) {
    const a = req.headers.authorization;
    const m = a && /^Bearer\s+(.+)$/i.exec(a);
    ctx.entry.auth.present = !!a;
    if (!m) { ctx.noKey = true; return this.error(ctx, 401); }
    ctx.entry.auth.valid = rules.apiKey === undefined ? null : m[1].trim() === rules.apiKey;
    if (ctx.entry.auth.valid === false) return this.error(ctx, 401);
    return null;
  },

  route(method, path, ctx) {
    if (method === 'POST' && path === '/v1/chat/completions') return 'chat';
    if (method === 'GET' && path === '/v1/models') return 'models';
    if (method === 'POST' && path === '/v1/responses') return 'responses';
    if (method === 'POST' && path === '/v1/embeddings') return 'embeddings';
    let m = /^\/v1\/responses\/([^/]+)(\/input_items)?$/.exec(path);
    if (m) {
      ctx.responseId = decodeURIComponent(m[1]);
      if (m[2]) return method === 'GET' ? 'response-items' : null;
      return method === 'GET' ? 'response-get' : method === 'DELETE' ? 'response-delete' : null;
    }
    m = /^\/v1\/models\/(.+)$/.exec(path);
    if (method === 'GET' && m) {
      ctx.modelId = ctx.model = decodeURIComponent(m[1]);
      return 'model';
    }
    return null;
  },

  notFound(ctx, method, path) {
    return { status: 404, headers: this.headers(ctx), body: { error: { message: `Invalid URL (${method} ${path})`, type: 'invalid_request_error', param: null, code: null } } };
  },

  validationError(ctx, e) {
    return { status: e.status, headers: this.headers(ctx), body: { error: { message: e.message, type: 'invalid_request_error', param: e.param ?? null, code: e.code ?? null } } };
  },
};

// Tool arguments and results are counted in compact JSON when they are JSON, so that a
// gateway translating between formats (string arguments vs objects) counts the same.
function compactJson(s) {
  if (typeof s !== 'string') return JSON.stringify(s ?? '');
  try { const v = JSON.parse(s); if (v !== null && typeof v === 'object') return JSON.stringify(v); } catch { /* plain text */ }
  return s;
}

// ---------------------------------------------------------------------------------------
// Provider: OpenAI, the other endpoints: the Responses API (POST /v1/responses, streamed
// with its typed events; GET / DELETE /v1/responses/{id}, GET .../input_items; stored
// responses chained by previous_response_id), embeddings, and GET /v1/models/{id}.

// Text of Responses content: a string, or the text of its input_text / output_text parts.
const respText = (c) => typeof c === 'string' ? c
  : Array.isArray(c) ? c.filter((p) => p && (p.type === 'input_text' || p.type === 'output_text' || p.type === 'text')).map((p) => p.text ?? '').join(' ') : '';

const RESP_ROLES = ['user', 'assistant', 'system', 'developer'];

// The request's input as items: a string is one user message. {items} or {error}.
function respInputItems(input) {
  if (typeof input === 'string') return { items: [{ type: 'message', role: 'user', content: input }] };
  if (!Array.isArray(input)) return { error: { status: 400, message: "Invalid type for 'input': expected one of a string or an array of input items, but got " + typeof input + ' instead.', param: 'input', code: 'invalid_type' } };
  const items = [];
  for (let i = 0; i < input.length; i++) {
    const x = input[i];
    if (!x || typeof x !== 'object' || Array.isArray(x)) return { error: { status: 400, message: `Invalid type for 'input[${i}]': expected an input item object.`, param: `input[${i}]`, code: 'invalid_type' } };
    const type = x.type ?? (x.role !== undefined ? 'message' : undefined);
    if (type === 'message') {
      if (!RESP_ROLES.includes(x.role)) return { error: { status: 400, message: `Invalid value: '${x.role}'. Supported values are: 'assistant', 'system', 'developer', and 'user'.`, param: `input[${i}].role`, code: 'invalid_value' } };
      items.push({ ...x, type: 'message' });
    } else if (type === 'function_call' || type === 'function_call_output' || type === 'reasoning' || type === 'item_reference') {
      items.push(x);
    } else {
      return { error: { status: 400, message: `Invalid value: '${type}'. Supported values are: 'message', 'function_call', 'function_call_output', 'reasoning' and 'item_reference'.`, param: `input[${i}].type`, code: 'invalid_value' } };
    }
  }
  return { items };
}

function storeResponse(id, rec, outputItems) {
  state.responses.set(id, rec);
  if (state.responses.size > LOG_MAX) state.responses.delete(state.responses.keys().next().value);
  for (const it of [...rec.input, ...outputItems]) if (it.id) state.items.set(it.id, it);
  while (state.items.size > 4 * LOG_MAX) state.items.delete(state.items.keys().next().value);
}

openai.respIds = (ctx) => ({ id: `resp_fake${pad(ctx.seq, 12)}`, msg: `msg_fake${pad(ctx.seq, 12)}`, fc: (i) => `fc_fake${pad(ctx.seq, 12)}_${i}`, call: (i) => `call_fake${pad(ctx.seq)}_${i}` });

openai.respUsage = (u) => ({
  input_tokens: u.prompt,
  input_tokens_details: { cached_tokens: u.cached },
  output_tokens: u.visible + u.reasoning,
  output_tokens_details: { reasoning_tokens: u.reasoning },
  total_tokens: u.prompt + u.visible + u.reasoning,
});

openai.notFoundResponse = (ctx, id) => ({ status: 404, headers: openai.headers(ctx), body: { error: { message: `Response with id '${id}' not found.`, type: 'invalid_request_error', param: null, code: null } } });

// Fake embedding dimensions per model (others: 256); `dimensions` asks for fewer.
const EMBED_DIMS = { 'text-embedding-3-small': 1536, 'text-embedding-3-large': 3072, 'text-embedding-ada-002': 1536, 'gemini-embedding-001': 3072, 'text-embedding-004': 768 };
const embedDims = (model) => EMBED_DIMS[String(model).replace(/^models\//, '')] ?? 256;

// The fake embedding of a text (tests/fakes/README.md): `dims` values, 8 per SHA-256 of
// "TEXT\nBLOCK" (BLOCK = 0, 1, ...: each big-endian uint32 u gives u / 2^31 - 1), scaled
// to unit length, each rounded to float32 (so float and base64 answers agree exactly).
// The first d values of a longer vector, scaled to unit length, are the d-dimension one.
function embedVector(text, dims) {
  const v = new Array(dims);
  for (let b = 0; b * 8 < dims; b++) {
    const h = createHash('sha256').update(`${text}\n${b}`).digest();
    for (let i = 0; i < 8 && b * 8 + i < dims; i++) v[b * 8 + i] = h.readUInt32BE(i * 4) / 2 ** 31 - 1;
  }
  const norm = Math.sqrt(v.reduce((a, x) => a + x * x, 0)) || 1;
  return v.map((x) => Math.fround(x / norm));
}
const float32Base64 = (v) => Buffer.from(new Float32Array(v).buffer).toString('base64');

openai.extra = {
  // POST /v1/responses
  responses(ctx, j, rules, req) {
    const bad = (message, param = null, code = null) => this.validationError(ctx, { status: 400, message, param, code });
    if (j === undefined) return this.validationError(ctx, this.parse(ctx, undefined).error);
    if (typeof j !== 'object' || j === null || Array.isArray(j)) return bad('Invalid type for request body: expected an object.', null, 'invalid_type');
    if (typeof j.model !== 'string' || !j.model) return bad("Missing required parameter: 'model'.", 'model', 'missing_required_parameter');
    if (j.input === undefined && !j.previous_response_id) return bad("Missing required parameter: 'input'.", 'input', 'missing_required_parameter');
    let prev = null;
    if (j.previous_response_id !== undefined && j.previous_response_id !== null) {
      prev = state.responses.get(j.previous_response_id);
      if (!prev || prev.deleted) return bad(`Previous response with id '${j.previous_response_id}' not found.`, 'previous_response_id', 'previous_response_not_found');
    }
    const parsedInput = j.input === undefined ? { items: [] } : respInputItems(j.input);
    if (parsedInput.error) return this.validationError(ctx, parsedInput.error);
    // item_reference: an item of a stored response (its output or its input), by id
    const items = [];
    for (const it of parsedInput.items) {
      if (it.type !== 'item_reference') { items.push(it); continue; }
      const ref = state.items.get(it.id);
      if (!ref) return bad(`Item with id '${it.id}' not found.`, 'input', null);
      items.push(ref);
    }
    if (/nonexistent|does-not-exist/.test(j.model)) return this.error(ctx, 404);

    // The whole conversation: the previous response's (its input and output), then this input.
    const conversation = [...(prev ? prev.conversation : []), ...items];
    const texts = [];
    if (typeof j.instructions === 'string') texts.push(j.instructions);
    let lastUserText = '';
    for (const it of conversation) {
      if (it.type === 'message') {
        const t = respText(it.content);
        texts.push(t);
        if (it.role === 'user') lastUserText = t;
      } else if (it.type === 'function_call') texts.push(compactJson(it.arguments ?? ''));
      else if (it.type === 'function_call_output') texts.push(compactJson(respText(it.output)));
    }
    let toolResults = null;
    for (let i = conversation.length - 1; i >= 0 && conversation[i].type === 'function_call_output'; i--) {
      (toolResults ??= []).unshift(compactJson(respText(conversation[i].output)));
    }
    const conv = {
      model: j.model, stream: j.stream === true, maxTokens: j.max_output_tokens ?? null, stop: [],
      hasTools: Array.isArray(j.tools) && j.tools.some((t) => t && t.type === 'function'),
      promptTexts: texts, lastUserText, toolResults,
    };
    const a = planAnswer(conv, rules, req.headers['x-fake-reply']);
    if (rules.contextWindow !== undefined && a.usage.prompt > rules.contextWindow) {
      const r = this.error(ctx, 400, 'context_length_exceeded', { contextWindow: rules.contextWindow, promptTokens: a.usage.prompt });
      r.body.error.param = 'input';
      return r;
    }

    const ids = this.respIds(ctx);
    const incomplete = a.finish === 'length';
    const output = [];
    if (a.text || !a.calls.length) {
      output.push({ id: ids.msg, type: 'message', status: incomplete ? 'incomplete' : 'completed', role: 'assistant',
        content: [{ type: 'output_text', annotations: [], logprobs: [], text: a.text }] });
    }
    a.calls.forEach((c, i) => output.push({ id: ids.fc(i), type: 'function_call', status: 'completed', arguments: c.argsJson, call_id: ids.call(i), name: c.name }));
    const response = {
      id: ids.id, object: 'response', created_at: ctx.created, status: incomplete ? 'incomplete' : 'completed',
      background: false, completed_at: incomplete ? null : ctx.created, error: null,
      incomplete_details: incomplete ? { reason: 'max_output_tokens' } : null,
      instructions: j.instructions ?? null, max_output_tokens: j.max_output_tokens ?? null, max_tool_calls: j.max_tool_calls ?? null,
      model: j.model, output, parallel_tool_calls: j.parallel_tool_calls ?? true,
      previous_response_id: j.previous_response_id ?? null, prompt_cache_key: j.prompt_cache_key ?? null,
      reasoning: { effort: j.reasoning?.effort ?? null, summary: j.reasoning?.summary ?? null },
      safety_identifier: null, service_tier: 'default', store: j.store !== false,
      temperature: j.temperature ?? 1, text: j.text ?? { format: { type: 'text' }, verbosity: 'medium' },
      tool_choice: j.tool_choice ?? 'auto', tools: Array.isArray(j.tools) ? j.tools : [], top_logprobs: j.top_logprobs ?? 0,
      top_p: j.top_p ?? 1, truncation: j.truncation ?? 'disabled',
      usage: a.omitUsage ? null : this.respUsage(a.usage), user: null, metadata: j.metadata ?? {},
    };
    if (j.store !== false) {
      const input = items.map((it, i) => ({ id: it.id ?? `${it.type === 'message' ? 'msg' : it.type === 'function_call' ? 'fc' : 'item'}_fakein${pad(ctx.seq, 12)}_${i}`, ...it }));
      storeResponse(ids.id, { response, input, conversation: [...conversation, ...output], deleted: false }, output);
    }
    if (!conv.stream) return { status: 200, headers: this.headers(ctx), body: response };
    return { status: 200, headers: this.streamHeaders(ctx), events: this.responseEvents(response) };
  },

  // GET /v1/responses/{id}
  'response-get'(ctx) {
    const rec = state.responses.get(ctx.responseId);
    if (!rec || rec.deleted) return this.notFoundResponse(ctx, ctx.responseId);
    return { status: 200, headers: this.headers(ctx), body: rec.response };
  },

  // DELETE /v1/responses/{id}
  'response-delete'(ctx) {
    const rec = state.responses.get(ctx.responseId);
    if (!rec || rec.deleted) return this.notFoundResponse(ctx, ctx.responseId);
    rec.deleted = true;
    return { status: 200, headers: this.headers(ctx), body: { id: ctx.responseId, object: 'response', deleted: true } };
  },

  // GET /v1/responses/{id}/input_items (?order=asc|desc, default desc)
  'response-items'(ctx, j, rules, req, url) {
    const rec = state.responses.get(ctx.responseId);
    if (!rec || rec.deleted) return this.notFoundResponse(ctx, ctx.responseId);
    const data = url.searchParams.get('order') === 'asc' ? [...rec.input] : [...rec.input].reverse();
    return { status: 200, headers: this.headers(ctx), body: { object: 'list', data, first_id: data[0]?.id ?? null, last_id: data[data.length - 1]?.id ?? null, has_more: false } };
  },

  // POST /v1/embeddings
  embeddings(ctx, j, rules) {
    const bad = (message, param = null, code = null) => this.validationError(ctx, { status: 400, message, param, code });
    if (j === undefined) return this.validationError(ctx, this.parse(ctx, undefined).error);
    if (typeof j !== 'object' || j === null || Array.isArray(j)) return bad('Invalid type for request body: expected an object.', null, 'invalid_type');
    if (typeof j.model !== 'string' || !j.model) return bad('you must provide a model parameter');
    if (j.input === undefined) return bad("Missing required parameter: 'input'.", 'input', 'missing_required_parameter');
    const invalid = () => bad("'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.", null, null);
    // Inputs: [{text, tokens}] from a string, strings, a token array or token arrays.
    const isTokens = (x) => Array.isArray(x) && x.length > 0 && x.every((t) => Number.isInteger(t) && t >= 0);
    let inputs;
    if (typeof j.input === 'string') inputs = [j.input];
    else if (isTokens(j.input)) inputs = [j.input];
    else if (Array.isArray(j.input) && j.input.length && j.input.every((x) => typeof x === 'string' || isTokens(x))) inputs = j.input;
    else return invalid();
    if (inputs.some((x) => x === '')) return invalid();
    const fmt = j.encoding_format ?? 'float';
    if (fmt !== 'float' && fmt !== 'base64') return bad(`Invalid value: '${fmt}'. Supported values are: 'float' and 'base64'.`, 'encoding_format', 'invalid_value');
    const full = embedDims(j.model);
    if (j.dimensions !== undefined && !(Number.isInteger(j.dimensions) && j.dimensions >= 1 && j.dimensions <= full)) {
      return bad(`Invalid value for 'dimensions' = ${j.dimensions}. Must be an integer between 1 and ${full}.`, 'dimensions', 'invalid_value');
    }
    if (/nonexistent|does-not-exist/.test(j.model)) return this.error(ctx, 404);
    const dims = j.dimensions ?? full;
    let prompt = 0;
    const data = inputs.map((x, index) => {
      const text = typeof x === 'string' ? x : x.join(' ');
      prompt += typeof x === 'string' ? words(x) : x.length;
      const v = embedVector(text, dims);
      return { object: 'embedding', index, embedding: fmt === 'base64' ? float32Base64(v) : v };
    });
    if (rules.contextWindow !== undefined && prompt > rules.contextWindow) {
      return bad(`This model's maximum context length is ${rules.contextWindow} tokens, however you requested ${prompt} tokens (${prompt} in your prompt; 0 for the completion). Please reduce your prompt; or completion length.`, null, null);
    }
    const u = rules.usage || {};
    if (u.prompt !== undefined) prompt = u.prompt;
    const body = { object: 'list', data, model: j.model };
    if (rules.usage !== false) body.usage = { prompt_tokens: prompt, total_tokens: prompt };
    return { status: 200, headers: this.headers(ctx), body };
  },

  // GET /v1/models/{id}: the listed chat models and the embedding models
  model(ctx) {
    const known = [...this.models().data.map((m) => m.id), ...Object.keys(EMBED_DIMS).filter((m) => m.startsWith('text-'))];
    if (!known.includes(ctx.modelId)) {
      return { status: 404, headers: this.headers(ctx), body: { error: { message: `The model '${ctx.modelId}' does not exist`, type: 'invalid_request_error', param: 'model', code: 'model_not_found' } } };
    }
    return { status: 200, headers: this.headers(ctx), body: { id: ctx.modelId, object: 'model', created: 1721172741, owned_by: 'system' } };
  },
};

// The typed events of a streamed response, as the Responses API sends them:
// response.created, response.in_progress, per output item response.output_item.added,
// (message) response.content_part.added / one response.output_text.delta per word /
// response.output_text.done / response.content_part.done, (function call)
// response.function_call_arguments.delta per 8-character fragment / .done, then
// response.output_item.done; last response.completed (or response.incomplete) with the
// whole response and its usage. Every event has its sequence_number.
openai.responseEvents = function responseEvents(response) {
  let seq = 0;
  const ev = (type, data) => `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: seq++, ...data })}\n\n`;
  const start = { ...response, status: 'in_progress', completed_at: null, incomplete_details: null, output: [], usage: null };
  const out = [ev('response.created', { response: start }), ev('response.in_progress', { response: start })];
  response.output.forEach((item, output_index) => {
    const item_id = item.id;
    if (item.type === 'message') {
      const part = item.content[0];
      out.push(ev('response.output_item.added', { output_index, item: { ...item, status: 'in_progress', content: [] } }));
      out.push(ev('response.content_part.added', { item_id, output_index, content_index: 0, part: { ...part, text: '' } }));
      for (const p of pieces(part.text)) out.push(ev('response.output_text.delta', { item_id, output_index, content_index: 0, delta: p, logprobs: [] }));
      out.push(ev('response.output_text.done', { item_id, output_index, content_index: 0, text: part.text, logprobs: [] }));
      out.push(ev('response.content_part.done', { item_id, output_index, content_index: 0, part }));
    } else {
      out.push(ev('response.output_item.added', { output_index, item: { ...item, status: 'in_progress', arguments: '' } }));
      for (const f of fragments(item.arguments)) out.push(ev('response.function_call_arguments.delta', { item_id, output_index, delta: f }));
      out.push(ev('response.function_call_arguments.done', { item_id, output_index, name: item.name, arguments: item.arguments }));
    }
    out.push(ev('response.output_item.done', { output_index, item }));
  });
  out.push(ev(response.status === 'incomplete' ? 'response.incomplete' : 'response.completed', { response }));
  return out;
};

// ---------------------------------------------------------------------------------------
// Provider: Anthropic (Messages)

const ANTHROPIC_TYPES = {
  400: 'invalid_request_error', 401: 'authentication_error', 402: 'billing_error', 403: 'permission_error',
  404: 'not_found_error', 413: 'request_too_large', 429: 'rate_limit_error', 500: 'api_error',
  504: 'timeout_error', 529: 'overloaded_error',
};

const anthropic = {
  name: 'anthropic',
  ids(seq) { return { id: `msg_fake${pad(seq, 18)}`, request: `req_fake${pad(seq, 18)}` }; },

  rateHeaders(retryAfter) {
    const reset = new Date(Date.now() + (retryAfter ?? 0) * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
    const rem = retryAfter === undefined ? null : '0';
    return {
      'anthropic-ratelimit-requests-limit': '4000',
      'anthropic-ratelimit-requests-remaining': rem ?? '3999',
      'anthropic-ratelimit-requests-reset': reset,
      'anthropic-ratelimit-tokens-limit': '2000000',
      'anthropic-ratelimit-tokens-remaining': rem ?? '1999000',
      'anthropic-ratelimit-tokens-reset': reset,
      'anthropic-ratelimit-input-tokens-limit': '2000000',
      'anthropic-ratelimit-input-tokens-remaining': rem ?? '1999000',
      'anthropic-ratelimit-input-tokens-reset': reset,
      'anthropic-ratelimit-output-tokens-limit': '400000',
      'anthropic-ratelimit-output-tokens-remaining': rem ?? '399000',
      'anthropic-ratelimit-output-tokens-reset': reset,
    };
  },

  headers(ctx, extra = {}) {
    return { 'request-id': ctx.ids.request, 'anthropic-organization-id': '00000000-0000-4000-8000-00000000fa4e', ...extra };
  },

  errorBody(ctx, type, message) {
    return { type: 'error', error: { type, message }, request_id: ctx.ids.request };
  },

  error(ctx, status, errKind, fault = {}) {
    const h = {};
    let type = ANTHROPIC_TYPES[status] ?? (status >= 500 ? 'api_error' : 'invalid_request_error');
    let msg;
    if (errKind === 'insufficient_quota') {
      type = 'invalid_request_error';
      msg = 'Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.';
    } else if (errKind === 'context_length_exceeded') {
      type = 'invalid_request_error';
      const lim = fault.contextWindow ?? 200000;
      msg = `prompt is too long: ${Math.max(fault.promptTokens ?? lim + 1, lim + 1)} tokens > ${lim} maximum`;
    } else if (status === 400) msg = fault.message ?? 'Invalid request (fake fault).';
    else if (status === 401) msg = ctx.noKey ? 'x-api-key header is required' : 'invalid x-api-key';
    else if (status === 403) msg = 'Your API key does not have permission to use the specified resource.';
    else if (status === 404) msg = `model: ${ctx.model || 'unknown'}`;
    else if (status === 413) msg = 'Request exceeds the maximum allowed number of bytes.';
    else if (status === 429) {
      msg = 'Number of request tokens has exceeded your per-minute rate limit (https://docs.claude.com/en/api/rate-limits); see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later. You may also contact sales at https://www.anthropic.com/contact-sales to discuss your options for a rate limit increase.';
      Object.assign(h, this.rateHeaders(fault.retryAfter ?? 1));
    } else if (status === 529) msg = 'Overloaded';
    else if (status === 500) msg = 'Internal server error';
    else if (status >= 500) msg = `Upstream error ${status} (fake fault).`;
    else msg = `Request failed with status ${status} (fake fault).`;
    if (status === 429 || status >= 500) h['x-should-retry'] = 'true';
    return { status, headers: this.headers(ctx, h), body: this.errorBody(ctx, type, msg) };
  },

  midStreamError() {
    return `event: error\ndata: ${JSON.stringify({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } })}\n\n`;
  },
  malformed() { return 'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\n\n'; },

  parse(ctx, j) {
    const bad = (message) => ({ error: { status: 400, message } });
    if (j === undefined) return bad('There was an error parsing the body of your request. Please check that you are sending valid JSON.');
    if (typeof j !== 'object' || j === null || Array.isArray(j)) return bad('Input should be a valid dictionary or object to extract fields from');
    if (typeof j.model !== 'string') return bad('model: Field required');
    if (j.max_tokens === undefined) return bad('max_tokens: Field required');
    if (!Number.isInteger(j.max_tokens) || j.max_tokens < 1) return bad('max_tokens: Input should be a valid integer greater than or equal to 1');
    if (j.messages === undefined) return bad('messages: Field required');
    if (!Array.isArray(j.messages)) return bad('messages: Input should be a valid list');
    if (j.messages.length === 0) return bad('messages: at least one message is required');
    const texts = [];
    const blockText = (b) => {
      if (typeof b === 'string') return b;
      if (!b || typeof b !== 'object') return '';
      if (b.type === 'text') return b.text ?? '';
      if (b.type === 'tool_result') return compactJson(typeof b.content === 'string' ? b.content : Array.isArray(b.content) ? b.content.map(blockText).join(' ') : '');
      if (b.type === 'tool_use') return JSON.stringify(b.input ?? {});
      return '';
    };
    const sys = j.system;
    if (typeof sys === 'string') texts.push(sys);
    else if (Array.isArray(sys)) for (const b of sys) texts.push(blockText(b));
    let lastUserText = '';
    let toolResults = null;
    for (let i = 0; i < j.messages.length; i++) {
      const m = j.messages[i];
      if (!m || (m.role !== 'user' && m.role !== 'assistant')) return bad(`messages.${i}.role: Input should be 'user' or 'assistant'`);
      if (m.content === undefined) return bad(`messages.${i}.content: Field required`);
      const blocks = typeof m.content === 'string' ? [{ type: 'text', text: m.content }] : Array.isArray(m.content) ? m.content : null;
      if (!blocks) return bad(`messages.${i}.content: Input should be a valid list`);
      for (const b of blocks) texts.push(blockText(b));
      if (m.role === 'user') {
        lastUserText = blocks.filter((b) => b?.type === 'text').map((b) => b.text ?? '').join(' ');
        const results = blocks.filter((b) => b?.type === 'tool_result').map(blockText);
        toolResults = i === j.messages.length - 1 && results.length ? results : null;
      }
    }
    if (j.messages[j.messages.length - 1].role !== 'user') toolResults = null;
    return {
      conv: {
        model: j.model, stream: j.stream === true, maxTokens: j.max_tokens,
        stop: Array.isArray(j.stop_sequences) ? j.stop_sequences.filter((s) => typeof s === 'string') : [],
        hasTools: Array.isArray(j.tools) && j.tools.length > 0,
        promptTexts: texts, lastUserText, toolResults,
      },
    };
  },

  stopReason(a) {
    if (a.calls.length) return 'tool_use';
    if (a.finish === 'length') return 'max_tokens';
    if (a.stopSeq) return 'stop_sequence';
    return 'end_turn';
  },

  usage(u) {
    const out = {
      input_tokens: Math.max(0, u.prompt - u.cached - u.cacheCreation),
      cache_creation_input_tokens: u.cacheCreation,
      cache_read_input_tokens: u.cached,
      output_tokens: u.visible + u.reasoning,
      service_tier: 'standard',
    };
    if (u.reasoning) out.output_tokens_details = { thinking_tokens: u.reasoning };
    return out;
  },

  toolId(ctx, i) { return `toolu_fake${pad(ctx.seq, 14)}_${i}`; },

  blocks(ctx, a) {
    const content = [];
    if (a.text || !a.calls.length) content.push({ type: 'text', text: a.text });
    a.calls.forEach((c, i) => content.push({ type: 'tool_use', id: this.toolId(ctx, i), name: c.name, input: c.args }));
    return content;
  },

  complete(ctx, conv, a) {
    return {
      id: ctx.ids.id, type: 'message', role: 'assistant', model: conv.model,
      content: this.blocks(ctx, a),
      stop_reason: this.stopReason(a), stop_sequence: a.stopSeq,
      usage: this.usage(a.usage),
    };
  },

  streamEvents(ctx, conv, a) {
    const ev = (type, data) => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;
    const full = this.usage(a.usage);
    const startUsage = { ...full, output_tokens: Math.min(1, full.output_tokens) };
    delete startUsage.output_tokens_details;
    const out = [ev('message_start', { message: { id: ctx.ids.id, type: 'message', role: 'assistant', model: conv.model, content: [], stop_reason: null, stop_sequence: null, usage: startUsage } })];
    let index = 0;
    if (a.text || !a.calls.length) {
      out.push(ev('content_block_start', { index, content_block: { type: 'text', text: '' } }));
      if (index === 0) out.push(ev('ping', {}));
      for (const p of pieces(a.text)) out.push(ev('content_block_delta', { index, delta: { type: 'text_delta', text: p } }));
      out.push(ev('content_block_stop', { index }));
      index++;
    }
    a.calls.forEach((c, i) => {
      out.push(ev('content_block_start', { index, content_block: { type: 'tool_use', id: this.toolId(ctx, i), name: c.name, input: {} } }));
      if (index === 0) out.push(ev('ping', {}));
      const json = JSON.stringify(c.args);
      out.push(ev('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: '' } }));
      for (const f of fragments(json)) out.push(ev('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: f } }));
      out.push(ev('content_block_stop', { index }));
      index++;
    });
    const deltaUsage = { input_tokens: full.input_tokens, cache_creation_input_tokens: full.cache_creation_input_tokens, cache_read_input_tokens: full.cache_read_input_tokens, output_tokens: full.output_tokens };
    if (full.output_tokens_details) deltaUsage.output_tokens_details = full.output_tokens_details;
    out.push(ev('message_delta', { delta: { stop_reason: this.stopReason(a), stop_sequence: a.stopSeq }, usage: deltaUsage }));
    out.push(ev('message_stop', {}));
    return out;
  },

  streamHeaders(ctx) { return this.headers(ctx, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', ...this.rateHeaders() }); },
  okHeaders(ctx) { return this.headers(ctx, this.rateHeaders()); },

  models() {
    const ms = [['claude-sonnet-4-5', 'Claude Sonnet 4.5'], ['claude-haiku-4-5', 'Claude Haiku 4.5'], ['claude-opus-4-1', 'Claude Opus 4.1']];
    const data = ms.map(([id, display_name]) => ({ type: 'model', id, display_name, created_at: '2025-09-29T00:00:00Z' }));
    return { data, has_more: false, first_id: data[0].id, last_id: data[data.length - 1].id };
  },

  // The key comes in x-api-key, or (as the 1.x SDKs send it) Authorization: Bearer.
  auth(ctx, req, rules) {
    const bearer = /^Bearer\s+(.+)$/i.exec(req.headers.authorization || '');
    const k = req.headers['x-api-key'] || (bearer && bearer[1].trim());
    ctx.entry.auth.present = !!k;
    if (!k) { ctx.noKey = true; return this.error(ctx, 401); }
    ctx.entry.auth.valid = rules.apiKey === undefined ? null : k === rules.apiKey;
    if (ctx.entry.auth.valid === false) return this.error(ctx, 401);
    if (!req.headers['anthropic-version']) {
      return { status: 400, headers: this.headers(ctx), body: this.errorBody(ctx, 'invalid_request_error', 'anthropic-version: header is required') };
    }
    if (!/^\d{4}-\d{2}-\d{2}$/.test(req.headers['anthropic-version'])) {
      return { status: 400, headers: this.headers(ctx), body: this.errorBody(ctx, 'invalid_request_error', `anthropic-version: "${req.headers['anthropic-version']}" is not a valid version`) };
    }
    return null;
  },

  route(method, path) {
    if (method === 'POST' && path === '/v1/messages') return 'chat';
    if (method === 'POST' && path === '/v1/messages/count_tokens') return 'count_tokens';
    if (method === 'GET' && path === '/v1/models') return 'models';
    return null;
  },

  notFound(ctx) { return { status: 404, headers: this.headers(ctx), body: this.errorBody(ctx, 'not_found_error', 'Not Found') }; },
  validationError(ctx, e) { return { status: e.status, headers: this.headers(ctx), body: this.errorBody(ctx, 'invalid_request_error', e.message) }; },
};

// ---------------------------------------------------------------------------------------
// Provider: Google Gemini (generateContent / streamGenerateContent)

const GEMINI_STATUS = {
  400: 'INVALID_ARGUMENT', 401: 'UNAUTHENTICATED', 403: 'PERMISSION_DENIED', 404: 'NOT_FOUND',
  408: 'DEADLINE_EXCEEDED', 409: 'ABORTED', 429: 'RESOURCE_EXHAUSTED', 499: 'CANCELLED',
  500: 'INTERNAL', 501: 'UNIMPLEMENTED', 503: 'UNAVAILABLE', 504: 'DEADLINE_EXCEEDED',
};

const gemini = {
  name: 'gemini',
  ids(seq) { return { id: `fakeResp${pad(seq, 10)}`, request: `fake${pad(seq, 10)}` }; },
  headers(ctx, extra = {}) { return { 'content-type': 'application/json; charset=UTF-8', 'x-gemini-service-tier': 'standard', ...extra }; },

  errorBody(code, message, details) {
    const e = { code, message, status: GEMINI_STATUS[code] ?? (code >= 500 ? 'INTERNAL' : 'FAILED_PRECONDITION') };
    if (details) e.details = details;
    return { error: e };
  },

  error(ctx, status, errKind, fault = {}) {
    let msg, details;
    if (errKind === 'insufficient_quota') {
      msg = 'You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.';
      details = [{ '@type': 'type.googleapis.com/google.rpc.QuotaFailure', violations: [{ quotaMetric: 'generativelanguage.googleapis.com/generate_content_free_tier_requests', quotaId: 'GenerateRequestsPerDayPerProjectPerModel-FreeTier' }] }];
    } else if (errKind === 'context_length_exceeded') {
      const lim = fault.contextWindow ?? 1048576;
      msg = `The input token count (${Math.max(fault.promptTokens ?? lim + 1, lim + 1)}) exceeds the maximum number of tokens allowed (${lim}).`;
    } else if (status === 400) msg = fault.message ?? 'Invalid request (fake fault).';
    else if (status === 401) msg = 'Request had invalid authentication credentials.';
    else if (status === 403) msg = ctx.noKey ? "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API." : 'The caller does not have permission';
    else if (status === 404) msg = `models/${ctx.model || 'unknown'} is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods.`;
    else if (status === 429) {
      msg = 'Resource has been exhausted (e.g. check quota).';
      details = [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: `${fault.retryAfter ?? 1}s` }];
    } else if (status === 500) msg = 'An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting';
    else if (status === 503) msg = 'The model is overloaded. Please try again later.';
    else if (status === 504) msg = 'Deadline expired before operation could complete.';
    else msg = `Request failed with status ${status} (fake fault).`;
    return { status, headers: this.headers(ctx), body: this.errorBody(status, msg, details) };
  },

  midStreamError() { return `data: ${JSON.stringify(this.errorBody(503, 'The model is overloaded. Please try again later.'))}\r\n\r\n`; },
  malformed() { return 'data: {"candidates": [{"content": {"parts": [{"text": "\r\n\r\n'; },

  parse(ctx, j) {
    const bad = (message) => ({ error: { status: 400, message } });
    if (j === undefined) return bad('Invalid JSON payload received. Unexpected token.');
    if (typeof j !== 'object' || j === null || Array.isArray(j)) return bad('Invalid JSON payload received. Expected an object.');
    if (!Array.isArray(j.contents) || j.contents.length === 0) return bad('* GenerateContentRequest.contents: contents is not specified\n');
    const texts = [];
    const partText = (p) => {
      if (!p || typeof p !== 'object') return '';
      if (typeof p.text === 'string') return p.thought ? '' : p.text;
      if (p.functionCall) return JSON.stringify(p.functionCall.args ?? {});
      if (p.functionResponse) return JSON.stringify(p.functionResponse.response ?? {});
      return '';
    };
    const si = j.systemInstruction ?? j.system_instruction;
    if (si && Array.isArray(si.parts)) for (const p of si.parts) texts.push(partText(p));
    let lastUserText = '';
    let toolResults = null;
    for (let i = 0; i < j.contents.length; i++) {
      const c = j.contents[i];
      if (!c || !Array.isArray(c.parts)) return bad(`* GenerateContentRequest.contents[${i}].parts: contents.parts must not be empty.\n`);
      if (c.role !== undefined && c.role !== 'user' && c.role !== 'model' && c.role !== 'function') {
        return bad(`Please use a valid role: user, model.`);
      }
      for (const p of c.parts) texts.push(partText(p));
      if (c.role !== 'model') {
        const t = c.parts.filter((p) => typeof p?.text === 'string' && !p.thought).map((p) => p.text).join(' ');
        const results = c.parts.filter((p) => p?.functionResponse).map(partText);
        toolResults = results.length ? results : null;
        if (!results.length) lastUserText = t;
      } else toolResults = null;
    }
    const gc = j.generationConfig ?? j.generation_config ?? {};
    const tools = Array.isArray(j.tools) ? j.tools : [];
    return {
      conv: {
        model: ctx.model, stream: ctx.stream, maxTokens: gc.maxOutputTokens ?? null,
        stop: Array.isArray(gc.stopSequences) ? gc.stopSequences.filter((s) => typeof s === 'string') : [],
        hasTools: tools.some((t) => Array.isArray(t?.functionDeclarations ?? t?.function_declarations) && (t.functionDeclarations ?? t.function_declarations).length),
        promptTexts: texts, lastUserText, toolResults,
      },
    };
  },

  finishReason(a) { return a.finish === 'length' ? 'MAX_TOKENS' : 'STOP'; },

  usage(u, visible = u.visible) {
    const m = { promptTokenCount: u.prompt, candidatesTokenCount: visible, totalTokenCount: u.prompt + visible + u.reasoning };
    if (u.cached) m.cachedContentTokenCount = u.cached;
    m.promptTokensDetails = [{ modality: 'TEXT', tokenCount: u.prompt }];
    if (u.cached) m.cacheTokensDetails = [{ modality: 'TEXT', tokenCount: u.cached }];
    if (u.reasoning) m.thoughtsTokenCount = u.reasoning;
    return m;
  },

  complete(ctx, conv, a) {
    const parts = [];
    if (a.text || !a.calls.length) parts.push({ text: a.text });
    for (const c of a.calls) parts.push({ functionCall: { name: c.name, args: c.args } });
    return {
      candidates: [{ content: { parts, role: 'model' }, finishReason: this.finishReason(a), index: 0 }],
      usageMetadata: this.usage(a.usage),
      modelVersion: conv.model,
      responseId: ctx.ids.id,
    };
  },

  // Each chunk is a whole GenerateContentResponse; usageMetadata is cumulative on every one.
  chunks(ctx, conv, a) {
    const out = [];
    const ps = pieces(a.text);
    // Two words per chunk, as Gemini sends text in runs; tool calls come whole.
    const groups = [];
    for (let i = 0; i < ps.length; i += 2) groups.push(ps.slice(i, i + 2).join(''));
    const callCost = a.calls.reduce((s, c) => s + words(c.argsJson), 0);
    let sent = 0;
    const textTotal = a.usage.visible - callCost;
    groups.forEach((g, gi) => {
      sent += words(g);
      const last = gi === groups.length - 1 && !a.calls.length;
      const cand = { content: { parts: [{ text: g }], role: 'model' }, index: 0 };
      if (last) cand.finishReason = this.finishReason(a);
      const vis = last ? a.usage.visible : Math.min(sent, textTotal);
      out.push({ candidates: [cand], usageMetadata: this.usage(a.usage, vis), modelVersion: conv.model, responseId: ctx.ids.id });
    });
    if (a.calls.length) {
      const parts = a.calls.map((c) => ({ functionCall: { name: c.name, args: c.args } }));
      out.push({ candidates: [{ content: { parts, role: 'model' }, finishReason: 'STOP', index: 0 }], usageMetadata: this.usage(a.usage), modelVersion: conv.model, responseId: ctx.ids.id });
    }
    if (!out.length) {
      out.push({ candidates: [{ content: { parts: [{ text: '' }], role: 'model' }, finishReason: this.finishReason(a), index: 0 }], usageMetadata: this.usage(a.usage), modelVersion: conv.model, responseId: ctx.ids.id });
    }
    return out;
  },

  streamEvents(ctx, conv, a) {
    const cs = this.chunks(ctx, conv, a);
    if (ctx.sse) return cs.map((c) => `data: ${JSON.stringify(c)}\r\n\r\n`);
    // Without alt=sse the stream is one JSON array, written element by element.
    return cs.map((c, i) => (i === 0 ? '[' : ',\r\n') + JSON.stringify(c) + (i === cs.length - 1 ? ']' : ''));
  },

  streamHeaders(ctx) {
    return ctx.sse ? { 'content-type': 'text/event-stream', 'x-gemini-service-tier': 'standard' } : this.headers(ctx);
  },

  models() {
    const ms = ['gemini-2.5-flash', 'gemini-2.5-pro', 'gemini-2.5-flash-lite', 'gemini-2.0-flash'];
    return {
      models: ms.map((m) => ({
        name: `models/${m}`, version: '001', displayName: m, inputTokenLimit: 1048576, outputTokenLimit: 65536,
        supportedGenerationMethods: ['generateContent', 'countTokens'],
      })),
    };
  },

  auth(ctx, req, rules, url) {
    const k = req.headers['x-goog-api-key'] || url.searchParams.get('key');
    ctx.entry.auth.present = !!k;
    if (!k) { ctx.noKey = true; return this.error(ctx, 403); }
    ctx.entry.auth.valid = rules.apiKey === undefined ? null : k === rules.apiKey;
    if (ctx.entry.auth.valid === false) {
      return {
        status: 400, headers: this.headers(ctx),
        body: this.errorBody(400, 'API key not valid. Please pass a valid API key.', [{ '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: 'API_KEY_INVALID', domain: 'googleapis.com', metadata: { service: 'generativelanguage.googleapis.com' } }]),
      };
    }
    return null;
  },

  // /v1beta/models/{model}:generateContent | :streamGenerateContent | :embedContent |
  // :batchEmbedContents (also /v1/...)
  route(method, path, ctx) {
    if (method === 'GET' && /^\/v1(beta)?\/models$/.test(path)) return 'models';
    const m = /^\/v1(?:beta)?\/models\/([^/:]+):(generateContent|streamGenerateContent|embedContent|batchEmbedContents)$/.exec(path);
    if (method === 'POST' && m) {
      ctx.model = decodeURIComponent(m[1]);
      if (m[2] === 'embedContent') return 'embed';
      if (m[2] === 'batchEmbedContents') return 'batchEmbed';
      ctx.stream = m[2] === 'streamGenerateContent';
      return 'chat';
    }
    return null;
  },

  notFound(ctx) { return { status: 404, headers: { 'content-type': 'text/html; charset=UTF-8' }, body: '<!DOCTYPE html>\n<html lang=en><title>Error 404 (Not Found)!!1</title><p><b>404.</b> <ins>That’s an error.</ins></html>' }; },
  validationError(ctx, e) { return { status: e.status, headers: this.headers(ctx), body: this.errorBody(e.status, e.message) }; },
};

// ---------------------------------------------------------------------------------------
// Provider: Anthropic and Gemini, the other endpoints: token counting (Anthropic POST
// /v1/messages/count_tokens) and embeddings (Gemini :embedContent, :batchEmbedContents).

anthropic.extra = {
  // POST /v1/messages/count_tokens: {input_tokens: P}, P counted as for a message (the
  // words of the system prompt, the messages, tool inputs and results; not the tools).
  count_tokens(ctx, j, rules) {
    const parsed = this.parse(ctx, j && typeof j === 'object' && !Array.isArray(j) ? { max_tokens: 1, ...j, stream: false } : j);
    if (parsed.error) return this.validationError(ctx, parsed.error);
    if (/nonexistent|does-not-exist/.test(parsed.conv.model)) return this.error(ctx, 404);
    const u = rules.usage || {};
    const input = u.prompt ?? parsed.conv.promptTexts.reduce((a, t) => a + words(t), 0);
    return { status: 200, headers: this.headers(ctx), body: { input_tokens: input } };
  },
};

// The text of a Gemini Content (its text parts joined by a space); null when it is no Content.
function geminiContentText(c) {
  if (!c || typeof c !== 'object' || !Array.isArray(c.parts) || !c.parts.length) return null;
  return c.parts.filter((p) => typeof p?.text === 'string').map((p) => p.text).join(' ');
}

gemini.extra = {
  // POST /v1beta/models/{model}:embedContent: {embedding: {values}} (no usage, as Gemini).
  embed(ctx, j) {
    const bad = (message) => this.validationError(ctx, { status: 400, message });
    if (j === undefined) return bad('Invalid JSON payload received. Unexpected token.');
    if (typeof j !== 'object' || j === null || Array.isArray(j)) return bad('Invalid JSON payload received. Expected an object.');
    const text = geminiContentText(j.content);
    if (text === null) return bad('* EmbedContentRequest.content: content is not specified\n');
    if (/nonexistent|does-not-exist/.test(ctx.model)) return this.error(ctx, 404);
    const dims = j.outputDimensionality ?? j.output_dimensionality ?? embedDims(ctx.model);
    return { status: 200, headers: this.headers(ctx), body: { embedding: { values: embedVector(text, dims) } } };
  },

  // POST /v1beta/models/{model}:batchEmbedContents: {embeddings: [{values}]}, in order.
  batchEmbed(ctx, j) {
    const bad = (message) => this.validationError(ctx, { status: 400, message });
    if (j === undefined) return bad('Invalid JSON payload received. Unexpected token.');
    if (typeof j !== 'object' || j === null || Array.isArray(j)) return bad('Invalid JSON payload received. Expected an object.');
    if (!Array.isArray(j.requests) || !j.requests.length) return bad('* BatchEmbedContentsRequest.requests: requests is not specified\n');
    const embeddings = [];
    for (let i = 0; i < j.requests.length; i++) {
      const r = j.requests[i];
      const text = geminiContentText(r?.content);
      if (text === null) return bad(`* BatchEmbedContentsRequest.requests[${i}].content: content is not specified\n`);
      if (r.model !== undefined && r.model !== `models/${ctx.model}`) {
        return bad(`Model name in the request (${r.model}) does not match the model name in the URL (models/${ctx.model}).`);
      }
      embeddings.push({ values: embedVector(text, r.outputDimensionality ?? r.output_dimensionality ?? embedDims(ctx.model)) });
    }
    if (/nonexistent|does-not-exist/.test(ctx.model)) return this.error(ctx, 404);
    return { status: 200, headers: this.headers(ctx), body: { embeddings } };
  },
};

const IMPL = { openai, anthropic, gemini };

// ---------------------------------------------------------------------------------------
// Request handling shared by the three providers

const REASONS = { 529: 'Site Overloaded' };

function send(res, r) {
  if (res.destroyed || res.headersSent) return;
  const body = typeof r.body === 'string' ? r.body : JSON.stringify(r.body);
  const headers = { 'content-type': 'application/json', ...r.headers, 'content-length': Buffer.byteLength(body) };
  res.writeHead(r.status, REASONS[r.status] ?? http.STATUS_CODES[r.status] ?? 'Error', headers);
  res.end(body);
}

function applyStatusFault(impl, ctx, fault) {
  const status = fault.status ?? (fault.error === 'insufficient_quota' && impl !== anthropic ? 429 : 400);
  const r = impl.error(ctx, status, fault.error, fault);
  if (fault.retryAfter !== undefined && impl !== gemini) r.headers['retry-after'] = String(fault.retryAfter);
  if (fault.retryAfterMs !== undefined) r.headers['retry-after-ms'] = String(fault.retryAfterMs);
  if (fault.headers) Object.assign(r.headers, fault.headers);
  if (fault.body !== undefined) r.body = fault.body;
  return r;
}

const STREAM_FAULTS = new Set(['stall', 'reset', 'close_mid_body', 'error_event', 'malformed']);

// Plays the prebuilt events of a streamed answer, applying the stream faults.
async function playStream(ctx, status, headers, events, fault) {
  const { res, impl, entry } = ctx;
  const f = fault || {};
  res.writeHead(status, headers);
  res.flushHeaders();
  for (let i = 0; i <= events.length; i++) {
    if (ctx.aborted) { entry.outcome = 'client closed'; return; }
    if (STREAM_FAULTS.has(f.kind) && i === Math.min(f.afterChunks, events.length)) {
      switch (f.kind) {
        case 'stall': entry.outcome = `stalled after ${i} chunks`; return;
        case 'reset':
          await sleep(RESET_GRACE_MS);
          entry.outcome = `reset after ${i} chunks`;
          res.socket?.resetAndDestroy();
          return;
        case 'close_mid_body':
          entry.outcome = `ended cleanly after ${i} chunks, unfinished`;
          res.end();
          return;
        case 'error_event':
          entry.outcome = `error event after ${i} chunks`;
          res.end(impl.midStreamError(ctx));
          return;
        case 'malformed':
          entry.outcome = `malformed chunk after ${i} chunks`;
          res.write(impl.malformed(ctx));
          break;
        default: break;
      }
    }
    if (i === events.length) break;
    if (i > 0 && f.chunkDelayMs) await sleep(f.chunkDelayMs);
    if (ctx.aborted) { entry.outcome = 'client closed'; return; }
    res.write(events[i]);
  }
  entry.outcome ??= 'complete';
  res.end();
}

// A non-streamed body, with the faults that apply to it.
async function playBody(ctx, status, headers, bodyObj, fault) {
  const { res, entry } = ctx;
  const f = fault || {};
  const body = JSON.stringify(bodyObj);
  const half = body.slice(0, Math.floor(body.length / 2));
  const hdrs = { 'content-type': 'application/json', ...headers, 'content-length': Buffer.byteLength(body) };
  switch (f.kind) {
    case 'stall':
      res.writeHead(status, hdrs);
      if (f.afterChunks > 0) res.write(half); else res.flushHeaders();
      entry.outcome = f.afterChunks > 0 ? 'stalled mid-body' : 'stalled after headers';
      return;
    case 'reset':
      res.writeHead(status, hdrs);
      res.write(half);
      await sleep(RESET_GRACE_MS);
      entry.outcome = 'reset mid-body';
      res.socket?.resetAndDestroy();
      return;
    case 'close_mid_body':
      res.writeHead(status, hdrs);
      res.write(half, () => { res.socket?.end(); });
      entry.outcome = 'closed mid-body';
      return;
    case 'malformed': {
      const bad = body.slice(0, Math.max(1, body.length - 3));
      hdrs['content-length'] = Buffer.byteLength(bad);
      res.writeHead(status, hdrs);
      res.end(bad);
      entry.outcome = 'malformed body';
      return;
    }
    case 'error_event':
    default:
      res.writeHead(status, hdrs);
      res.end(body);
      entry.outcome = 'complete';
  }
}

// ---------------------------------------------------------------------------------------
// Hostile upstreams

// Writes buf, waiting for the socket to drain (a peer that stops reading is not buffered
// for). false once the client has gone.
async function writeWait(ctx, buf) {
  const { res } = ctx;
  if (ctx.aborted || res.destroyed) return false;
  if (!res.write(buf)) {
    await new Promise((r) => {
      const done = () => { res.off('drain', done); res.off('close', done); r(); };
      res.on('drain', done);
      res.on('close', done);
    });
  }
  return !ctx.aborted && !res.destroyed;
}

// 401 (Gemini: 400) whose message quotes the credential the request carried, as some
// servers do ("Incorrect API key provided: sk-..."), with the header line itself.
function echoKeyAnswer(impl, ctx, req, url) {
  const h = req.headers;
  const key = (h.authorization || '').replace(/^Bearer\s+/i, '') || h['x-api-key'] || h['x-goog-api-key'] || url.searchParams.get('key') || '';
  const line = h.authorization ? `Authorization: ${h.authorization}` : h['x-api-key'] ? `x-api-key: ${h['x-api-key']}` : `x-goog-api-key: ${key}`;
  const message = `Incorrect API key provided: ${key}. The request had "${line}".`;
  if (impl === openai) return { status: 401, headers: impl.headers(ctx), body: { error: { message, type: 'invalid_request_error', param: key, code: 'invalid_api_key' } } };
  if (impl === anthropic) return { status: 401, headers: impl.headers(ctx), body: impl.errorBody(ctx, 'authentication_error', message) };
  return { status: 400, headers: impl.headers(ctx), body: impl.errorBody(400, message) };
}

// The hostile answers to a chat request (stream says which kind of answer was asked):
//   endless_body   200, chunked, chunkBytes of JSON-looking padding forever
//   huge_length    200 declaring Content-Length: length, then chunkBytes per chunkDelayMs
//                  (default 100) until it is all sent or the client leaves
//   huge_sse_line  200 text/event-stream, then one `data:` line of lineBytes without a
//                  newline, then the end of the body
//   drip           the normal answer, one byte per dripMs
// Each stops when the client goes; entry.outcome says how far it got.
async function playHostile(impl, ctx, conv, a, fault, prebuilt = null) {
  const { res, entry } = ctx;
  let sent = 0;
  const gone = () => { entry.outcome = `${fault.kind}: client closed after ${sent} bytes`; };
  const ctype = conv.stream ? 'text/event-stream' : 'application/json';
  if (fault.kind === 'endless_body') {
    res.writeHead(200, { 'content-type': ctype });
    const block = Buffer.alloc(fault.chunkBytes, 'x');
    if (!(await writeWait(ctx, conv.stream ? 'data: {"pad":"' : '{"id":"chatcmpl-endless","pad":"'))) return gone();
    for (;;) {
      if (!(await writeWait(ctx, block))) return gone();
      sent += block.length;
    }
  }
  if (fault.kind === 'huge_length') {
    res.writeHead(200, { 'content-type': ctype, 'content-length': String(fault.length) });
    res.flushHeaders();
    const block = Buffer.alloc(fault.chunkBytes, 'h');
    while (sent < fault.length) {
      const n = Math.min(block.length, fault.length - sent);
      if (!(await writeWait(ctx, n === block.length ? block : block.subarray(0, n)))) return gone();
      sent += n;
      await sleep(fault.chunkDelayMs ?? 100);
    }
    entry.outcome = `huge_length: all ${sent} bytes sent`;
    return void res.end();
  }
  if (fault.kind === 'huge_sse_line') {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    if (!(await writeWait(ctx, 'data: {"pad":"'))) return gone();
    const block = Buffer.alloc(65536, 'a');
    while (sent < fault.lineBytes) {
      const n = Math.min(block.length, fault.lineBytes - sent);
      if (!(await writeWait(ctx, n === block.length ? block : block.subarray(0, n)))) return gone();
      sent += n;
    }
    entry.outcome = `huge_sse_line: ${sent} bytes without a newline, then the end`;
    return void res.end();
  }
  // drip: the answer as it would be, a byte at a time
  // (prebuilt: the {headers, events | body} of an answer from impl.extra)
  let bytes, headers;
  if (prebuilt) {
    bytes = Buffer.from(prebuilt.events ? prebuilt.events.join('') : JSON.stringify(prebuilt.body));
    headers = prebuilt.events ? prebuilt.headers : { 'content-type': 'application/json', ...prebuilt.headers, 'content-length': bytes.length };
  } else {
    bytes = Buffer.from(conv.stream ? impl.streamEvents(ctx, conv, a).join('') : JSON.stringify(impl.complete(ctx, conv, a)));
    headers = conv.stream ? impl.streamHeaders(ctx) : { 'content-type': 'application/json', ...(impl.okHeaders ? impl.okHeaders(ctx) : impl.headers(ctx)), 'content-length': bytes.length };
  }
  res.writeHead(200, headers);
  res.flushHeaders();
  for (const b of bytes) {
    await sleep(fault.dripMs);
    if (!(await writeWait(ctx, Buffer.from([b])))) return gone();
    sent++;
  }
  entry.outcome = `drip: all ${sent} bytes sent`;
  res.end();
}

async function handleProvider(impl, req, res) {
  const url = new URL(req.url, 'http://fake');
  const ctx = { impl, req, res, seq: 0, created: Math.floor(Date.now() / 1000), model: null, stream: false, aborted: false };
  res.on('close', () => { if (!res.writableFinished) ctx.aborted = true; });
  let raw;
  try {
    raw = await readBody(req);
  } catch (e) {
    if (e.tooLarge && !res.destroyed) sendJson(res, 413, { error: { message: 'Request too large' } }, { connection: 'close' });
    return;
  }
  const entry = logEntry(impl.name, req, url, raw);
  ctx.entry = entry;
  ctx.seq = entry.seq;
  ctx.ids = impl.ids(entry.seq);
  res.on('finish', () => { entry.status ??= res.statusCode; });

  const routeKind = impl.route(req.method, url.pathname, ctx);
  ctx.routeKind = routeKind;
  let json;
  if (raw) { try { json = JSON.parse(raw); } catch { json = undefined; } }
  if (json && typeof json === 'object' && typeof json.model === 'string' && impl !== gemini) ctx.model = json.model;
  if (impl === gemini) ctx.sse = url.searchParams.get('alt') === 'sse';

  const haystack = url.pathname + '\n' + raw;
  Object.defineProperty(entry, 'haystack', { value: haystack, enumerable: false });  // for ?match=
  const rules = rulesFor(impl.name, haystack);
  let fault;
  try {
    fault = takeFault(impl.name, req, haystack);
  } catch (e) {
    entry.status = 400;
    sendJson(res, 400, { error: { message: `x-fake-fault: ${e.message}` } });
    return;
  }
  entry.fault = fault;

  const answer = (r) => { entry.status = r.status; entry.outcome ??= r.status < 400 ? 'complete' : 'error'; send(res, r); };

  if (fault?.kind === 'reset' && fault.afterChunks === 0) {
    entry.outcome = 'reset before any byte';
    await sleep(1);
    res.socket?.resetAndDestroy();
    return;
  }
  if (fault?.kind === 'hang') { entry.outcome = 'hung, no byte sent'; return; }
  if (fault?.delayMs) await sleep(fault.delayMs);
  if (ctx.aborted) { entry.outcome = 'client closed'; return; }

  if (!routeKind) return answer(impl.notFound(ctx, req.method, url.pathname));
  const authErr = impl.auth(ctx, req, rules, url);   // records auth.present / auth.valid
  if (fault?.kind === 'status') return answer(applyStatusFault(impl, ctx, fault));
  if (fault?.kind === 'echo_key') return answer(echoKeyAnswer(impl, ctx, req, url));
  if (authErr) return answer(authErr);
  if (routeKind === 'models') return answer({ status: 200, headers: impl.headers(ctx), body: impl.models() });
  if (routeKind !== 'chat') {
    // The other endpoints (impl.extra): an error to send as is, or a 200 body or stream
    // events that the faults apply to as to a chat answer.
    const r = impl.extra[routeKind].call(impl, ctx, json, rules, req, url);
    if (r.status >= 400) return answer(r);
    entry.status = r.status;
    if (fault && HOSTILE.has(fault.kind)) return playHostile(impl, ctx, { stream: !!r.events }, null, fault, r);
    if (r.events) return playStream(ctx, r.status, r.headers, r.events, fault);
    return playBody(ctx, r.status, r.headers, r.body, fault);
  }

  const parsed = impl.parse(ctx, json);
  if (parsed.error) return answer(impl.validationError(ctx, parsed.error));
  const conv = parsed.conv;
  if (/nonexistent|does-not-exist/.test(conv.model)) return answer(impl.error(ctx, 404));
  const a = planAnswer(conv, rules, req.headers['x-fake-reply']);
  if (rules.contextWindow !== undefined && a.usage.prompt > rules.contextWindow) {
    return answer(impl.error(ctx, 400, 'context_length_exceeded', { contextWindow: rules.contextWindow, promptTokens: a.usage.prompt }));
  }
  entry.status = 200;
  if (fault && HOSTILE.has(fault.kind)) return playHostile(impl, ctx, conv, a, fault);
  if (conv.stream) {
    const hdrs = impl.streamHeaders(ctx);
    await playStream(ctx, 200, hdrs, impl.streamEvents(ctx, conv, a), fault);
  } else {
    const hdrs = impl.okHeaders ? impl.okHeaders(ctx) : impl.headers(ctx);
    await playBody(ctx, 200, hdrs, impl.complete(ctx, conv, a), fault);
  }
}

// ---------------------------------------------------------------------------------------
// Control API

async function handleControl(req, res) {
  const url = new URL(req.url, 'http://fake');
  let raw = '';
  try { raw = await readBody(req); } catch { return; }
  let body = {};
  if (raw) {
    try { body = JSON.parse(raw); } catch { return sendJson(res, 400, { error: 'body is not JSON' }); }
  }
  const p = url.pathname.replace(/\/+$/, '') || '/';
  try {
    if (req.method === 'GET' && (p === '/control' || p === '/')) {
      return sendJson(res, 200, { ports, providers: PROVIDERS, requests: state.seq });
    }
    if (req.method === 'POST' && p === '/control') {
      const provs = body.provider === '*' ? PROVIDERS : [body.provider];
      if (!provs.every((x) => PROVIDERS.includes(x))) throw new Error(`provider must be one of ${PROVIDERS.join(', ')} or "*"`);
      if (body.match !== undefined && (typeof body.match !== 'string' || !body.match)) throw new Error('match must be a non-empty string');
      let queued = 0;
      if (body.faults !== undefined) {
        if (!Array.isArray(body.faults)) throw new Error('faults must be an array');
        const fs = body.faults.map(normFault);
        for (const pr of provs) {
          for (const f of fs) {
            state.faults[pr].push({ fault: f, left: f.count, match: body.match });
            queued += f.count;
          }
        }
      }
      const rule = { provider: body.provider, match: body.match };
      let ruled = false;
      if (body.usage !== undefined && body.usage !== false && (typeof body.usage !== 'object' || body.usage === null || Array.isArray(body.usage))) {
        throw new Error('usage must be an object or false');
      }
      for (const k of ['reply', 'usage', 'contextWindow', 'apiKey']) {
        if (body[k] !== undefined) { rule[k] = body[k]; ruled = true; }
      }
      if (ruled) state.rules.push(rule);
      return sendJson(res, 200, { ok: true, queued, rule: ruled });
    }
    if (req.method === 'GET' && p === '/control/log') {
      let out = state.log;
      const pr = url.searchParams.get('provider');
      const m = url.searchParams.get('match');
      const since = Number(url.searchParams.get('since') || 0);
      if (pr) out = out.filter((e) => e.provider === pr);
      if (since) out = out.filter((e) => e.seq > since);
      if (m) out = out.filter((e) => e.haystack.includes(m));
      return sendJson(res, 200, out);
    }
    if (req.method === 'GET' && p === '/control/faults') {
      return sendJson(res, 200, Object.fromEntries(PROVIDERS.map((x) => [x, state.faults[x].map((e) => ({ ...e.fault, left: e.left, match: e.match }))])));
    }
    if (req.method === 'POST' && p === '/control/reset') {
      state.log = [];
      state.rules = [];
      state.responses.clear();
      state.items.clear();
      for (const x of PROVIDERS) state.faults[x] = [];
      // Stalled and hung requests of earlier tests are cut off so they end.
      for (const s of sockets) if (s.stalled) s.destroy();
      return sendJson(res, 200, { ok: true });
    }
    return sendJson(res, 404, { error: `no control route ${req.method} ${p}` });
  } catch (e) {
    return sendJson(res, 400, { error: e.message });
  }
}

// ---------------------------------------------------------------------------------------
// Servers

function makeServer(handler) {
  const srv = http.createServer((req, res) => {
    handler(req, res).catch((e) => {
      process.stderr.write(`upstream.mjs: ${e.stack || e}\n`);
      if (!res.headersSent && !res.destroyed) sendJson(res, 500, { error: { message: 'fake server bug: ' + e.message } });
      else res.destroy();
    });
  });
  srv.keepAliveTimeout = Number(opts['keep-alive-ms']);
  srv.headersTimeout = srv.keepAliveTimeout + 1000;
  srv.requestTimeout = 0;
  srv.on('connection', (s) => {
    s.setNoDelay(true);
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  return srv;
}

// Mark sockets of stalled/hung requests, so /control/reset can end them.
function wrap(impl) {
  return async (req, res) => {
    await handleProvider(impl, req, res);
    if (res.socket && !res.writableEnded) res.socket.stalled = true;
  };
}

const servers = {
  openai: makeServer(wrap(openai)),
  anthropic: makeServer(wrap(anthropic)),
  gemini: makeServer(wrap(gemini)),
  control: makeServer(handleControl),
};
const ports = {};

function listen(name) {
  return new Promise((resolve, reject) => {
    const port = Number(opts[name]);
    if (!Number.isInteger(port) || port < 0 || port > 65535) return reject(new Error(`--${name}: bad port "${opts[name]}"`));
    servers[name].once('error', reject);
    servers[name].listen(port, opts.host, () => {
      ports[name] = servers[name].address().port;
      resolve();
    });
  });
}

function shutdown() {
  for (const s of Object.values(servers)) s.close();
  for (const s of sockets) s.destroy();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
// --exit-on-stdin-eof: a parent that dies without signalling (its end of our stdin pipe
// closes) takes the fakes with it.
if (opts['exit-on-stdin-eof']) {
  process.stdin.on('end', shutdown);
  process.stdin.on('error', shutdown);
  process.stdin.resume();
}

try {
  for (const name of ['openai', 'anthropic', 'gemini', 'control']) await listen(name);
} catch (e) {
  process.stderr.write(`upstream.mjs: ${e.message}\n`);
  process.exit(2);
}
process.stdout.write(JSON.stringify(ports) + '\n');
