#!/usr/bin/env python3
"""Bytes of broker RSS per idle MQTT connection, Flotilla and Mosquitto side by side.

Starts each broker on a loopback port, opens N MQTT 3.1.1 connections (CONNECT, wait for
CONNACK, then stay idle with keep alive 0), and reports the broker's RSS delta divided by N.
Usage: scripts/idle_conn_memory.py --flotilla target/release/flotilla [--count 10000]
"""
import argparse, asyncio, os, signal, socket, subprocess, sys, tempfile, time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def connect_packet(client_id):
    cid = client_id.encode()
    var = b"\x00\x04MQTT\x04\x02\x00\x00"  # level 4, clean session, keep alive 0
    payload = len(cid).to_bytes(2, "big") + cid
    body = var + payload
    return bytes([0x10, len(body)]) + body


async def open_conns(port, count, tag):
    conns = []
    sem = asyncio.Semaphore(500)

    async def one(i):
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(connect_packet(f"{tag}-{i}"))
            await w.drain()
            ack = await asyncio.wait_for(r.readexactly(4), 10)
            assert ack[0] == 0x20 and ack[3] == 0, ack
            conns.append((r, w))

    await asyncio.gather(*(one(i) for i in range(count)))
    return conns


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"broker on {port} did not start")


def measure(name, cmd, port, count, settle):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        time.sleep(0.5)
        before = rss_kb(proc.pid)
        loop = asyncio.new_event_loop()
        conns = loop.run_until_complete(open_conns(port, count, name))
        # Steady state: let per-connection CONNECT deadlines and other transients expire.
        time.sleep(settle)
        after = rss_kb(proc.pid)
        per = (after - before) * 1024 / count
        print(f"{name:10s} {count} idle connections: RSS {before} kB -> {after} kB, {per:.0f} bytes/connection")
        for _, w in conns:
            w.close()
        loop.close()
        return per
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flotilla", required=True)
    ap.add_argument("--mosquitto", default="/usr/sbin/mosquitto")
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--settle-secs", type=float, default=12.0)
    a = ap.parse_args()
    results = {}
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        results["flotilla"] = measure("flotilla", [a.flotilla, "--listen", f"127.0.0.1:{port}", "--data-dir", d, "--log", "warn"], port, a.count, a.settle_secs)
    if os.path.exists(a.mosquitto):
        port = free_port()
        with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
            f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence false\n")
            conf = f.name
        results["mosquitto"] = measure("mosquitto", [a.mosquitto, "-c", conf], port, a.count, a.settle_secs)
        os.unlink(conf)
        print(f"ratio flotilla/mosquitto: {results['flotilla'] / results['mosquitto']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
