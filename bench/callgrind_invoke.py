#!/usr/bin/env python3
"""Instructions per sync invocation, counted by callgrind: the A/B measure of issue 12.

    python3 bench/callgrind_invoke.py [--reps R] [--n N1,N2] [--paths pool,local,queued,relay,echo]
                                      LABEL=CONTROL_PLANE_BINARY [LABEL=BINARY ...]

Each binary (e.g. `base=/tmp/cp-base new=$CARGO_TARGET_DIR/release/nanofaas-control-plane`) runs
under `valgrind --tool=callgrind` in a private network namespace (loopback only), next to the
minimal runtime `examples/bench_runtime.rs` running natively. One keep-alive connection sends 200
warm-up invocations, then N sequential sync invocations; every answer is checked. The cost of an
invocation is (Ir(N2) - Ir(N1)) / (N2 - N1): start-up, registration, warm-up and shutdown cancel
out, and only the measured process's user-space instructions count, so the figure repeats to
within about 1 % whatever else the machine does (times on a shared VM do not).

Paths: pool (POOL sync, inline route), local (LOCAL sync), queued (POOL sync through the
function's queue: NANOFAAS_ASYNC_QUEUE_ENABLED=true), relay (`examples/bench_proxy.rs` in reqwest
mode, the logic-free axum + reqwest relay, for the ratio; measured once, not per binary), echo
(`bench_proxy` in echo mode: a logic-free axum server answering the body, the ratio of local).
Repetitions are interleaved across binaries. The callgrind outputs stay in BENCH_RESULTS_DIR
(default bench/results/callgrind) for `bench/callgrind_diff.py`. Needs the release examples
bench_runtime and bench_proxy (`cargo build --release --example bench_runtime --example
bench_proxy`). Standard library only.
"""

import http.client
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/nanofaas-target"))
RT_BIN = os.path.join(TARGET, "release", "examples", "bench_runtime")
PROXY_BIN = os.path.join(TARGET, "release", "examples", "bench_proxy")
RESULTS = os.environ.get("BENCH_RESULTS_DIR", os.path.join(ROOT, "bench", "results", "callgrind"))
RT_PORT, API, MGMT = 19090, 18080, 18081
BODY = '{"input":{"message":"hi"}}'
# Paths served by bench_proxy (measured once, not per control-plane binary).
FLOORS = ("relay", "echo")


def args():
    reps, ns, paths, bins = 2, (1000, 5000), ["pool", "local", "queued", "relay", "echo"], []
    argv = sys.argv[1:]
    while argv:
        a = argv.pop(0)
        if a == "--reps":
            reps = int(argv.pop(0))
        elif a == "--n":
            ns = tuple(int(x) for x in argv.pop(0).split(","))
        elif a == "--paths":
            paths = argv.pop(0).split(",")
        elif "=" in a:
            label, path = a.split("=", 1)
            bins.append((label, path))
        else:
            raise SystemExit(__doc__)
    if not bins and not set(paths) <= {"relay", "echo"}:
        raise SystemExit(__doc__)
    return reps, ns, paths, bins


def wait_http(port, path, proc, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process exited ({proc.returncode}) before answering on :{port}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", path)
            if c.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"nothing answered on :{port}{path}")


def post(conn, path, body):
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, r.read()


def measure(label, binary, path, n, rep):
    out = os.path.join(RESULTS, f"callgrind.out.{label}-{path}-{n}-{rep}")
    if path in FLOORS:
        argv = [PROXY_BIN, str(API)]
        env = dict(os.environ, BENCH_PROXY_UPSTREAM=f"http://127.0.0.1:{RT_PORT}/invoke",
                   BENCH_PROXY_CLIENT="reqwest" if path == "relay" else "echo")
        ready, url = (API, "/"), "/invoke"
    else:
        argv = [binary]
        env = dict(os.environ, SERVER_PORT=str(API), MANAGEMENT_SERVER_PORT=str(MGMT),
                   NANOFAAS_RATE_MAX_PER_SECOND="100000000", NANOFAAS_DEFAULTS_TIMEOUT_MS="10000",
                   NANOFAAS_ASYNC_QUEUE_ENABLED="true" if path == "queued" else "false")
        env.pop("RUST_LOG", None)
        ready = (MGMT, "/actuator/health/readiness")
        url = "/v1/functions/echo:invoke" if path == "local" else "/v1/functions/pool:invoke"
    p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(*ready, p)
        conn = http.client.HTTPConnection("127.0.0.1", API, timeout=60)
        if path not in FLOORS:
            fn = ({"name": "echo", "image": "x", "executionMode": "LOCAL"} if path == "local" else
                  {"name": "pool", "image": "x", "executionMode": "POOL", "maxRetries": 1,
                   "concurrency": 64, "endpointUrl": f"http://127.0.0.1:{RT_PORT}/invoke"})
            status, data = post(conn, "/v1/functions", json.dumps(fn))
            if status != 201:
                raise SystemExit(f"registration failed: {status} {data[:200]}")
        for i in range(200 + n):
            status, data = post(conn, url, BODY)
            if status != 200 or (path not in FLOORS and b'"status":"success"' not in data):
                raise SystemExit(f"{label}/{path} invocation {i}: {status} {data[:200]}")
        conn.close()
    finally:
        p.terminate()
        try:
            p.wait(timeout=180)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    with open(out) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise SystemExit(f"no total in {out}")


def inner():
    reps, (n1, n2), paths, bins = args()
    os.makedirs(RESULTS, exist_ok=True)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    rt = subprocess.Popen([RT_BIN, str(RT_PORT)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = {}
    try:
        time.sleep(0.5)
        for rep in range(1, reps + 1):
            order = bins if rep % 2 else list(reversed(bins))
            for path in paths:
                targets = [(path, "")] if path in FLOORS else order
                if path in FLOORS and rep > 1:
                    continue
                for label, binary in targets:
                    small = measure(label, binary, path, n1, rep)
                    big = measure(label, binary, path, n2, rep)
                    per = (big - small) / (n2 - n1)
                    rows.setdefault((path, label), []).append(per)
                    print(f"{path:7} {label:10} rep {rep}: {per:,.0f} Ir/inv", flush=True)
    finally:
        rt.terminate()
        rt.wait()
    floor = {p: statistics.mean(rows[(p, p)]) for p in FLOORS if (p, p) in rows}
    print("\n| path | build | Ir per invocation (reps) | ÷ floor (relay; echo for local) |")
    print("|---|---|---|---|")
    for (path, label), v in rows.items():
        base = floor.get("echo" if path in ("local", "echo") else "relay")
        ratio = f"{statistics.mean(v) / base:.3f}" if base else "–"
        reps_text = ", ".join(f"{x:,.0f}" for x in v)
        print(f"| {path} | {label} | **{statistics.mean(v):,.0f}** ({reps_text}) | {ratio} |")


if __name__ == "__main__":
    if os.environ.get("BENCH_CG_INNER"):
        inner()
    else:
        os.environ["BENCH_CG_INNER"] = "1"
        flags = ["--net"] if os.geteuid() == 0 else ["--net", "--map-root-user"]
        os.execvp("unshare", ["unshare", *flags, sys.executable, *sys.argv])
