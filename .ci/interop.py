#!/usr/bin/env python3
"""Interop suite: drives a real `flotilla` broker with mosquitto_pub/mosquitto_sub and paho-mqtt.

Usage: python3 .ci/interop.py --broker target/release/flotilla [-k SUBSTRING] [-v]

The script starts the broker on a free 127.0.0.1 port with a fresh temporary data dir
(stderr goes to a temporary log file), runs every check in order, stops the broker with
SIGTERM and prints one line per check (`PASS name` / `FAIL name: reason`). Then it starts a
3-node cluster from the same binary on loopback (`cluster_start`, logs in another temporary
dir) and runs the `cluster_...` checks against chosen nodes. The last line is always
`N passed, M failed`; the exit status is 0 only when M is 0.

Only the standard library and paho-mqtt (>=2,<3) are used. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pty
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import threading
import time
import traceback
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.client import CallbackAPIVersion, MQTTv31, MQTTv311, MQTTv5
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

HOST = "127.0.0.1"
PORT = 0  # set once the broker is up
RUN = uuid.uuid4().hex[:8]  # keeps topics and client ids of this run apart
T = 5.0  # default bound for any single wait, seconds
QUIET = 1.0  # how long "nothing arrives" is watched, seconds

MOSQ_VERSION = {MQTTv31: "mqttv31", MQTTv311: "mqttv311", MQTTv5: "mqttv5"}
VNAME = {MQTTv31: "v31", MQTTv311: "v311", MQTTv5: "v5"}


class CheckFailed(AssertionError):
    pass


def ensure(cond: bool, msg: str) -> None:
    if not cond:
        raise CheckFailed(msg)


# --------------------------------------------------------------------------------------------
# Per-check resources: everything a check starts is registered here and torn down after it.

_cleanups: list[Callable[[], None]] = []
_counter = 0


def on_cleanup(fn: Callable[[], None]) -> None:
    _cleanups.append(fn)


def run_cleanups() -> None:
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception:  # noqa: BLE001 - best effort teardown
            pass


def uid(name: str) -> str:
    global _counter
    _counter += 1
    return f"it-{RUN}-{name}-{_counter}"


def topic(name: str) -> str:
    return f"interop/{RUN}/{name}/{uuid.uuid4().hex[:6]}"


# --------------------------------------------------------------------------------------------
# The broker under test.


class Broker:
    def __init__(self, binary: str):
        self.binary = binary
        self.proc: subprocess.Popen | None = None
        self.tmp = tempfile.mkdtemp(prefix="flotilla-interop-")
        self.log_path = os.path.join(self.tmp, "broker.log")
        self.log_file = None
        self.port = 0
        self.term_sent_at: float | None = None

    def start(self) -> None:
        last_err = "not started"
        for _attempt in range(3):
            port = free_port()
            data_dir = os.path.join(self.tmp, f"data-{port}")
            self.log_file = open(self.log_path, "ab")
            env = dict(os.environ, NO_COLOR="1")
            env.pop("RUST_LOG", None)
            self.proc = subprocess.Popen(
                [self.binary, "--listen", f"{HOST}:{port}", "--data-dir", data_dir, "--log", "debug"],
                stdin=subprocess.DEVNULL,
                stdout=self.log_file,
                stderr=self.log_file,
                env=env,
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    last_err = f"broker exited with {self.proc.returncode} during startup"
                    break
                try:
                    with socket.create_connection((HOST, port), timeout=0.5):
                        self.port = port
                        return
                except OSError:
                    time.sleep(0.05)
            else:
                last_err = "broker did not accept connections within 10 s"
                self.kill()
        raise RuntimeError(last_err)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        if self.alive() and self.term_sent_at is None:
            self.term_sent_at = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Last resort: SIGKILL the broker process this script started (by PID)."""
        if self.alive():
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def log_tail(self, lines: int = 60) -> str:
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError as e:
            return f"(cannot read broker log: {e})"
        return "\n".join(text.splitlines()[-lines:])

    def cleanup_dir(self) -> None:
        if self.log_file:
            self.log_file.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


BROKER: Broker | None = None


# --------------------------------------------------------------------------------------------
# paho-mqtt wrapper: threaded loop, events for CONNACK/SUBACK/UNSUBACK/DISCONNECT, a queue of
# received messages.


@dataclass
class Msg:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    props: Properties | None = None

    def prop(self, name: str, default=None):
        if self.props is None:
            return default
        return getattr(self.props, name, default)


@dataclass
class ConnAck:
    session_present: bool
    reason: int
    props: Properties | None


@dataclass
class Disconn:
    reason: int
    from_server: bool
    at: float = field(default_factory=time.monotonic)


class Paho:
    def __init__(
        self,
        version: int,
        name: str = "paho",
        client_id: str | None = None,
        clean_session: bool = True,
        port: int | None = None,
    ):
        self.version = version
        self.port = port  # None: the single broker's PORT
        self.v5 = version == MQTTv5
        self.client_id = uid(name) if client_id is None else client_id
        self.name = name
        kw = dict(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=version,
            reconnect_on_failure=False,
        )
        if not self.v5:
            kw["clean_session"] = clean_session
        self.c = mqtt.Client(**kw)
        self.msgs: queue.Queue[Msg] = queue.Queue()
        self.connack: ConnAck | None = None
        self._connack_ev = threading.Event()
        self._acks: dict[int, list] = {}
        self._ack_cv = threading.Condition()
        self.disconnects: list[Disconn] = []
        self._disc_ev = threading.Event()
        self.pub_reasons: dict[int, int] = {}
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.c.on_disconnect = self._on_disconnect
        self.c.on_publish = self._on_publish
        self._killed = False
        on_cleanup(self._cleanup)

    # callbacks (run on paho's loop thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack = ConnAck(bool(flags.session_present), reason_code.value, properties)
        self._connack_ev.set()

    def _on_message(self, client, userdata, m):
        self.msgs.put(Msg(m.topic, bytes(m.payload), m.qos, bool(m.retain), bool(m.dup), m.properties))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._ack_cv:
            self._acks[mid] = [rc.value for rc in reason_codes]
            self._ack_cv.notify_all()

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties):
        with self._ack_cv:
            self._acks[mid] = [rc.value for rc in (reason_codes or [])]
            self._ack_cv.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnects.append(Disconn(reason_code.value, bool(flags.is_disconnect_packet_from_server)))
        self._disc_ev.set()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self.pub_reasons[mid] = reason_code.value

    # operations
    def will(self, topic_: str, payload: bytes, qos: int = 1, retain: bool = False, delay: int | None = None):
        props = None
        if self.v5 and delay is not None:
            props = Properties(PacketTypes.WILLMESSAGE)
            props.WillDelayInterval = delay
        self.c.will_set(topic_, payload, qos=qos, retain=retain, properties=props)
        return self

    def connect(self, clean_start: bool = True, expiry: int | None = None, props: Properties | None = None,
                expect_ok: bool = True) -> ConnAck:
        self._connack_ev.clear()
        self.connack = None
        if self.v5:
            if expiry is not None:
                props = props or Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = expiry
            self.c.connect(HOST, self.port or PORT, keepalive=30, clean_start=clean_start, properties=props)
        else:
            self.c.connect(HOST, self.port or PORT, keepalive=30)
        self.c.loop_start()
        ensure(self._connack_ev.wait(T), f"{self.name}: no CONNACK within {T}s")
        if expect_ok:
            ensure(self.connack.reason == 0, f"{self.name}: CONNACK reason {self.connack.reason:#x}")
        return self.connack

    def _wait_ack(self, mid: int, what: str) -> list:
        deadline = time.monotonic() + T
        with self._ack_cv:
            while mid not in self._acks:
                left = deadline - time.monotonic()
                ensure(left > 0, f"{self.name}: no {what} within {T}s")
                self._ack_cv.wait(left)
            return self._acks.pop(mid)

    def subscribe(self, filt: str, qos: int = 0, no_local: bool = False, rap: bool = False,
                  sub_id: int | None = None) -> list:
        props = None
        if self.v5:
            opts = SubscribeOptions(qos=qos, noLocal=no_local, retainAsPublished=rap)
            if sub_id is not None:
                props = Properties(PacketTypes.SUBSCRIBE)
                props.SubscriptionIdentifier = sub_id
            rc, mid = self.c.subscribe(filt, options=opts, properties=props)
        else:
            rc, mid = self.c.subscribe(filt, qos)
        ensure(rc == 0, f"{self.name}: subscribe() returned {rc}")
        codes = self._wait_ack(mid, f"SUBACK for {filt}")
        ensure(all(c < 0x80 for c in codes), f"{self.name}: SUBACK for {filt} refused: {codes}")
        return codes

    def unsubscribe(self, filt: str) -> list:
        rc, mid = self.c.unsubscribe(filt)
        ensure(rc == 0, f"{self.name}: unsubscribe() returned {rc}")
        return self._wait_ack(mid, f"UNSUBACK for {filt}")

    def publish(self, topic_: str, payload, qos: int = 0, retain: bool = False,
                props: Properties | None = None) -> int | None:
        info = self.c.publish(topic_, payload, qos=qos, retain=retain, properties=props)
        ensure(info.rc == 0, f"{self.name}: publish() returned {info.rc}")
        if qos > 0:
            info.wait_for_publish(T)
            ensure(info.is_published(), f"{self.name}: QoS {qos} publish to {topic_!r} not acknowledged within {T}s")
            reason = self.pub_reasons.get(info.mid)
            if reason is not None:
                ensure(reason < 0x80, f"{self.name}: publish to {topic_!r} refused with reason {reason:#x}")
            return reason
        return None

    def get(self, timeout: float = T, what: str = "message") -> Msg:
        try:
            return self.msgs.get(timeout=timeout)
        except queue.Empty:
            raise CheckFailed(f"{self.name}: no {what} within {timeout}s") from None

    def expect_none(self, duration: float = QUIET, what: str = "message") -> None:
        try:
            m = self.msgs.get(timeout=duration)
        except queue.Empty:
            return
        raise CheckFailed(f"{self.name}: unexpected {what}: topic={m.topic!r} payload={m.payload!r} "
                          f"qos={m.qos} retain={m.retain}")

    def wait_disconnected(self, timeout: float = T) -> Disconn:
        ensure(self._disc_ev.wait(timeout), f"{self.name}: connection not closed within {timeout}s")
        return self.disconnects[0]

    def disconnect(self) -> None:
        """Clean DISCONNECT (reason 0), then stop the loop thread."""
        self.c.disconnect()
        self._disc_ev.wait(T)
        self.c.loop_stop()

    def kill(self) -> None:
        """Drop the TCP connection without DISCONNECT (FIN from a shut-down socket)."""
        sock = self.c.socket()
        ensure(sock is not None, f"{self.name}: no socket to kill")
        self._killed = True
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._disc_ev.wait(T)
        self.c.loop_stop()

    def _cleanup(self) -> None:
        if self.c.is_connected() and not self._killed:
            self.c.disconnect()
            self._disc_ev.wait(2)
        self.c.loop_stop()


