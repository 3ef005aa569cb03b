"""An encoder that stamps each picture with its frame number and the wall-clock time it was made (the pixel
code of clients/sources.py), then pushes it the way OBS does: x264 baseline, zerolatency, 30 fps, a keyframe
every 2 s, and AAC; FLV over RTMP (PyAV's FFmpeg), or MPEG-TS over SRT (PyAV's FFmpeg has no libsrt: its
MPEG-TS goes through Debian's ffmpeg, copied as is, to the srt:// address).

    python -m benchmarks.stamped_encoder URL SECONDS

SIGTERM ends the push early, cleanly. A viewer that decodes a picture reads when it was made; this process
prints, at its end, one JSON line with the encoder's own delay (picture made → its packet handed to the
muxer, per frame: median and p95 in ms), so that what the path after the encoder adds is the viewer's
figure minus this one.
"""

from __future__ import annotations

import fractions
import json
import shutil
import signal
import statistics
import subprocess
import sys
import time

import av
import numpy as np

from clients.sources import draw_code, stamp_ms

FPS = 30
WIDTH, HEIGHT = 640, 360
AUDIO_RATE = 44100


def _output(url: str) -> tuple[object, subprocess.Popen[bytes] | None]:
    """The container to mux into: RTMP directly, SRT through Debian's ffmpeg."""
    if url.startswith("rtmp://"):
        return av.open(url, mode="w", format="flv"), None
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg is not None, "SRT needs Debian's ffmpeg (libsrt)"
    relay = subprocess.Popen([ffmpeg, "-hide_banner", "-loglevel", "error",
                              "-analyzeduration", "300000", "-probesize", "65536", "-f", "mpegts", "-i", "pipe:0",
                              "-c", "copy", "-max_interleave_delta", "1", "-f", "mpegts", url],
                             stdin=subprocess.PIPE, bufsize=0)  # unbuffered: each packet leaves as muxed
    assert relay.stdin is not None
    # Audio in its own PES each (FFmpeg's TS muxer gathers ~180 ms of it by default), flushed per packet.
    options = {"flush_packets": "1", "pes_payload_size": "0"}
    return av.open(relay.stdin, mode="w", format="mpegts", options=options), relay


def main() -> None:
    url, seconds = sys.argv[1], float(sys.argv[2])
    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    container, relay = _output(url)
    video = container.add_stream("libx264", rate=FPS)  # type: ignore[attr-defined]
    video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    video.options = {"preset": "veryfast", "tune": "zerolatency", "profile": "baseline", "g": str(2 * FPS),
                     "bf": "0"}
    video.codec_context.time_base = fractions.Fraction(1, FPS)
    audio = container.add_stream("aac", rate=AUDIO_RATE)  # type: ignore[attr-defined]
    audio.layout = "mono"
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = ((xx + yy) % 256).astype(np.uint8)
    chroma = np.full((HEIGHT // 2, WIDTH), 128, np.uint8)  # U and V planes, flat
    own_ms: list[float] = []
    started = time.monotonic()
    samples = 0
    frames = int(seconds * FPS)
    for n in range(frames):
        if stopping:
            break
        delay = started + n / FPS - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        luma = np.roll(base, n * 4, axis=1)
        made = stamp_ms()
        draw_code(luma, n, made)
        frame = av.VideoFrame.from_ndarray(np.concatenate([luma, chroma]), format="yuv420p")
        frame.pts = n
        for packet in video.encode(frame):
            container.mux(packet)  # type: ignore[attr-defined]
        own_ms.append(float((stamp_ms() - made) & 0xFFFFFFFF))
        while samples < (n + 1) * AUDIO_RATE // FPS:  # the tone keeps pace with the pictures
            tone = (np.sin(2 * np.pi * 440 * (samples + np.arange(1024)) / AUDIO_RATE) * 0.2).astype(np.float32)
            sound = av.AudioFrame.from_ndarray(tone.reshape(1, -1), format="fltp", layout="mono")
            sound.sample_rate, sound.pts = AUDIO_RATE, samples
            samples += 1024
            for packet in audio.encode(sound):
                container.mux(packet)  # type: ignore[attr-defined]
    container.close()  # type: ignore[attr-defined]
    if relay is not None:
        assert relay.stdin is not None
        relay.stdin.close()  # its end of stream: it closes the SRT connection
        relay.wait(timeout=10)
    own_ms.sort()
    print(json.dumps({"frames": len(own_ms), "own_ms_p50": statistics.median(own_ms),
                      "own_ms_p95": own_ms[int(0.95 * (len(own_ms) - 1))]}), flush=True)


if __name__ == "__main__":
    main()
