"""What conversion analytics records: one event row per moment the relay sees first-hand.

Kinds, and what their fields mean (``docs/analytics.md`` is the reference for what is stored and why):

- ``join`` / ``leave``: a viewer entered / left a room's show. ``source`` is where they came from (the
  page's ``src``/``utm_source`` or referrer host, or a client's ``source`` field); ``leave`` carries the
  dwell in seconds as ``value``.
- ``push``: a product card was pushed (``viewer`` is the pseudonymous pusher, ``ref`` the event's seq).
- ``impression``: a viewer's page showed a product card. ``click``: a viewer followed its Buy link
  (through the server's redirect); ``ref`` is the click reference an order can name.
- ``order``: the shop's webhook reported an order: ``ref`` the order id (kept once), ``value`` the
  amount, ``data`` currency and the click reference it was attributed through.
- ``comment``, ``like`` (``value``: how many), ``stage`` (a co-host or PK moment, ``data`` says which).
- ``quality``: a viewer's client stats: ``data`` holds first-frame time, freezes, message latency.
- ``question``: the room's assistant saw a viewer's question (its text is not kept): ``data.outcome``
  (answered, suggested, unanswered, repeated, rate_limited) and ``engine``; ``product`` what it was about.

Viewer ids are pseudonyms: an HMAC of the viewer's identity with the deployment's secret and the room, so
the same viewer has the same id within a room and an unrelated one in another; no IP address is kept.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

KINDS = ("join", "leave", "push", "impression", "click", "order", "comment", "like", "stage", "quality",
         "question")


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs several times more per event
class Event:
    ts_ms: int
    room: str
    show: str
    kind: str
    viewer: str | None = None
    product: str | None = None
    source: str | None = None
    value: float | None = None
    ref: str | None = None
    data: dict[str, Any] | None = None


def pseudonym(secret: str, room: str, identity: str) -> str:
    """A stable per-room pseudonym for a viewer identity (a user id, or a browser's random id)."""
    digest = hmac.new(secret.encode(), f"{room}\x00{identity}".encode(), hashlib.sha256).hexdigest()
    return digest[:16]
