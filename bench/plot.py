#!/usr/bin/python3
"""Draws compare.png from compare.json (written by shmbus-compare).

Usage: /usr/bin/python3 bench/plot.py compare.json compare.png

Run it with Debian's interpreter (/usr/bin/python3), which has
python3-matplotlib; a python3 earlier on PATH may be another interpreter
without it. Three panels: one-way latency p50 and p99 against payload size
(log-log, one line per system), throughput per payload size (bars, log scale),
and the blocking modes (p50 of the sleeping receivers, by placement).
"""

import json
import sys

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter
except ImportError as e:  # pragma: no cover - depends on the machine
    sys.exit(f"plot.py: matplotlib is missing ({e}); apt-get install python3-matplotlib "
             "and run with /usr/bin/python3")

# Stable colours: shmbus in strong colours, the limits in greys, the others muted.
STYLE = {
    "bare-line": dict(color="#000000", ls=":", lw=1.8, marker="."),
    "bare-memcpy": dict(color="#7f7f7f", ls=":", lw=1.8, marker="."),
    "bare-ring": dict(color="#000000"),
    "bare-ring-16": dict(color="#7f7f7f"),
    "raw-futex": dict(color="#000000"),
    "shmbus-busy-spin": dict(color="#d62728", lw=2.8, marker="o"),
    "shmbus-spin-futex": dict(color="#ff7f0e", lw=2.4, marker="o"),
    "shmbus-sleep": dict(color="#e377c2", lw=2.0, marker="o"),
    "iceoryx": dict(color="#1f77b4", lw=1.8, marker="s"),
    "moodycamel": dict(color="#17becf", lw=1.4, marker="^"),
    "boost-mq-poll": dict(color="#2ca02c", lw=1.4, marker="v"),
    "boost-mq": dict(color="#98df8a", lw=1.4, marker="v"),
    "uds": dict(color="#9467bd", lw=1.4, marker="D"),
    "pipe": dict(color="#8c564b", lw=1.4, marker="D"),
    "zmq": dict(color="#bcbd22", lw=1.4, marker="P"),
}


def size_label(n):
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n >> 10} KiB"
    return f"{n} B"


def ns_label(v, _pos=None):
    if v >= 1e6:
        return f"{v / 1e6:g} ms"
    if v >= 1e3:
        return f"{v / 1e3:g} us"
    return f"{v:g} ns"


def rate_label(v, _pos=None):
    if v >= 1e6:
        return f"{v / 1e6:g} M"
    if v >= 1e3:
        return f"{v / 1e3:g} k"
    return f"{v:g}"