def pub_props(**kw) -> Properties:
    p = Properties(PacketTypes.PUBLISH)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


# --------------------------------------------------------------------------------------------
# mosquitto_sub / mosquitto_pub wrappers.

MOSQ_FMT = "MSG\t%q\t%r\t%t\t%P\t%R\t%D\t%C\t%E\t%p"


@dataclass
class MosqMsg:
    qos: int
    retain: bool
    topic: str
    user_props: str
    response_topic: str
    correlation: str
    content_type: str
    expiry: str
    payload: str


class MosqSub:
    """A running mosquitto_sub with -d (debug) output parsed line by line."""

    def __init__(self, version: int, topics: list[str], qos: int = 0, client_id: str | None = None,
                 extra: list[str] | None = None, name: str = "mosquitto_sub", port: int | None = None):
        cmd = ["mosquitto_sub", "-h", HOST, "-p", str(port or PORT), "-V", MOSQ_VERSION[version], "-d",
               "-F", MOSQ_FMT, "-q", str(qos)]
        if client_id is not None:
            cmd += ["-i", client_id]
        elif version != MQTTv5:
            cmd += ["-i", uid("mosqsub")]
        for t in topics:
            cmd += ["-t", t]
        cmd += extra or []
        self.name = name
        self.cmd = cmd
        # mosquitto_sub flushes stdout only after printing a message; through a pipe its -d
        # lines (CONNACK, SUBACK) would sit in the stdio buffer. A pseudo-terminal makes its
        # stdout line buffered.
        master, slave = pty.openpty()
        attrs = termios.tcgetattr(slave)
        attrs[1] &= ~termios.ONLCR  # no \n -> \r\n translation
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                                         close_fds=True)
        finally:
            os.close(slave)
        self._master = master
        self.lines: list[str] = []
        self.msgs: queue.Queue[MosqMsg] = queue.Queue()
        self._cv = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        on_cleanup(self.stop)

    def _lines(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self._master, 4096)
            except OSError:  # EIO once the child has exited and the pty is drained
                chunk = b""
            if not chunk:
                break
            buf += chunk
            *done, buf = buf.split(b"\n")
            for raw in done:
                yield raw.decode("utf-8", "replace").rstrip("\r")
        if buf:
            yield buf.decode("utf-8", "replace").rstrip("\r")
        os.close(self._master)

    def _read(self) -> None:
        for line in self._lines():
            if line.startswith("MSG\t"):
                f = line.split("\t", 9)
                if len(f) == 10:
                    self.msgs.put(MosqMsg(int(f[1]), f[2] == "1", f[3], f[4], f[5], f[6], f[7], f[8], f[9]))
            with self._cv:
                self.lines.append(line)
                self._cv.notify_all()
        with self._cv:
            self._cv.notify_all()

    def output(self) -> str:
        with self._cv:
            return " | ".join(self.lines[-8:])

    def wait_line(self, pred: Callable[[str], bool], what: str, timeout: float = T) -> str:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cv:
            while True:
                for line in self.lines[seen:]:
                    if pred(line):
                        return line
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise CheckFailed(f"{self.name}: {what} not seen within {timeout}s "
                                      f"(rc={self.proc.poll()}; output: {' | '.join(self.lines[-8:])})")
                self._cv.wait(min(left, 0.1))

    def wait_subscribed(self) -> None:
        line = self.wait_line(lambda s: s.startswith("Subscribed (mid:"), "SUBACK")
        codes = [int(x) for x in line.split(":", 2)[2].replace(",", " ").split()]
        ensure(all(c < 0x80 for c in codes), f"{self.name}: subscription refused: {line}")

    def wait_connected(self) -> None:
        self.wait_line(lambda s: "received CONNACK (0)" in s, "CONNACK (0)")

    def get(self, timeout: float = T) -> MosqMsg:
        try:
            return self.msgs.get(timeout=timeout)
        except queue.Empty:
            raise CheckFailed(f"{self.name}: no message within {timeout}s (rc={self.proc.poll()}; "
                              f"output: {self.output()})") from None

    def expect_none(self, duration: float = QUIET) -> None:
        try:
            m = self.msgs.get(timeout=duration)
        except queue.Empty:
            return
        raise CheckFailed(f"{self.name}: unexpected message: topic={m.topic!r} payload={m.payload!r} "
                          f"retain={m.retain}")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = T) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"{self.name}: did not exit within {timeout}s") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(3)
        self._reader.join(2)


def mosq_pub(version: int, topic_: str, payload: str | None = None, qos: int = 0, retain: bool = False,
             null: bool = False, lines: list[str] | None = None, extra: list[str] | None = None,
             client_id: str | None = None, port: int | None = None) -> str:
    cmd = ["mosquitto_pub", "-h", HOST, "-p", str(port or PORT), "-V", MOSQ_VERSION[version], "-t", topic_,
           "-q", str(qos), "-i", client_id or uid("mosqpub")]
    if retain:
        cmd.append("-r")
    stdin = None
    if null:
        cmd.append("-n")
    elif lines is not None:
        cmd.append("-l")
        stdin = "".join(line + "\n" for line in lines)
    else:
        cmd += ["-m", payload or ""]
    cmd += extra or []
    try:
        r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"mosquitto_pub did not finish within 10s: {' '.join(cmd)}") from None
    ensure(r.returncode == 0, f"mosquitto_pub exited {r.returncode}: {(r.stderr or r.stdout).strip()}")
    return r.stderr


# --------------------------------------------------------------------------------------------
# Checks. Each is a function registered in order; the name is the function name.

CHECKS: list[tuple[str, Callable[[], None]]] = []


def check(fn=None, *, name: str | None = None):
    def reg(f):
        CHECKS.append((name or f.__name__, f))
        return f

    return reg(fn) if fn is not None else reg


def param_check(name: str, fn: Callable, *args) -> None:
    CHECKS.append((name, lambda: fn(*args)))


# ---- QoS round trips ------------------------------------------------------------------------


def roundtrip_mosq(version: int, qos: int) -> None:
    t = topic("rt-mosq")
    payload = f"mosq {VNAME[version]} qos{qos} {uuid.uuid4().hex}"
    sub = MosqSub(version, [t], qos=qos)
    sub.wait_subscribed()
    mosq_pub(version, t, payload, qos=qos)
    m = sub.get()
    ensure(m.payload == payload, f"payload {m.payload!r} != {payload!r}")
    ensure(m.qos == qos, f"received QoS {m.qos}, expected {qos}")
    ensure(m.topic == t, f"topic {m.topic!r} != {t!r}")
    ensure(not m.retain, "retain flag set on a non-retained message")
    sub.expect_none(0.3)


def roundtrip_paho(version: int, qos: int) -> None:
    t = topic("rt-paho")
    payload = f"paho {VNAME[version]} qos{qos} ".encode() + os.urandom(16) + b"\x00\xff"
    sub = Paho(version, "sub")
    sub.connect()
    codes = sub.subscribe(t, qos)
    ensure(codes == [qos], f"SUBACK granted {codes}, expected [{qos}]")
    pub = Paho(version, "pub")
    pub.connect()
    pub.publish(t, payload, qos=qos)
    m = sub.get()
    ensure(m.payload == payload, f"payload {m.payload!r} != {payload!r}")
    ensure(m.qos == qos, f"received QoS {m.qos}, expected {qos}")
    ensure(m.topic == t and not m.retain and not m.dup, f"bad message {m}")
    sub.expect_none(0.3, "duplicate")


for _v in (MQTTv311, MQTTv5):
    for _q in (0, 1, 2):
        param_check(f"roundtrip_mosquitto_{VNAME[_v]}_qos{_q}", roundtrip_mosq, _v, _q)
for _v in (MQTTv311, MQTTv5):
    for _q in (0, 1, 2):
        param_check(f"roundtrip_paho_{VNAME[_v]}_qos{_q}", roundtrip_paho, _v, _q)
param_check("roundtrip_mosquitto_v31_qos1", roundtrip_mosq, MQTTv31, 1)
param_check("roundtrip_paho_v31_qos2", roundtrip_paho, MQTTv31, 2)


def cross_mosqpub_to_paho(version: int) -> None:
    t = topic("x-mp")
    sub = Paho(version, "paho-sub")
    sub.connect()
    sub.subscribe(t, 2)
    mosq_pub(version, t, "from mosquitto_pub", qos=2)
    m = sub.get()
    ensure(m.payload == b"from mosquitto_pub" and m.qos == 2, f"got {m.payload!r} QoS {m.qos}")


def cross_paho_to_mosqsub(version: int) -> None:
    t = topic("x-pm")
    sub = MosqSub(version, [t], qos=1)
    sub.wait_subscribed()
    pub = Paho(version, "paho-pub")
    pub.connect()
    pub.publish(t, b"from paho", qos=1)
    m = sub.get()
    ensure(m.payload == "from paho" and m.qos == 1, f"got {m.payload!r} QoS {m.qos}")


for _v in (MQTTv311, MQTTv5):
    param_check(f"cross_mosquitto_pub_to_paho_{VNAME[_v]}_qos2", cross_mosqpub_to_paho, _v)
    param_check(f"cross_paho_to_mosquitto_sub_{VNAME[_v]}_qos1", cross_paho_to_mosqsub, _v)


@check
def qos_downgrade_to_subscription_paho_v5() -> None:
    """MQTT-3.8.4-8 (v5 3.8.4): delivered QoS is the minimum of published and granted QoS."""
    t = topic("qosmin")
    s1 = Paho(MQTTv5, "sub-q1")
    s1.connect()
    s1.subscribe(t, 1)
    s0 = Paho(MQTTv5, "sub-q0")
    s0.connect()
    s0.subscribe(t, 0)
    pub = Paho(MQTTv5, "pub")
    pub.connect()
    pub.publish(t, b"q2", qos=2)
    m1, m0 = s1.get(), s0.get()
    ensure(m1.qos == 1, f"QoS 1 subscriber got QoS {m1.qos}")
    ensure(m0.qos == 0, f"QoS 0 subscriber got QoS {m0.qos}")


