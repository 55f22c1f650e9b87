#!/usr/bin/env node
// hub.mjs: a fake Hugging Face hub, its CDN, and Ollama's registry, for `smolgate pull`'s
// tests and benchmark. Node's standard library only.
//
//   node tests/fakes/hub.mjs --root DIR [--port P] [--cdn-port P] [--host 127.0.0.1]
//                            [--gate OWNER/REPO=TOKEN]... [--no-log]
//
// DIR holds what it serves:
//   DIR/hf/OWNER/REPO/...          the files of a Hugging Face repository (subfolders too)
//   DIR/ollama/NS/NAME/TAG.gguf    an Ollama model: the manifest gets this file as its model
//                                  layer, plus a generated config blob and template layer
//
// The hub port answers as huggingface.co does:
//   GET  /api/models/OWNER/REPO[/revision/REV]   {id, sha, siblings: [{rfilename}], ...}
//   HEAD|GET /OWNER/REPO/resolve/REV/FILE         small files: 200 with ETag (git blob sha1)
//        LFS files (.gguf .safetensors .bin, or over 10 MB): 302 to the CDN port with
//        X-Linked-Etag (sha256, quoted), X-Linked-Size, X-Repo-Commit, ETag
//   errors carry X-Error-Code: RepoNotFound (401 without a token, 404 with one),
//        GatedRepo (401 without a token, 403 with a wrong one), EntryNotFound (404),
//        RevisionNotFound (404)
// and as registry.ollama.ai does:
//   GET /v2/NS/NAME/manifests/TAG     the manifest (404 MANIFEST_UNKNOWN when absent)
//   GET /v2/NS/NAME/blobs/sha256:HEX  307 to the CDN port
// The CDN port serves /blobs/HEX with Range (206 + Content-Range; 416 past the end) and,
// like a presigned S3 URL, refuses requests that carry an Authorization header (400).
//
// Control (hub port):
//   POST /_fake/fault {kind, file?, after?, rate?, status?, times?}  queue a fault for CDN
//        downloads whose file name contains `file`: cut (close the connection after `after`
//        bytes), corrupt (right length, wrong bytes), norange (ignore Range: 200 and the
//        whole body), slow (`rate` bytes/s), status (answer `status`). `times` (default 1)
//        is how many downloads it hits; -1 for all.
//   POST /_fake/gate {repo, token}   make a repository gated
//   POST /_fake/reset                clear faults and the request log
//   GET  /_fake/log                  [{server, method, path, range, auth}] in order
// When both ports listen, one JSON line goes to stdout: {"hub":P,"cdn":P}. SIGTERM exits 0.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values: opts } = parseArgs({
  options: {
    root: { type: 'string' },
    port: { type: 'string', default: '0' },
    'cdn-port': { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    gate: { type: 'string', multiple: true, default: [] },
    'no-log': { type: 'boolean', default: false },
  },
});
if (!opts.root) {
  process.stderr.write('hub.mjs: --root DIR is required\n');
  process.exit(2);
}

const LFS_MIN = 10 << 20;
const LFS_EXT = /\.(gguf|safetensors|bin|pt|pth|onnx)$/i;
const MANIFEST_TYPE = 'application/vnd.docker.distribution.manifest.v2+json';

const state = {
  repos: new Map(),     // "OWNER/REPO" -> {sha, files: Map(name -> file)}
  ollama: new Map(),    // "NS/NAME:TAG" -> {manifest: Buffer}
  blobs: new Map(),     // sha256 hex -> {name, size, path?, data?}
  gates: new Map(),     // "OWNER/REPO" -> token
  faults: [],
  log: [],
};
for (const g of opts.gate) {
  const i = g.indexOf('=');
  state.gates.set(g.slice(0, i), g.slice(i + 1));
}

// ---------------------------------------------------------------------------------------
// What is served

async function hashFile(p) {
  const sha256 = crypto.createHash('sha256');
  const sha1 = crypto.createHash('sha1');
  const size = fs.statSync(p).size;
  sha1.update(`blob ${size}\0`);
  for await (const chunk of fs.createReadStream(p, { highWaterMark: 1 << 20 })) {
    sha256.update(chunk);
    sha1.update(chunk);
  }
  return { size, sha256: sha256.digest('hex'), gitSha1: sha1.digest('hex') };
}

