#!/usr/bin/env bash
# End to end: what a check costs the proxy and the box. h2load -> Envoy 1.40 (the shipped
# envoy/envoy.yaml) -> ext_authz -> tollgate -> Redis, against the same Envoy without ext_authz,
# all on this machine, in one run so that the box's speed cancels out in the ratios.
#
#   bash benches/e2e.sh                     # every variant, both requests (about 4 minutes)
#   DURATION=20 CONNS=64 RATE=2000 bash benches/e2e.sh
#   ENVOY_EDIT=benches/e2e/every-header.sed bash benches/e2e.sh   # every variant, edited
#   PAIRS=8 ENVOY_EDIT=benches/e2e/every-header.sed VARIANTS="floor redis" REQUESTS=realistic \
#     bash benches/e2e.sh                   # an Envoy setting's A/B: alternating pairs
#
# Variants (each with its own Envoy, the same upstream, tollgate and Redis):
#   bare     Envoy without the ext_authz filter
#   floor    Envoy + ext_authz, every path outside tollgate's prefix: the floor of any ext_authz
#            service (the gRPC round trip, no store work)
#   memory   Envoy + tollgate, in-memory store
#   redis    Envoy + tollgate on Redis
# Requests: `minimal` (the API key only) and `realistic` (a browser's 20 headers: cookies, an
# authorization bearer token, sec-ch-*, traceparent...). Paths are drawn from 100 000 distinct
# ones under /v1 with `default_bucket: per_path` and a default limit of 100 000 per minute (h2load
# sends every connection through the same list, so each path is asked once per connection): every
# check is allowed and counted, one Redis script call each.
#
# For each: requests/s at saturation (closed loop, CONNS connections, one stream each), latency
# at RATE requests/s (open loop), and the CPU each process spent per request (/proc/<pid>/stat),
# printed as Markdown rows for BENCHMARKS.md. With PAIRS=N (and ENVOY_EDIT), each variant runs
# the shipped and the edited Envoy side by side instead, N alternating saturation measurements of
# each, and prints every pair and the median of the per-pair ratios (edited / shipped), so that
# the machine's drift falls on both sides of each ratio. Needs envoy 1.40, redis-server and h2load
# (`apt-get install nghttp2-client`); run by hand, not in CI. Only 127.0.0.1 is used.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
RATE=${RATE:-2000}
VARIANTS=${VARIANTS:-bare floor memory redis}
REQUESTS=${REQUESTS:-minimal realistic}
ENVOY_EDIT=${ENVOY_EDIT:-}
PAIRS=${PAIRS:-0}
if [ "$PAIRS" -gt 0 ] && [ -z "$ENVOY_EDIT" ]; then
  echo "PAIRS needs ENVOY_EDIT: the edit to compare with the shipped file" >&2
  exit 1
fi

# The processes every variant shares, and the helpers that start the rest.
source benches/e2e/stack.sh

# One saturation measurement through the Envoy at `pid`: "req/s 2xx envoy_us tollgate_us
# redis_us", the CPU each process spent per request.
saturate() { # envoy pid, tollgate pid, uri file, header file
  local before after out n
  before=("$(cpu "$1")" "$(cpu "$2")" "$(cpu "$redis_pid")")
  out=$(run_h2load "$3" "$4" -c "$CONNS" -t 1 -D "$DURATION")
  after=("$(cpu "$1")" "$(cpu "$2")" "$(cpu "$redis_pid")")
  n=$(echo "$out" | awk '/^requests:/ { print $6 }')
  echo "$out" | awk -v n="$n" -v b="${before[*]}" -v a="${after[*]}" '
    /^finished in/ { gsub(",", ""); rps = $4 }
    /^status codes:/ { ok = $3 }
    END {
      split(b, x, " "); split(a, y, " ")
      printf "%d %d %.1f %.1f %.1f\n", rps, ok, (y[1] - x[1]) * 1e6 / n, (y[2] - x[2]) * 1e6 / n, (y[3] - x[3]) * 1e6 / n
    }'
}

