// env.mjs: what the client tests share (not a test file itself).
//
// - Where the official SDKs point. TARGET=fake (the default) talks to the fake upstreams
//   directly: the OpenAI test to the fake OpenAI port, the Anthropic test to the fake
//   Anthropic port. TARGET=gateway talks to smolgate at SMOLGATE_URL (e.g.
//   http://127.0.0.1:8080), with the key SMOLGATE_API_KEY (default "sk-smolgate-test").
//   The gateway is expected to route the model names below to the fakes, so that the same
//   answers and usage come back.
// - Model names: OPENAI_MODEL (default gpt-4o-mini), ANTHROPIC_MODEL (default
//   claude-haiku-4-5), AI_SDK_MODEL (default OPENAI_MODEL), EMBEDDING_MODEL (default
//   text-embedding-3-small), GEMINI_EMBEDDING_MODEL (default gemini-embedding-001),
//   OLLAMA_MODEL (default OPENAI_MODEL), AI_GATEWAY_MODEL (default openai/OPENAI_MODEL).
// - APIs only smolgate speaks (Ollama's /api/*, the Vercel AI Gateway protocol): their
//   test files skip in fake mode (gatewayOnly), with the reason. The Ollama client talks to
//   SMOLGATE_URL, the AI Gateway client to SMOLGATE_AI_GATEWAY_URL (default
//   SMOLGATE_URL/v4/ai, where Vercel's own gateway serves it).
// - APIs smolgate does not serve yet, listed in PENDING below: in gateway mode a test of
//   one skips, saying so (gatewayLacks); with SMOLGATE_PENDING=fail it runs, and fails.
// - The fakes: FAKE_PORTS holds the JSON ports line that tests/fakes/upstream.mjs printed
//   (tests/e2e/fakes.sh sets it). In fake mode without it, one fake is started for this
//   test file and stopped when the file ends. In gateway mode FAKE_PORTS is optional: when
//   set, the tests may also look at what reached the fakes.
// - The SDKs are loaded from tests/node/node_modules (npm ci there), resolved as ESM.

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const TARGET = process.env.TARGET || 'fake';
if (TARGET !== 'fake' && TARGET !== 'gateway') throw new Error(`TARGET must be "fake" or "gateway", not "${TARGET}"`);
export const GATEWAY = TARGET === 'gateway';

export const MODELS = {
  openai: process.env.OPENAI_MODEL || 'gpt-4o-mini',
  anthropic: process.env.ANTHROPIC_MODEL || 'claude-haiku-4-5',
  aisdk: process.env.AI_SDK_MODEL || process.env.OPENAI_MODEL || 'gpt-4o-mini',
  embedding: process.env.EMBEDDING_MODEL || 'text-embedding-3-small',
  geminiEmbedding: process.env.GEMINI_EMBEDDING_MODEL || 'gemini-embedding-001',
  ollama: process.env.OLLAMA_MODEL || process.env.OPENAI_MODEL || 'gpt-4o-mini',
  aigateway: process.env.AI_GATEWAY_MODEL || `openai/${process.env.OPENAI_MODEL || 'gpt-4o-mini'}`,
};

const FAKE_HOST = '127.0.0.1';
const NODE_MODULES = new URL('../node/node_modules/', import.meta.url);
const UPSTREAM = fileURLToPath(new URL('../fakes/upstream.mjs', import.meta.url));

// Word count: the fakes' token count (see tests/fakes/README.md).
export const words = (s) => (String(s).match(/\S+/g) || []).length;

// The fakes' embedding of a text (tests/fakes/README.md, "Embeddings"), written again from
// that description: `dims` values, 8 per SHA-256 of "TEXT\nBLOCK" (big-endian uint32 u ->
// u / 2^31 - 1), scaled to unit length, rounded to float32.
export function fakeEmbedding(text, dims) {
  const v = [];
  for (let b = 0; v.length < dims; b++) {
    const h = createHash('sha256').update(`${text}\n${b}`).digest();
    for (let i = 0; i < 32 && v.length < dims; i += 4) v.push(h.readUInt32BE(i) / 2 ** 31 - 1);
  }
  const n = Math.hypot(...v);
  return v.map((x) => Math.fround(x / n));
}

let nonceSeq = 0;
// A string unique to this request, to find it in the fake's log and to scope faults to it.
export const nonce = (tag = 'n') => `${tag}${process.pid}x${++nonceSeq}`;

// ---------------------------------------------------------------------------------------
// SDKs, from tests/node/node_modules, by their package.json "exports" (import conditions).

function resolveExport(e) {
  if (typeof e === 'string') return e;
  if (Array.isArray(e)) { for (const x of e) { const r = resolveExport(x); if (r) return r; } return null; }
  if (e && typeof e === 'object') {
    for (const [k, v] of Object.entries(e)) {
      if (k === 'node' || k === 'import' || k === 'module-sync' || k === 'default') {
        const r = resolveExport(v);
        if (r) return r;
      }
    }
  }
  return null;
}

export async function loadPackage(name) {
  const dir = new URL(`${name}/`, NODE_MODULES);
  const pj = new URL('package.json', dir);
  if (!existsSync(pj)) {
    throw new Error(`${name} is not installed in tests/node/node_modules: run "npm ci" in tests/node`);
  }
  const pkg = JSON.parse(readFileSync(pj, 'utf8'));
  let exp = pkg.exports;  // either the "." entry's conditions, or a map of subpaths
  if (exp && typeof exp === 'object' && !Array.isArray(exp) && Object.keys(exp).some((k) => k.startsWith('.'))) exp = exp['.'];
  const entry = (exp && resolveExport(exp)) || pkg.module || pkg.main || 'index.js';
  return import(new URL(entry, dir).href);
}

