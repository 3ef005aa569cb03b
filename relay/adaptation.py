"""Simulcast adaptation for a whole node: every simulcast down-track's layer choice and probe padding,
on one timer (no task per subscriber).

Twice a second each down-track's ``LayerChooser`` is given its layers' bitrates and what the down-track
sent since the last time, and the layer it picks becomes the down-track's target (the switch itself
happens on that layer's next keyframe, in the forwarding path). A link whose congestion has just begun
(``SubscriberLink.alarm``) is chosen for at once, from the feedback that said so, with the rates measured at
the last choice (and at the next tick, should that fail).
A subscriber whose one connection carries several videos has its estimate shared among them first
(relay/allocation.py). Every 50 ms a down-track that probes sends its share of padding.
"""

from __future__ import annotations

import asyncio
import logging
import time

from relay.allocation import Claim, allocate
from relay.chooser import FIT
from relay.link import SubscriberLink
from relay.tracks import DownTrack

log = logging.getLogger(__name__)

TICK = 0.05  # seconds between padding rounds
CHOOSE_EVERY = 10  # ticks between layer choices (0.5 s)


class Adaptation:
    def __init__(self) -> None:
        # -> (when, link bytes_out, link audio_bytes_out, the track's own octets) at the last choice
        self._down_tracks: dict[DownTrack, tuple[float, int, int, int]] = {}
        self._own_bps: dict[DownTrack, float] = {}  # what each sent, as measured at the last choice
        self._timer: asyncio.TimerHandle | None = None
        self._ticks = 0

    def add(self, down: DownTrack) -> None:
        self._down_tracks[down] = (time.monotonic(), down.link.bytes_out, down.link.audio_bytes_out,
                                   down.octets_sent)
        down.link.on_alarm = self._alarmed
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(TICK, self._tick)

    def __len__(self) -> int:
        return len(self._down_tracks)

    def _tick(self) -> None:
        self._timer = None
        self._ticks += 1
        now = time.monotonic()
        try:
            for down in [d for d in self._down_tracks if d.readyState == "ended" or d.chooser is None]:
                del self._down_tracks[down]
                self._own_bps.pop(down, None)
            if self._ticks % CHOOSE_EVERY == 0:
                self._choose(now)
            else:
                alarmed = {d.link for d in self._down_tracks if d.link.alarm}
                if alarmed:
                    self._choose_again(alarmed, now)
            for down in self._down_tracks:
                probe_bps = down.chooser.probe_bps if down.chooser is not None else 0
                if probe_bps:
                    down.pad(int(probe_bps * TICK / 8))
        except Exception:  # one broken down-track must not stop every subscriber's adaptation
            log.exception("simulcast adaptation failed")
        finally:
            if self._down_tracks:
                self._timer = asyncio.get_running_loop().call_later(TICK, self._tick)

    def _choose(self, now: float) -> None:
        """Each subscriber's link: what it carried since the last choice, its estimate shared among its
        videos (when its connection carries several), then each video's layer."""
        by_link: dict[SubscriberLink, list[tuple[DownTrack, float]]] = {}
        for down, (then, bytes_then, audio_then, octets_then) in tuple(self._down_tracks.items()):
            # The media the subscriber's link carried since the last choice, audio and video: what its
            # estimate is weighed against (repairs and padding come and go with loss and probes).
            elapsed = max(now - then, 1e-3)
            link = down.link
            link.sending_bps = (link.bytes_out - bytes_then) * 8 / elapsed
            link.audio_bps = (link.audio_bytes_out - audio_then) * 8 / elapsed
            own_bps = (down.octets_sent - octets_then) * 8 / elapsed
            self._down_tracks[down] = (now, link.bytes_out, link.audio_bytes_out, down.octets_sent)
            self._own_bps[down] = own_bps
            by_link.setdefault(link, []).append((down, own_bps))
        for link, downs in by_link.items():
            # NACKs are the link's, whichever video they were for: weighed against what all its videos sent.
            link.nack_loss(sum(down.packets_sent for down, _ in downs), now)
            _adapt_link(link, downs, now)

    def _alarmed(self, link: SubscriberLink) -> None:
        """Congestion just began on ``link``: its videos are chosen for now, not at the next tick."""
        try:
            self._choose_again({link}, time.monotonic())
        except Exception:  # the feedback's path goes on; the next tick tries again (the alarm is still up)
            log.exception("simulcast adaptation failed")

    def _choose_again(self, links: set[SubscriberLink], now: float) -> None:
        """Choose for ``links`` now, between the regular choices, with the rates measured at the last one
        (50 ms of sending is too short to measure)."""
        by_link: dict[SubscriberLink, list[tuple[DownTrack, float]]] = {}
        for down in self._down_tracks:
            if down.link in links and down.readyState != "ended" and down.chooser is not None:
                by_link.setdefault(down.link, []).append((down, self._own_bps.get(down, 0.0)))
        for link, downs in by_link.items():
            _adapt_link(link, downs, now)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._down_tracks.clear()
        self._own_bps.clear()


def _adapt_link(link: SubscriberLink, downs: list[tuple[DownTrack, float]], now: float) -> None:
    """Share the link's estimate among its videos, then let each choose its layer (``own_bps``: what it sent
    lately, weighed against its share; a video alone on its link is weighed by what the link sent)."""
    _share_out(link, [down for down, _ in downs], now)
    for down, own_bps in downs:
        shared = down.chooser is not None and down.chooser.share is not None
        down.adapt(own_bps if shared else link.sending_bps, now)
    link.alarm = False  # (read by the choosers just now: see Situation.alarm)


def _share_out(link: SubscriberLink, downs: list[DownTrack], now: float) -> None:
    """Give each of a link's videos its share of the link's video estimate (``relay.allocation``); a
    link with one video leaves it the whole estimate."""
    choosers = [d.chooser for d in downs if d.chooser is not None]
    if len(choosers) < 2:
        for chooser in choosers:
            chooser.share, chooser.leads = None, True
        return
    claims = [_claim(d, now) for d in downs if d.chooser is not None]
    shares = allocate(link.video_estimate_bps, claims, FIT, draining=link.draining(now))
    first = min(range(len(claims)), key=lambda i: (claims[i].priority, i))
    for i, (chooser, share) in enumerate(zip(choosers, shares, strict=True)):
        chooser.share, chooser.leads = share, i == first


def _claim(down: DownTrack, now: float) -> Claim:
    """What a video can be given: the bitrates of what its publisher sends now, within its subscriber's own
    wish (a small tile), cheapest first, and the first of them at the full frame rate."""
    chooser = down.chooser
    if chooser is None or chooser.paused_by_subscriber or chooser.waiting_to_resume(now):
        return Claim(down.priority, ())
    top = chooser.max_layer
    rungs = [(temporal, rate) for layer, temporal, rate in down.source.rungs(now)
             if rate is not None and (top is None or layer <= top)]
    whole = next((i for i, (temporal, _) in enumerate(rungs) if temporal is None), 0)
    return Claim(down.priority, tuple(rate for _, rate in rungs), whole, paused=chooser.current is None)