function walk(dir, rel = '') {
  const out = [];
  for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...walk(dir, r));
    else if (e.isFile()) out.push(r);
  }
  return out.sort();
}

function addBlob(name, data) {
  const sha = crypto.createHash('sha256').update(data).digest('hex');
  state.blobs.set(sha, { name, size: data.length, data });
  return { digest: `sha256:${sha}`, size: data.length };
}

async function scan() {
  state.repos.clear();
  state.ollama.clear();
  state.blobs.clear();
  const hf = path.join(opts.root, 'hf');
  if (fs.existsSync(hf)) {
    for (const owner of fs.readdirSync(hf)) {
      for (const repo of fs.readdirSync(path.join(hf, owner))) {
        const dir = path.join(hf, owner, repo);
        const files = new Map();
        for (const name of walk(dir)) {
          const p = path.join(dir, name);
          const h = await hashFile(p);
          const lfs = LFS_EXT.test(name) || h.size > LFS_MIN;
          files.set(name, { name, path: p, lfs, ...h });
          if (lfs) state.blobs.set(h.sha256, { name, size: h.size, path: p });
        }
        const id = `${owner}/${repo}`;
        const sha = crypto.createHash('sha1')
          .update(JSON.stringify([id, ...[...files.values()].map((f) => [f.name, f.sha256])]))
          .digest('hex');
        state.repos.set(id, { sha, files });
      }
    }
  }
  const ol = path.join(opts.root, 'ollama');
  if (fs.existsSync(ol)) {
    for (const rel of walk(ol)) {
      const m = /^([^/]+)\/([^/]+)\/([^/]+)\.gguf$/.exec(rel);
      if (!m) continue;
      const [, ns, name, tag] = m;
      const p = path.join(ol, rel);
      const h = await hashFile(p);
      state.blobs.set(h.sha256, { name: `${name}:${tag}`, size: h.size, path: p });
      const quant = /(q\d\w*|f16|f32|bf16)/i.exec(tag);
      const template = addBlob(`${name}:${tag} template`, Buffer.from('{{ .Prompt }}'));
      const config = addBlob(`${name}:${tag} config`, Buffer.from(JSON.stringify({
        model_format: 'gguf', model_family: 'llama', model_families: ['llama'],
        model_type: 'tiny', file_type: quant ? quant[1].toUpperCase() : 'F32',
        architecture: 'amd64', os: 'linux',
        rootfs: { type: 'layers', diff_ids: [`sha256:${h.sha256}`, template.digest] },
      })));
      const manifest = {
        schemaVersion: 2,
        mediaType: MANIFEST_TYPE,
        config: { mediaType: 'application/vnd.docker.container.image.v1+json', ...config },
        layers: [
          { mediaType: 'application/vnd.ollama.image.model', digest: `sha256:${h.sha256}`, size: h.size },
          { mediaType: 'application/vnd.ollama.image.template', ...template },
        ],
      };
      state.ollama.set(`${ns}/${name}:${tag}`, { manifest: Buffer.from(JSON.stringify(manifest)) });
    }
  }
}

// ---------------------------------------------------------------------------------------
// Helpers

function record(server, req) {
  if (opts['no-log']) return;
  state.log.push({
    server, method: req.method, path: req.url,
    range: req.headers.range ?? null, auth: req.headers.authorization ?? null,
  });
  if (state.log.length > 10000) state.log.shift();
}

function json(res, status, body, headers = {}) {
  const data = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': data.length, ...headers });
  res.end(data);
}

function hfError(res, status, code, message) {
  json(res, status, { error: message }, { 'X-Error-Code': code, 'X-Error-Message': message });
}

function bearer(req) {
  const a = req.headers.authorization ?? '';
  return a.startsWith('Bearer ') ? a.slice(7) : null;
}

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const text = Buffer.concat(chunks).toString();
  return text ? JSON.parse(text) : {};
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The fault for a download of `name`, consumed.
function takeFault(name) {
  const i = state.faults.findIndex((f) => !f.file || name.includes(f.file));
  if (i < 0) return null;
  const f = state.faults[i];
  if (f.times > 0 && --f.times === 0) state.faults.splice(i, 1);
  return f;
}

// ---------------------------------------------------------------------------------------
// The hub: API, resolve, registry, control

