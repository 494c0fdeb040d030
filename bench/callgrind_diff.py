#!/usr/bin/env python3
"""Where a per-operation instruction difference between two builds or configurations goes.

    python3 bench/callgrind_diff.py A_SMALL A_BIG B_SMALL B_BIG N [TOP] [--inclusive | --by-crate]

A_SMALL/A_BIG are callgrind outputs of configuration A after a small and a big number of
operations (e.g. 1000 and 5000 invocations, as bench/state_backends.py leaves them), the same for
B, and N the difference of the two numbers. Each function's cost per operation is
(Ir(BIG) - Ir(SMALL)) / N, so start-up, registration, warm-up and shutdown cancel out; the
script prints B - A per function, largest first, with A and B (self cost by default; inclusive
with --inclusive, where the costs of nested calls are counted more than once; summed per crate
with --by-crate, from the self costs, so the rows add up to the total). Needs
callgrind_annotate (valgrind). Standard library only.
"""

import collections
import re
import subprocess
import sys

LINE = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(.*)$")


def load(path, inclusive):
    args = ["callgrind_annotate", "--threshold=100"]
    if inclusive:
        args.append("--inclusive=yes")
    out = subprocess.run(args + [path], capture_output=True, text=True, check=True).stdout
    costs = collections.Counter()
    for line in out.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        ir = int(m.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in line:
            costs["(total)"] = ir
            continue
        costs[re.sub(r"\s+\[[^\]]*\]$", "", m.group(2))] += ir
    return costs


def crate_of(function):
    """The crate (or library) a symbol belongs to, from its demangled path."""
    name = function.split(":", 1)[1] if function.startswith(("???:", "./", "/")) else function
    if function.startswith(("./", "/")):
        return "libc"
    if name.startswith(("mi_", "_mi_")):
        return "mimalloc"
    m = re.match(r"[<&\s]*(?:mut\s+|dyn\s+)?([A-Za-z_][A-Za-z0-9_]*)::", name)
    return m.group(1) if m else name


def main():
    flags = {"--inclusive", "--by-crate"}
    args = [a for a in sys.argv[1:] if a not in flags]
    inclusive = "--inclusive" in sys.argv
    by_crate = "--by-crate" in sys.argv
    if len(args) not in (5, 6):
        raise SystemExit(__doc__)
    a1, a2, b1, b2 = (load(p, inclusive) for p in args[:4])
    if by_crate:
        for costs in (a1, a2, b1, b2):
            grouped = collections.Counter()
            for k, v in costs.items():
                grouped["(total)" if k == "(total)" else crate_of(k)] += v
            costs.clear()
            costs.update(grouped)
    n = float(args[4])
    top = int(args[5]) if len(args) == 6 else 40
    rows = []
    for k in set(a1) | set(a2) | set(b1) | set(b2):
        a = (a2[k] - a1[k]) / n
        b = (b2[k] - b1[k]) / n
        rows.append((b - a, a, b, k))
    rows.sort(key=lambda r: -abs(r[0]))
    print(f"{'B - A':>9} {'A':>9} {'B':>9}  function (Ir per operation)")
    for d, a, b, k in rows[:top]:
        print(f"{d:+9.0f} {a:9.0f} {b:9.0f}  {k[:160]}")


if __name__ == "__main__":
    main()
