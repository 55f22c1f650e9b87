#!/bin/sh
# Writes compile_commands.json (to stdout) for the given sources, with the flags the
# Makefile uses, so clangd and clang-tidy see exactly what the compiler sees.
cc=$1 cflags=$2; shift 2
dir=$(pwd)
printf '[\n'
first=1
for f in "$@"; do
  [ $first = 1 ] || printf ',\n'
  first=0
  cmd=$(printf '%s %s -c %s' "$cc" "$cflags" "$f" | sed 's/\\/\\\\/g; s/"/\\"/g')
  printf '  {"directory": "%s", "file": "%s", "command": "%s"}' "$dir" "$f" "$cmd"
done
printf '\n]\n'