@check
def wildcards_mosquitto_v311() -> None:
    base = topic("wild")
    sub = MosqSub(MQTTv311, [f"{base}/+/temp", f"{base}/all/#"], qos=1)
    sub.wait_subscribed()
    mosq_pub(MQTTv311, f"{base}/x/humidity", "no", qos=1)
    mosq_pub(MQTTv311, f"{base}/x/temp", "plus", qos=1)
    mosq_pub(MQTTv311, f"{base}/all", "hash-parent", qos=1)
    mosq_pub(MQTTv311, f"{base}/all/a/b", "hash", qos=1)
    got = [sub.get().payload for _ in range(3)]
    ensure(got == ["plus", "hash-parent", "hash"], f"got {got}, expected ['plus', 'hash-parent', 'hash']")
    sub.expect_none(0.5)


@check
def unsubscribe_paho_v311() -> None:
    t = topic("unsub")
    sub = Paho(MQTTv311, "sub")
    sub.connect()
    sub.subscribe(t, 1)
    pub = Paho(MQTTv311, "pub")
    pub.connect()
    pub.publish(t, b"before", qos=1)
    ensure(sub.get().payload == b"before", "first message not received")
    sub.unsubscribe(t)
    pub.publish(t, b"after", qos=1)
    sub.expect_none()


# ---- retained -------------------------------------------------------------------------------


def retained_mosq(version: int) -> None:
    t = topic("ret-mosq")
    payload = f"retained-{uuid.uuid4().hex[:6]}"
    mosq_pub(version, t, payload, qos=1, retain=True)
    sub = MosqSub(version, [t], qos=1, name="sub-after-set")
    sub.wait_subscribed()
    m = sub.get()
    ensure(m.payload == payload, f"retained payload {m.payload!r} != {payload!r}")
    ensure(m.retain, "retained message delivered on subscribe without the retain flag (MQTT-3.3.1-8)")
    sub.stop()
    mosq_pub(version, t, qos=1, retain=True, null=True)
    sub2 = MosqSub(version, [t], qos=1, name="sub-after-clear")
    sub2.wait_subscribed()
    sub2.expect_none()


def retained_paho(version: int) -> None:
    t = topic("ret-paho")
    pub = Paho(version, "pub")
    pub.connect()
    pub.publish(t, b"state-1", qos=1, retain=True)
    sub = Paho(version, "sub")
    sub.connect()
    sub.subscribe(t, 1)
    m = sub.get()
    ensure(m.payload == b"state-1" and m.retain, f"on subscribe got {m.payload!r} retain={m.retain}")
    # A retained PUBLISH to an existing subscriber is forwarded with RETAIN 0 (MQTT-3.3.1-9; in
    # v5 with Retain As Published 0, MQTT-3.3.1-12).
    pub.publish(t, b"state-2", qos=1, retain=True)
    m = sub.get()
    ensure(m.payload == b"state-2" and not m.retain, f"live got {m.payload!r} retain={m.retain}")
    # An empty retained message clears it (MQTT-3.3.1-10 / v5 MQTT-3.3.1-6).
    pub.publish(t, b"", qos=1, retain=True)
    sub.get(what="empty retained message forwarded to the subscriber")
    late = Paho(version, "late-sub")
    late.connect()
    late.subscribe(t, 1)
    late.expect_none(what="retained message after clearing")


for _v in (MQTTv311, MQTTv5):
    param_check(f"retained_mosquitto_{VNAME[_v]}", retained_mosq, _v)
    param_check(f"retained_paho_{VNAME[_v]}", retained_paho, _v)


@check
def retain_as_published_paho_v5() -> None:
    """v5 3.8.3.1: Retain As Published 1 keeps RETAIN on forwarded messages, 0 clears it."""
    t = topic("rap")
    keep = Paho(MQTTv5, "rap1")
    keep.connect()
    keep.subscribe(t, 1, rap=True)
    plain = Paho(MQTTv5, "rap0")
    plain.connect()
    plain.subscribe(t, 1, rap=False)
    pub = Paho(MQTTv5, "pub")
    pub.connect()
    on_cleanup(lambda: pub.publish(t, b"", qos=1, retain=True))
    pub.publish(t, b"r", qos=1, retain=True)
    mk, mp = keep.get(), plain.get()
    ensure(mk.retain, "Retain As Published subscriber got RETAIN 0")
    ensure(not mp.retain, "plain subscriber got RETAIN 1")


# ---- wills ----------------------------------------------------------------------------------


def will_watcher(version: int, t: str) -> Paho:
    w = Paho(version, "will-watcher")
    w.connect()
    w.subscribe(t, 1)
    return w


def will_paho_kill(version: int) -> None:
    t = topic("will")
    payload = f"gone-{uuid.uuid4().hex[:6]}".encode()
    w = will_watcher(version, t)
    k = Paho(version, "dying").will(t, payload, qos=1)
    k.connect()
    k.kill()
    m = w.get(what="will message after the connection was dropped")
    ensure(m.payload == payload, f"will payload {m.payload!r} != {payload!r}")
    ensure(m.qos == 1 and not m.retain, f"will QoS {m.qos} retain {m.retain}, expected 1/False")
    w.expect_none(0.3, "second will")


def will_mosq_sigkill(version: int) -> None:
    t = topic("will-mosq")
    w = will_watcher(version, t)
    sub = MosqSub(version, [topic("will-mosq-dummy")], extra=[
        "--will-topic", t, "--will-payload", "mosq-died", "--will-qos", "1"])
    sub.wait_subscribed()
    sub.signal(signal.SIGKILL)
    sub.wait_exit()
    m = w.get(what="will message after mosquitto_sub was SIGKILLed")
    ensure(m.payload == b"mosq-died", f"will payload {m.payload!r}")


def will_paho_clean_disconnect(version: int) -> None:
    t = topic("will-clean")
    w = will_watcher(version, t)
    k = Paho(version, "leaving").will(t, b"should-not-appear", qos=1)
    k.connect()
    k.disconnect()
    w.expect_none(1.5, "will after a clean DISCONNECT (MQTT-3.1.2-10 / v5 MQTT-3.1.2-8)")


for _v in (MQTTv311, MQTTv5):
    param_check(f"will_on_socket_drop_paho_{VNAME[_v]}", will_paho_kill, _v)
    param_check(f"will_on_sigkill_mosquitto_{VNAME[_v]}", will_mosq_sigkill, _v)
    param_check(f"no_will_on_clean_disconnect_paho_{VNAME[_v]}", will_paho_clean_disconnect, _v)


@check
def no_will_on_clean_disconnect_mosquitto_v311() -> None:
    """mosquitto_sub sends a plain DISCONNECT on SIGTERM: the will is discarded."""
    t = topic("will-mosq-term")
    w = will_watcher(MQTTv311, t)
    sub = MosqSub(MQTTv311, [topic("dummy")], extra=["--will-topic", t, "--will-payload", "nope"])
    sub.wait_subscribed()
    sub.signal(signal.SIGTERM)
    sub.wait_exit()
    w.expect_none(1.5, "will after a clean DISCONNECT")


@check
def will_on_disconnect_0x04_mosquitto_v5() -> None:
    """mosquitto_sub -V mqttv5 sends DISCONNECT 0x04 (Disconnect with Will Message) on SIGTERM:
    the broker must publish the will (v5 3.14.2.1)."""
    t = topic("will-0x04")
    w = will_watcher(MQTTv5, t)
    sub = MosqSub(MQTTv5, [topic("dummy")], extra=["--will-topic", t, "--will-payload", "with-will"])
    sub.wait_subscribed()
    sub.signal(signal.SIGTERM)
    sub.wait_exit()
    m = w.get(what="will after DISCONNECT 0x04")
    ensure(m.payload == b"with-will", f"will payload {m.payload!r}")


@check
def will_delay_paho_v5() -> None:
    """v5 3.1.3.2.2: the will is published after the Will Delay Interval, not before."""
    t = topic("will-delay")
    w = will_watcher(MQTTv5, t)
    k = Paho(MQTTv5, "delayed").will(t, b"late", qos=1, delay=2)
    k.connect(expiry=30)
    t0 = time.monotonic()
    k.kill()
    w.expect_none(1.0, "will before its 2 s delay")
    m = w.get(timeout=4, what="delayed will")
    elapsed = time.monotonic() - t0
    ensure(m.payload == b"late", f"will payload {m.payload!r}")
    ensure(elapsed >= 1.5, f"will arrived after {elapsed:.2f}s, delay is 2 s")


@check
def will_delay_cancelled_by_reconnect_paho_v5() -> None:
    """MQTT-3.1.3-9: a new connection to the session before the delay passes: no will."""
    t = topic("will-cancel")
    w = will_watcher(MQTTv5, t)
    cid = uid("cancel")
    k = Paho(MQTTv5, "delayed", client_id=cid).will(t, b"must-not-appear", qos=1, delay=2)
    k.connect(expiry=30)
    k.kill()
    time.sleep(0.3)
    k2 = Paho(MQTTv5, "reconnected", client_id=cid)
    ack = k2.connect(clean_start=False, expiry=30)
    ensure(ack.session_present, "session not present on reconnect")
    w.expect_none(3.0, "will after the session was resumed within the delay")


@check
def will_delay_capped_by_session_expiry_paho_v5() -> None:
    """v5 3.1.3.2.2: the will is sent when the session ends, even if the delay is longer."""
    t = topic("will-expiry")
    w = will_watcher(MQTTv5, t)
    k = Paho(MQTTv5, "short-session").will(t, b"session-ended", qos=1, delay=30)
    k.connect(expiry=1)
    k.kill()
    m = w.get(timeout=4, what="will when the 1 s session expired (delay 30 s)")
    ensure(m.payload == b"session-ended", f"will payload {m.payload!r}")


# ---- persistent sessions --------------------------------------------------------------------


def persist_paho(version: int) -> None:
    t = topic("persist")
    cid = uid("persist")
    kw = {} if version == MQTTv5 else {"clean_session": False}
    s = Paho(version, "session-1", client_id=cid, **kw)
    ack = s.connect(clean_start=False, expiry=60) if version == MQTTv5 else s.connect()
    ensure(not ack.session_present, "session present on the first connection of a new client id")
    s.subscribe(t, 1)
    s.disconnect()
    pub = Paho(version, "pub")
    pub.connect()
    payloads = [f"queued-{i}".encode() for i in range(3)]
    for p in payloads:
        pub.publish(t, p, qos=1)
    s2 = Paho(version, "session-2", client_id=cid, **kw)
    ack = s2.connect(clean_start=False, expiry=60) if version == MQTTv5 else s2.connect()
    ensure(ack.session_present, "session_present is 0 on reconnect to a persistent session")
    got = [s2.get(what=f"queued message {i}") for i in range(3)]
    ensure([m.payload for m in got] == payloads, f"got {[m.payload for m in got]}, expected {payloads}")
    ensure(all(m.qos == 1 for m in got), f"QoS {[m.qos for m in got]}, expected 1")
    s2.expect_none(0.3, "extra message")


