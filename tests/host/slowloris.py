#!/usr/bin/env python3
"""A slowloris client for the host's load tests (loopback only).

Opens COUNT connections to 127.0.0.1:PORT (from --source, any 127/8 address),
sends the start of a request and then one header byte every --interval
seconds, never finishing the headers, for at most --duration seconds. Every
byte would restart an idle timer; only a real header deadline closes these.
Prints one JSON line: how many connections opened, how many the server
answered 503 (refused at accept), how many it closed, and when (ms after
connecting: min / median / max).

  slowloris.py PORT COUNT [--source ADDR] [--interval S] [--duration S]
               [--ready-file F]   touch F once every connection is open
"""
import argparse
import json
import os
import selectors
import socket
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("--source", default="127.0.0.1")
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--ready-file")
    a = ap.parse_args()
    if not a.source.startswith("127."):
        sys.exit("slowloris: loopback sources only")
    sel = selectors.DefaultSelector()
    conns = {}
    t_start = time.monotonic()
    failed = 0
    for _ in range(a.count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((a.source, 0))
            s.connect(("127.0.0.1", a.port))
        except OSError:
            failed += 1
            s.close()
            continue
        s.setblocking(False)
        try:
            s.send(b"GET /healthz HTTP/1.1\r\nHost: loris\r\n")
        except OSError:
            pass
        conns[s] = {"t0": time.monotonic(), "closed": None, "got": b""}
        sel.register(s, selectors.EVENT_READ)
    if a.ready_file:
        open(a.ready_file, "w").close()
    trickle = b"X-Slow: " + b"a" * 4096
    pos = 0
    next_send = time.monotonic() + a.interval
    end = t_start + a.duration
    while time.monotonic() < end and any(c["closed"] is None for c in conns.values()):
        timeout = max(0.0, min(next_send, end) - time.monotonic())
        for key, _ in sel.select(timeout):
            s = key.fileobj
            c = conns[s]
            try:
                d = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                d = b""
            c["got"] += d[:512]
            if not d:
                c["closed"] = time.monotonic()
                sel.unregister(s)
        if time.monotonic() >= next_send:
            b = trickle[pos % len(trickle):pos % len(trickle) + 1]
            pos += 1
            for s, c in conns.items():
                if c["closed"] is None:
                    try:
                        s.send(b)
                    except OSError:
                        pass
            next_send += a.interval
    closed = sorted((c["closed"] - c["t0"]) * 1000 for c in conns.values() if c["closed"] is not None)
    refused = sum(1 for c in conns.values() if c["got"].startswith(b"HTTP/1.1 503"))
    answered = sum(1 for c in conns.values() if c["got"].startswith(b"HTTP/1.1 2"))
    out = {
        "opened": len(conns),
        "connect_failed": failed,
        "refused_503": refused,
        "answered_2xx": answered,
        "closed": len(closed),
        "closed_ms_min": round(closed[0]) if closed else None,
        "closed_ms_median": round(closed[len(closed) // 2]) if closed else None,
        "closed_ms_max": round(closed[-1]) if closed else None,
    }
    for s in conns:
        s.close()
    print(json.dumps(out))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
