#!/usr/bin/env python3
"""Plot latency percentiles against offered load from `chatd bench latency --json`.

    chatd bench latency --rate 1000,2000,5000,10000,20000,30000 --json > docs/bench-latency.jsonl
    python3 benches/plot_latency.py docs/bench-latency.jsonl docs/bench-latency.png

Needs matplotlib (pip install matplotlib). Reads one JSON object per line and uses the
`latency` ones: p50/p99/p99.9/max against `offered_per_sec`, with the delivered rate on a
second axis so a rate the server could not carry shows as such.
"""

import json
import sys


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    rows = []
    with open(argv[1], encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            if r.get("scenario") == "latency" and r.get("status") == "ok":
                rows.append(r)
    if not rows:
        print(f"no latency reports in {argv[1]}", file=sys.stderr)
        return 1
    rows.sort(key=lambda r: r["offered_per_sec"])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offered = [r["offered_per_sec"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=120)
    for key, label, style in [
        ("p50_ms", "p50", "o-"),
        ("p99_ms", "p99", "s-"),
        ("p999_ms", "p99.9", "^-"),
        ("max_ms", "max", "x--"),
    ]:
        ax.plot(offered, [r[key] for r in rows], style, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (messages/s, open loop)")
    ax.set_ylabel("send → delivery latency (ms)")
    ax.grid(True, which="both", alpha=0.3)

    rate_ax = ax.twinx()
    rate_ax.plot(offered, [r["delivered_per_sec"] for r in rows], ":", color="grey",
                 label="delivered/s")
    rate_ax.set_ylabel("delivered messages/s", color="grey")
    rate_ax.set_yscale("log")

    m = rows[0]["machine"]
    p = rows[0]["params"]
    ax.set_title(
        f"chatd {m['version']} ({m['profile']}), {m['cores']} cores, durability "
        f"{rows[0]['durability']}, {p['pairs']} pairs, {p['body_bytes']} B bodies",
        fontsize=9,
    )
    lines, labels = ax.get_legend_handles_labels()
    more, more_labels = rate_ax.get_legend_handles_labels()
    ax.legend(lines + more, labels + more_labels, loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(argv[2])
    print(f"wrote {argv[2]} ({len(rows)} rates)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