def persist_mosq(version: int) -> None:
    t = topic("persist-mosq")
    cid = uid("pmosq")
    extra = ["-c"] + (["-x", "60"] if version == MQTTv5 else [])
    s = MosqSub(version, [t], qos=1, client_id=cid, extra=extra, name="first")
    s.wait_subscribed()
    s.signal(signal.SIGTERM)
    s.wait_exit()
    payloads = [f"offline-{i}" for i in range(3)]
    mosq_pub(version, t, qos=1, lines=payloads)
    s2 = MosqSub(version, [t], qos=1, client_id=cid, extra=extra, name="second")
    got = [s2.get() for _ in range(3)]
    ensure([m.payload for m in got] == payloads, f"got {[m.payload for m in got]}, expected {payloads}")
    ensure(all(m.qos == 1 for m in got), f"QoS {[m.qos for m in got]}")


for _v in (MQTTv311, MQTTv5):
    param_check(f"persistent_session_paho_{VNAME[_v]}", persist_paho, _v)
    param_check(f"persistent_session_mosquitto_{VNAME[_v]}", persist_mosq, _v)


@check
def clean_session_discards_paho_v311() -> None:
    """MQTT-3.1.2-6: CleanSession 1 discards the previous session; session present 0."""
    t = topic("clean")
    cid = uid("clean")
    s = Paho(MQTTv311, "persistent", client_id=cid, clean_session=False)
    s.connect()
    s.subscribe(t, 1)
    s.disconnect()
    pub = Paho(MQTTv311, "pub")
    pub.connect()
    pub.publish(t, b"queued", qos=1)
    s2 = Paho(MQTTv311, "clean", client_id=cid, clean_session=True)
    ack = s2.connect()
    ensure(not ack.session_present, "session present with CleanSession 1 (MQTT-3.2.2-1)")
    s2.expect_none(what="message from the discarded session")


@check
def session_expiry_paho_v5() -> None:
    """v5 3.1.2.11.2: a session with Session Expiry Interval 1 is gone 2.5 s after disconnect."""
    t = topic("expiry")
    cid = uid("exp")
    s = Paho(MQTTv5, "short", client_id=cid)
    s.connect(clean_start=True, expiry=1)
    s.subscribe(t, 1)
    s.disconnect()
    pub = Paho(MQTTv5, "pub")
    pub.connect()
    pub.publish(t, b"into-expiring-session", qos=1)
    time.sleep(2.5)
    s2 = Paho(MQTTv5, "again", client_id=cid)
    ack = s2.connect(clean_start=False, expiry=60)
    ensure(not ack.session_present, "session still present 2.5 s after a 1 s expiry")
    s2.expect_none(what="message from the expired session")


@check
def clean_start_discards_paho_v5() -> None:
    """MQTT-3.1.2-4: Clean Start 1 discards an existing session; session present 0."""
    t = topic("cleanstart")
    cid = uid("cs")
    s = Paho(MQTTv5, "first", client_id=cid)
    s.connect(clean_start=False, expiry=60)
    s.subscribe(t, 1)
    s.disconnect()
    pub = Paho(MQTTv5, "pub")
    pub.connect()
    pub.publish(t, b"queued", qos=1)
    s2 = Paho(MQTTv5, "second", client_id=cid)
    ack = s2.connect(clean_start=True, expiry=0)
    ensure(not ack.session_present, "session present with Clean Start 1 (MQTT-3.2.2-2)")
    s2.expect_none(what="message from the discarded session")


# ---- shared subscriptions -------------------------------------------------------------------

SHARED_N = 20


def check_split(a: list, b: list, expected: list) -> None:
    total = a + b
    dup = sorted({x for x in total if total.count(x) > 1})
    missing = sorted(set(expected) - set(total))
    ensure(not dup, f"delivered more than once: {dup}")
    ensure(not missing, f"never delivered: {missing}")
    ensure(len(total) == len(expected), f"{len(total)} deliveries for {len(expected)} messages")
    ensure(a and b, f"split {len(a)}/{len(b)}: one member got nothing")


def shared_paho(version: int) -> None:
    t = topic("shared")
    group = f"g{RUN}"
    members = []
    for i in range(2):
        m = Paho(version, f"member{i}")
        m.connect()
        m.subscribe(f"$share/{group}/{t}", 1)
        members.append(m)
    pub = Paho(version, "pub")
    pub.connect()
    expected = [f"m{i}".encode() for i in range(SHARED_N)]
    for p in expected:
        pub.publish(t, p, qos=1)
    got: list[list[bytes]] = [[], []]
    deadline = time.monotonic() + T
    while sum(map(len, got)) < SHARED_N and time.monotonic() < deadline:
        for i, m in enumerate(members):
            try:
                got[i].append(m.msgs.get(timeout=0.05).payload)
            except queue.Empty:
                pass
    time.sleep(0.3)
    for i, m in enumerate(members):
        while not m.msgs.empty():
            got[i].append(m.msgs.get().payload)
    check_split(got[0], got[1], expected)


def shared_mosq(version: int) -> None:
    t = topic("shared-mosq")
    group = f"mg{RUN}"
    subs = [MosqSub(version, [f"$share/{group}/{t}"], qos=1, name=f"member{i}") for i in range(2)]
    for s in subs:
        s.wait_subscribed()
    expected = [f"line-{i}" for i in range(SHARED_N)]
    mosq_pub(version, t, qos=1, lines=expected)
    got: list[list[str]] = [[], []]
    deadline = time.monotonic() + T
    while sum(map(len, got)) < SHARED_N and time.monotonic() < deadline:
        for i, s in enumerate(subs):
            try:
                got[i].append(s.msgs.get(timeout=0.05).payload)
            except queue.Empty:
                pass
    time.sleep(0.3)
    for i, s in enumerate(subs):
        while not s.msgs.empty():
            got[i].append(s.msgs.get().payload)
    check_split(got[0], got[1], expected)


for _v in (MQTTv311, MQTTv5):
    param_check(f"shared_subscription_paho_{VNAME[_v]}", shared_paho, _v)
    param_check(f"shared_subscription_mosquitto_{VNAME[_v]}", shared_mosq, _v)


# ---- session takeover -----------------------------------------------------------------------


def takeover_paho(version: int) -> None:
    cid = uid("takeover")
    t = topic("takeover")
    old = Paho(version, "old", client_id=cid)
    old.connect()
    new = Paho(version, "new", client_id=cid)
    new.connect()
    d = old.wait_disconnected()
    if version == MQTTv5:
        codes = [x.reason for x in old.disconnects]
        ensure(any(x.reason == 0x8E and x.from_server for x in old.disconnects),
               f"old connection closed without DISCONNECT 0x8E (MQTT-3.1.4-3); reasons seen {codes}")
    else:
        ensure(d is not None, "old connection not closed")
    new.subscribe(t, 1)
    pub = Paho(version, "pub")
    pub.connect()
    pub.publish(t, b"to-new", qos=1)
    m = new.get(what="message on the new connection")
    ensure(m.payload == b"to-new", f"got {m.payload!r}")
    time.sleep(0.2)
    ensure(new.c.is_connected(), "new connection was closed")
    ensure(len(new.disconnects) == 0, f"new connection saw disconnects {new.disconnects}")


for _v in (MQTTv311, MQTTv5):
    param_check(f"session_takeover_paho_{VNAME[_v]}", takeover_paho, _v)


@check
def session_takeover_by_mosquitto_v5() -> None:
    """A paho v5 client is taken over by mosquitto_sub with the same client id."""
    cid = uid("takeover-mosq")
    t = topic("takeover-mosq")
    old = Paho(MQTTv5, "old-paho", client_id=cid)
    old.connect()
    sub = MosqSub(MQTTv5, [t], qos=1, client_id=cid, name="new-mosquitto_sub")
    sub.wait_subscribed()
    old.wait_disconnected()
    ensure(any(x.reason == 0x8E and x.from_server for x in old.disconnects),
           f"old connection: reasons {[x.reason for x in old.disconnects]}, expected 0x8E")
    mosq_pub(MQTTv5, t, "after-takeover", qos=1)
    m = sub.get()
    ensure(m.payload == "after-takeover", f"got {m.payload!r}")


# ---- $SYS -----------------------------------------------------------------------------------


def sys_version_mosq(version: int) -> None:
    sub = MosqSub(version, ["$SYS/broker/version"])
    sub.wait_subscribed()
    m = sub.get()
    ensure(m.topic == "$SYS/broker/version", f"topic {m.topic!r}")
    ensure(m.payload.startswith("flotilla "), f"version payload {m.payload!r}")
    ensure(m.retain, "$SYS/broker/version not delivered as retained")


for _v in (MQTTv311, MQTTv5):
    param_check(f"sys_broker_version_mosquitto_{VNAME[_v]}", sys_version_mosq, _v)


@check
def sys_broker_version_paho_v5() -> None:
    s = Paho(MQTTv5, "sys")
    s.connect()
    s.subscribe("$SYS/broker/#", 0)
    seen = {}
    deadline = time.monotonic() + T
    while "$SYS/broker/version" not in seen and time.monotonic() < deadline:
        try:
            m = s.msgs.get(timeout=0.1)
            seen[m.topic] = m.payload
        except queue.Empty:
            pass
    ensure("$SYS/broker/version" in seen, f"no $SYS/broker/version; got {sorted(seen)}")
    ensure(seen["$SYS/broker/version"].startswith(b"flotilla "), f"payload {seen['$SYS/broker/version']!r}")


@check
def sys_not_matched_by_leading_wildcard_paho_v311() -> None:
    """MQTT-4.7.2-1: filters starting with a wildcard do not match topics starting with $."""
    s = Paho(MQTTv311, "wild")
    s.connect()
    s.subscribe("#", 0)
    s.subscribe("+/broker/version", 0)
    deadline = time.monotonic() + QUIET
    while time.monotonic() < deadline:
        try:
            m = s.msgs.get(timeout=0.1)
        except queue.Empty:
            continue
        ensure(not m.topic.startswith("$"), f"'#' or '+/...' matched {m.topic!r}")


# ---- MQTT 5 properties and features ---------------------------------------------------------


