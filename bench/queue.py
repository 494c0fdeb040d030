#!/usr/bin/env python3
"""Async-queue benchmark (issue 3): enqueue throughput, enqueue-to-completion throughput, the
scheduler's added latency (enqueue to dispatch) while slots are free, and memory per queued
invocation. Runs the release control plane and the minimal runtime of examples/bench_runtime.rs
in a private network namespace (loopback only), drives them with wrk, writes
bench/results/queue.md. Build first (bench/run.sh does), or: cargo build --release
-p nanofaas-control-plane --bin nanofaas-control-plane --example bench_runtime.

    python3 bench/queue.py        # about 1 minute
"""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
CP_BIN = os.path.join(TARGET, "release", "nanofaas-control-plane")
RT_BIN = os.path.join(TARGET, "release", "examples", "bench_runtime")
RESULTS = os.environ.get("BENCH_RESULTS_DIR", os.path.join(ROOT, "bench", "results"))
API, MGMT, RT = 18180, 18181, 19190
DURATION = int(os.environ.get("BENCH_DURATION_S", "10"))


def reexec_in_private_netns():
    if os.environ.get("BENCH_QUEUE_INNER"):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return
    os.environ["BENCH_QUEUE_INNER"] = "1"
    flags = ["--net"] if os.geteuid() == 0 else ["--net", "--map-root-user"]
    os.execvp("unshare", ["unshare", *flags, sys.executable, *sys.argv])


def http(method, url, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape():
    return http("GET", f"http://127.0.0.1:{MGMT}/actuator/prometheus")[1]


def metric(text, name, labels):
    m = re.search(re.escape(f"{name}{{{labels}}}") + r" (\S+)", text)
    return float(m.group(1)) if m else None


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_until(check, what, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def wrk(path, conc, seconds, body):
    script = os.path.join(RESULTS, "queue_post.lua")
    with open(script, "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write('wrk.headers["Content-Type"] = "application/json"\n')
        f.write(f"wrk.body = {json.dumps(json.dumps(body))}\n")
    out = subprocess.run(
        ["wrk", f"-t{1 if conc == 1 else 2}", f"-c{conc}", f"-d{seconds}s", "-s", script,
         f"http://127.0.0.1:{API}{path}"],
        capture_output=True, text=True, check=True).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return reqs - (int(non2xx.group(1)) if non2xx else 0), out


def hanging_server():
    """Accepts connections and never answers: the one in-flight invocation that parks a queue."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held = []

    def loop():
        while True:
            conn, _ = srv.accept()
            held.append(conn)

    threading.Thread(target=loop, daemon=True).start()
    return srv.getsockname()[1]


def main():
    reexec_in_private_netns()
    os.makedirs(RESULTS, exist_ok=True)
    for binary in (CP_BIN, RT_BIN):
        if not os.access(binary, os.X_OK):
            raise SystemExit(f"missing {binary}: build first (see the docstring)")
    env = dict(os.environ, SERVER_PORT=str(API), MANAGEMENT_SERVER_PORT=str(MGMT),
               NANOFAAS_ASYNC_QUEUE_ENABLED="true", NANOFAAS_RATE_MAX_PER_SECOND="100000000",
               NANOFAAS_EXECUTION_STORE_MAX_ENTRIES="2000000", RUST_LOG="warn")
    rt = subprocess.Popen([RT_BIN, str(RT)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cp = subprocess.Popen([CP_BIN], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: http("GET", f"http://127.0.0.1:{MGMT}/actuator/health/readiness")[0] == 200,
                   "control plane")
        fn = lambda name, extra: http("POST", f"http://127.0.0.1:{API}/v1/functions", dict(
            {"name": name, "image": "x", "executionMode": "POOL", "maxRetries": 1,
             "endpointUrl": f"http://127.0.0.1:{RT}/invoke"}, **extra))
        fn("tput", {"concurrency": 64, "queueSize": 2000000})
        fn("lat", {"concurrency": 8})
        hang = hanging_server()
        http("POST", f"http://127.0.0.1:{API}/v1/functions",
             {"name": "parked", "image": "x", "executionMode": "POOL", "concurrency": 1,
              "queueSize": 2000000, "timeoutMs": 600000,
              "endpointUrl": f"http://127.0.0.1:{hang}/invoke"})
        body = {"input": {"message": "hi"}}
        rows = []

        # 1. Enqueue throughput (the runtime drains concurrently), then enqueue-to-completion.
        t0 = time.time()
        accepted, raw = wrk("/v1/functions/tput:enqueue", 64, DURATION, body)
        t_enq = time.time() - t0
        wait_until(lambda: (metric(scrape(), "function_success_total", 'function="tput"') or 0)
                   + (metric(scrape(), "function_error_total", 'function="tput"') or 0) >= accepted,
                   "all enqueued executions to finish", timeout=300)
        t_done = time.time() - t0
        errors = metric(scrape(), "function_error_total", 'function="tput"') or 0
        rows.append(("Enqueue throughput (c=64, 202s/s)", f"{accepted / t_enq:,.0f}"))
        rows.append(("Enqueue-to-completion throughput (completed/s, first enqueue to last completion)",
                     f"{accepted / t_done:,.0f} ({accepted:,} executions, {errors:.0f} errors)"))

        # 2. Scheduler latency while slots are free: enqueue at c=1, read queue wait (enqueue →
        # dispatch) from the control plane's own timer.
        wrk("/v1/functions/lat:enqueue", 1, DURATION, body)
        text = scrape()
        p50 = metric(text, "function_queue_wait_ms_seconds", 'function="lat",quantile="0.5"')
        p99 = metric(text, "function_queue_wait_ms_seconds", 'function="lat",quantile="0.99"')
        rows.append(("Scheduler added latency, enqueue → dispatch, slots free: p50 / p99",
                     f"{p50 * 1e6:.0f} µs / {p99 * 1e6:.0f} µs (target p50 < 1 ms)"))

        # 3. Memory per queued invocation: a function whose one slot never frees.
        time.sleep(1)
        before = rss_kb(cp.pid)
        wrk("/v1/functions/parked:enqueue", 16, 5, body)
        queued = metric(scrape(), "function_queue_depth", 'function="parked"')
        after = rss_kb(cp.pid)
        rows.append(("Memory per queued invocation (RSS delta ÷ queued; includes its execution record)",
                     f"{(after - before) * 1024 / max(queued, 1):,.0f} bytes ({queued:,.0f} queued, "
                     f"RSS {before / 1024:.1f} → {after / 1024:.1f} MiB)"))

        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        report = [f"# Async-queue benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
                  f"commit `{commit}`, {os.cpu_count()} cores)", "",
                  f"wrk runs of {DURATION} s on loopback in a private network namespace; the control "
                  "plane, the minimal runtime and wrk share the cores.", "",
                  "| Measure | Result |", "|---|---|"]
        report += [f"| {k} | {v} |" for k, v in rows]
        with open(os.path.join(RESULTS, "queue.md"), "w") as f:
            f.write("\n".join(report) + "\n")
        with open(os.path.join(RESULTS, "queue_wrk_enqueue.txt"), "w") as f:
            f.write(raw)
        print("\n".join(report))
    finally:
        for p in (cp, rt):
            p.terminate()
        for p in (cp, rt):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
