#!/usr/bin/env bash
# End to end: what a check costs the proxy and the box. h2load -> Envoy 1.40 (the shipped
# envoy/envoy.yaml) -> ext_authz -> tollgate -> Redis, against the same Envoy without ext_authz,
# all on this machine, in one run so that the box's speed cancels out in the ratios.
#
#   bash benches/e2e.sh                     # every variant, both requests (about 4 minutes)
#   DURATION=20 CONNS=64 RATE=2000 bash benches/e2e.sh
#   ENVOY_EDIT=benches/e2e/allowed-headers.sed bash benches/e2e.sh   # every variant, edited
#   PAIRS=8 ENVOY_EDIT=benches/e2e/allowed-headers.sed VARIANTS="floor redis" REQUESTS=realistic \
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

for tool in envoy redis-server h2load; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
cargo build --release --locked --quiet
TOLLGATE=$PWD/target/release/tollgate

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  exit 1
}
# CPU seconds (user + system) a process has spent so far.
cpu() {
  awk -v tck="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / tck }' "/proc/$1/stat"
}

# The upstream: an Envoy that answers every request itself (a stand-in API that costs little).
upstream_port=$(free_port)
cat >"$work/upstream.yaml" <<EOF
admin: { address: { socket_address: { address: 127.0.0.1, port_value: $(free_port) } } }
static_resources:
  listeners:
    - address: { socket_address: { address: 127.0.0.1, port_value: $upstream_port } }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: upstream
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: { prefix: "/" }
                          direct_response: { status: 200, body: { inline_string: "{\"ok\":true}" } }
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
EOF
envoy -c "$work/upstream.yaml" --concurrency 1 --base-id 7101 -l error >/dev/null 2>&1 &
pids+=($!)
wait_port "$upstream_port"

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
redis_pid=$!
pids+=($redis_pid)
wait_port "$redis_port"

# One tollgate per store, each with the contract's table and per-path buckets for the others.
start_tollgate() { # store (memory|redis) -> "pid port"
  local port config=$work/tollgate-$1.yaml
  port=$(free_port)
  {
    sed -e "s/^listen: .*/listen: 127.0.0.1:$port/" -e "s/^default_bucket: .*/default_bucket: per_path/" \
      -e "s/^default_limit: .*/default_limit: { requests: 100000, window: 60s }/" \
      -e "s/^drain_period: .*/drain_period: 0s/" src/config/default.yaml
    echo "admin: { listen: 127.0.0.1:$(free_port) }"
    echo "metrics: { listen: 127.0.0.1:$(free_port) }"
    [ "$1" = redis ] && echo "redis: { url: \"redis://127.0.0.1:$redis_port\" }"
  } >"$config"
  RUST_LOG=warn "$TOLLGATE" --config "$config" >/dev/null 2>&1 &
  echo "$! $port"
}
read -r memory_pid memory_port < <(start_tollgate memory)
read -r redis_tollgate_pid redis_tollgate_port < <(start_tollgate redis)
pids+=("$memory_pid" "$redis_tollgate_pid")
wait_port "$memory_port"
wait_port "$redis_tollgate_port"

# The front Envoy of one variant: the shipped file, its ports substituted, then the sed script
# (ENVOY_EDIT by default; none when empty) applied; `bare` drops the ext_authz filter.
start_envoy() { # variant, tollgate port[, sed script] -> "pid port"
  local port side=${3+shipped} edit=${3-$ENVOY_EDIT}
  local config=$work/envoy-$1${side:+-$side}.yaml
  port=$(free_port)
  sed -e "s/{ address: 0.0.0.0, port_value: 8080 }/{ address: 127.0.0.1, port_value: $port }/" \
    -e "s/{ address: 127.0.0.1, port_value: 9191 }/{ address: 127.0.0.1, port_value: $2 }/" \
    -e "s/{ address: 127.0.0.1, port_value: 8000 }/{ address: 127.0.0.1, port_value: $upstream_port }/" \
    -e "s/{ address: 127.0.0.1, port_value: 9901 }/{ address: 127.0.0.1, port_value: $(free_port) }/" \
    envoy/envoy.yaml >"$config"
  if [ "$1" = bare ]; then
    sed -i '/- name: envoy.filters.http.ext_authz/,/- name: envoy.filters.http.router/{/- name: envoy.filters.http.router/!d}' "$config"
  fi
  if [ -n "$edit" ]; then
    # An edit may name tollgate's port as @TOLLGATE_PORT@.
    sed -i -f <(sed "s/@TOLLGATE_PORT@/$2/g" "$edit") "$config"
  fi
  envoy -c "$config" --concurrency 2 --disable-hot-restart -l error >/dev/null 2>&1 &
  echo "$! $port"
}