@check
def v5_user_properties_paho() -> None:
    """MQTT-3.3.2-17/-18: user properties are forwarded unaltered and in order."""
    t = topic("userprops")
    sub = Paho(MQTTv5, "sub")
    sub.connect()
    sub.subscribe(t, 1)
    pub = Paho(MQTTv5, "pub")
    pub.connect()
    props = Properties(PacketTypes.PUBLISH)
    sent = [("region", "eu"), ("vin", "WVW123"), ("region", "us"), ("ünïcode", "✓")]
    props.UserProperty = sent
    pub.publish(t, b"with props", qos=1, props=props)
    m = sub.get()
    got = [tuple(x) for x in (m.prop("UserProperty") or [])]
    ensure(got == sent, f"user properties {got}, expected {sent}")


@check
def v5_request_response_properties_paho() -> None:
    """Response Topic, Correlation Data, Content Type and Payload Format Indicator pass through
    unaltered (MQTT-3.3.2-15, -16, -20, -4)."""
    t = topic("reqresp")
    resp_t = topic("reply")
    corr = b"\x00\x01corr\xff" + os.urandom(8)
    sub = Paho(MQTTv5, "responder")
    sub.connect()
    sub.subscribe(t, 1)
    req = Paho(MQTTv5, "requester")
    req.connect()
    req.subscribe(resp_t, 1)
    req.publish(t, b'{"cmd":"unlock"}', qos=1, props=pub_props(
        ResponseTopic=resp_t, CorrelationData=corr, ContentType="application/json",
        PayloadFormatIndicator=1))
    m = sub.get()
    ensure(m.prop("ResponseTopic") == resp_t, f"ResponseTopic {m.prop('ResponseTopic')!r}")
    ensure(m.prop("CorrelationData") == corr, f"CorrelationData {m.prop('CorrelationData')!r} != {corr!r}")
    ensure(m.prop("ContentType") == "application/json", f"ContentType {m.prop('ContentType')!r}")
    ensure(m.prop("PayloadFormatIndicator") == 1, f"PayloadFormatIndicator {m.prop('PayloadFormatIndicator')!r}")
    # ... and the responder can answer on the response topic with the same correlation data.
    sub.publish(m.prop("ResponseTopic"), b"ok", qos=1, props=pub_props(CorrelationData=m.prop("CorrelationData")))
    r = req.get(what="response")
    ensure(r.payload == b"ok" and r.prop("CorrelationData") == corr, f"response {r.payload!r} {r.prop('CorrelationData')!r}")


@check
def v5_properties_mosquitto() -> None:
    """mosquitto_pub -D publish properties reach mosquitto_sub unaltered."""
    t = topic("mosqprops")
    sub = MosqSub(MQTTv5, [t], qos=1)
    sub.wait_subscribed()
    mosq_pub(MQTTv5, t, "props", qos=1, extra=[
        "-D", "publish", "user-property", "fleet", "north",
        "-D", "publish", "response-topic", "reply/here",
        "-D", "publish", "correlation-data", "corr42",
        "-D", "publish", "content-type", "text/plain",
        "-D", "publish", "message-expiry-interval", "120"])
    m = sub.get()
    ensure(m.user_props == "fleet:north", f"user properties {m.user_props!r}")
    ensure(m.response_topic == "reply/here", f"response topic {m.response_topic!r}")
    ensure(m.correlation == "corr42", f"correlation data {m.correlation!r}")
    ensure(m.content_type == "text/plain", f"content type {m.content_type!r}")
    ensure(m.expiry.isdigit() and 118 <= int(m.expiry) <= 120, f"message expiry {m.expiry!r}, expected ~120")


@check
def v5_message_expiry_paho() -> None:
    """MQTT-3.3.2-5: an expired message is not delivered; MQTT-3.3.2-6: the forwarded expiry is
    reduced by the time the message waited."""
    t = topic("msgexp")
    cid = uid("msgexp")
    s = Paho(MQTTv5, "offline", client_id=cid)
    s.connect(clean_start=True, expiry=60)
    s.subscribe(t, 1)
    s.disconnect()
    pub = Paho(MQTTv5, "pub")
    pub.connect()
    pub.publish(t, b"short", qos=1, props=pub_props(MessageExpiryInterval=1))
    pub.publish(t, b"long", qos=1, props=pub_props(MessageExpiryInterval=60))
    pub.publish(t, b"forever", qos=1)
    time.sleep(2.2)
    s2 = Paho(MQTTv5, "back", client_id=cid)
    ack = s2.connect(clean_start=False, expiry=60)
    ensure(ack.session_present, "session not present")
    first = s2.get(what="the 60 s message")
    ensure(first.payload == b"long", f"first delivery {first.payload!r}, expected b'long' (b'short' had expired)")
    left = first.prop("MessageExpiryInterval")
    ensure(left is not None and 1 <= left <= 58, f"forwarded MessageExpiryInterval {left}, expected <= 58 after 2.2 s")
    second = s2.get(what="the message without expiry")
    ensure(second.payload == b"forever", f"second delivery {second.payload!r}")
    ensure(second.prop("MessageExpiryInterval") is None, "expiry added to a message that had none")
    s2.expect_none(0.3, "extra message")


@check
def v5_topic_alias_from_paho() -> None:
    """v5 3.3.2.3.4: the broker resolves client Topic Aliases; subscribers see the full topic."""
    t = topic("alias")
    sub = Paho(MQTTv5, "sub")
    sub.connect()
    sub.subscribe(t, 1)
    pub = Paho(MQTTv5, "pub")
    ack = pub.connect()
    alias_max = getattr(ack.props, "TopicAliasMaximum", 0) if ack.props else 0
    ensure(alias_max >= 1, f"CONNACK Topic Alias Maximum {alias_max}")
    pub.publish(t, b"one", qos=1, props=pub_props(TopicAlias=1))
    pub.publish("", b"two", qos=1, props=pub_props(TopicAlias=1))
    pub.publish("", b"three", qos=0, props=pub_props(TopicAlias=1))
    got = [sub.get() for _ in range(3)]
    ensure([m.payload for m in got] == [b"one", b"two", b"three"], f"payloads {[m.payload for m in got]}")
    ensure(all(m.topic == t for m in got), f"topics {[m.topic for m in got]}")
    ensure(all(m.prop("TopicAlias") is None for m in got),
           "broker sent a Topic Alias to a client that allowed none (MQTT-3.3.2-9)")
    ensure(pub.c.is_connected(), "publisher disconnected")


@check
def v5_topic_alias_to_paho() -> None:
    """A subscriber announcing Topic Alias Maximum may get aliases; they must resolve."""
    t = topic("alias-out")
    sub = Paho(MQTTv5, "sub")
    cp = Properties(PacketTypes.CONNECT)
    cp.TopicAliasMaximum = 4
    sub.connect(props=cp)
    sub.subscribe(t, 1)
    pub = Paho(MQTTv5, "pub")
    pub.connect()
    for i in range(3):
        pub.publish(t, f"n{i}".encode(), qos=1)
    aliases: dict[int, str] = {}
    for i in range(3):
        m = sub.get()
        a = m.prop("TopicAlias")
        if a is not None:
            ensure(1 <= a <= 4, f"alias {a} outside 1..4 (MQTT-3.3.2-9)")
            if m.topic:
                aliases[a] = m.topic
        resolved = m.topic or aliases.get(a, "")
        ensure(resolved == t, f"message {i}: topic {m.topic!r} alias {a} resolves to {resolved!r}")
        ensure(m.payload == f"n{i}".encode(), f"payload {m.payload!r}")


@check
def v5_subscription_identifier_paho() -> None:
    """MQTT-3.3.4-3: the Subscription Identifier is returned with matching messages."""
    t = topic("subid")
    sub = Paho(MQTTv5, "sub")
    sub.connect()
    sub.subscribe(t, 1, sub_id=4242)
    pub = Paho(MQTTv5, "pub")
    pub.connect()
    pub.publish(t, b"x", qos=1)
    ids = sub.get().prop("SubscriptionIdentifier")
    ids = ids if isinstance(ids, list) else [ids]
    ensure(ids == [4242], f"SubscriptionIdentifier {ids}, expected [4242]")


@check
def v5_no_local_paho() -> None:
    """MQTT-3.8.3-3: with No Local the publisher does not get its own messages."""
    t = topic("nolocal")
    me = Paho(MQTTv5, "self")
    me.connect()
    me.subscribe(t, 1, no_local=True)
    other = Paho(MQTTv5, "other")
    other.connect()
    other.subscribe(t, 1)
    me.publish(t, b"mine", qos=1)
    ensure(other.get().payload == b"mine", "other subscriber did not get the message")
    me.expect_none(0.5, "own message despite No Local")


@check
def v5_assigned_client_identifier_paho() -> None:
    """MQTT-3.2.2-16: an empty client id gets an Assigned Client Identifier."""
    c = Paho(MQTTv5, "anon", client_id="")
    ack = c.connect()
    assigned = getattr(ack.props, "AssignedClientIdentifier", None) if ack.props else None
    ensure(assigned, f"no Assigned Client Identifier in CONNACK ({ack.props})")


@check
def overlapping_subscriptions_paho_v311() -> None:
    """MQTT-3.3.5-1: overlapping subscriptions get the message at the maximum granted QoS; this
    broker sends one copy per session."""
    base = topic("overlap")
    sub = Paho(MQTTv311, "sub")
    sub.connect()
    sub.subscribe(f"{base}/#", 0)
    sub.subscribe(f"{base}/a", 2)
    pub = Paho(MQTTv311, "pub")
    pub.connect()
    pub.publish(f"{base}/a", b"both", qos=2)
    m = sub.get()
    ensure(m.qos == 2, f"delivered at QoS {m.qos}, the maximum granted is 2")
    sub.expect_none(0.5, "second copy")


@check
def v5_overlapping_subscription_identifiers_paho() -> None:
    """MQTT-3.3.4-5: one copy for overlapping subscriptions carries every Subscription Identifier."""
    base = topic("overlap-ids")
    sub = Paho(MQTTv5, "sub")
    sub.connect()
    sub.subscribe(f"{base}/#", 1, sub_id=11)
    sub.subscribe(f"{base}/+", 1, sub_id=22)
    pub = Paho(MQTTv5, "pub")
    pub.connect()
    pub.publish(f"{base}/a", b"x", qos=1)
    copies = [sub.get()]
    try:
        while True:
            copies.append(sub.msgs.get(timeout=0.5))
    except queue.Empty:
        pass
    ids = []
    for m in copies:
        v = m.prop("SubscriptionIdentifier")
        ids += v if isinstance(v, list) else ([] if v is None else [v])
    ensure(sorted(ids) == [11, 22], f"{len(copies)} copies with Subscription Identifiers {ids}, expected 11 and 22")


