"""A long-running process's memory policy (the server, the autohost, the ingest bridge).

glibc's malloc raises its mmap threshold each time a large block is freed; from then on large buffers (video
frames and audio chunks of 100 KB-1 MB, made and freed many times a second by the encoders and numpy) come
from the heap, which fragments, and the process's RSS creeps up: an autohost grew 12% (211 -> 236 MB) in 20
minutes. A fixed threshold (128 KiB, where glibc starts) and two arenas keep it flat: in-process, the server and
an autohost for 150 s after a 40 s warm-up, +14.9 MB by default, +0.9 MB with this (MALLOC_MMAP_THRESHOLD_=
131072 MALLOC_ARENA_MAX=2 as environment variables do the same before start).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def steady_memory(threshold: int = 128 * 1024, arenas: int = 2) -> bool:
    """Set glibc's malloc policy for this process (before its threads start); False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl (Alpine) has no mallopt
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, threshold)) and bool(mallopt(M_ARENA_MAX, arenas))
