#!/usr/bin/env python3
"""The table `make bench` prints, from target/bench/runs.tsv (one row per measured run).

Usage: report.py RUNS.tsv [EXTRA ...], where an EXTRA is `key=value` or a line of `key=value`
pairs (the memory figures measured once). Medians over rounds, with the spread (min-max); the
ratios to nginx are taken within each round (same machine state) and then their median shown.
"""
import csv
import statistics
import sys
from collections import defaultdict

SCENARIOS = {
    "fast": "POST /v1/chat/completions, 64 connections, nginx stub upstream (fast)",
    "slow": "POST /v1/chat/completions, 256 connections, dev upstream with 50 ms latency",
    "models": "GET /v1/models, 32 connections, dev upstream (no latency)",
}
TARGETS = ["direct", "nginx", "floor", "infergate", "infergate-redis"]
SATURATED = 95  # % busy: the core set the pace


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs, fmt):
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return ""
    return f" ({fmt.format(min(xs))}-{fmt.format(max(xs))})"


def show(v, fmt):
    return "-" if v is None else fmt.format(v)


def main():
    runs = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
    extras = {}
    for arg in sys.argv[2:]:
        for pair in arg.split():
            if "=" in pair:
                k, v = pair.split("=", 1)
                extras[k] = v
    by = defaultdict(list)  # (scenario, target) -> rows
    for r in runs:
        if r["target"] in TARGETS:
            by[(r["scenario"], r["target"])].append(r)
    goals = []
    for scen, title in SCENARIOS.items():
        if not any(s == scen for s, _ in by):
            continue
        print()
        print(f"{scen}: {title}")
        print(
            f"  {'target':<16}{'req/s':>22}{'p50 ms':>8}{'p99 ms':>8}{'CPU us/req':>20}{'kernel':>8}"
            f"{'RSS MiB':>9}{'load core':>11}{'proxy core':>12}{'req/s/nginx':>13}{'CPU/nginx':>11}"
        )
        nginx_by_round = {r["round"]: r for r in by.get((scen, "nginx"), [])}
        ratios = {}
        for t in TARGETS:
            rows = by.get((scen, t), [])
            if not rows:
                continue
            rps = [num(r["rps"]) for r in rows]
            cpu = [num(r["cpu_us_per_req"]) for r in rows]
            # The kernel's part of the CPU per request (stime); runs.tsv files written before
            # the column existed show "-".
            sys_us = [num(r.get("sys_us_per_req")) for r in rows]
            load = [num(r["load_core_busy"]) for r in rows]
            rr, cr, pr = [], [], []
            for r in rows:
                n = nginx_by_round.get(r["round"])
                if n is None or t in ("nginx", "direct"):
                    continue
                if num(n["rps"]):
                    rr.append(num(r["rps"]) / num(n["rps"]))
                if num(n["cpu_us_per_req"]) and num(r["cpu_us_per_req"]):
                    cr.append(num(r["cpu_us_per_req"]) / num(n["cpu_us_per_req"]))
                if num(n["p99_ms"]) is not None and num(r["p99_ms"]) is not None:
                    pr.append(num(r["p99_ms"]) - num(n["p99_ms"]))
            ratios[t] = (rr, cr, pr)
            rss = med([num(r["rss_kib"]) for r in rows])
            sat = " *" if (med(load) or 0) >= SATURATED else ""
            print(
                f"  {t:<16}{show(med(rps), '{:,.0f}') + spread(rps, '{:,.0f}'):>22}"
                f"{show(med([num(r['p50_ms']) for r in rows]), '{:.2f}'):>8}"
                f"{show(med([num(r['p99_ms']) for r in rows]), '{:.2f}'):>8}"
                f"{show(med(cpu), '{:.1f}') + spread(cpu, '{:.1f}'):>20}"
                f"{show(med(sys_us), '{:.1f}'):>8}"
                f"{show(None if rss is None else rss / 1024, '{:.1f}'):>9}"
                f"{show(med(load), '{:.0f}%') + sat:>11}"
                f"{show(med([num(r['proxy_core_busy']) for r in rows]), '{:.0f}%'):>12}"
                f"{show(med(rr), '{:.2f}') if rr else '-':>13}"
                f"{show(med(cr), '{:.2f}') if cr else '-':>11}"
            )
        redis_rows = by.get((scen, "infergate-redis"), [])
        mem_by_round = {r["round"]: r for r in by.get((scen, "infergate"), [])}
        rm = [
            num(r["rps"]) / num(mem_by_round[r["round"]]["rps"])
            for r in redis_rows
            if r["round"] in mem_by_round and num(mem_by_round[r["round"]]["rps"])
        ]
        trips = [
            num(r["redis_calls"]) / num(r["requests"]) for r in redis_rows if num(r["redis_calls"]) and num(r["requests"])
        ]
        # redis-server's own side (runs.tsv files from before these columns have none).
        redis_cmds = [x for x in (num(r.get("redis_cmds")) for r in redis_rows) if x is not None]
        redis_us = [x for x in (num(r.get("redis_us_per_req")) for r in redis_rows) if x is not None]
        # The gateway's own side of the comparison: its CPU per request with the memory limiter
        # over that with Redis, round by round. req/s also depends on redis-server, which shares
        # the load core with wrk and the upstream.
        cm = [
            num(mem_by_round[r["round"]]["cpu_us_per_req"]) / num(r["cpu_us_per_req"])
            for r in redis_rows
            if r["round"] in mem_by_round
            and num(r["cpu_us_per_req"])
            and num(mem_by_round[r["round"]]["cpu_us_per_req"]) is not None
        ]
        # What the pipeline costs: the gateway's CPU per request over the floor's (its parts
        # without the policies), round by round, and the user-space part of that difference.
        floor_by_round = {r["round"]: r for r in by.get((scen, "floor"), [])}
        pipe, pipe_user = [], []
        for r in by.get((scen, "infergate"), []):
            f = floor_by_round.get(r["round"])
            if f is None:
                continue
            g_cpu, f_cpu = num(r["cpu_us_per_req"]), num(f["cpu_us_per_req"])
            g_sys, f_sys = num(r.get("sys_us_per_req")), num(f.get("sys_us_per_req"))
            if g_cpu is not None and f_cpu is not None:
                pipe.append(g_cpu - f_cpu)
                if g_sys is not None and f_sys is not None:
                    pipe_user.append((g_cpu - g_sys) - (f_cpu - f_sys))
        if pipe:
            user = f", {med(pipe_user):.1f} of it user space" if pipe_user else ""
            print(f"  pipeline (infergate minus floor): {med(pipe):.1f} us CPU a request{spread(pipe, '{:.1f}')}{user}")
        lines = [num(r["log_lines"]) for r in by.get((scen, "infergate"), []) + redis_rows]
        reqs = [num(r["requests"]) for r in by.get((scen, "infergate"), []) + redis_rows]
        if rm:
            print(
                f"  redis/memory req/s {med(rm):.2f}{spread(rm, '{:.2f}')}; "
                f"Redis round trips per request {med(trips):.3f}"
            )
            if redis_cmds and redis_us:
                print(
                    f"  redis-server a request: {med(redis_cmds):.2f} commands, "
                    f"{med(redis_us):.1f} us CPU{spread(redis_us, '{:.1f}')} (on the load core)"
                )
            if cm:
                print(
                    f"  gateway CPU per request, memory/redis: {med(cm):.2f}{spread(cm, '{:.2f}')} "
                    "(the limiter's cost on the gateway's own core)"
                )
        if lines and all(x is not None for x in lines):
            print(f"  access log: {sum(lines):,.0f} lines written for {sum(reqs):,.0f} requests wrk completed")
        print("  (* load core saturated: wrk and the upstream, not the proxy, set that row's pace)")
        rr, cr, pr = ratios.get("infergate", ([], [], []))
        if scen == "fast" and rr:
            goals.append(("fast: CPU per request <= nginx's", med(cr) is not None and med(cr) <= 1.0, f"{med(cr):.2f}x" if cr else "?"))
            goals.append(("fast: req/s >= nginx's", med(rr) >= 1.0, f"{med(rr):.2f}x"))
        if scen == "slow" and rr:
            goals.append(("slow: req/s >= 0.98x nginx's", med(rr) >= 0.98, f"{med(rr):.2f}x"))
            goals.append(("slow: p99 <= nginx's p99 + 2 ms", med(pr) is not None and med(pr) <= 2.0, f"{med(pr):+.2f} ms" if pr else "?"))
        if rm:
            goals.append((f"{scen}: Redis limiter >= 0.8x memory, 1 round trip", med(rm) >= 0.8 and abs(med(trips) - 1) < 0.01, f"{med(rm):.2f}x, {med(trips):.3f}/req"))
    for r in runs:
        if r["target"] == "infergate-deny":
            calls = num(r["redis_calls"]) or 0
            print()
            print(
                f"denied path (Redis limiter, the key's limit spent, refusals from the local deny cache): "
                f"{num(r['rps']):,.0f} req/s, p99 {r['p99_ms']} ms, {r['cpu_us_per_req']} us CPU per request, "
                f"{r['non2xx']} of {r['requests']} refused, {calls / max(num(r['requests']) or 1, 1):.4f} Redis round trips per request"
            )
    if extras:
        print()
        print("memory (measured once):")
        if "idle_rss_kib" in extras:
            idle = int(extras["idle_rss_kib"]) / 1024
            print(f"  gateway idle RSS: {idle:.1f} MiB")
            goals.append(("idle RSS <= 30 MiB", idle <= 30, f"{idle:.1f} MiB"))
        if "stream_peak_growth_kib" in extras:
            g = int(extras["stream_peak_growth_kib"])
            print(f"  32 clients streaming 1 MiB each through the gateway: peak RSS grew {g / 1024:.1f} MiB "
                  f"(the whole bodies would be 32 MiB)")
            goals.append(("1 MiB streams not held in memory (< 8 MiB peak growth for 32)", g < 8 * 1024, f"{g / 1024:.1f} MiB"))
        if "stream_plain_rps" in extras:
            pr, tr = num(extras["stream_plain_rps"]), num(extras["stream_tokens_rps"])
            pc, tc = num(extras["stream_plain_cpu_us"]), num(extras["stream_tokens_cpu_us"])
            print(f"  streamed chat (SSE, 32 connections, dev upstream): without token limits "
                  f"{pr:,.0f} req/s, p99 {extras['stream_plain_p99_ms']} ms, {pc:.0f} µs CPU/req; "
                  f"with a token budget and a concurrency cap {tr:,.0f} req/s "
                  f"({tr / pr:.2f}×), p99 {extras['stream_tokens_p99_ms']} ms, {tc:.0f} µs CPU/req "
                  f"({tc - pc:+.0f} µs)")
        if "rss_growth_kib" in extras:
            g = int(extras["rss_growth_kib"]) / 1024
            print(f"  memory limiter, {int(extras['clients']):,} clients ({int(extras['buckets']):,} buckets): "
                  f"+{g:.0f} MiB resident, {extras['bytes_per_client']} bytes per client")
            goals.append(("1 M tracked clients <= 256 MiB", g <= 256, f"{g:.0f} MiB"))
    if goals:
        print()
        print("goals (issue 11; medians of the rounds):")
        for name, ok, value in goals:
            print(f"  {'met    ' if ok else 'NOT MET'}  {name}: {value}")


if __name__ == "__main__":
    main()
