#!/usr/bin/env bash
# Load benchmark of the nanofaas control plane (method: docs/perf/README.md).
#
#   bash bench/run.sh
#
# Builds the release control plane, the minimal runtime (examples/bench_runtime.rs) and the
# logic-free relay (examples/bench_proxy.rs, the floor of the control plane's stack), starts them
# inside a private network namespace (only loopback exists there, so nothing is reachable
# from outside the machine even though the control plane binds 0.0.0.0), drives them with wrk
# and writes bench/results/report.md plus every raw wrk output next to it. Takes about 5 minutes
# (build excluded). Everything it starts is stopped on exit, failure included.
#
# Knobs (environment):
#   BENCH_DURATION_S        length of each measured wrk run (default 10)
#   BENCH_WARMUP_S          length of each warm-up run (default 3)
#   BENCH_LONG_INVOCATIONS  POOL invocations of the memory run (default 2000000)
#   BENCH_LONG_CAP_S        hard cap on the memory run (default 300)
#   BENCH_QUIET_PCT         before each run, wait until the machine's busy share is at most this
#                           (default 10, percent of all cores), so that other work (a build...)
#                           does not share the cores with the measurement
#   BENCH_QUIET_BUDGET_S    total seconds the script may spend waiting for that (default 600)
#                           A measured run during which other work still used more than 5% of
#                           the machine is repeated (3 attempts at most).
#   BENCH_SKIP_BUILD=1      use the binaries already built
#   BENCH_NO_NETNS=1        run in the host network namespace (the control plane then listens on
#                           0.0.0.0 of the host; only for machines where unshare is not allowed)
#   CARGO_TARGET_DIR        where cargo builds (default: <repo>/target)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
RESULTS=${BENCH_RESULTS_DIR:-$HERE/results}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CP_BIN=$TARGET_DIR/release/nanofaas-control-plane
RT_BIN=$TARGET_DIR/release/examples/bench_runtime
RELAY_BIN=$TARGET_DIR/release/examples/bench_proxy

DURATION_S=${BENCH_DURATION_S:-10}
WARMUP_S=${BENCH_WARMUP_S:-3}
LONG_INVOCATIONS=${BENCH_LONG_INVOCATIONS:-2000000}
LONG_CAP_S=${BENCH_LONG_CAP_S:-300}
LONG_CHUNK_S=30
QUIET_PCT=${BENCH_QUIET_PCT:-10}
QUIET_BUDGET_S=${BENCH_QUIET_BUDGET_S:-600}
NOISE_PCT=5
MAX_ATTEMPTS=3

