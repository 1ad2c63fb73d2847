"""Per-function instructions per query from two callgrind profiles (bench/cg_hits.py writes them):
(Ir in RUN - Ir in BASE) / N for each function, largest first. Usage:
  python3 bench/cg_diff.py /tmp/cg_hits.warm.out /tmp/cg_hits.hits.out 20000 [incl|excl] [rows]"""

import re
import subprocess
import sys


def load(path, inclusive):
    out = subprocess.run(["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}",
                          "--threshold=100", path], capture_output=True, text=True).stdout
    d = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)", line)
        if m and "=>" not in line:
            name = re.sub(r" \[[^\]]*\]$", "", m.group(2))
            d[name] = d.get(name, 0) + int(m.group(1).replace(",", ""))
    return d


def main():
    base, run, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    inclusive = (sys.argv[4] if len(sys.argv) > 4 else "incl") == "incl"
    rows = int(sys.argv[5]) if len(sys.argv) > 5 else 60
    a, b = load(base, inclusive), load(run, inclusive)
    diff = sorted(((b.get(k, 0) - a.get(k, 0)) / n, k) for k in set(a) | set(b))
    for v, k in list(reversed(diff))[:rows]:
        print(f"{v:8.0f}  {k[:200]}")


if __name__ == "__main__":
    main()
