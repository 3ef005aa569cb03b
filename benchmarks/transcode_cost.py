"""What one show's transcode to H.264 costs (relay/transcode.py: LL-HLS and restreaming of a VP8 or VP9 show).

    python -m benchmarks.transcode_cost [--runs 3] [--seconds 10] [--sizes 640x480 1280x720] [--codecs vp8 vp9]

For each codec and size: the test pattern (``clients.sources``' moving picture with its code) encoded once
with libvpx as a browser would (realtime, about 1.5 Mbit/s at 640x480, 2.5 at 1280x720; not timed), then
handed to a ``Transcoder`` at 30 frames a second for ``--seconds``, as the relay hands it a publisher's
frames; the process's CPU time over that window (the worker thread's decode and encode, and the loop's
part) divided by the wall time is the cost in cores. Single-layer VP9: a VP9 SVC show's top layer costs
the same, plus its keyframes' two lower layer frames. Prints one row per run and the medians; nothing else
should run meanwhile (the machine's other load is printed beside).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import time
from pathlib import Path

from clients.sources import LIBVPX as ENCODERS
from clients.sources import pre_encode
from relay.transcode import Transcoder

RATES = {(640, 480): 1_500_000, (1280, 720): 2_500_000}


def encoded(codec: str, width: int, height: int, frames: int) -> list[tuple[bytes, bool]]:
    """The test pattern as ``codec`` frames (bytes, keyframe), a keyframe every 2 s."""
    kbps = RATES.get((width, height), 2_000_000) // 1000
    return pre_encode(codec, width, height, fps=30, seconds=frames / 30, kbps=kbps, gop=60)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


async def one_run(codec: str, frames: list[tuple[bytes, bool]]) -> dict[str, float]:
    out: list[bool] = []
    transcoder = Transcoder(codec, lambda data, ts, key: out.append(key), lambda: None)
    await asyncio.sleep(0.2)  # (its worker thread up)
    cpu0, busy0, t0 = cpu_seconds(), machine_busy(), time.monotonic()
    for n, (data, keyframe) in enumerate(frames):
        due = t0 + n / 30
        if (wait := due - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        transcoder.put(data, n * 3000, keyframe)
    await asyncio.sleep(0.3)  # the last frames through the worker
    wall = time.monotonic() - t0
    cores = (cpu_seconds() - cpu0) / wall
    other = (machine_busy() - busy0) / wall - cores
    transcoder.close()
    return {"cores": round(cores, 3), "frames_in": transcoder.frames_in, "frames_out": transcoder.frames_out,
            "dropped": transcoder.dropped, "failures": transcoder.failures, "other_load": round(other, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1280x720"])
    parser.add_argument("--codecs", nargs="+", default=["vp8", "vp9"], choices=sorted(ENCODERS))
    a = parser.parse_args()
    for size in a.sizes:
        width, height = (int(v) for v in size.split("x"))
        for codec in a.codecs:
            frames = encoded(codec, width, height, int(a.seconds * 30))
            rows = [asyncio.run(one_run(codec, frames)) for _ in range(a.runs)]
            for i, row in enumerate(rows, 1):
                print(f"run {i} {codec} {size}: {row}", flush=True)
            cores = [r["cores"] for r in rows]
            print(f"{codec} {size}: median {statistics.median(cores):.3f} cores ({min(cores):.3f}-{max(cores):.3f}) "
                  f"over {a.runs} runs of {a.seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
