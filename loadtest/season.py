"""`loadtest season`: a season of scheduled shows, played against a real server, and what really happened.

For each show of the season a host schedules it (HTTP), viewers from one pool of signed-in users reserve it,
the host goes live (an aiortc publisher: the show goes live when its host publishes), some viewers come (most
of those who reserved, a few who did not), see the cards the host pushes, click some (through ``/go``) and buy
some of what they clicked (the shop's signed order webhook); then the host ends the show. Every choice is
drawn from one seeded generator, and every act is counted in a ``ShowTruth``: the server's follow-up list and
funnel for that show (``/api/shows/ID/followups``) must say exactly the same (``compare``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import click

from clients.client import LiveClient
from clients.media import MediaSession
from clients.sources import CounterVideoTrack
from protocol import Role, issue_token


@dataclass(frozen=True)
class SeasonConfig:
    shows: int = 3
    audience: int = 24  # signed-in users in the pool
    products: int = 2  # cards per show
    reserve_rate: float = 0.5
    attend_if_reserved: float = 0.8
    attend_otherwise: float = 0.3
    see_rate: float = 0.9  # a card pushed is reported seen
    click_rate: float = 0.5  # a card seen is clicked
    buy_rate: float = 0.5  # a click becomes an order
    seed: int = 1


@dataclass
class ShowTruth:
    show: str = ""
    reserved: set[str] = field(default_factory=set)
    attended: set[str] = field(default_factory=set)
    buyers: set[str] = field(default_factory=set)
    returning: set[str] = field(default_factory=set)
    missed: dict[str, set[str]] = field(default_factory=dict)  # user -> products seen or clicked, not bought

    def funnel(self) -> dict[str, int]:
        return {"reserved": len(self.reserved), "attended": len(self.attended & self.reserved),
                "bought": len(self.attended & self.reserved & self.buyers), "viewers": len(self.attended),
                "buyers": len(self.buyers), "returning": len(self.returning)}


def card(show: int, n: int) -> dict[str, Any]:
    return {"id": f"s{show}-p{n}", "title": f"Item {n} of show {show}", "price": f"{10 + n}.00", "currency": "CNY",
            "url": f"https://shop.example/s{show}/p{n}", "image": f"https://shop.example/s{show}/p{n}.png"}


async def _live(http: aiohttp.ClientSession, base: str, show: str, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            async with http.get(f"{base}/api/shows/{show}") as r:
                if (await r.json())["status"] == "live":
                    return
            await asyncio.sleep(0.1)


async def run_season(base: str, ws: str, secret: str, order_secret: str, room: str = "season",
                     config: SeasonConfig = SeasonConfig()) -> list[ShowTruth]:
    """Play the season against the server at ``base`` (HTTP) / ``ws`` (WebSocket); the truth of each show."""
    rng = random.Random(config.seed)
    users = [f"u{n:03d}" for n in range(config.audience)]
    host_token = issue_token(secret, room, "season-host", Role.HOST, 3600)
    host_auth = {"Authorization": f"Bearer {host_token}"}
    truths: list[ShowTruth] = []
    came_before: set[str] = set()
    orders = 0
    async with aiohttp.ClientSession() as http:
        for number in range(config.shows):
            truth = ShowTruth()
            products = [card(number, n) for n in range(config.products)]
            body = {"title": f"Show {number}", "starts_at": int(time.time() * 1000) + 60_000, "products": products}
            async with http.post(f"{base}/api/rooms/{room}/schedule", json=body, headers=host_auth) as r:
                r.raise_for_status()
                truth.show = (await r.json())["id"]
            tokens = {u: issue_token(secret, room, u, Role.VIEWER, 3600) for u in users}
            for user in users:
                if rng.random() < config.reserve_rate:
                    async with http.post(f"{base}/api/shows/{truth.show}/reservation",
                                         headers={"Authorization": f"Bearer {tokens[user]}"}) as r:
                        r.raise_for_status()
                    truth.reserved.add(user)
            coming = [u for u in users if rng.random() < (config.attend_if_reserved if u in truth.reserved
                                                          else config.attend_otherwise)]
            async with LiveClient(ws, room, host_token) as host:
                publisher = await MediaSession.publish(host, [CounterVideoTrack(160, 120)])
                try:
                    await _live(http, base, truth.show)
                    viewers = {u: LiveClient(ws, room, tokens[u]) for u in coming}
                    for viewer in viewers.values():
                        await viewer.connect()
                    truth.attended = set(coming)
                    truth.returning = truth.attended & came_before
                    for product in products:
                        await host.request({"type": "product", "product": product})
                    for user, viewer in viewers.items():
                        for product in products:
                            if rng.random() >= config.see_rate:
                                continue
                            await viewer.send({"type": "product_seen", "product": product["id"]})
                            truth.missed.setdefault(user, set()).add(product["id"])
                            if rng.random() >= config.click_rate:
                                continue
                            assert viewer.joined is not None  # (connect() returns once joined)
                            ref = await _click(http, base, room, product["id"], viewer.joined["viewer"])
                            if rng.random() < config.buy_rate:
                                orders += 1
                                await _order(http, base, order_secret, room, f"o-{config.seed}-{orders}",
                                             product, ref)
                                truth.buyers.add(user)
                                truth.missed[user].discard(product["id"])
                    for viewer in viewers.values():
                        await viewer.close()
                finally:
                    await publisher.close()
            truth.missed = {u: p for u, p in truth.missed.items() if p}
            came_before |= truth.attended
            truths.append(truth)
            await _end(http, base, truth.show, host_auth)
    return truths


async def _click(http: aiohttp.ClientSession, base: str, room: str, product: str, viewer: str) -> str:
    async with http.get(f"{base}/go/{room}/{product}", params={"v": viewer}, allow_redirects=False) as r:
        location = r.headers["Location"]
    return urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["lr_click"][0]


async def _order(http: aiohttp.ClientSession, base: str, secret: str, room: str, order_id: str,
                 product: dict[str, Any], click_ref: str) -> None:
    body = json.dumps({"order_id": order_id, "room": room, "product": product["id"], "amount": product["price"],
                       "currency": product["currency"], "click": click_ref}).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    async with http.post(f"{base}/api/orders", data=body,
                         headers={"X-Live-Relay-Signature": signature, "Content-Type": "application/json"}) as r:
        r.raise_for_status()


async def _end(http: aiohttp.ClientSession, base: str, show: str, host_auth: dict[str, str]) -> None:
    # The writer keeps the events a moment before they are in the store: the host ends a little after the
    # last viewer left, as a host says goodbye.
    await asyncio.sleep(1.5)
    async with http.post(f"{base}/api/shows/{show}/end", headers=host_auth) as r:
        r.raise_for_status()


async def reported(base: str, show: str, host_auth: dict[str, str]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/api/shows/{show}/followups",
                                                         headers=host_auth) as r:
        r.raise_for_status()
        data: dict[str, Any] = await r.json()
        return data


def compare(truth: ShowTruth, report: dict[str, Any]) -> list[str]:
    """Where the server's report differs from what the season did (empty: exactly the same)."""
    problems = []
    if report["funnel"] != truth.funnel():
        problems.append(f"funnel {report['funnel']} != {truth.funnel()}")
    listed = {row["user"]: {p["id"] for p in row["products"]} for row in report["followups"]}
    if listed != truth.missed:
        problems.append(f"follow-ups {sorted(listed.items())} != {sorted(truth.missed.items())}")
    flags = {row["user"]: (row["reserved"], row["returning"]) for row in report["followups"]}
    wanted = {u: (u in truth.reserved, u in truth.returning) for u in truth.missed}
    if flags != wanted:
        problems.append(f"reserved/returning {flags} != {wanted}")
    return problems


