"""One viewer's video estimate shared across the tracks it watches (LiveKit's StreamAllocator, smaller).

A viewer whose one peer connection carries the host, a PK opponent and co-hosts has one bottleneck and one
estimate. Left alone, each track's ``LayerChooser`` would take the whole estimate for itself and together
they would send two or three times what the link carries. ``allocate`` decides, as a pure function, each
track's share: the most important track's whole lowest layer (its full frame rate), then the cheapest
option of every other track in priority order (a track whose cheapest option no longer fits gets nothing:
the least important video pauses first; a paused one needs a margin more to come back), then upgrades in
the same order, and what is left to the first track (the room its probes climb into). While the link's
queue stands full after congestion began (``draining``), the first track has it all and the others pause:
every byte they sent, a lower layer's keyframe above all, went into a queue that drops, and the host's
frames were lost with theirs (LiveKit's allocator pauses the least important tracks when deficient too). ``Adaptation``
applies the shares before each chooser picks within its own (``LayerChooser.share``).

Priorities (lower first): the host on the viewer's own stage, then a PK opponent (another room's host),
then co-hosts. ``viewing_priority`` says which, from where the publisher is and the role it published as.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# A paused video comes back only when its cheapest option fits with this much to spare: resuming costs a
# keyframe (several times a frame's bits) on a link that just had no room, and an estimate that wobbles
# around the cheapest option's need paused and resumed the co-hosts' tiles every second or two.
RESUME_MARGIN = 1.3

STAGE_HOST = 0
PK_OPPONENT = 1
CO_HOST = 2


def viewing_priority(viewer_room: str, source_room: str, role: str) -> int:
    """How much a viewer of ``viewer_room`` cares about a publisher of ``source_room`` who published as
    ``role`` (``host`` or ``cohost``): the lower, the sooner it gets bandwidth."""
    if role == "cohost":
        return CO_HOST
    return STAGE_HOST if source_room == viewer_room else PK_OPPONENT


@dataclass(frozen=True, slots=True)
class Claim:
    """One video track of a viewer: its priority, the bitrates of the options its publisher sends now,
    cheapest first (empty while nothing comes), and which of them is the first at the full frame rate
    (the options before it are the lowest layer's lower frame rates)."""

    priority: int
    rates: tuple[float, ...]
    whole: int = 0
    paused: bool = False  # its video is paused now (it needs ``RESUME_MARGIN`` more to come back)


def allocate(estimate: float | None, claims: Sequence[Claim], fit: float, draining: bool = False,
             ) -> list[float | None]:
    """Each claim's share of ``estimate`` (bit/s for the viewer's video), in the claims' order. ``fit`` is
    the part of a share an option may use (the chooser's own margin): an option of rate r needs r / fit.
    None for every claim while there is no estimate yet (no limit); 0.0 for a claim whose cheapest option
    does not fit beside the more important ones (its video pauses). The most important claim always has
    at least what there is: under its cheapest option it is its own chooser that pauses it, on congestion,
    as for a viewer watching one video. ``draining``: the link's queue stands full; only the most
    important claim is served, with all there is."""
    if estimate is None:
        return [None] * len(claims)
    order = sorted(range(len(claims)), key=lambda i: (claims[i].priority, i))
    if draining and order:
        return [estimate if i == order[0] else 0.0 for i in range(len(claims))]
    shares: list[float | None] = [0.0] * len(claims)
    left = estimate
    served: list[int] = []
    for i in order:  # the cheapest option of each, most important first
        rates = claims[i].rates
        need = min(rates) / fit * (RESUME_MARGIN if claims[i].paused else 1.0) if rates else 0.0
        if i == order[0]:
            # The most important video at its full frame rate before the others get anything: a co-host's
            # minimum (a keyframe can make it look expensive for a moment) never thins the host's frames.
            # It always has all there is (its own chooser decides if it pauses).
            whole = claims[i].whole
            need = min(rates[whole] / fit if 0 <= whole < len(rates) else need, left)
        if need <= left:
            shares[i], left = need, left - need
            served.append(i)
    for i in served:  # then the best each can have of what is left, most important first
        have = shares[i] or 0.0
        better = [r / fit for r in claims[i].rates if r / fit <= have + left]
        best = max(better, default=have)
        if best > have:
            shares[i], left = best, left - (best - have)
    if served:
        first = served[0]
        shares[first] = (shares[first] or 0.0) + left  # the room the first track's probes climb into
    return shares