def short(name):
    return name.replace(" (the limit)", "").replace(" (the limit for a copy)", "")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        data = json.load(f)
    names = {s["key"]: s["name"] for s in data.get("systems", [])}
    order = [s["key"] for s in data.get("systems", [])]
    sizes = data.get("sizes", [])

    fig = plt.figure(figsize=(17, 17))
    # Room on the right for the legends, which stay off the data.
    gs = fig.add_gridspec(3, 1, height_ratios=[1.3, 1.0, 0.75], hspace=0.3, left=0.07, right=0.70,
                          top=0.95, bottom=0.04)

    # ---- latency vs size -------------------------------------------------------
    ax = fig.add_subplot(gs[0])
    lat = [r for r in data.get("latency", []) if r["section"] == "latency" and r["ok"]]
    keys = [k for k in order if any(r["key"] == k for r in lat)]
    for k in keys:
        rows = sorted((r for r in lat if r["key"] == k), key=lambda r: r["size"])
        xs = [r["size"] for r in rows]
        st = dict(STYLE.get(k, {}))
        ls = st.pop("ls", "-")
        ax.plot(xs, [r["one_way_ns"]["p50"] for r in rows], ls=ls, label=short(names.get(k, k)) + "  p50", **st)
        st2 = dict(st)
        st2["lw"] = max(0.8, st.get("lw", 1.4) * 0.6)
        st2.pop("marker", None)
        ax.plot(xs, [r["one_way_ns"]["p99"] for r in rows], ls="--", alpha=0.45, **st2)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([size_label(s) for s in sizes])
    ax.yaxis.set_major_formatter(FuncFormatter(ns_label))
    ax.set_xlabel("payload")
    ax.set_ylabel("one-way latency (ping-pong / 2)")
    ax.set_title("One-way latency, cores split: p50 (solid) and p99 (dashed, same colour)")
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)

    # ---- throughput bars -------------------------------------------------------
    ax = fig.add_subplot(gs[1])
    tp = [r for r in data.get("throughput", []) if r["ok"]]
    tkeys = [k for k in order if any(r["key"] == k for r in tp)]
    n = max(1, len(tkeys))
    width = 0.8 / n
    for i, k in enumerate(tkeys):
        xs, ys = [], []
        for j, s in enumerate(sizes):
            r = next((r for r in tp if r["key"] == k and r["size"] == s), None)
            if r:
                xs.append(j - 0.4 + (i + 0.5) * width)
                ys.append(r["messages_per_s"])
        color = STYLE.get(k, {}).get("color", None)
        hatch = "//" if k.startswith("bare") else None
        ax.bar(xs, ys, width=width * 0.95, color=color, hatch=hatch, edgecolor="white" if not hatch else "#555555",
               label=short(names.get(k, k)))
    ax.set_yscale("log")
    ax.set_xticks(range(len(sizes)))
    ax.set_xticklabels([size_label(s) for s in sizes])
    ax.yaxis.set_major_formatter(FuncFormatter(rate_label))
    ax.set_ylabel("messages/s (median of runs)")
    ax.set_xlabel("payload")
    ax.set_title("Throughput: one producer process, one consumer process (moodycamel: two threads)")
    ax.grid(True, axis="y", which="major", alpha=0.35)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)

    # ---- blocking --------------------------------------------------------------
    ax = fig.add_subplot(gs[2])
    sections = [("blocking-split", "ping-pong, cores split"), ("blocking-same-core", "ping-pong, one core"),
                ("spaced", "one way, spaced 500 us")]
    blk = [r for r in data.get("latency", []) if r["section"] in dict(sections) and r["ok"]]
    bkeys = [k for k in order if any(r["key"] == k for r in blk)]
    n = max(1, len(bkeys))
    width = 0.8 / n
    for i, k in enumerate(bkeys):
        xs, ys = [], []
        for j, (sec, _) in enumerate(sections):
            r = next((r for r in blk if r["key"] == k and r["section"] == sec), None)
            if r:
                xs.append(j - 0.4 + (i + 0.5) * width)
                ys.append(r["one_way_ns"]["p50"])
        ax.bar(xs, ys, width=width * 0.95, color=STYLE.get(k, {}).get("color", None),
               label=short(names.get(k, k)))
    ax.set_xticks(range(len(sections)))
    ax.set_xticklabels([t for _, t in sections])
    ax.yaxis.set_major_formatter(FuncFormatter(ns_label))
    ax.set_ylabel("one-way p50")
    bsize = blk[0]["size"] if blk else 64
    ax.set_title(f"Blocking modes, {size_label(bsize)}: the receiver sleeps in the kernel")
    ax.grid(True, axis="y", alpha=0.35)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)

    m = data.get("machine", {})
    br = data.get("bracket", {})
    fig.suptitle(
        f"shmbus-compare  {m.get('date', '')}  |  {m.get('cpu_model', '')}, {m.get('nproc', '?')} CPUs"
        f"{' (VM)' if m.get('hypervisor') else ''}  |  bare line at start {br.get('start', '?')}, "
        f"at end {br.get('end', '?')}",
        fontsize=12, x=0.38, y=0.985)
    fig.savefig(sys.argv[2], dpi=90, bbox_inches="tight")
    print(f"plot.py: wrote {sys.argv[2]}")


if __name__ == "__main__":
    main()