@click.command("season")
@click.option("--url", required=True, help="The server's HTTP base, e.g. http://127.0.0.1:8080")
@click.option("--secret", required=True, envvar="LIVE_RELAY_SECRET", help="The server's token secret.")
@click.option("--order-secret", required=True, envvar="LIVE_RELAY_ORDER_SECRET", help="Its order webhook's secret.")
@click.option("--room", default="season", show_default=True)
@click.option("--shows", default=3, show_default=True)
@click.option("--audience", default=24, show_default=True, help="Signed-in users in the pool.")
@click.option("--seed", default=1, show_default=True)
def season_command(url: str, secret: str, order_secret: str, room: str, shows: int, audience: int, seed: int) -> None:
    """A season of scheduled shows (reservations, attendance, clicks, orders, returning viewers), then each
    show's follow-up list and funnel as the server reports them, checked against what was done."""
    base = url.rstrip("/")
    ws = base.replace("http", "ws", 1) + "/ws"

    async def main() -> int:
        truths = await run_season(base, ws, secret, order_secret, room,
                                  SeasonConfig(shows=shows, audience=audience, seed=seed))
        host_auth = {"Authorization": f"Bearer {issue_token(secret, room, 'season-host', Role.HOST, 600)}"}
        failed = 0
        for truth in truths:
            report = await reported(base, truth.show, host_auth)
            problems = compare(truth, report)
            failed += bool(problems)
            click.echo(f"show {truth.show}: funnel {report['funnel']}, {len(report['followups'])} to follow up"
                       + ("" if not problems else " -- DIFFERS: " + "; ".join(problems)))
        return failed

    raise SystemExit(1 if asyncio.run(main()) else 0)
