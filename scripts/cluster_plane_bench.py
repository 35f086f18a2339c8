#!/usr/bin/env python3
"""Measures the cluster plane with real processes on loopback (release build):

1. request round trips between two nodes, one request in flight (no batching) and 64 in
   flight (requests share frames): lease reads through `KvClient` whose range leader is on
   the other node, from `/v1/kv/load` (`remote_read_us`);
2. requests per second per core: read-only load from every node, divided by the CPU seconds
   all node processes used meanwhile (/proc/<pid>/stat);
3. range-table refresh time after a split: from the split being applied on the range's
   leader to a node that never used the range seeing the new range in its table.

Usage: python3 scripts/cluster_plane_bench.py [--bin target/release/flotilla]
Only loopback; every process started here is stopped by pid.
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

HZ = os.sysconf("SC_CLK_TCK")
ROUNDS = 10


def http(method, url, body=None, timeout=600):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / HZ


def start(binary, root, n, extra):
    procs = []
    for i in range(1, n + 1):
        args = [binary, "--node-id", str(i), "--cluster-listen", f"127.0.0.1:{17100 + i}",
                "--admin-listen", f"127.0.0.1:{18100 + i}", "--listen", f"127.0.0.1:{18800 + i}",
                "--data-dir", os.path.join(root, f"d{i}"), "--log", "warn"] + extra
        if i > 1:
            args += ["--join", "127.0.0.1:17101"]
        log = open(os.path.join(root, f"n{i}.log"), "w")
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log))
    return procs


def admin(i):
    return f"http://127.0.0.1:{18100 + i}"


def wait_bootstrap(expect):
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            r = http("GET", admin(1) + "/v1/pd/report", timeout=5)
            if r.get("mqtt_bootstrap") == "done" and r["ranges"] >= expect:
                return r
        except Exception:
            pass
        time.sleep(0.3)
    raise SystemExit("bootstrap did not finish")


def table(i):
    return http("GET", admin(i) + "/v1/kv/ranges", timeout=10)


def round_trips():
    """Node 2 reads ranges led by node 1 (pd-voters 1: every range starts on node 1)."""
    http("POST", admin(1) + "/v1/kv/load", {"tag": "rt", "writers": 8, "writes": 500})
    out = {}
    for writers, writes in [(1, 3000), (64, 200)]:
        r = http("POST", admin(2) + "/v1/kv/load",
                 {"tag": "rt", "writers": writers, "writes": writes, "read_only": True})
        out[writers] = r
        print(f"in flight {writers:3}: {r['remote_reads']} remote lease reads, "
              f"p50 {r['remote_read_us'][0]} us, p99 {r['remote_read_us'][1]} us, "
              f"{writers * writes * 1000 // max(r['elapsed_ms'], 1)} reads/s")
    return out


def per_core(pids, n):
    for i in range(1, n + 1):
        http("POST", admin(i) + "/v1/kv/load", {"tag": f"pc{i}", "writers": 64, "writes": 200})
    c0, t0 = cpu_seconds(pids), time.time()
    results = []
    import threading

    def run(i):
        for _ in range(ROUNDS):
            results.append(http("POST", admin(i) + "/v1/kv/load",
                            {"tag": f"pc{i}", "writers": 64, "writes": 200, "read_only": True}))
    threads = [threading.Thread(target=run, args=(i,)) for i in range(1, n + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu, wall = cpu_seconds(pids) - c0, time.time() - t0
    reads = sum(64 * 200 for _ in results)
    print(f"{reads} reads in {wall:.1f} s: {reads / wall:.0f} reads/s, {cpu:.1f} CPU-s, "
          f"{reads / cpu:.0f} requests per CPU-second (all nodes)")


def refresh_time(n):
    """Fill one S range past the split threshold; time the split and node n's table."""
    before = {r["id"] for r in table(n)["ranges"]}
    http("POST", admin(1) + "/v1/kv/load", {"tag": "split", "writers": 4, "writes": 200})
    seen_split = seen_table = None
    deadline = time.time() + 60
    while time.time() < deadline and seen_table is None:
        now = time.time()
        if seen_split is None:
            for i in range(1, n + 1):
                groups = http("GET", admin(i) + "/v1/groups")["groups"]
                if any(g["range"]["id"] not in before and g["leader"] == i for g in groups):
                    seen_split = now
        if seen_split is not None:
            ids = {r["id"] for r in table(n)["ranges"]}
            if ids - before:
                seen_table = now
        time.sleep(0.02)
    if seen_split and seen_table:
        print(f"range table of node {n} refreshed {1000 * (seen_table - seen_split):.0f} ms "
              f"after a split was first led (PD heartbeat 1 s)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/flotilla")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="flotilla-plane-")
    procs = []
    try:
        # Round trips: PD and every range on node 1; node 2 only asks.
        procs = start(args.bin, root, 2, ["--pd-voters", "1"])
        wait_bootstrap(3 + 16)
        time.sleep(2)
        round_trips()
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(root)
        os.makedirs(root)
        procs = start(args.bin, root, 3, ["--pd-voters", "1,2,3", "--pd-split-keys", "300"])
        wait_bootstrap(51)
        time.sleep(2)
        per_core([p.pid for p in procs], 3)
        refresh_time(3)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
