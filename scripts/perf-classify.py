#!/usr/bin/env python3
"""Sorts `perf script` samples of gxconf's SFU into areas (scripts/profile-sfu.sh).

Reads `perf script` output (samples with call chains, `perf record -g`) on
stdin; the optional argument is the run's µs of SFU CPU per forwarded packet,
to turn shares into µs per packet. A sample belongs to the first area whose
markers appear anywhere in its call chain, in the order below (so a STUN
send counts as ICE, not as the forwarding path's sendmmsg); a marker that is
a tuple needs all its parts in the chain; one that starts with "near:" must
be in the chain's first NEAR frames (the media socket's read callback is
below all the forwarding its read hook does, so only a sample in or just
under the callback itself is a read).
"""
import collections
import sys

NEAR = 4

AREAS = [
    ("Go runtime monitor (sysmon)", ["runtime.sysmon"]),
    ("garbage collection", ["runtime.gcBgMarkWorker", "runtime.gcDrain", "runtime.bgsweep", "runtime.bgscavenge"]),
    ("ICE (STUN consent, keepalives, checks)", ["pion/ice/v4.(*Agent)", "pion/stun"]),
    ("receive: interceptors on the direct path (NACK generator, TWCC, RR stats)",
     [("gxconf/sfu.(*Server).readHook", "interceptor")]),
    ("RTCP (SRTCP, interceptors, RTCP loops)", ["srtcp", "rtcp.", "interceptor/pkg", "rtcpLoop", "ReadRTCP", "handleRTCP", "WriteRTCP"]),
    ("forward: sendmmsg in the kernel (UDP/IP, GSO, loopback delivery)", ["____sys_sendmsg", "__sys_sendmmsg", "__sys_sendto"]),
    ("forward: SRTP AES-GCM encryption", ["EncryptRTP", "encryptRTP"]),
    ("receive: SRTP decryption", ["DecryptRTP", "decryptRTP"]),
    ("receive: read system call", ["__sys_recvfrom", "__x64_sys_recvfrom", "recvmsg", "__sys_recvmmsg",
                                   "sfu.(*RawUDP).recvfrom", "near:sfu.(*RawUDP).recvmmsg"]),
    ("forward: SFU work (rewrite, VP8 munging, marshal, batching)", [
        "gxconf/sfu.(*downTrack)", "gxconf/sfu.(*forwarder)", "gxconf/sfu.(*mmsgWriter)",
        "gxconf/sfu.(*directSender)", "gxconf/sfu.(*upTrack)", "gxconf/sfu.(*receiver)"]),
    ("receive: the direct path's own work (readHook: lookups, header parse)", ["gxconf/sfu.(*Server).readHook"]),
    ("receive: pion's read path (UDP mux, ICE conn, demux, SRTP session, track read)", [
        "pion/webrtc", "pion/srtp", "pion/ice", "pion/transport"]),
    ("Go scheduler (idle, wake, netpoll)", [
        "runtime.findRunnable", "runtime.schedule", "runtime.park_m", "runtime.stopm",
        "runtime.mcall", "runtime.netpoll", "runtime.notesleep", "runtime.futex"]),
    ("timers and channels", ["runtime.chansend", "time.sendTime", "runtime.runtimer"]),
]


def main():
    us = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
    counts = collections.Counter()
    total = 0
    stack = []

    def flush():
        nonlocal total
        if not stack:
            return
        total += 1
        chain = "\n".join(stack)
        head = "\n".join(stack[:NEAR])

        def found(m):
            if isinstance(m, tuple):
                return all(p in chain for p in m)
            if m.startswith("near:"):
                return m[5:] in head
            return m in chain

        for name, markers in AREAS:
            if any(found(m) for m in markers):
                counts[name] += 1
                return
        counts["other"] += 1

    for line in sys.stdin:
        if not line.strip():
            flush()
            stack = []
        elif line[0] not in " \t":
            stack = []  # a sample's header line
        else:
            stack.append(line.strip())
    flush()
    if total == 0:
        print("perf-classify.py: no samples", file=sys.stderr)
        sys.exit(1)
    print(f"{'share':>7}  {'µs/pkt':>6}  area")
    for name, n in counts.most_common():
        print(f"{100 * n / total:6.1f} %  {us * n / total:6.2f}  {name}")
    print(f"({total} samples; {us} µs per forwarded packet in this run)")


if __name__ == "__main__":
    main()
