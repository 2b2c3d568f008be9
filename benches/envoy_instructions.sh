#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind over the same requests: the front
# Envoy's (default) or tollgate's (MEASURE=tollgate), for the shipped envoy/envoy.yaml and for each
# edit given. CPU time on this shared 2-core machine drifts by ±20 % from run to run, which hid
# every Envoy setting's effect in benches/e2e.sh's A/B pairs; an instruction count is the same to
# about a percent in every run.
#
#   bash benches/envoy_instructions.sh benches/e2e/every-header.sed benches/e2e/google-grpc.sed
#   MEASURE=tollgate VARIANTS=floor bash benches/envoy_instructions.sh
#   N=2000 VARIANTS="bare floor memory redis" REQUESTS="minimal realistic" bash ...
#
# The stack is benches/e2e.sh's (benches/e2e/stack.sh); the measured process runs under callgrind
# with instrumentation off until N requests (after 200 of warm-up) are sent, 4 connections at a
# time. Counts cover every thread of the process, so they include its work per request on the
# side (timers, stats flushes) for the time the requests take under valgrind: compare counts of the
# same N. KEEP=1 keeps the callgrind dumps (/tmp/tollgate-callgrind.<pid>.<n>) for
# callgrind_annotate. Needs valgrind, envoy 1.40, redis-server and h2load; run by hand, not in CI.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-2000}
VARIANTS=${VARIANTS:-floor memory}
REQUESTS=${REQUESTS:-realistic}
MEASURE=${MEASURE:-envoy}
command -v callgrind_control >/dev/null || { echo "missing: valgrind" >&2; exit 1; }
callgrind="valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/tollgate-callgrind.%p"
case $MEASURE in
  envoy) ENVOY_WRAP=$callgrind ;;
  tollgate) TOLLGATE_WRAP=$callgrind ;;
  *) echo "MEASURE is envoy or tollgate" >&2; exit 1 ;;
esac
source benches/e2e/stack.sh
trap 'cleanup; [ -n "${KEEP:-}" ] || rm -f /tmp/tollgate-callgrind.*' EXIT

# Instructions per request of the process `pid` (under callgrind) over N requests.
count() { # pid, uri file, header file
  run_h2load "$2" "$3" -n 200 -c 4 >/dev/null
  callgrind_control -z "$1" >/dev/null 2>&1
  callgrind_control -i on "$1" >/dev/null 2>&1
  run_h2load "$2" "$3" -n "$N" -c 4 | grep -q "succeeded, 0 failed" || { echo "requests failed" >&2; exit 1; }
  callgrind_control -i off "$1" >/dev/null 2>&1
  callgrind_control -d "$1" >/dev/null 2>&1
  local dump
  dump=$(ls -t /tmp/tollgate-callgrind."$1".* | head -1)
  callgrind_annotate "$dump" | awk -v n="$N" '/PROGRAM TOTALS/ { gsub(",", "", $1); printf "%.0f", $1 / n }'
}

echo "# $MEASURE instructions per request, $N requests through each configuration"
echo
echo "| variant | request | Envoy configuration | instructions per request | × shipped |"
echo "|---|---|---|---|---|"
for variant in $VARIANTS; do
  use_variant "$variant"
  for request in $REQUESTS; do
    headers "$request" >"$work/headers"
    shipped=
    for edit in "" "$@"; do
      read -r envoy_pid envoy_port < <(start_envoy "$variant" "$tollgate_port" "$edit")
      pids+=("$envoy_pid")
      wait_port "$envoy_port"
      uris "$envoy_port" "$prefix" >"$work/uris"
      measured=$tollgate_pid
      [ "$MEASURE" = envoy ] && measured=$envoy_pid
      per_request=$(count "$measured" "$work/uris" "$work/headers")
      shipped=${shipped:-$per_request}
      ratio=$(awk -v a="$shipped" -v b="$per_request" 'BEGIN { printf "%.2f", b / a }')
      echo "| $variant | $request | ${edit:-shipped} | $per_request | $ratio |"
      kill "$envoy_pid"
      wait "$envoy_pid" 2>/dev/null || true
    done
  done
done