// ---------------------------------------------------------------------------------------
// The fakes

let portsPromise = null;

// Starts tests/fakes/upstream.mjs; resolves to its ports. The child ends with this process.
export function startFake() {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [UPSTREAM, '--exit-on-stdin-eof'], { stdio: ['pipe', 'pipe', 'inherit'] });
    let buf = '';
    const timer = setTimeout(() => { child.kill(); reject(new Error('fake upstream did not print its ports within 10 s')); }, 10000);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`fake upstream exited (${code}) before printing its ports`)); });
    child.stdout.on('data', (d) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      child.removeAllListeners('exit');
      const ports = JSON.parse(buf.slice(0, nl));
      // Do not keep this process alive for the child; it ends when our end of its stdin
      // closes (--exit-on-stdin-eof), and we kill it on exit anyway.
      process.on('exit', () => child.kill());
      child.unref();
      child.stdin.unref?.();
      child.stdout.unref?.();
      resolve(ports);
    });
  });
}

// The fakes' ports: FAKE_PORTS, else (fake mode) a fake started for this file, else null.
export function fakePorts() {
  if (!portsPromise) {
    if (process.env.FAKE_PORTS) portsPromise = Promise.resolve(JSON.parse(process.env.FAKE_PORTS));
    else if (!GATEWAY) portsPromise = startFake();
    else portsPromise = Promise.resolve(null);
  }
  return portsPromise;
}

// Can the tests see the fakes (fake mode, or gateway mode with FAKE_PORTS)?
export async function haveFakes() { return (await fakePorts()) !== null; }

export async function control(path, body) {
  const p = await fakePorts();
  if (!p) throw new Error('no fake control port (set FAKE_PORTS)');
  const r = await fetch(`http://${FAKE_HOST}:${p.control}${path}`, body === undefined ? {} : {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  const j = await r.json();
  if (!r.ok) throw new Error(`control ${path}: ${r.status} ${JSON.stringify(j)}`);
  return j;
}

// Entries of the fake's request log whose path or body contains `match`.
export async function fakeLog({ provider, match } = {}) {
  const q = new URLSearchParams();
  if (provider) q.set('provider', provider);
  if (match) q.set('match', match);
  return control(`/control/log?${q}`);
}

// ---------------------------------------------------------------------------------------
// Targets

function gatewayURL() {
  const u = process.env.SMOLGATE_URL;
  if (!u) throw new Error('TARGET=gateway needs SMOLGATE_URL (e.g. http://127.0.0.1:8080)');
  return u.replace(/\/+$/, '');
}
const gatewayKey = () => process.env.SMOLGATE_API_KEY || 'sk-smolgate-test';

// {baseURL, apiKey} for OpenAI-compatible clients (baseURL ends in /v1).
export async function openaiTarget() {
  if (GATEWAY) return { baseURL: `${gatewayURL()}/v1`, apiKey: gatewayKey() };
  const p = await fakePorts();
  return { baseURL: `http://${FAKE_HOST}:${p.openai}/v1`, apiKey: 'sk-fake-openai-key' };
}

// {baseURL, apiKey} for the Anthropic client (the SDK appends /v1/messages).
export async function anthropicTarget() {
  if (GATEWAY) return { baseURL: gatewayURL(), apiKey: gatewayKey() };
  const p = await fakePorts();
  return { baseURL: `http://${FAKE_HOST}:${p.anthropic}`, apiKey: 'sk-ant-fake-key' };
}

// The Ollama client's host: smolgate itself (Ollama's API lives at /api/*).
export function ollamaTarget() {
  return { host: gatewayURL(), headers: { authorization: `Bearer ${gatewayKey()}` } };
}

// {baseURL, apiKey} for @ai-sdk/gateway's createGateway (the SDK appends /language-model,
// /config, /embedding-model).
export function aiGatewayTarget() {
  const u = process.env.SMOLGATE_AI_GATEWAY_URL || `${gatewayURL()}/v4/ai`;
  return { baseURL: u.replace(/\/+$/, ''), apiKey: gatewayKey() };
}

// For files testing an API only smolgate speaks: in fake mode, the reason to skip them.
export function gatewayOnly(api) {
  return GATEWAY ? false : `${api} is served by smolgate only, not by the fakes: this runs with TARGET=gateway (tests/e2e/gateway.sh)`;
}

// Client APIs smolgate does not serve yet: "METHOD PATH", or a prefix ending in '/'. In
// gateway mode a test of one is skipped, saying so; SMOLGATE_PENDING=fail runs it (and it
// fails) to show what is left. An entry goes when its API lands. A list rather than a
// probe of the gateway: an endpoint that is served and breaks must fail, not skip.
const PENDING = [];
export async function gatewayLacks(method, path, api) {
  if (!GATEWAY || process.env.SMOLGATE_PENDING === 'fail') return false;
  const k = `${method} ${path}`;
  return PENDING.some((p) => k === p || (p.endsWith('/') && k.startsWith(p)))
    ? `pending: smolgate does not serve ${api} yet (listed in tests/clients/env.mjs PENDING); SMOLGATE_PENDING=fail runs it anyway`
    : false;
}
