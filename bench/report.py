#!/usr/bin/env python3
"""Writes report.md from the files bench/run.sh leaves in its results directory.

Inputs (all in the results directory): meta.env (key=value facts), runs.tsv (one line per wrk
run: process CPU ticks, machine ticks, RSS), wrk_<run>.json (wrk summary written by
wrk_post.lua), rss_samples.tsv (time, control-plane VmRSS kB, invocations completed so far).
Standard library only.
"""

import json
import sys
from pathlib import Path

# Targets the figures are compared against (docs/perf/README.md).
TARGET_CPU_US = 20.0  # control-plane CPU per POOL invocation
TARGET_ADDED_P50_US = 50.0  # added p50 latency at concurrency 1
TARGET_IDLE_RSS_KB = 10 * 1024  # 10 MiB, VmRSS is in KiB
TARGET_RSS_GROWTH = 0.05  # RSS growth over the second half of the memory run


def load(results: Path):
    meta = {}
    for line in (results / "meta.env").read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            meta[k] = v
    clk = int(meta["clk_tck"])
    lines = (results / "runs.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    runs = {}
    order = []
    for line in lines[1:]:
        r = dict(zip(header, line.split("\t")))
        for k in ("conc", "threads", "dur_s", "cp_uticks", "cp_sticks", "rt_ticks", "wrk_ms",
                  "sys_busy", "sys_total", "quiet_wait_s", "cp_rss_kb", "cp_hwm_kb", "attempts"):
            r[k] = int(r[k])
        r["cp_ticks"] = r["cp_uticks"] + r["cp_sticks"]
        w = json.loads((results / f"wrk_{r['name']}.json").read_text())
        r.update(w)
        req = max(w["requests"], 1)
        secs = w["duration_us"] / 1e6
        r["rps"] = w["requests"] / secs
        r["errors"] = sum(w[k] for k in ("err_connect", "err_read", "err_write", "err_status",
                                         "err_timeout"))
        r["cp_cpu_s"] = r["cp_ticks"] / clk
        r["rt_cpu_s"] = r["rt_ticks"] / clk
        r["cp_us_req"] = r["cp_ticks"] / clk * 1e6 / req
        r["rt_us_req"] = r["rt_ticks"] / clk * 1e6 / req
        r["busy_pct"] = 100.0 * r["sys_busy"] / max(r["sys_total"], 1)
        r["cp_sys_pct"] = 100.0 * r["cp_sticks"] / max(r["cp_ticks"], 1)
        r["wrk_us_req"] = r["wrk_ms"] * 1e3 / req
        # CPU used by everything else on the machine during the run (other processes, and
        # interrupts not charged to ours), as a share of all cores.
        other = r["sys_busy"] / clk - r["cp_ticks"] / clk - r["rt_ticks"] / clk - r["wrk_ms"] / 1e3
        r["other_pct"] = 100.0 * max(other, 0.0) * clk / max(r["sys_total"], 1)
        runs[r["name"]] = r
        order.append(r["name"])
    samples = []
    p = results / "rss_samples.tsv"
    if p.exists():
        for line in p.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                samples.append((float(parts[0]), int(parts[1]), int(parts[2])))
    return meta, runs, order, samples


def f0(x):
    return f"{x:,.0f}"


def f1(x):
    return f"{x:,.1f}"


def f2(x):
    return f"{x:.2f}"


def mib(kb):
    return f"{kb / 1024:.1f} MiB"


LABELS = {"direct": "direct → runtime", "pool": "CP → POOL runtime",
          "local": "CP LOCAL (in-process echo)",
          "relay": "relay (axum + reqwest, no logic) → runtime",
          "hyperrelay": "relay (axum + bare hyper client, no logic) → runtime"}


def main():
    results = Path(sys.argv[1])
    meta, runs, order, samples = load(results)
    clk = int(meta["clk_tck"])
    out = []
    w = out.append

    measured = [runs[n] for n in order if runs[n]["kind"] == "measure"]
    longs = [runs[n] for n in order if runs[n]["kind"] == "long"]

    def get(target, c):
        return runs.get(f"{target}_c{c}")

    # ---- long run aggregates
    long_req = sum(r["requests"] for r in longs)
    long_secs = sum(r["duration_us"] for r in longs) / 1e6
    long_cp_us = (sum(r["cp_ticks"] for r in longs) / clk * 1e6 / long_req) if long_req else 0
    long_rt_us = (sum(r["rt_ticks"] for r in longs) / clk * 1e6 / long_req) if long_req else 0
    long_errors = sum(r["errors"] for r in longs)
    before = int(meta.get("long_invocations_before", "0") or 0)
    curve = [(t, rss, max(n - before, 0)) for t, rss, n in samples]
    growth = None
    rss_half = rss_end = rss_max = None
    if curve and long_req:
        done_total = curve[-1][2]
        half = next((s for s in curve if s[2] >= done_total / 2), curve[-1])
        rss_half = half[1]
        rss_end = curve[-1][1]
        rss_max = max(s[1] for s in curve)
        second_half_max = max(s[1] for s in curve if s[2] >= half[2])
        growth = (second_half_max - rss_half) / rss_half

    # ---- headline figures and targets
    w("# nanofaas control plane: load benchmark results")
    w("")
    w(f"- Date (UTC): {meta['date']}")
    dirty = int(meta.get("dirty", "0") or 0)
    w(f"- Commit: `{meta['commit']}`" + (f" (plus {dirty} uncommitted change(s) under src/, "
                                          "Cargo.toml or Cargo.lock"
                                          + (f": {meta['dirty_files']}" if meta.get("dirty_files")
                                             else "") + ")" if dirty else ""))
    w(f"- Machine: {meta['nproc']} CPU(s), {meta['cpu_model']}, "
      f"{int(meta['mem_total_kb']) // 1024} MiB RAM, Linux {meta['kernel']}")
    w(f"- Tools: {meta['wrk_version']}, {meta['rustc']}; CLK_TCK={clk}")
    w(f"- Network: {meta['netns']} network namespace (loopback only)"
      if meta["netns"] == "private" else "- Network: host network namespace")
    w(f"- Each measured run: wrk for {meta['duration_s']} s, `-t1` at c=1 and `-t2` otherwise. "
      "wrk, the control plane and the runtime share the same cores.")
    w(f"- Control plane: {meta['cp_threads']} threads at start; runtime: "
      f"{meta['rt_threads']} threads (1 tokio worker).")
    w("")

    w("## Targets")
    w("")
    w("| Target | Threshold | Measured | Verdict |")
    w("|---|---|---|---|")
    cpu_points = [(f"c={c}", get("pool", c)["cp_us_req"]) for c in (1, 16, 64) if get("pool", c)]
    if long_req:
        cpu_points.append(("memory run (c=64)", long_cp_us))
    met = [lbl for lbl, v in cpu_points if v <= TARGET_CPU_US]
    missed = [(lbl, v) for lbl, v in cpu_points if v > TARGET_CPU_US]
    measured_txt = "; ".join(f"{lbl}: {f1(v)} µs" for lbl, v in cpu_points)
    if not missed:
        verdict = "**met** at every concurrency"
    elif not met:
        verdict = "**not met**: " + ", ".join(
            f"{lbl} over by {f1(v - TARGET_CPU_US)} µs (×{f2(v / TARGET_CPU_US)})"
            for lbl, v in missed)
    else:
        verdict = ("**met** at " + ", ".join(met) + "; **not met** at " + ", ".join(
            f"{lbl} (over by {f1(v - TARGET_CPU_US)} µs, ×{f2(v / TARGET_CPU_US)})"
            for lbl, v in missed))
    w(f"| Control-plane CPU per POOL invocation | ≤ {f0(TARGET_CPU_US)} µs | {measured_txt} "
      f"| {verdict} |")
    d1, p1 = get("direct", 1), get("pool", 1)
    added = p1["p50_us"] - d1["p50_us"]
    verdict = ("**met**" if added <= TARGET_ADDED_P50_US else
               f"**not met** (over by {f0(added - TARGET_ADDED_P50_US)} µs)")
    w(f"| Added p50 latency at c=1 (POOL via CP − direct) | ≤ {f0(TARGET_ADDED_P50_US)} µs "
      f"| {f0(added)} µs ({f0(p1['p50_us'])} − {f0(d1['p50_us'])}) | {verdict} |")
    idle = int(meta["cp_rss_idle_start_kb"])
    verdict = ("**met**" if idle <= TARGET_IDLE_RSS_KB else
               f"**not met** (over by {mib(idle - TARGET_IDLE_RSS_KB)})")
    w(f"| Idle RSS of the control plane after start | ≤ 10 MiB | {f0(idle)} kB ({mib(idle)}) "
      f"| {verdict} |")
    if growth is not None:
        enough = long_req >= int(meta["long_target"])
        ok = enough and growth <= TARGET_RSS_GROWTH and long_errors == 0
        verdict = "**met**" if ok else "**not met**"
        if not enough:
            verdict += f" (only {f0(long_req)} invocations within the time cap)"
        elif growth > TARGET_RSS_GROWTH:
            verdict += f" (grew {growth * 100:.1f}% over the second half)"
        w(f"| RSS bounded over {f0(int(meta['long_target']))} POOL invocations | growth over the "
          f"second half ≤ {TARGET_RSS_GROWTH * 100:.0f}% | {f0(long_req)} invocations in "
          f"{f0(long_secs)} s; RSS at half-way {mib(rss_half)}, max after half-way "
          f"{mib(max(s[1] for s in curve if s[2] >= (curve[-1][2] / 2)))}, at the end "
          f"{mib(rss_end)} (growth {growth * 100:+.1f}%); peak (VmHWM) "
          f"{mib(int(meta['cp_hwm_kb']))} | {verdict} |")
    w("")

    # ---- runs
    w("## Runs")
    w("")
    w("CPU µs/req = CPU time (utime+stime, all threads, from `/proc/<pid>/stat`) the process "
      "consumed during the run ÷ requests wrk completed; *CP sys* is the kernel-mode share of "
      "the control plane's CPU; wrk's CPU comes from the shell's `times`. *Machine busy* is the "
      f"share of all {meta['nproc']} cores busy during the run; *other* is the part of it "
      "not used by the control plane, the runtime or wrk (other processes, unattributed "
      "interrupts); the script waits for a quiet machine before each run.")
    w("")
    w("| Run | Path | c | req/s | p50 µs | p90 µs | p99 µs | p99.9 µs | errors | "
      "CP (or relay) CPU µs/req | CP sys | runtime CPU µs/req | wrk CPU µs/req | machine busy | other |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in measured + longs:
        direct = r["target"] == "direct"
        cp = "–" if direct else f1(r["cp_us_req"])
        cps = "–" if direct else f"{r['cp_sys_pct']:.0f}%"
        w(f"| {r['name']} | {LABELS[r['target']]} | {r['conc']} | {f0(r['rps'])} "
          f"| {f0(r['p50_us'])} | {f0(r['p90_us'])} | {f0(r['p99_us'])} | {f0(r['p999_us'])} "
          f"| {r['errors']} | {cp} | {cps} "
          f"| {f1(r['rt_us_req']) if r['target'] != 'local' else '–'} | {f1(r['wrk_us_req'])} "
          f"| {r['busy_pct']:.0f}% | {r['other_pct']:.0f}% |")
    w("")
    retried = [f"{r['name']} ({r['attempts']} attempts)" for r in measured if r["attempts"] > 1]
    if retried:
        w("Measured runs repeated because other work used more than 5% of the machine: "
          + ", ".join(retried) + " (noisy attempts in `runs_noisy.tsv` and `*.noisyN`).")
        w("")
    noisy = [r["name"] for r in measured + longs if r["other_pct"] > 5]
    if noisy:
        w(f"**Caution:** other work used more than 5% of the machine during {', '.join(noisy)}; "
          "those figures are less reliable.")
        w("")

    # ---- ratios
    w("## Ratios against the same-run direct baseline")
    w("")
    w("Baseline: wrk calling the minimal runtime (`examples/bench_runtime.rs`, a bare axum/hyper "
      "server) directly at the same concurrency, measured in the same run. Throughput and latency "
      "ratios are CP ÷ direct. The CPU ratio is the control plane's CPU per invocation ÷ the "
      "minimal server's CPU per request on the direct run, i.e. how many 'minimal servers' of "
      "CPU one pass through the control plane costs; for POOL the runtime's own CPU is extra.")
    w("")
    w("| Path | c | throughput CP/direct | p50 CP/direct | p99 CP/direct | added p50 µs "
      "| added p99 µs | CPU/req CP ÷ direct server | total CPU/req (CP+runtime) ÷ direct |")
    w("|---|---|---|---|---|---|---|---|---|")
    for r in measured:
        if r["target"] == "direct":
            continue
        d = get("direct", r["conc"])
        if not d:
            continue
        total = r["cp_us_req"] + (r["rt_us_req"] if r["target"] != "local" else 0)
        w(f"| {LABELS[r['target']]} | {r['conc']} | {f2(r['rps'] / d['rps'])} "
          f"| {f2(r['p50_us'] / d['p50_us'])} | {f2(r['p99_us'] / d['p99_us'])} "
          f"| {f0(r['p50_us'] - d['p50_us'])} | {f0(r['p99_us'] - d['p99_us'])} "
          f"| {f2(r['cp_us_req'] / d['rt_us_req'])} | {f2(total / d['rt_us_req'])} |")
    w("")

    # ---- the floor of the stack
    if get("relay", 16):
        w("## Against the floor of the stack (logic-free relays)")
        w("")
        w("The relays (`examples/bench_proxy.rs`) do exactly the two HTTP exchanges of a POOL "
          "invocation and nothing else: axum serving, one pooled client calling the same minimal "
          "runtime, tokio with one worker per core, mimalloc — no execution record, idempotency, "
          "metrics or tracing. One relay calls with reqwest, as the control plane does; the other "
          "with the bare hyper-util client that reqwest is built on. They show what any "
          "implementation on this stack costs on this machine, measured in the same run.")
        w("")
        w("| c | CP CPU µs/req | reqwest relay CPU µs/req | hyper relay CPU µs/req "
          "| CP − reqwest relay µs | CP ÷ reqwest relay | added p50 µs: CP / reqwest relay / hyper relay (vs direct) |")
        w("|---|---|---|---|---|---|---|")
        for c in (1, 16, 64):
            p, rl, hr, d = get("pool", c), get("relay", c), get("hyperrelay", c), get("direct", c)
            if not (p and rl and hr and d):
                continue
            w(f"| {c} | {f1(p['cp_us_req'])} | {f1(rl['cp_us_req'])} | {f1(hr['cp_us_req'])} "
              f"| {f1(p['cp_us_req'] - rl['cp_us_req'])} | {f2(p['cp_us_req'] / rl['cp_us_req'])} "
              f"| {f0(p['p50_us'] - d['p50_us'])} / {f0(rl['p50_us'] - d['p50_us'])} / "
              f"{f0(hr['p50_us'] - d['p50_us'])} |")
        w("")
        floor = [(c, get("hyperrelay", c)["cp_us_req"]) for c in (16, 64) if get("hyperrelay", c)]
        below = [c for c, v in floor if v > TARGET_CPU_US]
        if below:
            w(f"Even the bare hyper relay spends more than the {f0(TARGET_CPU_US)} µs CPU target "
              "per request at c=" + ", ".join(str(c) for c in below) + ", so that target is "
              "below the floor of a relay on this stack and machine.")
            w("")

    # ---- polling check
    w("## Polling / sleeping check")
    w("")
    t0 = int(meta["cp_idle_ticks_5s_start"])
    t1 = int(meta["cp_idle_ticks_5s_end"])
    w(f"- Control-plane CPU over 5 s with no load: {t0 * 1000 // clk} ms after start, "
      f"{t1 * 1000 // clk} ms after the memory run (resolution {1000 // clk} ms).")
    w(f"- p50 at c=1: direct {f0(d1['p50_us'])} µs, POOL via CP {f0(p1['p50_us'])} µs "
      f"(+{f0(added)} µs: one more HTTP exchange, CP → runtime, plus the CP's own work); "
      f"LOCAL via CP {f0(get('local', 1)['p50_us'])} µs "
      f"({get('local', 1)['p50_us'] - d1['p50_us']:+,.0f} µs vs direct). "
      "A poll loop or timer on the invoke path would add about its period (typically a "
      "millisecond or more) to p50, and idle CPU would not be zero.")
    w("")

    # ---- memory
    w("## Memory (control-plane VmRSS)")
    w("")
    w("| When | RSS |")
    w("|---|---|")
    for key, label in [
        ("cp_rss_idle_start_kb", "idle, right after start"),
        ("cp_rss_after_register_kb", "after registering 2 functions and 2 invocations"),
        ("cp_rss_after_short_runs_kb", "after warm-up and the measured runs"),
        ("cp_rss_after_long_kb", "right after the memory run"),
        ("cp_rss_after_long_idle_kb", "5 s later, idle"),
        ("cp_hwm_kb", "peak over the whole process life (VmHWM)"),
    ]:
        if key in meta:
            w(f"| {label} | {f0(int(meta[key]))} kB ({mib(int(meta[key]))}) |")
    w("")
    hwm = int(meta["cp_hwm_kb"])
    peak_run = next((n for n in order if runs[n]["cp_hwm_kb"] >= hwm), None)
    if peak_run:
        w(f"The peak (VmHWM) was reached during run `{peak_run}`. Per-run RSS and VmHWM are in "
          "`runs.tsv`.")
        w("")
    if curve:
        w(f"Memory run: {f0(long_req)} POOL invocations at c=64 in {f0(long_secs)} s "
          f"({f0(long_req / long_secs)} req/s, {long_errors} errors), CP CPU "
          f"{f1(long_cp_us)} µs/invocation, runtime CPU {f1(long_rt_us)} µs/request. "
          "The execution store keeps finished executions for 5 min with a cap of 100,000, so it "
          "is full after the first 100,000 invocations and evicts from then on. RSS sampled "
          "every 2 s (invocations = success+error counters from /actuator/prometheus since the "
          "run began):")
        w("")
        w("| elapsed s | invocations | RSS |")
        w("|---|---|---|")
        t_start = curve[0][0]
        step = max(1, len(curve) // 15)
        picked = curve[::step]
        if picked[-1] is not curve[-1]:
            picked.append(curve[-1])
        for t, rss, n in picked:
            w(f"| {t - t_start:.0f} | {f0(n)} | {f0(rss)} kB ({mib(rss)}) |")
        w("")

    # ---- files
    w("## Raw data")
    w("")
    w("In `bench/results/`: `wrk_<run>.txt` (wrk output with `--latency`), `wrk_<run>.json` "
      "(summary from `bench/wrk_post.lua`), `runs.tsv` (CPU ticks and RSS per run), "
      "`rss_samples.tsv`, `meta.env`, `prometheus.txt` (final scrape), `control-plane.log`, "
      "`runtime.log`, `sanity.txt`.")
    w("")
    (results / "report.md").write_text("\n".join(out))


if __name__ == "__main__":
    main()
