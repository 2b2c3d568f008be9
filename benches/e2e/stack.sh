# The stack of benches/e2e.sh and benches/envoy_instructions.sh, sourced from the repository's
# root: an upstream Envoy that answers every request itself, a redis-server, tollgate (release
# build) on memory and on Redis, and the helpers that start a front Envoy and drive h2load. Every
# process started is stopped on exit. ENVOY_WRAP and TOLLGATE_WRAP, when set, are commands the
# front Envoys and the tollgates run under (valgrind, for the instruction counts).
for tool in envoy redis-server h2load; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
# The Envoy binary itself: pip's `envoy` is a Python launcher, which valgrind would measure instead.
ENVOY_BIN=$(python3 -c 'import envoy._bin, os; print(os.path.join(os.path.dirname(envoy._bin.__file__), "envoy"))' 2>/dev/null ||
  command -v envoy)
ENVOY_WRAP=${ENVOY_WRAP:-}
TOLLGATE_WRAP=${TOLLGATE_WRAP:-}
# TOLLGATE_BIN and ENVOY_YAML: another tollgate binary and Envoy file (an earlier version's, for an
# A/B of versions); by default this tree's release build and envoy/envoy.yaml.
if [ -n "${TOLLGATE_BIN:-}" ]; then
  TOLLGATE=$TOLLGATE_BIN
else
  cargo build --release --locked --quiet
  TOLLGATE=$PWD/target/release/tollgate
fi
ENVOY_YAML=${ENVOY_YAML:-envoy/envoy.yaml}

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
  for _ in $(seq 600); do
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
"$ENVOY_BIN" -c "$work/upstream.yaml" --concurrency 1 --disable-hot-restart -l error >/dev/null 2>&1 &
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
  # shellcheck disable=SC2086 # a command and its arguments
  RUST_LOG=warn $TOLLGATE_WRAP "$TOLLGATE" --config "$config" >/dev/null 2>&1 &
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
  local port side=${3+$(basename "${3:-shipped}" .sed)} edit=${3-$ENVOY_EDIT}
  local config=$work/envoy-$1${side:+-$side}.yaml
  port=$(free_port)
  sed -e "s/{ address: 0.0.0.0, port_value: 8080 }/{ address: 127.0.0.1, port_value: $port }/" \
    -e "s/{ address: 127.0.0.1, port_value: 9191 }/{ address: 127.0.0.1, port_value: $2 }/" \
    -e "s/{ address: 127.0.0.1, port_value: 8000 }/{ address: 127.0.0.1, port_value: $upstream_port }/" \
    -e "s/{ address: 127.0.0.1, port_value: 9901 }/{ address: 127.0.0.1, port_value: $(free_port) }/" \
    "$ENVOY_YAML" >"$config"
  if [ "$1" = bare ]; then
    sed -i '/- name: envoy.filters.http.ext_authz/,/- name: envoy.filters.http.router/{/- name: envoy.filters.http.router/!d}' "$config"
  fi
  if [ -n "$edit" ]; then
    # An edit may name tollgate's port as @TOLLGATE_PORT@.
    sed -i -f <(sed "s/@TOLLGATE_PORT@/$2/g" "$edit") "$config"
  fi
  # shellcheck disable=SC2086 # a command and its arguments
  $ENVOY_WRAP "$ENVOY_BIN" -c "$config" --concurrency 2 --disable-hot-restart -l error >/dev/null 2>&1 &
  echo "$! $port"
}

# The tollgate a variant's Envoy calls and the prefix of its paths: sets tollgate_pid,
# tollgate_port and prefix (`floor` asks for paths outside tollgate's prefix).
use_variant() { # bare|floor|memory|redis
  case $1 in
    bare | floor | memory) tollgate_pid=$memory_pid tollgate_port=$memory_port ;;
    redis) tollgate_pid=$redis_tollgate_pid tollgate_port=$redis_tollgate_port ;;
    *) echo "unknown variant: $1" >&2; exit 1 ;;
  esac
  prefix=/v1
  if [ "$1" = floor ]; then prefix=/outside; fi
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