RT_PORT=19090
RELAY_PORT=19091
HRELAY_PORT=19092
CP_PORT=18080
MG_PORT=18081

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# Outer phase: tools, build, then re-exec inside a private network namespace.
# ---------------------------------------------------------------------------------------------
if [[ -z ${BENCH_INNER:-} ]]; then
    [[ $(uname -s) == Linux ]] || die "Linux only (/proc is read for CPU time and RSS)"
    missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v curl >/dev/null || missing+=(curl)
    command -v python3 >/dev/null || missing+=(python3)
    command -v unshare >/dev/null || missing+=(util-linux)
    command -v ip >/dev/null || missing+=(iproute2)
    if ((${#missing[@]})); then
        log "installing ${missing[*]} with apt-get"
        sudo=""
        ((EUID == 0)) || sudo="sudo"
        $sudo apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if [[ -z ${BENCH_SKIP_BUILD:-} ]]; then
        log "building release binaries (cargo build --release)"
        (cd "$ROOT" && cargo build --release -p nanofaas-control-plane --bin nanofaas-control-plane \
            --example bench_runtime --example bench_proxy)
    fi
    [[ -x $CP_BIN ]] || die "missing $CP_BIN"
    [[ -x $RT_BIN ]] || die "missing $RT_BIN"
    [[ -x $RELAY_BIN ]] || die "missing $RELAY_BIN"
    export BENCH_INNER=1 CP_BIN RT_BIN RELAY_BIN RESULTS
    if [[ -n ${BENCH_NO_NETNS:-} ]]; then
        log "WARNING: BENCH_NO_NETNS set: the control plane listens on 0.0.0.0 of the host"
        export BENCH_NETNS=host
        exec bash "${BASH_SOURCE[0]}" "$@"
    fi
    ns_flags=(--net)
    ((EUID == 0)) || ns_flags+=(--map-root-user)
    unshare "${ns_flags[@]}" true 2>/dev/null ||
        die "cannot create a network namespace (unshare ${ns_flags[*]}); see BENCH_NO_NETNS"
    export BENCH_NETNS=private
    exec unshare "${ns_flags[@]}" bash "${BASH_SOURCE[0]}" "$@"
fi

# ---------------------------------------------------------------------------------------------
# Inner phase.
# ---------------------------------------------------------------------------------------------
if [[ $BENCH_NETNS == private ]]; then
    ip link set lo up
fi

mkdir -p "$RESULTS"
find "$RESULTS" -maxdepth 1 -type f -delete

PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if ((rc != 0)); then
        log "failed (exit $rc); logs in $RESULTS"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

CLK_TCK=$(getconf CLK_TCK)
META=$RESULTS/meta.env
RUNS=$RESULTS/runs.tsv
: >"$META"
printf 'name\tkind\ttarget\tconc\tthreads\tdur_s\tcp_uticks\tcp_sticks\trt_ticks\twrk_ms\tsys_busy\tsys_total\tquiet_wait_s\tcp_rss_kb\tcp_hwm_kb\tattempts\n' >"$RUNS"

meta() { printf '%s=%s\n' "$1" "$2" >>"$META"; }

# utime and stime of a process (all its threads), in clock ticks: fields 14 and 15 of
# /proc/<pid>/stat, counted after the parenthesised command name. cpu_ticks prints their sum.
cpu_ut_st() {
    local rest f
    rest=$(<"/proc/$1/stat")
    rest=${rest##*) }
    read -r -a f <<<"$rest"
    echo "${f[11]} ${f[12]}"
}
cpu_ticks() {
    local u s
    read -r u s <<<"$(cpu_ut_st "$1")"
    echo $((u + s))
}
# CPU time (user+sys, ms) of this shell's reaped children, i.e. of the wrk runs, from the `times`
# builtin. Sets CHILD_MS; it must not run in a subshell (a fork starts with zero child times).
TIMES_FILE=$RESULTS/.times
children_ms() {
    local line="" re='^([0-9]+)m([0-9]+)\.([0-9]+)s ([0-9]+)m([0-9]+)\.([0-9]+)s'
    times >"$TIMES_FILE"
    { read -r line && read -r line; } <"$TIMES_FILE" || true
    CHILD_MS=0
    if [[ $line =~ $re ]]; then
        local m=("${BASH_REMATCH[@]}")
        CHILD_MS=$(((10#${m[1]} * 60 + 10#${m[2]}) * 1000 + 10#${m[3]} +
            (10#${m[4]} * 60 + 10#${m[5]}) * 1000 + 10#${m[6]}))
    fi
}
# Busy and total ticks of the whole machine (/proc/stat line "cpu").
sys_ticks() {
    local _cpu user nice system idle iowait irq softirq steal rest
    read -r _cpu user nice system idle iowait irq softirq steal rest </proc/stat
    echo "$((user + nice + system + irq + softirq + steal)) $((user + nice + system + idle + iowait + irq + softirq + steal))"
}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# --- facts about the machine and the build -----------------------------------------------------
meta date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
meta commit "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
meta dirty "$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | wc -l)"
meta dirty_files "$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null |
    awk '{print $2}' | paste -sd ' ')"
meta nproc "$(nproc)"
meta cpu_model "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
meta kernel "$(uname -r)"
meta mem_total_kb "$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
meta wrk_version "$(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}')"
meta rustc "$(rustc --version 2>/dev/null || echo unknown)"
meta clk_tck "$CLK_TCK"
meta netns "$BENCH_NETNS"
meta duration_s "$DURATION_S"

# --- start the runtime and the control plane ---------------------------------------------------
log "starting bench_runtime on 127.0.0.1:$RT_PORT"
"$RT_BIN" "$RT_PORT" >"$RESULTS/runtime.log" 2>&1 &
RT_PID=$!
PIDS+=("$RT_PID")

# The floor of the control plane's stack: the same two HTTP exchanges with no logic, once on
# reqwest (as the control plane) and once on the bare hyper-util client reqwest is built on.
log "starting the relays on 127.0.0.1:$RELAY_PORT (reqwest) and :$HRELAY_PORT (hyper)"
BENCH_PROXY_UPSTREAM="http://127.0.0.1:$RT_PORT/invoke" "$RELAY_BIN" "$RELAY_PORT" \
    >"$RESULTS/relay.log" 2>&1 &
RELAY_PID=$!
PIDS+=("$RELAY_PID")
BENCH_PROXY_CLIENT=hyper BENCH_PROXY_UPSTREAM="http://127.0.0.1:$RT_PORT/invoke" "$RELAY_BIN" \
    "$HRELAY_PORT" >"$RESULTS/relay-hyper.log" 2>&1 &
HRELAY_PID=$!
PIDS+=("$HRELAY_PID")

log "starting the control plane on ports $CP_PORT/$MG_PORT"
env -u RUST_LOG \
    SERVER_PORT=$CP_PORT \
    MANAGEMENT_SERVER_PORT=$MG_PORT \
    NANOFAAS_RATE_MAX_PER_SECOND=100000000 \
    NANOFAAS_DEFAULTS_TIMEOUT_MS=10000 \
    "$CP_BIN" >"$RESULTS/control-plane.log" 2>&1 &
CP_PID=$!
PIDS+=("$CP_PID")

wait_ready() {
    local url=$1 pid=$2 i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || die "process $pid exited; see logs in $RESULTS"
        curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
        sleep 0.1
    done
    die "$url not ready after 30 s"
}
wait_ready "http://127.0.0.1:$RT_PORT/health" "$RT_PID"
wait_ready "http://127.0.0.1:$MG_PORT/actuator/health" "$CP_PID"
sleep 1 # let start-up allocations settle before reading the idle RSS
meta cp_rss_idle_start_kb "$(rss_kb "$CP_PID")"
meta rt_rss_idle_start_kb "$(rss_kb "$RT_PID")"
meta cp_threads "$(awk '/^Threads:/ {print $2}' "/proc/$CP_PID/status")"
meta rt_threads "$(awk '/^Threads:/ {print $2}' "/proc/$RT_PID/status")"
log "control plane idle RSS: $(rss_kb "$CP_PID") kB"

# Idle CPU: a control plane that polls or ticks burns CPU with no load at all.
idle_cpu() {
    local t0 t1
    t0=$(cpu_ticks "$CP_PID")
    sleep 5
    t1=$(cpu_ticks "$CP_PID")
    echo $((t1 - t0))
}
meta cp_idle_ticks_5s_start "$(idle_cpu)"

# --- register the functions ---------------------------------------------------------------------
register() {
    local body=$1 code
    code=$(curl -sS -o "$RESULTS/register.out" -w '%{http_code}' --max-time 5 \
        -H 'Content-Type: application/json' -d "$body" "http://127.0.0.1:$CP_PORT/v1/functions")
    [[ $code == 2* ]] || die "registration failed ($code): $(cat "$RESULTS/register.out")"
}
register '{"name":"echo","image":"local","executionMode":"LOCAL"}'
register "{\"name\":\"pool\",\"image\":\"x\",\"executionMode\":\"POOL\",\"endpointUrl\":\"http://127.0.0.1:$RT_PORT/invoke\",\"maxRetries\":1}"
rm -f "$RESULTS/register.out"

CP_BODY='{"input":{"message":"hi"}}'
RT_BODY='{"input":{"message":"hi"},"metadata":null}'
URL_DIRECT="http://127.0.0.1:$RT_PORT/invoke"
URL_POOL="http://127.0.0.1:$CP_PORT/v1/functions/pool:invoke"
URL_LOCAL="http://127.0.0.1:$CP_PORT/v1/functions/echo:invoke"
URL_RELAY="http://127.0.0.1:$RELAY_PORT/invoke"
URL_HRELAY="http://127.0.0.1:$HRELAY_PORT/invoke"

for url in "$URL_POOL" "$URL_LOCAL"; do
    out=$(curl -fsS --max-time 5 -H 'Content-Type: application/json' -d "$CP_BODY" "$url")
    [[ $out == *'"status":"success"'* ]] || die "sanity invocation of $url failed: $out"
    printf '%s -> %s\n' "$url" "$out" >>"$RESULTS/sanity.txt"
done
for url in "$URL_RELAY" "$URL_HRELAY"; do
    out=""
    for ((i = 0; i < 50; i++)); do
        out=$(curl -fsS --max-time 2 -H 'Content-Type: application/json' -d "$RT_BODY" "$url" \
            2>/dev/null) && break
        sleep 0.1
    done
    [[ $out == *'"message":"hi"'* ]] || die "sanity call of the relay $url failed: $out"
    printf '%s -> %s\n' "$url" "$out" >>"$RESULTS/sanity.txt"
done
meta cp_rss_after_register_kb "$(rss_kb "$CP_PID")"

# --- waiting for a quiet machine ------------------------------------------------------------------
# Other processes (a compiler, another benchmark) would share the cores with the measurement. The
# control plane and the runtime are idle between runs, so the machine's busy share over one second
# is what the others use. Waits are bounded by QUIET_BUDGET_S over the whole script.
quiet_waited=0
QUIET_WAIT_S=0
wait_quiet() {
    local b0 t0 b1 t1 pct start=$SECONDS
    while :; do
        read -r b0 t0 <<<"$(sys_ticks)"
        sleep 1
        read -r b1 t1 <<<"$(sys_ticks)"
        pct=$((100 * (b1 - b0) / (t1 - t0 > 0 ? t1 - t0 : 1)))
        if ((pct <= QUIET_PCT)); then
            break
        fi
        if ((quiet_waited + SECONDS - start >= QUIET_BUDGET_S)); then
            log "WARNING: machine still ${pct}% busy with other work; measuring anyway"
            break
        fi
        if (((SECONDS - start) % 10 == 1)); then
            log "machine ${pct}% busy with other work; waiting (budget ${QUIET_BUDGET_S}s)"
        fi
    done
    QUIET_WAIT_S=$((SECONDS - start - 1))
    quiet_waited=$((quiet_waited + QUIET_WAIT_S))
}

# --- one wrk run ---------------------------------------------------------------------------------
# run_wrk NAME KIND TARGET URL BODY CONCURRENCY SECONDS
# A measured run during which other work used more than NOISE_PCT of the machine is repeated, up
# to MAX_ATTEMPTS in all; the noisy attempts' files are kept with a `.noisyN` suffix.
run_wrk() {
    local name=$1 kind=$2 attempt=1
    while :; do
        run_wrk_once "$@"
        if [[ $kind != measure ]] || ((RUN_OTHER_PCT <= NOISE_PCT || attempt >= MAX_ATTEMPTS)); then
            break
        fi
        log "other work used ${RUN_OTHER_PCT}% of the machine during $name; measuring it again"
        for f in "$RESULTS/wrk_$name.json" "$RESULTS/wrk_$name.txt"; do
            mv "$f" "$f.noisy$attempt"
        done
        printf '%s\n' "$RUN_LINE" >>"$RESULTS/runs_noisy.tsv"
        attempt=$((attempt + 1))
    done
    printf '%s\t%s\n' "$RUN_LINE" "$attempt" >>"$RUNS"
    grep -q '"err_status":0,' "$RESULTS/wrk_$name.json" ||
        log "WARNING: $name had non-2xx responses: $(cat "$RESULTS/wrk_$name.json")"
}
# Sets RUN_LINE (the runs.tsv fields) and RUN_OTHER_PCT. The cp_* columns hold the CPU of the
# process wrk calls through: the control plane, or the relay on relay runs.
run_wrk_once() {
    local name=$1 kind=$2 target=$3 url=$4 body=$5 conc=$6 dur=$7
    local threads=2 rt0 rt1 s0 s1 w0 cu0 cs0 cu1 cs1 sb0 st0 sb1 st1 other pid=$CP_PID
    if ((conc == 1)); then threads=1; fi
    case $target in
    relay) pid=$RELAY_PID ;;
    hyperrelay) pid=$HRELAY_PID ;;
    esac
    wait_quiet
    log "wrk $name: $target c=$conc t=$threads ${dur}s"
    children_ms
    w0=$CHILD_MS
    read -r cu0 cs0 <<<"$(cpu_ut_st "$pid")"
    rt0=$(cpu_ticks "$RT_PID")
    s0=$(sys_ticks)
    WRK_BODY=$body WRK_OUT=$RESULTS/wrk_$name.json \
        timeout $((dur + 30)) wrk -t"$threads" -c"$conc" -d"${dur}s" --timeout 10s --latency \
        -s "$HERE/wrk_post.lua" "$url" >"$RESULTS/wrk_$name.txt" 2>&1 ||
        die "wrk $name failed: $(cat "$RESULTS/wrk_$name.txt")"
    read -r cu1 cs1 <<<"$(cpu_ut_st "$pid")"
    rt1=$(cpu_ticks "$RT_PID")
    s1=$(sys_ticks)
    children_ms
    read -r sb0 st0 <<<"$s0"
    read -r sb1 st1 <<<"$s1"
    RUN_LINE=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$name" \
        "$kind" "$target" "$conc" "$threads" "$dur" $((cu1 - cu0)) $((cs1 - cs0)) $((rt1 - rt0)) \
        $((CHILD_MS - w0)) $((sb1 - sb0)) $((st1 - st0)) "$QUIET_WAIT_S" "$(rss_kb "$CP_PID")" \
        "$(hwm_kb "$CP_PID")")
    other=$((sb1 - sb0 - (cu1 - cu0) - (cs1 - cs0) - (rt1 - rt0) - (CHILD_MS - w0) * CLK_TCK / 1000))
    RUN_OTHER_PCT=$((other > 0 ? 100 * other / (st1 - st0 > 0 ? st1 - st0 : 1) : 0))
}
requests_of() { sed -n 's/.*"requests":\([0-9]*\).*/\1/p' "$RESULTS/wrk_$1.json"; }

# --- warm-up (not reported): opens connections, warms caches and the allocator --------------------
run_wrk warmup_direct warmup direct "$URL_DIRECT" "$RT_BODY" 16 "$WARMUP_S"
run_wrk warmup_pool warmup pool "$URL_POOL" "$CP_BODY" 64 "$WARMUP_S"
run_wrk warmup_local warmup local "$URL_LOCAL" "$CP_BODY" 16 "$WARMUP_S"
run_wrk warmup_relay warmup relay "$URL_RELAY" "$RT_BODY" 16 "$WARMUP_S"
run_wrk warmup_hyperrelay warmup hyperrelay "$URL_HRELAY" "$RT_BODY" 16 "$WARMUP_S"

# --- measured runs, interleaved so that drift hits every target alike ---------------------------
for c in 1 16 64; do
    run_wrk "direct_c$c" measure direct "$URL_DIRECT" "$RT_BODY" "$c" "$DURATION_S"
    run_wrk "relay_c$c" measure relay "$URL_RELAY" "$RT_BODY" "$c" "$DURATION_S"
    run_wrk "hyperrelay_c$c" measure hyperrelay "$URL_HRELAY" "$RT_BODY" "$c" "$DURATION_S"
    run_wrk "pool_c$c" measure pool "$URL_POOL" "$CP_BODY" "$c" "$DURATION_S"
    if ((c != 16)); then
        run_wrk "local_c$c" measure local "$URL_LOCAL" "$CP_BODY" "$c" "$DURATION_S"
    fi
done
meta cp_rss_after_short_runs_kb "$(rss_kb "$CP_PID")"

# --- memory run: >= LONG_INVOCATIONS POOL invocations at c=64, bounded by LONG_CAP_S ---------------
invocations_total() {
    curl -fsS --max-time 2 "http://127.0.0.1:$MG_PORT/actuator/prometheus" 2>/dev/null |
        awk '/^function_(success|error)_total\{/ {s += $NF} END {printf "%d\n", s}'
}
meta cp_rss_before_long_kb "$(rss_kb "$CP_PID")"
meta long_invocations_before "$(invocations_total)"
(
    while kill -0 "$CP_PID" 2>/dev/null; do
        printf '%s\t%s\t%s\n' "$(date +%s.%N)" "$(rss_kb "$CP_PID" 2>/dev/null || echo 0)" \
            "$(invocations_total || echo 0)"
        sleep 2
    done
) >"$RESULTS/rss_samples.tsv" 2>/dev/null &
SAMPLER_PID=$!
PIDS+=("$SAMPLER_PID")

long_total=0
long_elapsed=0
i=0
while ((long_total < LONG_INVOCATIONS && long_elapsed < LONG_CAP_S)); do
    d=$LONG_CHUNK_S
    if ((LONG_CAP_S - long_elapsed < d)); then d=$((LONG_CAP_S - long_elapsed)); fi
    if ((long_total > 0)); then
        # Seconds still needed at the rate seen so far, plus a margin.
        need=$(((LONG_INVOCATIONS - long_total) * long_elapsed / long_total + 2))
        if ((need < d)); then d=$need; fi
    fi
    run_wrk "long_$i" long pool "$URL_POOL" "$CP_BODY" 64 "$d"
    long_total=$((long_total + $(requests_of "long_$i")))
    long_elapsed=$((long_elapsed + d))
    i=$((i + 1))
done
sleep 2 # one more sample at the end
kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
meta long_total "$long_total"
meta long_elapsed_s "$long_elapsed"
meta long_target "$LONG_INVOCATIONS"
meta cp_rss_after_long_kb "$(rss_kb "$CP_PID")"
meta cp_hwm_kb "$(hwm_kb "$CP_PID")"
meta cp_idle_ticks_5s_end "$(idle_cpu)"
meta cp_rss_after_long_idle_kb "$(rss_kb "$CP_PID")"
meta quiet_waited_s "$quiet_waited"
meta rt_rss_end_kb "$(rss_kb "$RT_PID")"
curl -fsS --max-time 5 "http://127.0.0.1:$MG_PORT/actuator/prometheus" >"$RESULTS/prometheus.txt" || true

# --- report -----------------------------------------------------------------------------------------
rm -f "$TIMES_FILE"
python3 "$HERE/report.py" "$RESULTS"
log "report: $RESULTS/report.md"