def redelivery_paho(version: int) -> None:
    """MQTT-4.4.0-1 / MQTT-3.3.1-1: an unacknowledged QoS 1 message is resent on reconnect to the
    session, with DUP set. For v5 the resent PUBLISH must still be the message as forwarded:
    Subscription Identifier (MQTT-3.3.4-3), user properties (MQTT-3.3.2-17) and a Message Expiry
    Interval reduced by the time it waited (MQTT-3.3.2-6)."""
    t = topic("redeliver")
    cid = uid("redeliver")
    v5 = version == MQTTv5
    kw = {} if v5 else {"clean_session": False}
    s = Paho(version, "no-ack", client_id=cid, **kw)
    s.c.manual_ack_set(True)  # receive but never PUBACK
    if v5:
        s.connect(clean_start=True, expiry=60)
        s.subscribe(t, 1, sub_id=7)
    else:
        s.connect()
        s.subscribe(t, 1)
    pub = Paho(version, "pub")
    pub.connect()
    props = pub_props(MessageExpiryInterval=100, UserProperty=[("trace", "abc")]) if v5 else None
    pub.publish(t, b"unacked", qos=1, props=props)
    first = s.get(what="first delivery")
    ensure(not first.dup, "first delivery has DUP set")
    time.sleep(1.3)
    s.kill()
    s2 = Paho(version, "reconnected", client_id=cid, **kw)
    ack = s2.connect(clean_start=False, expiry=60) if v5 else s2.connect()
    ensure(ack.session_present, "session not present on reconnect")
    m = s2.get(what="redelivery of the unacknowledged message")
    problems = []
    if m.payload != b"unacked" or m.qos != 1:
        problems.append(f"redelivered {m.payload!r} QoS {m.qos}")
    if not m.dup:
        problems.append("DUP flag not set on redelivery (MQTT-3.3.1-1)")
    if v5:
        ids = m.prop("SubscriptionIdentifier")
        ids = ids if isinstance(ids, list) else ([] if ids is None else [ids])
        if ids != [7]:
            problems.append(f"Subscription Identifier {ids} on redelivery, first delivery had "
                            f"{first.prop('SubscriptionIdentifier')} (MQTT-3.3.4-3)")
        ups = [tuple(x) for x in (m.prop("UserProperty") or [])]
        if ups != [("trace", "abc")]:
            problems.append(f"user properties {ups} on redelivery")
        exp = m.prop("MessageExpiryInterval")
        if exp is None or exp > 99:
            problems.append(f"Message Expiry Interval {exp} on redelivery after waiting > 1.3 s, "
                            f"first delivery had {first.prop('MessageExpiryInterval')}; expected <= 99 "
                            f"(MQTT-3.3.2-6)")
    ensure(not problems, "; ".join(problems))
    s2.expect_none(0.3, "extra message")


param_check("redelivery_with_dup_after_reconnect_paho_v311", redelivery_paho, MQTTv311)
param_check("v5_redelivery_after_reconnect_keeps_properties_paho", redelivery_paho, MQTTv5)


@check
def keep_alive_timeout_publishes_will_paho_v311() -> None:
    """MQTT-3.1.2-24: no packet within 1.5 x Keep Alive: the broker closes the connection and
    publishes the will."""
    t = topic("keepalive")
    w = will_watcher(MQTTv311, t)
    k = Paho(MQTTv311, "silent").will(t, b"timed-out", qos=1)
    k.c.connect(HOST, PORT, keepalive=1)
    k.c.loop_start()
    ensure(k._connack_ev.wait(T), "no CONNACK")
    k.c.loop_stop()  # the socket stays open but nothing is sent any more (no PINGREQ)
    k._killed = True
    on_cleanup(lambda: k.c.socket() and k.c.socket().close())
    t0 = time.monotonic()
    m = w.get(timeout=T, what="will after the keep alive expired")
    ensure(m.payload == b"timed-out", f"will payload {m.payload!r}")
    ensure(time.monotonic() - t0 >= 0.5, "will published before the keep alive could expire")


@check
def will_retained_paho_v311() -> None:
    """MQTT-3.1.2-17: a will with Will Retain 1 is published as a retained message."""
    t = topic("will-retain")
    k = Paho(MQTTv311, "dying").will(t, b"last-words", qos=1, retain=True)
    k.connect()
    k.kill()
    w = Paho(MQTTv311, "late")
    w.connect()
    on_cleanup(lambda: w.publish(t, b"", qos=1, retain=True))
    deadline = time.monotonic() + T
    m = None
    while m is None and time.monotonic() < deadline:
        w.subscribe(t, 1)
        try:
            m = w.msgs.get(timeout=0.3)
        except queue.Empty:
            w.unsubscribe(t)
    ensure(m is not None, "retained will not found by a later subscriber")
    ensure(m.payload == b"last-words" and m.retain, f"got {m.payload!r} retain={m.retain}")


@check
def retained_wildcard_and_qos_paho_v311() -> None:
    """Retained messages match wildcard filters and are sent at min(stored QoS, granted QoS)."""
    base = topic("ret-wild")
    pub = Paho(MQTTv311, "pub")
    pub.connect()
    for name, q in (("a", 1), ("b", 0)):
        pub.publish(f"{base}/{name}", f"keep-{name}".encode(), qos=q, retain=True)
        on_cleanup(lambda n=name: pub.publish(f"{base}/{n}", b"", qos=1, retain=True))
    time.sleep(0.1)  # the QoS 0 publish has no acknowledgement
    sub = Paho(MQTTv311, "sub")
    sub.connect()
    sub.subscribe(f"{base}/+", 2)
    got = {}
    for _ in range(2):
        m = sub.get(what="retained message for a wildcard subscription")
        got[m.topic.rsplit("/", 1)[1]] = (m.payload, m.qos, m.retain)
    want = {"a": (b"keep-a", 1, True), "b": (b"keep-b", 0, True)}
    ensure(got == want, f"got {got}, expected {want}")


@check
def v5_retained_message_expiry_paho() -> None:
    """MQTT-3.3.2-5: a retained message past its Message Expiry Interval is not sent."""
    t = topic("ret-exp")
    pub = Paho(MQTTv5, "pub")
    pub.connect()
    on_cleanup(lambda: pub.publish(t, b"", qos=1, retain=True))
    pub.publish(t, b"short-lived", qos=1, retain=True, props=pub_props(MessageExpiryInterval=1))
    early = Paho(MQTTv5, "early")
    early.connect()
    early.subscribe(t, 1)
    m = early.get(what="retained message before it expired")
    ensure(m.payload == b"short-lived", f"got {m.payload!r}")
    time.sleep(2.1)
    late = Paho(MQTTv5, "late")
    late.connect()
    late.subscribe(t, 1)
    late.expect_none(what="expired retained message")


@check
def v5_flow_control_receive_maximum_paho() -> None:
    """A subscriber with Receive Maximum 2 gets 100 QoS 1 messages, all, once each, in order
    (MQTT-3.3.4-9, MQTT-4.6.0-6)."""
    t = topic("flow")
    n = 100
    sub = Paho(MQTTv5, "slow")
    cp = Properties(PacketTypes.CONNECT)
    cp.ReceiveMaximum = 2
    sub.connect(props=cp)
    sub.subscribe(t, 1)
    pub = Paho(MQTTv5, "pub")
    pub.connect()
    infos = [pub.c.publish(t, f"{i:03d}".encode(), qos=1) for i in range(n)]
    got = []
    deadline = time.monotonic() + 10
    while len(got) < n and time.monotonic() < deadline:
        try:
            got.append(sub.msgs.get(timeout=0.2).payload)
        except queue.Empty:
            pass
    want = [f"{i:03d}".encode() for i in range(n)]
    ensure(got == want, f"received {len(got)} of {n}; first out of order at "
           f"{next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), len(got))}")
    ensure(all(i.is_published() for i in infos), "not every publish was acknowledged")


@check
def large_payload_paho_v311() -> None:
    """A 512 KiB QoS 1 payload (under the 1 MiB default maximum packet size) arrives intact."""
    t = topic("large")
    payload = os.urandom(512 * 1024)
    sub = Paho(MQTTv311, "sub")
    sub.connect()
    sub.subscribe(t, 1)
    pub = Paho(MQTTv311, "pub")
    pub.connect()
    pub.publish(t, payload, qos=1)
    m = sub.get()
    ensure(m.payload == payload, f"payload of {len(m.payload)} bytes differs from the {len(payload)} sent")


@check
def v5_reason_codes_paho() -> None:
    """PUBACK 0x10 when nobody subscribes (v5 3.4.2.1); UNSUBACK 0x11 for an unknown filter
    (v5 3.11.3)."""
    c = Paho(MQTTv5, "rc")
    c.connect()
    reason = c.publish(topic("nobody"), b"x", qos=1)
    ensure(reason in (0x00, 0x10), f"PUBACK reason {reason}")
    ensure(reason == 0x10, f"PUBACK reason {reason:#x}, expected 0x10 No matching subscribers")
    codes = c.unsubscribe(topic("never-subscribed"))
    ensure(codes == [0x11], f"UNSUBACK reason codes {codes}, expected [0x11]")


@check
def v5_topic_alias_out_of_range_paho() -> None:
    """MQTT-3.3.2-8: a Topic Alias above the broker's Topic Alias Maximum is a protocol error:
    DISCONNECT 0x94 Topic Alias invalid."""
    c = Paho(MQTTv5, "bad-alias")
    ack = c.connect()
    alias_max = getattr(ack.props, "TopicAliasMaximum", 0) if ack.props else 0
    c.c.publish(topic("alias-bad"), b"x", qos=0, properties=pub_props(TopicAlias=alias_max + 1))
    c.wait_disconnected()
    reasons = [(x.reason, x.from_server) for x in c.disconnects]
    ensure(any(r == 0x94 and f for r, f in reasons), f"disconnect reasons {reasons}, expected 0x94 from server")


# ---- shutdown (must stay last) --------------------------------------------------------------


@check
def shutdown_sends_disconnect_0x8b_to_v5() -> None:
    """On SIGTERM v5 clients get DISCONNECT 0x8B (Server shutting down)."""
    c = Paho(MQTTv5, "last")
    c.connect()
    c3 = Paho(MQTTv311, "last-v311")
    c3.connect()
    BROKER.terminate()
    c.wait_disconnected(T)
    ensure(any(x.reason == 0x8B and x.from_server for x in c.disconnects),
           f"disconnect reasons {[(x.reason, x.from_server) for x in c.disconnects]}, expected 0x8B from server")
    c3.wait_disconnected(T)