# 100 000 distinct paths, under the prefix or (floor) outside it.
uris() { # port, prefix
  python3 -c "import sys; [print(f'http://127.0.0.1:{sys.argv[1]}{sys.argv[2]}/items/{i}') for i in range(100000)]" "$1" "$2"
}

headers() { # minimal|realistic -> h2load -H arguments, one per line
  echo "x-api-key: bench-key-e2e"
  [ "$1" = minimal ] && return
  cat <<'EOF'
user-agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36
accept: application/json, text/plain, */*
accept-language: en-GB,en;q=0.9,fr;q=0.8,de;q=0.7
accept-encoding: gzip, deflate, br, zstd
authorization: Bearer eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6IjBkNzE3YjQ0In0.eyJpc3MiOiJodHRwczovL2lkLmV4YW1wbGUuY29tLyIsInN1YiI6InVzZXJ8NjQ4YjNmMmE5YzFkIiwiYXVkIjpbImh0dHBzOi8vYXBpLmV4YW1wbGUuY29tIl0sImlhdCI6MTc2NTAwMDAwMCwiZXhwIjoxNzY1MDAzNjAwLCJzY29wZSI6InJlYWQ6Y2FtcGFpZ25zIHdyaXRlOmxlYWRzIn0.c2lnbmF0dXJlLW9mLXRoZS10b2tlbi1pcy1ub3QtY2hlY2tlZC1oZXJlLWl0LWlzLWp1c3QtYnl0ZXMtb2YtdGhlLXJpZ2h0LXNpemU
cookie: _ga=GA1.1.1234567890.1765000000; _gid=GA1.1.987654321.1765000000; session=3f1c9e2a7b6d4e8f9a0b1c2d3e4f5a6b; theme=dark; consent=analytics%3Dtrue%26ads%3Dfalse; ajs_anonymous_id=5b2f7c1e-8d4a-4e3b-9c6d-2a1f0e9b8c7d
referer: https://app.example.com/campaigns/42/statistics?range=30d
origin: https://app.example.com
sec-ch-ua: "Chromium";v="131", "Not_A Brand";v="24"
sec-ch-ua-mobile: ?0
sec-ch-ua-platform: "Linux"
sec-fetch-site: same-site
sec-fetch-mode: cors
sec-fetch-dest: empty
traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
cache-control: no-cache
pragma: no-cache
priority: u=1, i
dnt: 1
EOF
}

# h2load's own summary lines: "finished in ..., N req/s" and the request latency row.
run_h2load() { # uri file, headers file, extra h2load arguments...
  local uris=$1 header_file=$2
  shift 2
  local args=()
  while IFS= read -r header; do args+=(-H "$header"); done <"$header_file"
  h2load -i "$uris" "${args[@]}" "$@" 2>/dev/null
}

# One saturation measurement through the Envoy at `pid`: "req/s envoy_us tollgate_us redis_us".
saturate() { # envoy pid, tollgate pid, uri file, header file
  local before after out n
  before=("$(cpu "$1")" "$(cpu "$2")" "$(cpu "$redis_pid")")
  out=$(run_h2load "$3" "$4" -c "$CONNS" -t 1 -D "$DURATION")
  after=("$(cpu "$1")" "$(cpu "$2")" "$(cpu "$redis_pid")")
  n=$(echo "$out" | awk '/^requests:/ { print $6 }')
  echo "$out" | awk -v n="$n" -v b="${before[*]}" -v a="${after[*]}" '
    /^finished in/ { gsub(",", ""); rps = $4 }
    END {
      split(b, x, " "); split(a, y, " ")
      printf "%d %.1f %.1f %.1f\n", rps, (y[1] - x[1]) * 1e6 / n, (y[2] - x[2]) * 1e6 / n, (y[3] - x[3]) * 1e6 / n
    }'
}

# PAIRS: the shipped Envoy (A) and the edited one (B) of each variant, measured alternately.
if [ "$PAIRS" -gt 0 ]; then
  echo "# A/B: shipped (A) against $ENVOY_EDIT (B), $PAIRS pairs of ${DURATION}s at c$CONNS; $(nproc) cores"
  for variant in $VARIANTS; do
    case $variant in
      floor | memory) tollgate_pid=$memory_pid; tollgate_port=$memory_port ;;
      redis) tollgate_pid=$redis_tollgate_pid; tollgate_port=$redis_tollgate_port ;;
      *) echo "PAIRS measures floor, memory or redis" >&2; exit 1 ;;
    esac
    read -r a_pid a_port < <(start_envoy "$variant" "$tollgate_port" "")
    read -r b_pid b_port < <(start_envoy "$variant" "$tollgate_port")
    pids+=("$a_pid" "$b_pid")
    wait_port "$a_port"
    wait_port "$b_port"
    prefix=/v1
    [ "$variant" = floor ] && prefix=/outside
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
          read -r ar ae at ad < <(saturate "$a_pid" "$tollgate_pid" "$work/uris-a" "$work/headers")
          read -r br be bt bd < <(saturate "$b_pid" "$tollgate_pid" "$work/uris-b" "$work/headers")
        else
          read -r br be bt bd < <(saturate "$b_pid" "$tollgate_pid" "$work/uris-b" "$work/headers")
          read -r ar ae at ad < <(saturate "$a_pid" "$tollgate_pid" "$work/uris-a" "$work/headers")
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
  case $variant in
    bare | floor | memory) tollgate_pid=$memory_pid; tollgate_port=$memory_port ;;
    redis) tollgate_pid=$redis_tollgate_pid; tollgate_port=$redis_tollgate_port ;;
  esac
  read -r envoy_pid envoy_port < <(start_envoy "$variant" "$tollgate_port")
  pids+=("$envoy_pid")
  wait_port "$envoy_port"
  prefix=/v1
  [ "$variant" = floor ] && prefix=/outside
  uris "$envoy_port" "$prefix" >"$work/uris"
  for request in $REQUESTS; do
    headers "$request" >"$work/headers"
    # Warm-up: connections made, caches filled.
    run_h2load "$work/uris" "$work/headers" -c "$CONNS" -t 1 -D 2 >/dev/null
    before=("$(cpu "$envoy_pid")" "$(cpu "$tollgate_pid")" "$(cpu "$redis_pid")")
    saturated=$(run_h2load "$work/uris" "$work/headers" -c "$CONNS" -t 1 -D "$DURATION")
    after=("$(cpu "$envoy_pid")" "$(cpu "$tollgate_pid")" "$(cpu "$redis_pid")")
    rps=$(echo "$saturated" | awk '/^finished in/ { gsub(",", ""); print $4 }')
    done_requests=$(echo "$saturated" | awk '/^requests:/ { print $6 }')
    ok=$(echo "$saturated" | awk '/^status codes:/ { print $3 }')
    per_request() { awk -v a="$1" -v b="$2" -v n="$done_requests" 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }'; }
    envoy_us=$(per_request "${before[0]}" "${after[0]}")
    tollgate_us=$(per_request "${before[1]}" "${after[1]}")
    redis_us=$(per_request "${before[2]}" "${after[2]}")
    [ "$variant" = bare ] && tollgate_us=- && redis_us=-
    [ "$variant" != redis ] && redis_us=-
    # Open loop: RATE requests/s spread over 8 connections.
    run_h2load "$work/uris" "$work/headers" -c 8 -t 1 --rps $((RATE / 8)) -D "$DURATION" \
      --log-file="$work/latency.log" >/dev/null
    read -r p50 p99 < <(awk '{ print $3 / 1000 }' "$work/latency.log" | sort -n |
      awk '{ v[NR] = $1 } END { printf "%.2f %.2f\n", v[int(NR * 0.5)], v[int(NR * 0.99)] }')
    echo "| $variant | $request | ${rps%.*} | $ok | $p50 | $p99 | $envoy_us / $tollgate_us / $redis_us |"
  done
  kill "$envoy_pid"
  wait "$envoy_pid" 2>/dev/null || true
done
