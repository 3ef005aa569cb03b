"""Which simulcast layer is higher: ranked by the picture size each layer's keyframes declare.

The offer's rid order is only a convention, and senders do not share it: a browser page lists its
encodings as it was written (ours: smallest first), OBS sends rid "0" at full size first, Firefox lists the
highest first. Taking the offer's order as "lowest first" kept OBS viewers on the 240p layer believing it
was the top one. So layers start in the offer's order and are re-ranked as soon as keyframes say their
sizes; a layer whose size is not known yet keeps its place.
"""

from __future__ import annotations

from collections.abc import Sequence


def order_layers(pixels: Sequence[int | None], current: Sequence[int]) -> list[int]:
    """The layers (by their index in the offer) from lowest to highest.

    ``pixels[i]``: the picture size layer ``i``'s keyframes declare (None: not known yet); ``current``: the
    order in force now. The places known layers hold now are refilled with them, smallest first (ties keep
    their present order); layers of unknown size stay where they are."""
    known_places = [place for place, layer in enumerate(current) if pixels[layer] is not None]
    ranked = sorted((current[place] for place in known_places),
                    key=lambda layer: (pixels[layer], current.index(layer)))
    out = list(current)
    for place, layer in zip(known_places, ranked, strict=True):
        out[place] = layer
    return out