@check
def shutdown_sigterm_exit_0() -> None:
    BROKER.terminate()  # no-op if the previous check already sent SIGTERM
    ensure(BROKER.term_sent_at is not None, f"broker not running (exit code {BROKER.proc.poll()})")
    left = max(0.0, BROKER.term_sent_at + 10 - time.monotonic())
    try:
        rc = BROKER.proc.wait(left)
    except subprocess.TimeoutExpired:
        raise CheckFailed("broker still running 10 s after SIGTERM") from None
    ensure(rc == 0, f"broker exited with status {rc} after SIGTERM")


# ============================================================================================
# CLUSTER: three `flotilla` processes from the same binary on loopback (--pd-voters 1,2,3, the
# MQTT keyspace bootstrapped by the placement driver), started after the single broker has shut
# down. Clients connect to chosen nodes; every check is named cluster_... and `-k` selects
# among them like among the others. The cluster is started only when a cluster check is
# selected; if it cannot start, one `cluster_start` failure is reported and no cluster check
# runs.

CLUSTER_RANGES = 3 + 16 * 3  # the bootstrap on three PD voters: S, R, M and 16 log slices each
CLUSTER_READY = 120.0  # bound for the cluster to become ready for MQTT, seconds


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http_json(addr: str, path: str, token: str | None = None, timeout: float = 2.0):
    """GET http://addr/path with the admin bearer token, decoded as JSON; raises on transport
    errors and non-2xx answers."""
    req = urllib.request.Request(f"http://{addr}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode("utf-8"))


HTTP_ERRORS = (OSError, ValueError, http.client.HTTPException)


@dataclass
class ClusterNode:
    id: int
    cluster: int  # UDP, --cluster-listen
    admin: int
    mqtt: int
    data_dir: str
    log_path: str
    proc: subprocess.Popen | None = None
    log_file: object = None

    @property
    def admin_addr(self) -> str:
        return f"{HOST}:{self.admin}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def token(self) -> str | None:
        """The admin token the node wrote on first start (data-dir/admin.token), once it exists."""
        try:
            with open(os.path.join(self.data_dir, "admin.token"), encoding="utf-8") as f:
                return f.read().strip() or None
        except OSError:
            return None

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError as e:
            return f"(cannot read node log: {e})"
        return "\n".join(text.splitlines()[-lines:])


class Cluster:
    def __init__(self, binary: str):
        self.binary = binary
        self.tmp = tempfile.mkdtemp(prefix="flotilla-interop-cluster-")
        self.nodes: list[ClusterNode] = []

    def start(self) -> None:
        """Spawns the three nodes and waits until the MQTT keyspace is ready on every node. One
        retry with fresh ports if a node exits during startup (a port taken meanwhile)."""
        last_err = "not started"
        for attempt in range(2):
            self.stop()
            self._spawn(attempt)
            try:
                self._wait_ready()
                return
            except RuntimeError as e:
                last_err = str(e)
                if all(n.alive() for n in self.nodes):
                    break  # slow or stuck rather than a bind failure: another try would not help
        raise RuntimeError(last_err)

    def _spawn(self, attempt: int) -> None:
        root = os.path.join(self.tmp, f"attempt-{attempt}")
        os.makedirs(root, exist_ok=True)
        self.nodes = [
            ClusterNode(i, free_udp_port(), free_port(), free_port(), os.path.join(root, f"node-{i}"),
                        os.path.join(root, f"node-{i}.log"))
            for i in (1, 2, 3)
        ]
        env = dict(os.environ, NO_COLOR="1")
        env.pop("RUST_LOG", None)
        for n in self.nodes:
            cmd = [self.binary, "--node-id", str(n.id), "--pd-voters", "1,2,3",
                   "--cluster-listen", f"{HOST}:{n.cluster}", "--admin-listen", n.admin_addr,
                   "--data-dir", n.data_dir, "--listen", f"{HOST}:{n.mqtt}", "--log", "debug"]
            if n.id != 1:
                cmd += ["--join", f"{HOST}:{self.nodes[0].cluster}"]
            n.log_file = open(n.log_path, "ab")
            n.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=n.log_file, stderr=n.log_file, env=env)

    def _check_alive(self, during: str) -> None:
        for n in self.nodes:
            if not n.alive():
                raise RuntimeError(f"node {n.id} exited with {n.proc.returncode} {during}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + CLUSTER_READY
        # 1. The PD reports the bootstrap done. Any node may be the PD leader; the others answer
        # 421 (or nothing yet): ask each in turn.
        last = "no answer yet"
        while True:
            self._check_alive("while the cluster was starting")
            done = False
            for n in self.nodes:
                try:
                    r = http_json(n.admin_addr, "/v1/pd/report", n.token())
                except HTTP_ERRORS as e:
                    last = f"node {n.id}: {e}"
                    continue
                last = f"node {n.id}: mqtt_bootstrap={r.get('mqtt_bootstrap')!r} ranges={r.get('ranges')}"
                if r.get("mqtt_bootstrap") == "done" and (r.get("ranges") or 0) >= CLUSTER_RANGES:
                    done = True
                    break
            if done:
                break
            if time.monotonic() >= deadline:
                raise RuntimeError(f"MQTT bootstrap not done within {CLUSTER_READY:.0f}s (last report: {last})")
            time.sleep(0.3)
        # 2. Every node knows the ranges.
        for n in self.nodes:
            while True:
                self._check_alive("while the nodes learned the ranges")
                try:
                    count = len(http_json(n.admin_addr, "/v1/kv/ranges", n.token()).get("ranges") or [])
                    last = f"{count} ranges"
                except HTTP_ERRORS as e:
                    count, last = 0, str(e)
                if count >= CLUSTER_RANGES:
                    break
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"node {n.id} did not learn the {CLUSTER_RANGES} ranges within "
                                       f"{CLUSTER_READY:.0f}s (last: {last})")
                time.sleep(0.2)
        # 3. Every MQTT listener accepts connections.
        for n in self.nodes:
            while True:
                try:
                    with socket.create_connection((HOST, n.mqtt), timeout=0.5):
                        break
                except OSError as e:
                    if time.monotonic() >= deadline:
                        raise RuntimeError(f"node {n.id}: MQTT listener {HOST}:{n.mqtt} refuses: {e}") from None
                    time.sleep(0.1)

    def port(self, node: int) -> int:
        return self.nodes[node - 1].mqtt

    def dead(self) -> str | None:
        for n in self.nodes:
            if not n.alive():
                return f"cluster node {n.id} is not running (exit code {n.proc.poll() if n.proc else None})"
        return None

    def stop(self) -> None:
        """SIGTERM to the node processes this script started (by their Popen objects), SIGKILL
        to any still running 5 s later."""
        for n in self.nodes:
            if n.alive():
                n.proc.terminate()
        deadline = time.monotonic() + 5
        for n in self.nodes:
            if n.proc is None:
                continue
            try:
                n.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                n.proc.kill()
                try:
                    n.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            if n.log_file:
                n.log_file.close()
                n.log_file = None

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join(f"--- node {n.id} log (tail, {n.log_path}) ---\n{n.log_tail(lines)}" for n in self.nodes)

    def cleanup_dir(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


CLUSTER: Cluster | None = None
CLUSTER_CHECKS: list[tuple[str, Callable[[], None]]] = []


def cluster_check(fn: Callable[[], None]) -> Callable[[], None]:
    CLUSTER_CHECKS.append((fn.__name__, fn))
    return fn


def cport(node: int) -> int:
    """The MQTT port of cluster node 1, 2 or 3."""
    return CLUSTER.port(node)


@cluster_check
def cluster_cross_node_qos0_qos1_qos2_mosquitto() -> None:
    """mosquitto_sub on node 2 (`#` filter, QoS 2) gets every message mosquitto_pub publishes on
    nodes 1 (3.1.1) and 3 (5.0) at QoS 0, 1 and 2, each once, at the QoS it was published with."""
    base = topic("c-xnode")
    per = 3
    sends = []  # (node, version, topic, qos, payloads)
    want = []  # (topic, qos, payload)
    for node, version in ((1, MQTTv311), (3, MQTTv5)):
        for q in (0, 1, 2):
            t = f"{base}/n{node}/q{q}"
            payloads = [f"n{node}-q{q}-{i}" for i in range(per)]
            sends.append((node, version, t, q, payloads))
            want += [(t, q, p) for p in payloads]
    sub = MosqSub(MQTTv5, [f"{base}/#"], qos=2, client_id=uid("c-sub"), name="mosquitto_sub@node2",
                  port=cport(2), extra=["-C", str(len(want)), "-W", "30"])
    sub.wait_subscribed()
    for node, version, t, q, payloads in sends:
        mosq_pub(version, t, qos=q, lines=payloads, port=cport(node))
    try:
        rc = sub.proc.wait(15)
    except subprocess.TimeoutExpired:
        rc = None
    sub._reader.join(2)
    got = []
    while not sub.msgs.empty():
        m = sub.msgs.get_nowait()
        got.append((m.topic, m.qos, m.payload))
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    dups = sorted({g for g in got if got.count(g) > 1})
    ensure(not missing and not extra and not dups,
           f"node 2 received {len(got)} of {len(want)} messages (mosquitto_sub rc={rc}); "
           f"missing {missing}; unexpected {extra}; more than once {dups}")
    ensure(rc == 0, f"mosquitto_sub -C {len(want)} exited {rc} (output: {sub.output()})")


@cluster_check
def cluster_cross_node_paho_v5_and_v311() -> None:
    """paho subscribers (5.0 and 3.1.1, `+` filter) on nodes 1 and 3 each get the 50 QoS 1
    messages a paho 5.0 publisher sends on node 2, in order; every PUBACK has reason 0."""
    base = topic("c-paho")
    n = 50
    subs = []
    for node in (1, 3):
        for version in (MQTTv5, MQTTv311):
            s = Paho(version, f"sub-{VNAME[version]}@node{node}", port=cport(node))
            s.connect()
            s.subscribe(f"{base}/+/data", 1)
            subs.append(s)
    pub = Paho(MQTTv5, "pub@node2", port=cport(2))
    pub.connect()
    t = f"{base}/dev7/data"
    want = [f"{i:03d}".encode() for i in range(n)]
    infos = [pub.c.publish(t, p, qos=1) for p in want]
    ensure(all(i.rc == 0 for i in infos), f"publish() return codes {[i.rc for i in infos]}")
    deadline = time.monotonic() + 15
    for i in infos:
        i.wait_for_publish(max(0.01, deadline - time.monotonic()))
    unacked = [k for k, i in enumerate(infos) if not i.is_published()]
    ensure(not unacked, f"{len(unacked)} of {n} publishes not acknowledged within 15s (first #{unacked[:1]})")
    problems = []
    reasons = [pub.pub_reasons.get(i.mid) for i in infos]
    bad = [(k, r) for k, r in enumerate(reasons) if r != 0]
    if bad:
        problems.append(f"PUBACK reason not 0 for {len(bad)} of {n} publishes (#seq, reason): {bad}")
    for s in subs:
        got = []
        while len(got) < n and time.monotonic() < deadline:
            try:
                got.append(s.msgs.get(timeout=0.2))
            except queue.Empty:
                pass
        payloads = [m.payload for m in got]
        if payloads != want:
            first_bad = next((k for k, (a, b) in enumerate(zip(payloads, want)) if a != b), None)
            missing = [int(p) for p in want if p not in payloads]
            problems.append(f"{s.name}: received {len(got)} of {n}, missing #{missing}"
                            + (f", out of order at #{first_bad}" if first_bad is not None else ""))
        elif not all(m.topic == t and m.qos == 1 for m in got):
            problems.append(f"{s.name}: topics/QoS {sorted({(m.topic, m.qos) for m in got})}")
    ensure(not problems, "; ".join(problems))
    for s in subs:
        s.expect_none(0.3, "extra copy")


@cluster_check
def cluster_retained_set_and_clear_across_nodes() -> None:
    """A retained message set on node 1 reaches new subscribers on nodes 2 and 3 with the retain
    flag; an empty retained payload on node 3 clears it for a new subscriber on node 1."""
    t = f"{topic('c-retain')}/state"
    payload = f"kept-{uuid.uuid4().hex[:6]}"
    mosq_pub(MQTTv311, t, payload, qos=1, retain=True, port=cport(1))
    on_cleanup(lambda: mosq_pub(MQTTv311, t, null=True, qos=1, retain=True, port=cport(1)))
    for node in (2, 3):
        s = MosqSub(MQTTv5, [t], qos=1, client_id=uid(f"c-ret-n{node}"), name=f"mosquitto_sub@node{node}",
                    port=cport(node))
        s.wait_subscribed()
        m = s.get()
        ensure(m.payload == payload and m.topic == t, f"node {node}: got {m.topic!r} {m.payload!r}")
        ensure(m.retain, f"node {node}: retained message delivered without the retain flag")
        s.expect_none(0.3)
        s.stop()
    mosq_pub(MQTTv5, t, null=True, qos=1, retain=True, port=cport(3))
    s = MosqSub(MQTTv5, [t], qos=1, client_id=uid("c-ret-n1"), name="mosquitto_sub@node1", port=cport(1))
    s.wait_subscribed()
    s.expect_none(QUIET)


@cluster_check
def cluster_takeover_across_nodes() -> None:
    """MQTT-3.1.4-3 across nodes: client id X (session expiry 300) subscribed on node 1 connects
    to node 2: node 1 sends DISCONNECT 0x8E and closes, node 2 answers session present, and a
    publish on node 3 reaches the subscription on its new connection."""
    cid = uid("c-takeover")
    t = topic("c-takeover")
    first = Paho(MQTTv5, "X@node1", client_id=cid, port=cport(1))
    first.connect(clean_start=False, expiry=300)
    first.subscribe(t, 1)
    second = Paho(MQTTv5, "X@node2", client_id=cid, port=cport(2))
    ack = second.connect(clean_start=False, expiry=300)
    first.wait_disconnected()
    reasons = [(x.reason, x.from_server) for x in first.disconnects]
    # paho closes its socket on a DISCONNECT from the server (its is_connected() stays True).
    ensure(any(r == 0x8E and f for r, f in reasons),
           f"connection on node 1 closed with (reason, from server) {reasons}, expected DISCONNECT 0x8E")
    ensure(ack.session_present, "CONNACK on node 2: session present 0, expected 1 (the session from node 1)")
    pub = Paho(MQTTv5, "pub@node3", port=cport(3))
    pub.connect()
    reason = pub.publish(t, b"after-move", qos=1)
    try:
        m = second.get(what="message on the connection on node 2")
    except CheckFailed as e:
        raise CheckFailed(f"{e} (PUBACK reason on node 3: {reason})") from None
    ensure(m.payload == b"after-move" and m.qos == 1, f"got {m.payload!r} QoS {m.qos}")
    ensure(first.msgs.empty(), "the closed connection on node 1 received a message")
    second.expect_none(0.3, "extra copy")
    ensure(not second.disconnects,
           f"connection on node 2 closed: {[(x.reason, x.from_server) for x in second.disconnects]}")


@cluster_check
def cluster_one_connection_per_client_id() -> None:
    """The same client id connects to nodes 1, 2, 3, 1, 2 in turn: every earlier connection is
    closed (DISCONNECT or end of stream; paho's is_connected() stays True after a DISCONNECT from
    the server, so a connection counts as open while no disconnect was seen), the last one alone
    stays open and still gets messages."""
    cid = uid("c-one")
    order = [1, 2, 3, 1, 2]
    conns: list[tuple[int, Paho]] = []
    for k, node in enumerate(order):
        c = Paho(MQTTv5, f"#{k}@node{node}", client_id=cid, port=cport(node))
        c.connect(clean_start=(k == 0), expiry=60)
        conns.append((node, c))
    deadline = time.monotonic() + T
    for _, c in conns[:-1]:
        c._disc_ev.wait(max(0.0, deadline - time.monotonic()))
    time.sleep(QUIET)  # a late takeover would close the last one now
    still_open = [f"#{k}@node{node}" for k, (node, c) in enumerate(conns[:-1]) if not c.disconnects]
    node, last = conns[-1]
    last_closed = [(x.reason, x.from_server) for x in last.disconnects]
    ensure(not still_open and not last_closed,
           f"earlier connections still open: {still_open}; last connection (node {node}) "
           f"{'closed with ' + str(last_closed) if last_closed else 'open'}; "
           f"earlier ones closed with {[[(x.reason, x.from_server) for x in c.disconnects] for _, c in conns[:-1]]}")
    t = topic("c-one")
    last.subscribe(t, 1)
    pub = Paho(MQTTv5, "pub@node3", port=cport(3))
    pub.connect()
    pub.publish(t, b"to-the-last", qos=1)
    m = last.get(what="message on the last connection")
    ensure(m.payload == b"to-the-last", f"got {m.payload!r}")
    got_elsewhere = [f"#{k}" for k, (_, c) in enumerate(conns[:-1]) if not c.msgs.empty()]
    ensure(not got_elsewhere, f"closed connections received messages: {got_elsewhere}")


# --------------------------------------------------------------------------------------------


def run_one(name: str, fn: Callable[[], None], args, not_running: Callable[[], str | None]) -> bool:
    """Runs one check, prints its PASS/FAIL line, tears down what it started; True if it passed."""
    t0 = time.monotonic()
    try:
        why = not_running()
        if why:
            raise CheckFailed(why)
        fn()
        print(f"PASS {name}", flush=True)
        return True
    except Exception as e:  # noqa: BLE001 - one failure must not stop the others
        reason = str(e) or type(e).__name__
        if not isinstance(e, CheckFailed):
            reason = f"{type(e).__name__}: {reason}"
        print(f"FAIL {name}: {reason} ({time.monotonic() - t0:.1f}s)", flush=True)
        if args.verbose:
            traceback.print_exc(file=sys.stdout)
        return False
    finally:
        run_cleanups()


def run_checks(args) -> tuple[int, int]:
    def broker_down(name: str) -> str | None:
        if not BROKER.alive() and not name.startswith("shutdown_"):
            return f"broker is not running (exit code {BROKER.proc.poll()})"
        return None

    passed = failed = 0
    for name, fn in CHECKS:
        if args.select and args.select not in name and not name.startswith("shutdown_"):
            continue
        if run_one(name, fn, args, lambda n=name: broker_down(n)):
            passed += 1
        else:
            failed += 1
    return passed, failed


def run_cluster_checks(args) -> tuple[int, int]:
    """Starts the cluster (if a cluster check is selected), runs the cluster checks, stops it."""
    global CLUSTER
    selected = [(n, f) for n, f in CLUSTER_CHECKS if not args.select or args.select in n]
    if not selected and not (args.select and args.select in "cluster_start"):
        return 0, 0
    CLUSTER = Cluster(os.path.abspath(args.broker))
    t0 = time.monotonic()
    try:
        CLUSTER.start()
    except Exception as e:  # noqa: BLE001
        print(f"FAIL cluster_start: {e} ({time.monotonic() - t0:.1f}s)", flush=True)
        return 0, 1
    print(f"PASS cluster_start ({time.monotonic() - t0:.1f}s)", flush=True)
    passed, failed = 1, 0
    try:
        for name, fn in selected:
            if run_one(name, fn, args, CLUSTER.dead):
                passed += 1
            else:
                failed += 1
    finally:
        run_cleanups()
        CLUSTER.stop()
    return passed, failed


def main() -> int:
    global BROKER, PORT
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--broker", required=True, help="path to the flotilla binary")
    ap.add_argument("-k", dest="select", default=None,
                    help="only run checks whose name contains this (shutdown checks always run)")
    ap.add_argument("-v", dest="verbose", action="store_true", help="print tracebacks of failures")
    args = ap.parse_args()

    for tool in ("mosquitto_pub", "mosquitto_sub"):
        if shutil.which(tool) is None:
            print(f"FAIL setup: {tool} not found on PATH")
            print("0 passed, 1 failed")
            return 1

    passed = failed = 0
    BROKER = Broker(os.path.abspath(args.broker))
    started = time.monotonic()
    try:
        BROKER.start()
        PORT = BROKER.port
    except Exception as e:  # noqa: BLE001
        failed += 1
        print(f"FAIL broker_start: {e}", flush=True)
    else:
        try:
            passed, failed = run_checks(args)
        except BaseException:
            run_cleanups()
            BROKER.kill()
            raise
    BROKER.kill()  # only if it is somehow still running after the shutdown checks
    if failed:
        print("--- broker log (tail) ---")
        print(BROKER.log_tail())
        print("--- end of broker log ---")
        print(f"(full broker log kept at {BROKER.log_path})")
        if BROKER.log_file:
            BROKER.log_file.close()
    else:
        BROKER.cleanup_dir()

    try:
        c_passed, c_failed = run_cluster_checks(args)
    finally:
        if CLUSTER is not None:
            CLUSTER.stop()  # no-op once stopped; by Popen object, never by name
    if CLUSTER is not None:
        if c_failed:
            print(CLUSTER.log_tails())
            print("--- end of cluster node logs ---")
            print(f"(full cluster node logs kept under {CLUSTER.tmp})")
        else:
            CLUSTER.cleanup_dir()
    passed += c_passed
    failed += c_failed
    print(f"(suite took {time.monotonic() - started:.1f}s)")
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
