"""Simulcast adaptation for a whole node: every simulcast down-track's layer choice and probe padding,
on one timer (no task per subscriber).

Twice a second each down-track's ``LayerChooser`` is given its layers' bitrates and what the down-track
sent since the last time, and the layer it picks becomes the down-track's target (the switch itself
happens on that layer's next keyframe, in the forwarding path). Every 50 ms a down-track that probes
sends its share of padding.
"""

from __future__ import annotations

import asyncio
import logging
import time

from relay.tracks import DownTrack

log = logging.getLogger(__name__)

TICK = 0.05  # seconds between padding rounds
CHOOSE_EVERY = 10  # ticks between layer choices (0.5 s)


class Adaptation:
    def __init__(self) -> None:
        # -> (when, bytes_out, audio_bytes_out) at the last choice
        self._down_tracks: dict[DownTrack, tuple[float, int, int]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._ticks = 0

    def add(self, down: DownTrack) -> None:
        self._down_tracks[down] = (time.monotonic(), down.link.bytes_out, down.link.audio_bytes_out)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(TICK, self._tick)

    def __len__(self) -> int:
        return len(self._down_tracks)

    def _tick(self) -> None:
        self._timer = None
        self._ticks += 1
        now = time.monotonic()
        choose = self._ticks % CHOOSE_EVERY == 0
        try:
            for down, (then, bytes_then, audio_then) in tuple(self._down_tracks.items()):
                chooser = down.chooser
                if down.readyState == "ended" or chooser is None:
                    del self._down_tracks[down]
                    continue
                if choose:
                    # The media the subscriber's link carried since the last choice, audio and video: what
                    # its estimate is weighed against (repairs and padding come and go with loss and probes).
                    elapsed = max(now - then, 1e-3)
                    link = down.link
                    sending_bps = (link.bytes_out - bytes_then) * 8 / elapsed
                    link.sending_bps = sending_bps
                    link.audio_bps = (link.audio_bytes_out - audio_then) * 8 / elapsed
                    self._down_tracks[down] = (now, link.bytes_out, link.audio_bytes_out)
                    down.link.nack_loss(down.packets_sent, now)
                    down.adapt(sending_bps, now)
                if chooser.probe_bps:
                    down.pad(int(chooser.probe_bps * TICK / 8))
        except Exception:  # one broken down-track must not stop every subscriber's adaptation
            log.exception("simulcast adaptation failed")
        finally:
            if self._down_tracks:
                self._timer = asyncio.get_running_loop().call_later(TICK, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._down_tracks.clear()
