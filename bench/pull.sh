#!/bin/bash
# pull.sh: download throughput of `smolgate pull` next to `curl -L -o` for the same file,
# both from tests/fakes/hub.mjs on loopback (the hub's 302 to its CDN port, as on
# huggingface.co). smolgate's figure includes what curl does not do: the sha256 of every
# byte, fsync and the rename into the cache; so a third figure is curl followed by
# sha256sum and sync, what a verified download costs done by hand. Prints MB/s per run and
# the median (best) of BENCH_RUNS (default 5). BENCH_PULL_MB sets the file size (default 500).
set -u
cd "$(dirname "$0")/.."
bin=build/smolgate
mb=${BENCH_PULL_MB:-500}
runs=${BENCH_RUNS:-5}
tmp=$(mktemp -d /tmp/smolgate-bench-pull-XXXXXX)
fake_pid=
cleanup() {
  [ -n "$fake_pid" ] && kill "$fake_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -x "$bin" ] || { echo "bench/pull.sh: $bin not built"; exit 1; }
mkdir -p $tmp/root/hf/bench/big-GGUF
head -c $((mb << 20)) /dev/urandom > $tmp/root/hf/bench/big-GGUF/big-Q4_K_M.gguf
node tests/fakes/hub.mjs --root $tmp/root --no-log >$tmp/ports 2>$tmp/fake.err </dev/null &
fake_pid=$!
for _ in $(seq 300); do [ -s $tmp/ports ] && break; sleep 0.1; done   # it hashes the file first
[ -s $tmp/ports ] || { echo "bench/pull.sh: the fake hub did not start: $(cat $tmp/fake.err)"; exit 1; }
port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["hub"])' $tmp/ports)
export HF_ENDPOINT=http://127.0.0.1:$port HF_HOME=$tmp/hf
bytes=$(stat -c %s $tmp/root/hf/bench/big-GGUF/big-Q4_K_M.gguf)

now() { date +%s.%N; }
rate() { python3 -c "import sys; print('%.0f' % (int(sys.argv[1]) / 1e6 / (float(sys.argv[3]) - float(sys.argv[2]))))" "$bytes" "$1" "$2"; }

pulls=() curls=() verified=()
url="$HF_ENDPOINT/bench/big-GGUF/resolve/main/big-Q4_K_M.gguf"
for r in $(seq $runs); do   # interleaved, so that load from elsewhere hits all three alike
  rm -rf $HF_HOME $tmp/curl.out
  t0=$(now)
  $bin pull -q bench/big-GGUF >/dev/null || { echo "bench/pull.sh: pull failed"; exit 1; }
  p=$(rate $t0 $(now))
  t0=$(now)
  curl -sf -L -o $tmp/curl.out "$url" || { echo "bench/pull.sh: curl failed"; exit 1; }
  c=$(rate $t0 $(now))
  rm -f $tmp/curl.out
  t0=$(now)
  curl -sf -L -o $tmp/curl.out "$url" && sha256sum $tmp/curl.out >/dev/null && sync -d $tmp/curl.out
  v=$(rate $t0 $(now))
  echo "run $r: smolgate pull $p MB/s, curl -L -o $c MB/s, curl -L -o + sha256sum + sync $v MB/s"
  pulls+=($p) curls+=($c) verified+=($v)
done
cmp -s $tmp/curl.out $tmp/root/hf/bench/big-GGUF/big-Q4_K_M.gguf || echo "bench/pull.sh: curl's copy differs!"
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mx() { printf '%s\n' "$@" | sort -n | tail -1; }
echo "pull throughput, $mb MB file from the local fake hub, MB/s median (best) of $runs:" \
     "smolgate pull $(med "${pulls[@]}") ($(mx "${pulls[@]}")) with sha256 + fsync;" \
     "curl -L -o $(med "${curls[@]}") ($(mx "${curls[@]}"));" \
     "curl -L -o, then sha256sum and sync $(med "${verified[@]}") ($(mx "${verified[@]}"))"