# PAIRS: the shipped Envoy (A) and the edited one (B) of each variant, measured alternately.
if [ "$PAIRS" -gt 0 ]; then
  echo "# A/B: shipped (A) against $ENVOY_EDIT (B), $PAIRS pairs of ${DURATION}s at c$CONNS; $(nproc) cores"
  for variant in $VARIANTS; do
    if [ "$variant" = bare ]; then echo "PAIRS measures floor, memory or redis" >&2; exit 1; fi
    use_variant "$variant"
    read -r a_pid a_port < <(start_envoy "$variant" "$tollgate_port" "")
    read -r b_pid b_port < <(start_envoy "$variant" "$tollgate_port")
    pids+=("$a_pid" "$b_pid")
    wait_port "$a_port"
    wait_port "$b_port"
    uris "$a_port" "$prefix" >"$work/uris-a"
    uris "$b_port" "$prefix" >"$work/uris-b"
    for request in $REQUESTS; do
      headers "$request" >"$work/headers"
      echo
      echo "## $variant, $request"
      echo
      echo "| pair | A req/s | B req/s | B / A | Envoy µs/req A / B | tollgate µs/req A / B | Redis µs/req A / B |"
      echo "|---|---|---|---|---|---|---|"
      for side in a b; do run_h2load "$work/uris-$side" "$work/headers" -c "$CONNS" -t 1 -D 2 >/dev/null; done
      ratios=()
      for pair in $(seq "$PAIRS"); do
        # Alternate which side goes first, so that a trend in the machine's speed cancels out.
        if [ $((pair % 2)) = 1 ]; then
          read -r ar _ ae at ad < <(saturate "$a_pid" "$tollgate_pid" "$work/uris-a" "$work/headers")
          read -r br _ be bt bd < <(saturate "$b_pid" "$tollgate_pid" "$work/uris-b" "$work/headers")
        else
          read -r br _ be bt bd < <(saturate "$b_pid" "$tollgate_pid" "$work/uris-b" "$work/headers")
          read -r ar _ ae at ad < <(saturate "$a_pid" "$tollgate_pid" "$work/uris-a" "$work/headers")
        fi
        ratio=$(awk -v a="$ar" -v b="$br" 'BEGIN { printf "%.3f", b / a }')
        ratios+=("$ratio")
        echo "| $pair | $ar | $br | $ratio | $ae / $be | $at / $bt | $ad / $bd |"
      done
      median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
      echo
      echo "median B / A: $median"
    done
    kill "$a_pid" "$b_pid"
    wait "$a_pid" "$b_pid" 2>/dev/null || true
  done
  exit 0
fi

echo "# e2e: ${DURATION}s per measurement, closed loop over $CONNS connections, latency at $RATE req/s; $(nproc) cores"
[ -n "$ENVOY_EDIT" ] && echo "# Envoy edited with $ENVOY_EDIT"
echo
echo "| variant | request | req/s at c$CONNS | 2xx | p50 ms at $RATE/s | p99 ms at $RATE/s | CPU µs per request: Envoy / tollgate / Redis |"
echo "|---|---|---|---|---|---|---|"
for variant in $VARIANTS; do
  use_variant "$variant"
  read -r envoy_pid envoy_port < <(start_envoy "$variant" "$tollgate_port")
  pids+=("$envoy_pid")
  wait_port "$envoy_port"
  uris "$envoy_port" "$prefix" >"$work/uris"
  for request in $REQUESTS; do
    headers "$request" >"$work/headers"
    # Warm-up: connections made, caches filled.
    run_h2load "$work/uris" "$work/headers" -c "$CONNS" -t 1 -D 2 >/dev/null
    read -r rps ok envoy_us tollgate_us redis_us < <(saturate "$envoy_pid" "$tollgate_pid" "$work/uris" "$work/headers")
    [ "$variant" = bare ] && tollgate_us=- && redis_us=-
    [ "$variant" != redis ] && redis_us=-
    # Open loop: RATE requests/s spread over 8 connections.
    run_h2load "$work/uris" "$work/headers" -c 8 -t 1 --rps $((RATE / 8)) -D "$DURATION" \
      --log-file="$work/latency.log" >/dev/null
    read -r p50 p99 < <(awk '{ print $3 / 1000 }' "$work/latency.log" | sort -n |
      awk '{ v[NR] = $1 } END { printf "%.2f %.2f\n", v[int(NR * 0.5)], v[int(NR * 0.99)] }')
    echo "| $variant | $request | $rps | $ok | $p50 | $p99 | $envoy_us / $tollgate_us / $redis_us |"
  done
  kill "$envoy_pid"
  wait "$envoy_pid" 2>/dev/null || true
done