async function hub(req, res) {
  record('hub', req);
  const url = new URL(req.url, 'http://x');
  const p = decodeURIComponent(url.pathname);
  let m;

  if (p.startsWith('/_fake/')) {
    if (req.method === 'GET' && p === '/_fake/log') return json(res, 200, state.log);
    const body = await readBody(req).catch(() => null);
    if (body === null) return json(res, 400, { error: 'bad JSON' });
    if (p === '/_fake/reset') { state.faults = []; state.log = []; return json(res, 200, { ok: true }); }
    if (p === '/_fake/fault') { state.faults.push({ times: 1, ...body }); return json(res, 200, { ok: true }); }
    if (p === '/_fake/gate') { state.gates.set(body.repo, body.token); return json(res, 200, { ok: true }); }
    if (p === '/_fake/rescan') { await scan(); return json(res, 200, { ok: true }); }
    return json(res, 404, { error: 'unknown control path' });
  }

  if ((m = /^\/api\/models\/([^/]+\/[^/]+?)(?:\/revision\/([^/]+))?\/?$/.exec(p)) && req.method === 'GET') {
    const repo = state.repos.get(m[1]);
    if (!repo) return hfError(res, bearer(req) ? 404 : 401, 'RepoNotFound', 'Repository not found');
    if (m[2] && m[2] !== 'main' && m[2] !== repo.sha) return hfError(res, 404, 'RevisionNotFound', 'Invalid rev id');
    const [author] = m[1].split('/');
    return json(res, 200, {
      _id: repo.sha.slice(0, 24), id: m[1], modelId: m[1], author, sha: repo.sha,
      lastModified: '2025-07-08T00:00:00.000Z', private: false, disabled: false,
      gated: state.gates.has(m[1]) ? 'manual' : false, tags: [], downloads: 0, likes: 0,
      siblings: [...repo.files.keys()].map((rfilename) => ({ rfilename })),
      createdAt: '2025-07-01T00:00:00.000Z',
    });
  }

  if ((m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(p)) && (req.method === 'GET' || req.method === 'HEAD')) {
    const repo = state.repos.get(m[1]);
    const token = bearer(req);
    if (!repo) return hfError(res, token ? 404 : 401, 'RepoNotFound', 'Repository not found');
    if (state.gates.has(m[1]) && token !== state.gates.get(m[1])) {
      return token
        ? hfError(res, 403, 'GatedRepo', `Access to model ${m[1]} is restricted and you are not in the authorized list.`)
        : hfError(res, 401, 'GatedRepo', `Access to model ${m[1]} is restricted. You must have access to it and be authenticated to access it. Please log in.`);
    }
    if (m[2] !== 'main' && m[2] !== repo.sha) return hfError(res, 404, 'RevisionNotFound', 'Invalid rev id');
    const f = repo.files.get(m[3]);
    if (!f) return hfError(res, 404, 'EntryNotFound', 'Entry not found');
    if (f.lfs) {
      const cdn = `http://${opts.host}:${ports.cdn}/blobs/${f.sha256}?name=${encodeURIComponent(f.name)}`;
      res.writeHead(302, {
        Location: cdn, 'X-Repo-Commit': repo.sha, 'X-Linked-Etag': `"${f.sha256}"`,
        'X-Linked-Size': String(f.size), ETag: `"${f.gitSha1}"`, 'Content-Length': 0,
      });
      return res.end();
    }
    res.writeHead(200, {
      'Content-Type': 'application/octet-stream', 'Content-Length': f.size,
      ETag: `"${f.gitSha1}"`, 'X-Repo-Commit': repo.sha, 'Accept-Ranges': 'bytes',
    });
    if (req.method === 'HEAD') return res.end();
    return fs.createReadStream(f.path).pipe(res);
  }

  if ((m = /^\/v2\/([^/]+\/[^/]+)\/manifests\/([^/]+)$/.exec(p)) && req.method === 'GET') {
    const o = state.ollama.get(`${m[1]}:${m[2]}`);
    if (!o) return json(res, 404, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] });
    const digest = `sha256:${crypto.createHash('sha256').update(o.manifest).digest('hex')}`;
    res.writeHead(200, { 'Content-Type': MANIFEST_TYPE, 'Content-Length': o.manifest.length, 'Docker-Content-Digest': digest });
    return res.end(o.manifest);
  }

  if ((m = /^\/v2\/([^/]+\/[^/]+)\/blobs\/sha256:([0-9a-f]{64})$/.exec(p)) && (req.method === 'GET' || req.method === 'HEAD')) {
    if (!state.blobs.has(m[2])) return json(res, 404, { errors: [{ code: 'BLOB_UNKNOWN', message: 'blob unknown' }] });
    res.writeHead(307, { Location: `http://${opts.host}:${ports.cdn}/blobs/${m[2]}`, 'Content-Length': 0 });
    return res.end();
  }

  return json(res, 404, { error: 'Not Found' });
}

