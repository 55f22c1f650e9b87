#!/bin/sh
# Writes compile_commands.json (to stdout) for the given sources, with the flags the
# Makefile uses, so clangd and clang-tidy see exactly what the compiler sees.
cc=$1 cflags=$2 avx2=$3 avx512=$4; shift 4
dir=$(pwd)
printf '[\n'
first=1
for f in "$@"; do
  extra=
  case $f in *_avx2.c) extra=$avx2;; *_avx512.c) extra=$avx512;; esac
  [ $first = 1 ] || printf ',\n'
  first=0
  cmd=$(printf '%s %s %s -c %s' "$cc" "$cflags" "$extra" "$f" | sed 's/\\/\\\\/g; s/"/\\"/g')
  printf '  {"directory": "%s", "file": "%s", "command": "%s"}' "$dir" "$f" "$cmd"
done
printf '\n]\n'
