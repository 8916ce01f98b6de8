#!/usr/bin/env python3
"""A userspace packet "netem" for kernels without sch_netem (Python 3 standard library only).

It is a wire made of two TUN devices: DEV_A is created in the namespace the shaper starts in,
DEV_B in the namespace given by --netns-b (a /run/netns/NAME path; entered with setns(2) only to
create the device). Every IPv4 packet the kernel routes into one device is read, held, and written
into the other device, where the other namespace's kernel receives it as if from a link. TUN
devices are layer 3 (IFF_TUN | IFF_NO_PI): no ARP, no Ethernet header, no GSO packets (the kernel
segments before handing packets to a TUN without IFF_VNET_HDR), MTU 1500 like the veth.

scripts/netem/netns.sh `shaper` starts it and `shaper-routes` points the peer's /32 at the
devices. Modes (each direction shaped independently):

  --delay MS --jitter MS   hold each packet MS ± JITTER ms (normal distribution, clipped at 0).
                           Packets keep their order (a packet is never sent before the one in
                           front of it, like netem with a rate/pfifo child): the jitter shows as
                           a varying RTT, not as reordering.
  --reorder PCT            like `netem delay DELAY reorder PCT`: PCT% of packets are sent at once,
                           the rest after DELAY ms, so the immediate ones overtake queued ones.

Bounded: at most --limit packets are queued per direction (more are dropped and counted), it
exits after --max-seconds, on SIGTERM/SIGINT, when stdin reaches EOF (the parent's pipe closes)
and when its parent dies (PR_SET_PDEATHSIG). On exit it prints one line:
  stats packets=N reordered=N overtook=N dropped=N a2b=N b2a=N
where "reordered" counts packets written after a later-read packet of the same direction (the
overtaken ones) and "overtook" the packets sent at once while earlier ones were still held.
Prints "ready DEV_A DEV_B" once both devices exist.
"""

import argparse
import ctypes
import fcntl
import heapq
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1

libc = ctypes.CDLL(None, use_errno=True)


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dev-a", default="fyta")
    p.add_argument("--dev-b", default="fytb")
    p.add_argument("--netns-b", required=True, help="/run/netns/NAME of the other namespace")
    p.add_argument("--delay", type=float, default=0.0, help="ms")
    p.add_argument("--jitter", type=float, default=0.0, help="ms (standard deviation)")
    p.add_argument("--reorder", type=float, default=0.0, help="percent sent immediately")
    p.add_argument("--limit", type=int, default=20000, help="queued packets per direction")
    p.add_argument("--max-seconds", type=float, default=300.0)
    p.add_argument("--seed", type=int)
    args = p.parse_args()
    rng = random.Random(args.seed)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    fd_a = open_tun(args.dev_a)
    setns(args.netns_b)
    fd_b = open_tun(args.dev_b)
    if libc.setns(home, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns back")
    os.close(home)

    stop = False

    def on_signal(_sig, _frm):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    out_of = {fd_a: fd_b, fd_b: fd_a}
    # Per direction: heap of (send_at, seq, packet), last scheduled send time, highest seq written.
    queues = {fd_a: [], fd_b: []}
    last_at = {fd_a: 0.0, fd_b: 0.0}
    max_written = {fd_a: -1, fd_b: -1}
    seq = 0
    stats = {"packets": 0, "reordered": 0, "overtook": 0, "dropped": 0, "a2b": 0, "b2a": 0}
    deadline = time.monotonic() + args.max_seconds
    delay = args.delay / 1000.0
    jitter = args.jitter / 1000.0
    poller = select.poll()
    poller.register(fd_a, select.POLLIN)
    poller.register(fd_b, select.POLLIN)
    try:
        poller.register(sys.stdin.fileno(), select.POLLIN | select.POLLHUP)
    except (OSError, ValueError):
        pass
    print(f"ready {args.dev_a} {args.dev_b}", flush=True)

    while not stop:
        now = time.monotonic()
        if now >= deadline:
            break
        # Write out everything that is due.
        nxt = deadline
        for src, q in queues.items():
            while q and q[0][0] <= now:
                _, s, pkt = heapq.heappop(q)
                if s < max_written[src]:
                    stats["reordered"] += 1
                else:
                    max_written[src] = s
                try:
                    os.write(out_of[src], pkt)
                except OSError:
                    stats["dropped"] += 1
            if q:
                nxt = min(nxt, q[0][0])
        timeout_ms = max(0, int((nxt - time.monotonic()) * 1000 + 0.999))
        for fd, ev in poller.poll(min(timeout_ms, 1000)):
            if fd not in queues:
                if ev & (select.POLLHUP | select.POLLERR) or not os.read(fd, 4096):
                    stop = True
                continue
            for _ in range(64):  # drain a burst
                try:
                    pkt = os.read(fd, 65536)
                except BlockingIOError:
                    break
                t = time.monotonic()
                q = queues[fd]
                if len(q) >= args.limit:
                    stats["dropped"] += 1
                    continue
                if args.reorder > 0:
                    if rng.random() * 100 < args.reorder:
                        at = t
                        if q:
                            stats["overtook"] += 1
                    else:
                        at = t + delay
                else:
                    at = t + max(0.0, rng.gauss(delay, jitter) if jitter > 0 else delay)
                    at = max(at, last_at[fd])  # keep order: jitter without reordering
                    last_at[fd] = at
                heapq.heappush(q, (at, seq, pkt))
                seq += 1
                stats["packets"] += 1
                stats["a2b" if fd == fd_a else "b2a"] += 1
    print("stats " + " ".join(f"{k}={v}" for k, v in stats.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
