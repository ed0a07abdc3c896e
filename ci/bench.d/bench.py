#!/usr/bin/env python3
"""The python half of ci/bench: runs one VM and reads its serial log, and turns
the collected samples into the table and the JSON report.

  bench.py vm --log FILE --want NAME=REGEX ... [--until-exit] [--rss-delay S]
              [--timeout S] -- QEMU ARGV...
      Starts QEMU (own process group), follows the serial log, and prints one
      JSON object: for each wanted pattern the wall time from QEMU start to the
      line and the guest uptime in it (named group `t`), every `machined: <phase>
      t=<uptime>` line, QEMU's VmRSS when asked, and the exit status. QEMU is
      always killed before this returns (also on a timeout or a signal).

  bench.py report --samples FILE [--output JSON] [--meta JSON]
      Median, min, max and spread per figure, the ratios against the targets,
      a table on stdout and the JSON report in --output.

Standard library only: python3 is on every Debian.
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time

PHASE = re.compile(r"machined: (?P<phase>.*?) t=(?P<t>\d+(?:\.\d+)?)\s*$")


def vm_rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def stop(proc):
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()


def cmd_vm(args):
    wants = []
    for w in args.want:
        name, _, rx = w.partition("=")
        wants.append((name, re.compile(rx)))
    argv = args.qemu[1:] if args.qemu and args.qemu[0] == "--" else args.qemu
    if os.path.exists(args.log):
        os.unlink(args.log)
    t0 = time.monotonic()
    errf = open(args.log + ".stderr", "wb")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=errf, stderr=errf,
                            start_new_session=True)
    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write(f"{proc.pid}\n")
    # Our caller's trap kills QEMU too, but a SIGTERM to us must not leave it.
    signal.signal(signal.SIGTERM, lambda *_: (stop(proc), sys.exit(143)))
    out = {"wall": {}, "guest": {}, "phases": [], "rss_kib": None, "exit": None}
    buf = b""
    pos = 0
    error = None
    try:
        while True:
            now = time.monotonic() - t0
            try:
                with open(args.log, "rb") as f:
                    f.seek(pos)
                    chunk = f.read()
                    pos += len(chunk)
            except FileNotFoundError:
                chunk = b""
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace").replace("\r", "")
                m = PHASE.search(line)
                if m:
                    out["phases"].append([m["phase"], float(m["t"])])
                for name, rx in wants:
                    if name in out["wall"]:
                        continue
                    m = rx.search(line)
                    if m:
                        out["wall"][name] = round(now, 3)
                        if "t" in rx.groupindex and m["t"] is not None:
                            out["guest"][name] = float(m["t"])
            have_all = all(n in out["wall"] for n, _ in wants)
            exited = proc.poll() is not None
            if exited:
                out["exit"] = proc.returncode
                out["exit_wall"] = round(now, 3)
                if not have_all:
                    error = f"QEMU exited ({proc.returncode}) before: " + ", ".join(
                        n for n, _ in wants if n not in out["wall"])
                break
            if have_all and not args.until_exit:
                break
            if now > args.timeout:
                error = f"timeout after {args.timeout:.0f}s waiting for: " + ", ".join(
                    n for n, _ in wants if n not in out["wall"]) + (
                    " (and QEMU exit)" if args.until_exit else "")
                break
            time.sleep(0.02)
        if error is None and args.rss_delay is not None and proc.poll() is None:
            time.sleep(args.rss_delay)
            out["rss_kib"] = vm_rss_kib(proc.pid)
    finally:
        stop(proc)
    errf.close()
    if error:
        out["error"] = error
        with open(args.log + ".stderr", "rb") as f:
            qerr = f.read()[-2000:].decode("utf-8", "replace").strip()
        if qerr:
            sys.stderr.write(f"bench: QEMU's stderr:\n{qerr}\n")
        try:
            with open(args.log, "rb") as f:
                tail = f.read()[-3000:].decode("utf-8", "replace")
            sys.stderr.write(f"bench: {error}; last serial output:\n{tail}\n")
        except OSError:
            sys.stderr.write(f"bench: {error}\n")
    print(json.dumps(out))
    return 1 if error else 0


# Ratios: (name, numerator figure, denominator figure, target, comparison).
RATIOS = [
    ("node ready / bare kernel limit (guest uptime)",
     ("ironclad", "node_ready_uptime"), ("limit", "init_uptime"), 1.5, "<="),
    ("node ready / bare kernel limit (wall, QEMU start)",
     ("ironclad", "node_ready_wall"), ("limit", "init_wall"), None, None),
    ("node stage 1 / bare kernel limit (guest uptime; the initramfs's cost)",
     ("ironclad", "node_stage1_uptime"), ("limit", "init_uptime"), None, None),
    ("etcd healthy: baseline / ironclad (guest uptime)",
     ("baseline", "etcd_healthy_uptime"), ("ironclad", "etcd_healthy_uptime"), 4.0, ">="),
    ("etcd healthy: baseline QEMU start / ironclad create start (wall)",
     ("baseline", "etcd_healthy_wall"), ("ironclad", "etcd_healthy_wall"), None, None),
    ("containerd answering: baseline / ironclad (guest uptime)",
     ("baseline", "containerd_uptime"), ("ironclad", "node_containerd_uptime"), None, None),
    ("etcd healthy, ironclad / bare kernel limit (guest uptime)",
     ("ironclad", "etcd_healthy_uptime"), ("limit", "init_uptime"), None, None),
]


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "s":
        return f"{v:.2f}"
    if unit in ("MiB",):
        return f"{v:.1f}"
    return f"{v:g}"


def cmd_report(args):
    figures = {}
    order = []
    notes = []
    timeline = None
    with open(args.samples) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            if r.get("kind") == "note":
                notes.append(r["text"])
                continue
            if r.get("kind") == "timeline":
                if timeline is None:
                    timeline = r["phases"]
                continue
            key = (r["group"], r["name"])
            if key not in figures:
                figures[key] = {"group": r["group"], "name": r["name"],
                                "unit": r.get("unit", ""), "what": r.get("what", ""),
                                "samples": []}
                order.append(key)
            fig = figures[key]
            if "skipped" in r:
                fig["skipped"] = r["skipped"]
            elif "failed" in r:
                fig.setdefault("failed", []).append(r["failed"])
            else:
                fig["samples"].append(r["value"])
    out_figs = []
    for key in order:
        fig = figures[key]
        s = fig.pop("samples")
        if s:
            fig["runs"] = s
            fig["n"] = len(s)
            fig["median"] = statistics.median(s)
            fig["min"] = min(s)
            fig["max"] = max(s)
            fig["spread"] = max(s) - min(s)
            fig["stdev"] = statistics.stdev(s) if len(s) > 1 else 0.0
            for k in ("median", "min", "max", "spread", "stdev"):
                fig[k] = round(fig[k], 4)
            fig.pop("skipped", None)
        elif "skipped" not in fig:
            fig["skipped"] = "no successful run: " + "; ".join(fig.get("failed", ["no samples"]))
        out_figs.append(fig)
    ratios = []
    for name, num, den, target, cmp in RATIOS:
        a = figures.get(num, {}).get("median")
        b = figures.get(den, {}).get("median")
        r = {"name": name, "numerator": "/".join(num), "denominator": "/".join(den)}
        if target is not None:
            r["target"] = f"{cmp} {target:g}"
        if a is None or b is None or b == 0:
            missing = [("/".join(k)) for k, v in ((num, a), (den, b)) if v is None]
            r["skipped"] = "missing " + ", ".join(missing) if missing else "zero denominator"
        else:
            r["value"] = round(a / b, 3)
            if target is not None:
                r["ok"] = r["value"] <= target if cmp == "<=" else r["value"] >= target
        ratios.append(r)

    meta = json.loads(args.meta) if args.meta else {}
    report = {"apiVersion": "ironclad.dev/v1alpha1", "kind": "BenchReport", **meta,
              "figures": out_figs, "ratios": ratios, "nodeBootTimeline": timeline or [],
              "notes": notes}
    if args.output:
        tmp = args.output + ".tmp"
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        os.replace(tmp, args.output)

    # The table.
    rows = [("group", "figure", "unit", "median", "min", "max", "spread", "n")]
    for fig in out_figs:
        if "skipped" in fig:
            rows.append((fig["group"], fig["name"], fig["unit"], "skipped", "", "", "", "0"))
        else:
            u = fig["unit"]
            rows.append((fig["group"], fig["name"], u, fmt(fig["median"], u), fmt(fig["min"], u),
                         fmt(fig["max"], u), fmt(fig["spread"], u), str(fig["n"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print()
    print(" ".join(h.ljust(w) for h, w in zip(rows[0], widths)).rstrip())
    print(" ".join("-" * w for w in widths))
    for r in rows[1:]:
        print(" ".join(c.ljust(w) if i < 3 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    skipped = [f for f in out_figs if "skipped" in f]
    if skipped:
        print("\nskipped:")
        for f in skipped:
            print(f"  {f['group']}/{f['name']}: {f['skipped']}")
    print("\nratios (medians of this invocation):")
    for r in ratios:
        tgt = f"  target {r['target']}" if "target" in r else ""
        if "skipped" in r:
            print(f"  {r['name']}: skipped ({r['skipped']}){tgt}")
        else:
            ok = "" if "ok" not in r else ("  OK" if r["ok"] else "  OFF TARGET")
            print(f"  {r['name']}: {r['value']:.2f}{tgt}{ok}")
    if timeline:
        print("\nmachined boot timeline (first run; guest uptime, delta from previous phase):")
        prev = None
        for phase, t in timeline:
            d = "" if prev is None else f"+{t - prev:.3f}"
            print(f"  {t:8.3f}  {d:>8}  {phase}")
            prev = t
    for n in notes:
        print(f"note: {n}")
    if args.output:
        print(f"\nJSON report: {args.output}")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("vm")
    v.add_argument("--log", required=True)
    v.add_argument("--want", action="append", default=[])
    v.add_argument("--until-exit", action="store_true")
    v.add_argument("--rss-delay", type=float)
    v.add_argument("--timeout", type=float, default=600)
    v.add_argument("--pidfile")
    v.add_argument("qemu", nargs=argparse.REMAINDER)
    r = sub.add_parser("report")
    r.add_argument("--samples", required=True)
    r.add_argument("--output")
    r.add_argument("--meta")
    a = p.parse_args()
    return cmd_vm(a) if a.cmd == "vm" else cmd_report(a)


if __name__ == "__main__":
    sys.exit(main())
