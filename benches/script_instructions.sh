#!/usr/bin/env bash
# What the check script costs Redis, in instructions: deterministic where CPU time on this shared
# 2-core machine drifts by ±20 % between runs. Each script runs in a redis-server of its own
# under valgrind's callgrind, which counts the instructions executed inside EVALSHA (the script
# and the commands it calls; not the sockets or the protocol), for the same sequence of checks.
#
#   bash benches/script_instructions.sh [REV]    # the working tree's script against REV's
#                                                  (default HEAD)
#   FUNCTION=1 bash benches/script_instructions.sh [REV]   # the working tree's code as the
#                                                  function library tollgate loads on Redis 7 and
#                                                  Valkey (FCALL), against REV's script (EVALSHA)
#
# Scenarios (the storage bench's shapes, smaller: valgrind runs Redis about 50 times slower):
#   (a) mostly allowed: 2 000 buckets of 60/60 s, 10 checks each, round-robin
#   (b) two windows: the same buckets with 10/1 s + 1 000/1 h
#   (c) hot key: one bucket of 60/60 s, 2 000 checks (mostly denied)
#   (d) large rings: 250 buckets of 1 000/1 h filled with 900, then 8 checks each
# Needs valgrind and redis-server; run by hand, not in CI. Only 127.0.0.1 is used.
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${1:-HEAD}
for tool in valgrind callgrind_annotate redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for f in ring admit check; do git show "$REV:src/store/$f.lua"; done >"$work/baseline.lua"
if [ -n "${FUNCTION:-}" ]; then
  # As src/store/function.rs builds it.
  {
    echo "#!lua name=tollgate_bench"
    cat src/store/ring.lua src/store/admit.lua
    echo "local function check(KEYS, ARGV)"
    cat src/store/check.lua
    echo "end"
    echo "redis.register_function('tollgate_check', check)"
  } >"$work/current.lua"
else
  cat src/store/ring.lua src/store/admit.lua src/store/check.lua >"$work/current.lua"
fi

python3 - "$work" <<'PY'
import sys
work = sys.argv[1]
def check(bucket, cost, windows):
    args = " ".join(f"{n} {w}" for n, w in windows)
    capacity = max(n for n, _ in windows)
    retain = max(w for _, w in windows)
    return f"EVALSHA @SHA@ 1 tollgate:ring:{{bench-{bucket}}}:x {cost} 0 {capacity} {retain} {args}\n"
minute, hour = [(60, 60_000_000)], [(1000, 3_600_000_000)]
two = [(10, 1_000_000), (1000, 3_600_000_000)]
scenarios = {
    "a": [check(b, 1, minute) for _ in range(10) for b in range(2000)],
    "b": [check(b, 1, two) for _ in range(10) for b in range(2000)],
    "c": [check("hot", 1, minute) for _ in range(2000)],
    "d": [check(b, 900, hour) for b in range(250)] + [check(b, 1, hour) for _ in range(8) for b in range(250)],
}
for name, lines in scenarios.items():
    with open(f"{work}/{name}.txt", "w") as f:
        f.writelines(lines)
PY

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Instructions per call inside EVALSHA (or FCALL) and Redis commands per call: "ir commands".
measure() { # script file, commands file[, "function" for a library called by FCALL]
  local port pid sha calls commands ir command=evalsha collect='evalGenericCommand*'
  [ "${3:-}" = function ] && command=fcall collect=fcallCommand
  port=$(free_port)
  valgrind --tool=callgrind --callgrind-out-file="$work/out.$port" --toggle-collect="$collect" \
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 200); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  if [ "$command" = fcall ]; then
    redis-cli -p "$port" -x function load <"$1" >/dev/null
    sed "s/EVALSHA @SHA@/FCALL tollgate_check/" "$2" | redis-cli -p "$port" --pipe >/dev/null
  else
    sha=$(redis-cli -p "$port" script load "$(cat "$1")")
    sed "s/@SHA@/$sha/" "$2" | redis-cli -p "$port" --pipe >/dev/null
  fi
  calls=$(redis-cli -p "$port" info commandstats | awk -F'[:=,]' -v c="cmdstat_$command" '$1 == c { print $3 }')
  commands=$(redis-cli -p "$port" info commandstats |
    awk -F'[:=,]' '/^cmdstat_/ && !/^cmdstat_(evalsha|fcall|function|script|ping|info)/ { s += $3 } END { print s }')
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  wait "$pid" || true
  ir=$(callgrind_annotate "$work/out.$port" | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  awk -v i="$ir" -v c="$commands" -v n="$calls" 'BEGIN { printf "%.0f %.2f\n", i / n, c / n }'
}

echo "| scenario | instructions per check: $REV | working tree | ratio | Redis commands per check: $REV / working tree |"
echo "|---|---|---|---|---|"
for scenario in a b c d; do
  read -r base_ir base_commands < <(measure "$work/baseline.lua" "$work/$scenario.txt")
  read -r new_ir new_commands < <(measure "$work/current.lua" "$work/$scenario.txt" "${FUNCTION:+function}")
  ratio=$(awk -v a="$base_ir" -v b="$new_ir" 'BEGIN { printf "%.2f", b / a }')
  echo "| ($scenario) | $base_ir | $new_ir | $ratio | $base_commands / $new_commands |"
done
