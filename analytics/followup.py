"""After the show: who to follow up with, and the funnel from reservation to purchase (pure functions).

``followups`` reads a show's events (its time on air) and its reservations, and lists every signed-in viewer
who saw or clicked a product and did not buy it: which products (with the moment each was first pushed,
for a link into the replay), how long they stayed, whether they had reserved. Anonymous viewers are not
listed (the shop could not reach them). A viewer is named by the shop's own user id, which the join event
keeps for signed-in viewers; nothing else about them is added.

``funnel``: reservations -> attended (a reserving user joined) -> bought (an attending user's order), beside
every viewer and every buyer of the show.

``message`` composes the follow-up text from templates in Chinese or English (no model needed; the
assistant may rewrite it, with its fact check, where one is configured).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from analytics.events import Event


@dataclass(slots=True)
class _Viewer:
    user: str
    first_ms: int
    dwell_s: float = 0.0
    open_since: int | None = None
    seen: dict[str, int] = field(default_factory=dict)  # product -> first impression
    clicked: dict[str, int] = field(default_factory=dict)
    bought: set[str] = field(default_factory=set)
    spent: float = 0.0


def _viewers(events: Iterable[Event], end_ms: int) -> dict[str, _Viewer]:
    """Signed-in viewers by pseudonym, with what they saw, clicked and bought."""
    viewers: dict[str, _Viewer] = {}
    for e in events:
        if e.kind == "join" and e.viewer and e.data and isinstance(e.data.get("user"), str) \
                and e.data.get("role", "viewer") == "viewer":
            v = viewers.setdefault(e.viewer, _Viewer(e.data["user"], e.ts_ms))
            v.open_since = e.ts_ms if v.open_since is None else v.open_since
            continue
        seen = viewers.get(e.viewer or "")
        if seen is None:
            continue
        v = seen
        if e.kind == "leave" and v.open_since is not None:
            v.dwell_s += max(0, e.ts_ms - v.open_since) / 1000
            v.open_since = None
        elif e.kind == "impression" and e.product:
            v.seen.setdefault(e.product, e.ts_ms)
        elif e.kind == "click" and e.product:
            v.clicked.setdefault(e.product, e.ts_ms)
        elif e.kind == "order":
            if e.product:
                v.bought.add(e.product)
            v.spent += e.value or 0.0
    for v in viewers.values():  # still watching when the show ended
        if v.open_since is not None:
            v.dwell_s += max(0, end_ms - v.open_since) / 1000
            v.open_since = None
    return viewers


def pushed_at(events: Iterable[Event]) -> dict[str, int]:
    """Each product's first push in the show (ms)."""
    first: dict[str, int] = {}
    for e in events:
        if e.kind == "push" and e.product:
            first.setdefault(e.product, e.ts_ms)
    return first


def followups(events: list[Event], reserved: Iterable[str], start_ms: int, end_ms: int,
              seen_before: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """One row per signed-in viewer who saw or clicked a product and did not buy it, longest stay first.
    ``seen_before``: the pseudonyms that joined the room before the show (``returning`` viewers)."""
    reserved_users = set(reserved)
    pushes = pushed_at(events)
    rows: list[dict[str, Any]] = []
    for pseudonym, v in _viewers(events, end_ms).items():
        interested = sorted(set(v.seen) | set(v.clicked), key=lambda p: (v.clicked.get(p) or v.seen.get(p) or 0, p))
        missed = [p for p in interested if p not in v.bought]
        if not missed:
            continue
        rows.append({"user": v.user, "products": [
            {"id": p, "clicked": p in v.clicked, "shown_at_s": round(max(0, pushes.get(p, v.seen.get(p, start_ms))
                                                                          - start_ms) / 1000, 1)} for p in missed],
            "dwell_s": round(v.dwell_s, 1), "reserved": v.user in reserved_users, "bought": sorted(v.bought),
            "returning": pseudonym in seen_before})
    rows.sort(key=lambda r: (-float(r["dwell_s"]), str(r["user"])))
    return rows


def funnel(events: list[Event], reserved: Iterable[str], end_ms: int,
           seen_before: frozenset[str] = frozenset()) -> dict[str, int]:
    """Reservations -> attended -> bought, beside every signed-in viewer, every buyer, and how many of the
    viewers had been in the room before (``returning``)."""
    reserved_users = set(reserved)
    by_pseudonym = _viewers(events, end_ms)
    viewers = by_pseudonym.values()
    attended = {v.user for v in viewers if v.user in reserved_users}
    buyers = {v.user for v in viewers if v.bought or v.spent}
    return {"reserved": len(reserved_users), "attended": len(attended), "bought": len(attended & buyers),
            "viewers": len({v.user for v in viewers}), "buyers": len(buyers),
            "returning": len({v.user for p, v in by_pseudonym.items() if p in seen_before})}


CSV_FIELDS = ("user", "product", "clicked", "shown_at_s", "dwell_s", "reserved", "returning")


def followups_csv(rows: list[dict[str, Any]]) -> str:
    """A row per (viewer, product), for a spreadsheet or the shop's CRM import."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    for row in rows:
        for product in row["products"]:
            writer.writerow([_cell(row["user"]), _cell(product["id"]), int(product["clicked"]), product["shown_at_s"],
                             row["dwell_s"], int(row["reserved"]), int(row["returning"])])
    return out.getvalue()


def _cell(text: str) -> str:
    """A value a spreadsheet shows as text, never runs as a formula (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


TEMPLATES = {
    "en": "Hi! You looked at {products} in \"{title}\". It is still there: watch the moment it was shown "
          "({link}) or buy it now.",
    "zh": "你好！你在「{title}」里看过{products}，现在还能买：回看讲解的那一刻（{link}），或直接下单。",
}


def message(lang: str, title: str, product_titles: list[str], link: str) -> str:
    """The follow-up text for one viewer, from the language's template (English when unknown)."""
    joiner = "、" if lang == "zh" else ", "
    return TEMPLATES.get(lang, TEMPLATES["en"]).format(products=joiner.join(product_titles), title=title, link=link)
