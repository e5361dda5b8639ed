#!/bin/sh
# hello.sh: the smallest kodo flow. It reads its inputs (JSON) from stdin, writes event
# lines to the descriptor named by KODO_EVENTS_FD, and prints to stdout/stderr, which the
# executor turns into stdout/stderr events. Any language works the same way.
set -eu
inputs=$(cat)
emit() { printf '%s\n' "$1" >&"$KODO_EVENTS_FD"; }

name=$(printf '%s' "$inputs" | sed -n 's/.*"name"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p')
[ -n "$name" ] || name="world"
steps=$(printf '%s' "$inputs" | sed -n 's/.*"steps"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p')
[ -n "$steps" ] || steps=3

echo "hello flow $KODO_FID for $KODO_USERNAME starts"
i=1
while [ "$i" -le "$steps" ]; do
  emit "{\"kind\": \"agent\", \"payload\": {\"step\": $i, \"of\": $steps}}"
  sleep "${HELLO_STEP_SECONDS:-0.2}"
  i=$((i + 1))
done
echo "a note on stderr" >&2
emit "{\"kind\": \"result\", \"payload\": {\"greeting\": \"hello, $name\"}}"
emit "{\"kind\": \"final\", \"payload\": {\"greeting\": \"hello, $name\", \"steps\": $steps}}"
