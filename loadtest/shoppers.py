"""Shopper behaviour for `loadtest chat`: where viewers come from, how long they stay, what they click and
buy. Every choice is drawn from a seeded generator per viewer, and everything done is counted, so a test
can check that the server's analytics report says exactly what the generator did.

- source: drawn from ``--sources douyin=0.5,wechat=0.3,direct=0.2`` (sent in ``join``; ``direct`` sends none);
- dwell: with ``--dwell-mean S`` a viewer leaves after an exponential time of mean S (0: stays to the end);
- on each product push a viewer sees (live, not recovered): it reports the impression (``product_seen``),
  clicks the card's Buy link with probability ``--click-rate`` (through the server's ``/go`` redirect),
  and a click becomes an order with probability ``--order-rate`` (the shop's signed webhook).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass(frozen=True)
class ShopperConfig:
    sources: tuple[tuple[str, float], ...] = (("direct", 1.0),)
    dwell_mean: float = 0.0
    click_rate: float = 0.0
    order_rate: float = 0.0
    order_secret: str | None = None
    seed: int = 1

    @staticmethod
    def parse_sources(text: str) -> tuple[tuple[str, float], ...]:
        """``douyin=0.5,wechat=0.3,direct`` -> weights (a name without a weight weighs 1)."""
        out = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, weight = part.partition("=")
            out.append((name.strip(), float(weight) if weight else 1.0))
        if not out or any(w < 0 for _, w in out) or sum(w for _, w in out) <= 0:
            raise ValueError("--sources wants NAME=WEIGHT,... with positive weights")
        return tuple(out)


@dataclass
class ShopperCounts:
    """What the generator did; summed over workers with ``merge``."""

    sources: Counter[str] = field(default_factory=Counter)
    impressions: Counter[str] = field(default_factory=Counter)  # product -> viewers who saw it
    clicks: Counter[str] = field(default_factory=Counter)  # product -> viewers who clicked it
    orders: Counter[str] = field(default_factory=Counter)
    revenue: float = 0.0
    left: int = 0
    failed: int = 0
    # Viewers who saw / clicked / ordered anything: the funnel's steps.
    funnel: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"sources": dict(self.sources), "impressions": dict(self.impressions), "clicks": dict(self.clicks),
                "orders": dict(self.orders), "revenue": round(self.revenue, 2), "left": self.left,
                "failed": self.failed, "funnel": dict(self.funnel)}

    @staticmethod
    def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
        total = ShopperCounts()
        for p in parts:
            total.sources.update(p["sources"])
            total.impressions.update(p["impressions"])
            total.clicks.update(p["clicks"])
            total.orders.update(p["orders"])
            total.revenue += p["revenue"]
            total.left += p["left"]
            total.failed += p["failed"]
            total.funnel.update(p["funnel"])
        return total.as_dict()


class Shopper:
    """One viewer's choices and actions."""

    def __init__(self, config: ShopperConfig, index: int, http_base: str, room: str, counts: ShopperCounts) -> None:
        self.config = config
        self.index = index
        self.rng = random.Random(config.seed * 1_000_003 + index)
        names, weights = zip(*config.sources, strict=True)
        self.source = self.rng.choices(names, weights)[0]
        self.dwell = self.rng.expovariate(1 / config.dwell_mean) if config.dwell_mean > 0 else None
        self.device = f"lt-device-{index:08d}"
        self.viewer = ""
        self.http_base = http_base
        self.room = room
        self.counts = counts
        self.seen: set[str] = set()
        self.steps: set[str] = set()

    def _step(self, step: str) -> None:
        if step not in self.steps:
            self.steps.add(step)
            self.counts.funnel[step] += 1

    def join_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"device": self.device}
        if self.source != "direct":
            fields["source"] = self.source
        return fields

    def joined(self, message: dict[str, Any]) -> None:
        self.viewer = message.get("viewer", "")
        self.counts.sources[self.source] += 1

    async def on_product(self, product_id: str, send: Any, http: aiohttp.ClientSession) -> None:
        if product_id in self.seen:
            return
        self.seen.add(product_id)
        send({"type": "product_seen", "product": product_id})
        self.counts.impressions[product_id] += 1
        self._step("saw_product")
        if self.rng.random() >= self.config.click_rate:
            return
        go = f"{self.http_base}/go/{urllib.parse.quote(self.room)}/{urllib.parse.quote(product_id)}"
        try:
            async with http.get(go, params={"v": self.viewer}, allow_redirects=False) as resp:
                location = resp.headers.get("Location", "") if resp.status == 302 else ""
        except aiohttp.ClientError:
            location = ""
        click = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query).get("lr_click", [""])[0]
        if not click:
            self.counts.failed += 1
            return
        self.counts.clicks[product_id] += 1
        self._step("clicked")
        if self.rng.random() >= self.config.order_rate or not self.config.order_secret:
            return
        amount = f"{self.rng.randint(1, 99)}.90"
        body = json.dumps({"order_id": f"lt-{self.config.seed}-{self.index}-{product_id}", "room": self.room,
                           "product": product_id, "amount": amount, "currency": "USD", "click": click}).encode()
        signature = "sha256=" + hmac.new(self.config.order_secret.encode(), body, hashlib.sha256).hexdigest()
        try:
            async with http.post(f"{self.http_base}/api/orders", data=body,
                                 headers={"X-Live-Relay-Signature": signature,
                                          "Content-Type": "application/json"}) as resp:
                ok = resp.status == 200 and not (await resp.json()).get("duplicate")
        except aiohttp.ClientError:
            ok = False
        if ok:
            self.counts.orders[product_id] += 1
            self.counts.revenue += float(amount)
            self._step("ordered")
        else:
            self.counts.failed += 1