// ---------------------------------------------------------------------------------------
// The CDN: bytes by sha256, with Range and faults

async function cdn(req, res) {
  record('cdn', req);
  const url = new URL(req.url, 'http://x');
  const m = /^\/blobs\/([0-9a-f]{64})$/.exec(url.pathname);
  const blob = m && state.blobs.get(m[1]);
  if (!blob) return json(res, 404, { error: 'NoSuchKey' });
  if (req.headers.authorization) {
    return json(res, 400, { error: 'InvalidArgument: Only one auth mechanism allowed' });
  }
  const fault = req.method === 'GET' ? takeFault(blob.name) : null;
  if (fault?.kind === 'status') return json(res, fault.status ?? 500, { error: 'injected' });

  let start = 0;
  let end = blob.size - 1;
  let status = 200;
  const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  if (range && fault?.kind !== 'norange') {
    start = Number(range[1]);
    if (range[2]) end = Math.min(end, Number(range[2]));
    if (start >= blob.size) {
      res.writeHead(416, { 'Content-Range': `bytes */${blob.size}`, 'Content-Length': 0 });
      return res.end();
    }
    status = 206;
  }
  const headers = {
    'Content-Type': 'application/octet-stream', 'Content-Length': end - start + 1,
    'Accept-Ranges': 'bytes', ETag: `"${m[1]}"`,
  };
  if (status === 206) headers['Content-Range'] = `bytes ${start}-${end}/${blob.size}`;
  res.writeHead(status, headers);
  if (req.method === 'HEAD') return res.end();

  const source = blob.data
    ? [blob.data.subarray(start, end + 1)]
    : fs.createReadStream(blob.path, { start, end, highWaterMark: 1 << 20 });
  if (!fault) {
    if (blob.data) return res.end(source[0]);
    return source.pipe(res);
  }
  let sent = 0;
  try {
    for await (let chunk of source) {
      if (fault.kind === 'corrupt') {
        chunk = Buffer.from(chunk);
        chunk[0] ^= 0xff;
      }
      if (fault.kind === 'cut' && sent + chunk.length >= (fault.after ?? 0)) {
        const part = chunk.subarray(0, Math.max(0, (fault.after ?? 0) - sent));
        res.write(part);
        await sleep(50);                   // let those bytes reach the client, then drop it
        res.socket?.destroy();
        return;
      }
      if (fault.kind === 'slow') {
        for (let o = 0; o < chunk.length; o += 16384) {
          const piece = chunk.subarray(o, o + 16384);
          if (!res.write(piece)) await new Promise((r) => res.once('drain', r));
          await sleep((piece.length / (fault.rate ?? 1e6)) * 1000);
        }
      } else if (!res.write(chunk)) {
        await new Promise((r) => res.once('drain', r));
      }
      sent += chunk.length;
    }
    res.end();
  } catch {
    res.socket?.destroy();
  }
}

// ---------------------------------------------------------------------------------------

const ports = {};
const servers = [];
const sockets = new Set();
function listen(name, handler, port) {
  return new Promise((resolve, reject) => {
    const s = http.createServer((req, res) => {
      handler(req, res).catch((e) => {
        if (!res.headersSent) json(res, 500, { error: String(e) });
        else res.socket?.destroy();
      });
    });
    s.on('connection', (c) => { sockets.add(c); c.on('close', () => sockets.delete(c)); });
    s.on('error', reject);
    s.listen(Number(port), opts.host, () => { ports[name] = s.address().port; servers.push(s); resolve(); });
  });
}

function shutdown() {
  for (const s of servers) s.close();
  for (const c of sockets) c.destroy();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

try {
  await scan();
  await listen('hub', hub, opts.port);
  await listen('cdn', cdn, opts['cdn-port']);
} catch (e) {
  process.stderr.write(`hub.mjs: ${e.message}\n`);
  process.exit(2);
}
process.stdout.write(`${JSON.stringify(ports)}\n`);
