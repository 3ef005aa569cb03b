"""Conversion analytics on both databases: SQLite (the embedded default) and a real PostgreSQL server.

The store contract, the writer riding out a database outage, the report's arithmetic, and a show driven
end to end through a real server (viewers with sources joining, product pushes, impressions, Buy clicks
through the redirect, signed orders from the shop's webhook) whose report must reproduce exactly what
the test did.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from analytics.events import Event
from analytics.report import build_report, write_report
from analytics.store import PostgresStore, SqliteStore, Store
from analytics.writer import AnalyticsWriter
from clients.client import LiveClient
from protocol import Role
from tests import postgres_server
from tests.conftest import eventually

SKIP_MISSING = os.environ.get("LIVE_RELAY_SKIP_MISSING") == "1"
ORDER_SECRET = "shop-webhook-secret"


@pytest.fixture(scope="module")
def postgres() -> Iterator[postgres_server.PostgresServer]:
    if not postgres_server.available():
        if SKIP_MISSING:
            pytest.skip("PostgreSQL is not installed")
        pytest.fail("PostgreSQL is not installed: run tools/setup.sh (apt-get install postgresql)")
    server = postgres_server.PostgresServer()
    server.start()
    yield server
    server.stop()
    server.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path) -> str:
    """A fresh database URL of each kind."""
    if request.param == "sqlite":
        return str(tmp_path / "analytics.sqlite3")
    pg: postgres_server.PostgresServer = request.getfixturevalue("postgres")
    name = f"t{os.urandom(4).hex()}"
    import psycopg

    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg.dsn.rsplit("/", 1)[0] + "/" + name


def open_db(url: str) -> Store:
    from pathlib import Path

    return PostgresStore(url) if url.startswith("postgresql://") else SqliteStore(Path(url))


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    s = open_db(database)
    s.migrate()
    yield s
    s.close()


def ev(ts: int, kind: str, **fields: object) -> Event:
    return Event(ts, "room1", "show1", kind, **fields)  # type: ignore[arg-type]


def test_store_contract(store: Store) -> None:
    assert store.migrate() == store.migrate()  # migrations run once
    store.insert([ev(2000, "join", viewer="a", source="douyin"), ev(1000, "push", product="p1", ref="3"),
                  Event(1500, "room2", "other", "join", viewer="z")])
    got = store.events("room1")
    assert [(e.ts_ms, e.kind) for e in got] == [(1000, "push"), (2000, "join")]
    assert got[1].source == "douyin" and got[0].product == "p1"
    order = ev(3000, "order", ref="o-1", value=19.9, data={"currency": "CNY", "click": "c1"})
    assert store.insert_order(order) is True
    assert store.insert_order(order) is False  # the webhook delivered it twice: kept once
    assert [e.data for e in store.events("room1") if e.kind == "order"] == [{"currency": "CNY", "click": "c1"}]
    assert store.shows("room1") == [("show1", 1000, 3000)]
    assert store.delete_before(1600) == 2  # retention, in every room
    assert [e.ts_ms for e in store.events("room1")] == [2000, 3000]


def test_report_arithmetic() -> None:
    minute = 60_000
    events = [
        ev(0, "join", viewer="host", data={"role": "host"}),
        ev(0, "join", viewer="a", source="douyin"), ev(0, "join", viewer="b", source="douyin"),
        ev(10_000, "join", viewer="c", source="wechat"),
        ev(20_000, "push", product="p1", ref="1", data={"title": "Silk scarf"}),
        ev(21_000, "impression", viewer="a", product="p1"), ev(22_000, "impression", viewer="c", product="p1"),
        ev(25_000, "click", viewer="a", product="p1", ref="k1"),
        ev(25_000, "leave", viewer="b", value=25.0),
        ev(90_000, "order", ref="o1", product="p1", value=30.0, data={"click": "k1"}),
        ev(100_000, "comment", viewer="a"), ev(110_000, "like", viewer="c", value=5),
        ev(130_000, "quality", viewer="a", data={"freezes": 2, "first_frame_ms": 1500}),
        ev(130_000, "quality", viewer="c", data={"freezes": 0, "first_frame_ms": 300}),
        ev(2 * minute + 10_000, "leave", viewer="c", value=120.0),
    ]
    report = build_report(events, now_ms=3 * minute)
    funnel = {step["step"]: step["viewers"] for step in report["funnel"]}
    assert funnel == {"entered": 3, "stayed_30s": 2, "saw_product": 2, "clicked": 1, "ordered": 1}
    assert report["funnel"][1]["of_entered"] == round(2 / 3, 4)
    assert report["audience"]["watching"] == [3, 2, 2, 1] and report["audience"]["exits"] == [1, 0, 1, 0]
    assert report["audience"]["pushes"] == [{"at_s": 20.0, "product": "p1"}]
    sources = {s["source"]: s for s in report["sources"]}
    assert sources["douyin"]["viewers"] == 2 and sources["douyin"]["median_dwell_s"] == (180 + 25) / 2
    assert sources["douyin"]["click_rate"] == 0.5 and sources["wechat"]["order_rate"] == 0.0
    product = report["products"][0]
    assert (product["impressions"], product["clicks"], product["orders"], product["revenue"]) == (2, 1, 1, 30.0)
    assert product["click_through"] == 0.5 and product["median_push_to_click_s"] == 5.0
    assert product["title"] == "Silk scarf"  # what the dashboard shows a seller (the id when no push named one)
    assert report["quality"]["with_freezes"] == {"viewers": 1, "median_dwell_s": 180.0}
    assert report["quality"]["fast_first_frame"] == {"viewers": 1, "median_dwell_s": 120.0}
    assert report["engagement"]["comments_total"] == 1 and report["engagement"]["likes_total"] == 5


def test_report_files(tmp_path) -> None:
    events = [ev(0, "join", viewer="a"), ev(5000, "push", product="p1"), ev(70_000, "leave", viewer="a", value=70)]
    written = write_report(build_report(events), tmp_path / "out")
    names = {p.name for p in written}
    assert {"report.json", "report.html", "funnel.csv", "products.csv", "audience.png"} <= names
    assert (tmp_path / "out" / "audience.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "entered,1" in (tmp_path / "out" / "funnel.csv").read_text()
    assert json.loads((tmp_path / "out" / "report.json").read_text())["funnel"][0]["viewers"] == 1


def test_the_charts_speak_the_dashboards_language() -> None:
    """A Chinese dashboard gets Chinese charts, drawn with a CJK font (Debian's fonts-noto-cjk, which setup.sh
    installs): not one glyph missing. English stays the default."""
    import warnings

    from analytics.report import chart_language, chart_png

    events = [ev(0, "join", viewer="a"), ev(5000, "push", product="p1"), ev(70_000, "leave", viewer="a", value=70)]
    report = build_report(events)
    lang, font = chart_language("zh")
    assert lang == "zh" and font is not None and "CJK" in font
    assert chart_language(None) == ("en", None) and chart_language("xx") == ("en", None)
    for name in ("audience", "engagement"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            zh = chart_png(report, name, "zh")
        assert not [w for w in caught if "Glyph" in str(w.message)], [str(w.message) for w in caught]
        assert zh[:8] == b"\x89PNG\r\n\x1a\n" and zh != chart_png(report, name, "en")


async def test_writer_rides_out_a_postgresql_outage(postgres: postgres_server.PostgresServer) -> None:
    """PostgreSQL stops while events keep coming: nothing that fits the queue is lost; overflow is counted."""
    dropped: list[int] = []
    writer = AnalyticsWriter(PostgresStore(postgres.dsn), max_queue=1000, batch=100, interval=0.05,
                             on_drop=lambda: dropped.append(1))
    await writer.start()
    try:
        room = f"outage-{os.urandom(3).hex()}"
        for i in range(200):
            writer.record(Event(i, room, "s", "comment"))
        while writer.written < 200:  # noqa: ASYNC110 - the writer's own counter
            await asyncio.sleep(0.05)
        await asyncio.to_thread(postgres.stop)
        for i in range(200, 1400):  # 1,200 while the database is away: 1,000 fit the queue
            writer.record(Event(i, room, "s", "comment"))
        await asyncio.sleep(1.0)
        assert writer.failures >= 1 and writer.written == 200
        await asyncio.to_thread(postgres.start)
        async with asyncio.timeout(30):
            while writer.queue:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert len(dropped) == writer.dropped == 200
        kept = await writer.call(writer.store.events, room)
        assert len(kept) == 1200 and [e.ts_ms for e in kept] == list(range(1200))
    finally:
        await writer.close()


@pytest.fixture
async def shop_server(start_server, database: str) -> AsyncIterator[object]:
    yield await start_server(rooms=("show",), analytics=database, order_secret=ORDER_SECRET)


def _signed(body: dict[str, object], secret: str = ORDER_SECRET) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    return raw, {"X-Live-Relay-Signature": "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest(),
                 "Content-Type": "application/json"}


async def test_a_show_end_to_end_is_reported_exactly(shop_server) -> None:
    server = shop_server
    base = server.ws_url.rsplit("/ws", 1)[0].replace("ws://", "http://")
    products = {p: {"id": p, "title": f"Item {p}", "price": "19.90", "currency": "CNY",
                    "url": f"https://shop.example/{p}?ref=live", "image": "https://shop.example/i.png"}
                for p in ("A", "B")}
    sources = ["douyin", "douyin", "douyin", "wechat", "wechat", None]
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host, \
            aiohttp.ClientSession() as http:
        viewers = [LiveClient(server.ws_url, "show", source=s, device=f"device-{i:04d}")
                   for i, s in enumerate(sources)]
        for v in viewers:
            await v.connect()
        ids = [v.joined["viewer"] for v in viewers]
        assert len(set(ids)) == 6
        for p in ("A", "B"):
            await host.request({"type": "product", "product": products[p]})
        for i in range(4):
            await viewers[i].send({"type": "product_seen", "product": "A"})
            await viewers[i].send({"type": "product_seen", "product": "A"})  # a card shown twice counts once
        for i in range(2):
            await viewers[i].send({"type": "product_seen", "product": "B"})
        clicks = {}
        for i, p in ((0, "A"), (1, "A"), (3, "A"), (0, "B")):
            async with http.get(f"{base}/go/show/{p}", params={"v": ids[i]}, allow_redirects=False) as r:
                assert r.status == 302
                where = urlsplit(r.headers["Location"])
                assert f"{where.scheme}://{where.netloc}{where.path}" == f"https://shop.example/{p}"
                assert parse_qs(where.query)["ref"] == ["live"]  # the product's own query kept
                clicks[(i, p)] = parse_qs(where.query)["lr_click"][0]
        async with http.get(f"{base}/go/show/NOPE", params={"v": ids[0]}, allow_redirects=False) as r:
            assert r.status == 404  # only a product pushed in this room: no open redirect
        async with http.get(f"{base}/go/other/A", allow_redirects=False) as r:
            assert r.status == 404
        # The shop reports two orders (one of them twice), through its signed webhook.
        for body, expect in ((
                {"order_id": "o-1", "room": "show", "product": "A", "amount": "19.90", "currency": "CNY",
                 "click": clicks[(0, "A")]}, {"duplicate": False, "attributed": True}),
                ({"order_id": "o-2", "room": "show", "product": "A", "amount": "5", "currency": "CNY",
                  "click": clicks[(3, "A")]}, {"duplicate": False, "attributed": True}),
                ({"order_id": "o-1", "room": "show", "product": "A", "amount": "19.90", "currency": "CNY",
                  "click": clicks[(0, "A")]}, {"duplicate": True, "attributed": True})):
            raw, headers = _signed(body)
            async with http.post(f"{base}/api/orders", data=raw, headers=headers) as r:
                assert r.status == 200, await r.text()
                assert {k: (await r.json())[k] for k in expect} == expect
        raw, headers = _signed({"order_id": "o-3", "room": "show", "amount": "1"}, secret="wrong")
        async with http.post(f"{base}/api/orders", data=raw, headers=headers) as r:
            assert r.status == 401
        raw, headers = _signed({"order_id": "bad id!", "room": "show", "amount": "1"})
        async with http.post(f"{base}/api/orders", data=raw, headers=headers) as r:
            assert r.status == 400
        await host.request({"type": "comment", "text": "welcome"})
        for v in viewers[4:]:
            await v.close()  # two viewers leave early
        writer = server.relay.analytics_writer
        async with asyncio.timeout(10):
            while not writer.idle:  # noqa: ASYNC110 - the writer's own state
                await asyncio.sleep(0.05)
        headers = {"Authorization": f"Bearer {server.token('show', 'host', Role.HOST)}"}
        async with http.get(f"{base}/api/rooms/show/report", headers=headers) as r:
            assert r.status == 200, await r.text()
            report = await r.json()
        viewer_token = server.token("show", "someone", Role.VIEWER)
        async with http.get(f"{base}/api/rooms/show/report", headers={"Authorization": f"Bearer {viewer_token}"}) as r:
            assert r.status == 403
        other_host = server.token("other", "host", Role.HOST)
        async with http.get(f"{base}/api/rooms/show/report", headers={"Authorization": f"Bearer {other_host}"}) as r:
            assert r.status == 403
        for v in viewers[:4]:
            await v.close()
    funnel = {step["step"]: step["viewers"] for step in report["funnel"]}
    assert funnel == {"entered": 6, "stayed_30s": 0, "saw_product": 4, "clicked": 3, "ordered": 2}
    by_product = {p["product"]: p for p in report["products"]}
    assert (by_product["A"]["pushes"], by_product["A"]["impressions"], by_product["A"]["clicks"],
            by_product["A"]["orders"], by_product["A"]["revenue"]) == (1, 4, 3, 2, 24.9)
    assert (by_product["B"]["impressions"], by_product["B"]["clicks"], by_product["B"]["orders"]) == (2, 1, 0)
    by_source = {s["source"]: s for s in report["sources"]}
    assert {s: row["viewers"] for s, row in by_source.items()} == {"douyin": 3, "wechat": 2, "direct": 1}
    assert by_source["douyin"]["click_rate"] == round(2 / 3, 4) and by_source["douyin"]["order_rate"] == round(1 / 3, 4)
    assert by_source["wechat"]["click_rate"] == 0.5 and by_source["wechat"]["order_rate"] == 0.5
    assert report["orders"] == {"count": 2, "attributed": 2, "revenue": 24.9}
    assert report["engagement"]["comments_total"] == 1
    assert sum(report["audience"]["exits"]) == 2  # the two who left before the report was read


async def test_the_report_reproduces_what_the_load_generator_did(shop_server) -> None:
    """`loadtest chat` with shopper behaviour (sources, dwell, clicks after pushes, signed orders) against
    a server keeping analytics: the report's funnel, sources and per-product figures equal its counts."""
    from loadtest.chat import run_chat_load
    from loadtest.shoppers import ShopperConfig
    from tests.conftest import SECRET

    server = shop_server
    shopper = ShopperConfig((("douyin", 0.5), ("wechat", 0.3), ("direct", 0.2)), dwell_mean=6.0, click_rate=0.5,
                            order_rate=0.5, order_secret=ORDER_SECRET, seed=7)
    result = await run_chat_load([server.ws_url], "show", 30, comment_rate=2.0, product_rate=1.0, duration=3.0,
                                 secret=SECRET, processes=1, encoding="msgpack", drain=1.5, progress=False,
                                 shopper=shopper)
    did = result["shoppers"]
    assert did["failed"] == 0 and sum(did["clicks"].values()) > 0 and sum(did["orders"].values()) > 0
    writer = server.relay.analytics_writer
    async with asyncio.timeout(10):
        while not writer.idle:  # noqa: ASYNC110 - the writer's own state
            await asyncio.sleep(0.05)
    async with aiohttp.ClientSession() as http, http.get(
            server.ws_url.replace("ws://", "http://").rsplit("/ws", 1)[0] + "/api/rooms/show/report",
            headers={"Authorization": f"Bearer {server.token('show', 'host', Role.HOST)}"}) as r:
        report = await r.json()
    funnel = {step["step"]: step["viewers"] for step in report["funnel"]}
    assert funnel["entered"] == sum(did["sources"].values())
    assert {k: funnel[k] for k in ("saw_product", "clicked", "ordered")} == \
        {k: did["funnel"].get(k, 0) for k in ("saw_product", "clicked", "ordered")}
    assert {s["source"]: s["viewers"] for s in report["sources"]} == did["sources"]
    by_product = {p["product"]: p for p in report["products"]}
    assert {p: row["impressions"] for p, row in by_product.items() if row["impressions"]} == did["impressions"]
    assert {p: row["clicks"] for p, row in by_product.items() if row["clicks"]} == did["clicks"]
    assert {p: row["orders"] for p, row in by_product.items() if row["orders"]} == did["orders"]
    assert report["orders"]["revenue"] == did["revenue"]
    assert report["orders"]["attributed"] == sum(did["orders"].values())
    assert sum(report["audience"]["exits"]) >= did["left"]  # those who left by their dwell (and the rest at the end)


@pytest.fixture
async def pg_shop_server(start_server, postgres: postgres_server.PostgresServer) -> AsyncIterator[object]:
    import psycopg

    name = f"t{os.urandom(4).hex()}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    from signaling.config import LimitsConfig

    # The outage test's co-host talks at 20 comments a second, past what a host may by default.
    yield await start_server(rooms=("show",), analytics=postgres.dsn.rsplit("/", 1)[0] + "/" + name,
                             order_secret=ORDER_SECRET,
                             limits=LimitsConfig(host_comment_rate=50, host_comment_burst=50))


async def _health(server) -> tuple[str, bool | None]:
    async with aiohttp.ClientSession() as http:
        body = await (await http.get(server.base + "/healthz")).json()
    return body["status"], body["analytics_ok"]


async def _health_is(server, wanted: tuple[str, bool | None]) -> bool:
    return await _health(server) == wanted


async def test_an_idle_server_says_degraded_while_postgresql_is_away(pg_shop_server, postgres) -> None:
    """Finding 11: /healthz said ok while PostgreSQL was down (nothing was being written to notice)."""
    server = pg_shop_server
    assert await _health(server) == ("ok", True)
    await asyncio.to_thread(postgres.stop)
    try:
        await eventually(lambda: _health_is(server, ("degraded", False)), timeout=30)
    finally:
        await asyncio.to_thread(postgres.start)
    await eventually(lambda: _health_is(server, ("ok", True)), timeout=30)


async def test_postgresql_away_for_ten_seconds_under_load_loses_nothing(pg_shop_server, postgres) -> None:
    """The database stops for 10 s while the room goes on: comments keep being accepted and delivered, and
    once it is back every event of that time is written (none dropped: they fit the queue)."""
    server = pg_shop_server
    async with LiveClient(server.ws_url, "show", server.token("show", "talker", Role.COHOST)) as talker, \
            LiveClient(server.ws_url, "show") as watcher:
        await asyncio.to_thread(postgres.stop)
        try:
            started = asyncio.get_running_loop().time()
            sent = 0
            while asyncio.get_running_loop().time() - started < 10:
                await talker.request({"type": "comment", "text": f"during the outage {sent}"})
                sent += 1
                await asyncio.sleep(0.05)
            received = 0
            while received < sent:  # every comment reached the other viewer: the room never noticed
                await watcher.next_event("comment", timeout=5)
                received += 1
            assert await _health(server) == ("degraded", False)  # finding 11: /healthz said ok
        finally:
            await asyncio.to_thread(postgres.start)
        await eventually(lambda: _health_is(server, ("ok", True)), timeout=30)
        writer = server.relay.analytics_writer
        async with asyncio.timeout(30):
            while not writer.idle:  # noqa: ASYNC110 - the writer's own state
                await asyncio.sleep(0.1)
        assert writer.failures >= 1 and writer.dropped == 0
        comments = [e for e in await writer.call(writer.store.events, "show") if e.kind == "comment"]
        assert len(comments) == sent


async def test_stage_moments_are_kept_once_and_marked_in_the_report(start_server, tmp_path) -> None:
    server = await start_server(rooms=("show",), analytics=str(tmp_path / "a.sqlite3"))
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host, \
            LiveClient(server.ws_url, "show", server.token("show", "guest", Role.VIEWER)) as guest:
        await host.request({"type": "stage_invite", "user": "guest"})
        await guest.next_event("stage_invited")
        await guest.request({"type": "stage_invite_answer", "accept": True})
        while (await host.next_event("stage"))["state"]["seats"] == []:
            pass
        writer = server.relay.analytics_writer
        async with asyncio.timeout(10):
            while not writer.idle:  # noqa: ASYNC110 - the writer's own state
                await asyncio.sleep(0.05)
        events = await writer.call(writer.store.events, "show")
        moments = [e for e in events if e.kind == "stage"]
        assert [m.data for m in moments][-1] == {"scene": "stage", "active": True, "seats": 1}
        assert len({m.ref for m in moments}) == len(moments)  # each broadcast kept once
        # The same moment written again (as a second node would) is not kept twice.
        await writer.call(writer.store.insert, [moments[-1]])
        assert len([e for e in await writer.call(writer.store.events, "show") if e.kind == "stage"]) == len(moments)
        report = build_report(events)
        assert report["audience"]["moments"][-1]["seats"] == 1


def test_report_command_writes_the_files_and_says_what_is_missing_in_one_line(tmp_path) -> None:
    import subprocess
    import sys

    db = tmp_path / "a.sqlite3"
    store = SqliteStore(db)
    store.migrate()
    store.insert([ev(0, "join", viewer="a", source="douyin"), ev(5000, "push", product="p1"),
                  ev(8000, "click", viewer="a", product="p1", ref="k"), ev(70_000, "leave", viewer="a", value=70)])
    store.close()

    def live_relay(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cli.main", "report", *args], capture_output=True, text=True,
                              timeout=60, cwd=tmp_path)

    listed = live_relay("--room", "room1", "--analytics", str(db), "--list")
    assert listed.returncode == 0 and listed.stdout.startswith("show1 ")
    done = live_relay("--room", "room1", "--analytics", str(db), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {s["step"]: s["viewers"] for s in report["funnel"]}["clicked"] == 1
    assert (tmp_path / "out" / "report.html").read_text().count("<table>") >= 4
    for args, says in ((("--room", "nobody", "--analytics", str(db)), "no show recorded for room 'nobody'"),
                       (("--room", "room1", "--analytics", str(tmp_path / "none.sqlite3")), "no analytics database"),
                       (("--room", "room1", "--analytics", str(db), "--show", "x"), "has no show 'x'")):
        failed = live_relay(*args)
        assert failed.returncode != 0 and says in failed.stderr and "Traceback" not in failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr


async def test_junk_impressions_and_click_floods_are_not_counted(start_server, tmp_path) -> None:
    server = await start_server(rooms=("show",), analytics=str(tmp_path / "a.sqlite3"))
    base = server.ws_url.rsplit("/ws", 1)[0].replace("ws://", "http://")
    card = {"id": "A", "title": "Scarf", "price": "9.00", "currency": "EUR", "url": "https://shop.example/a",
            "image": "https://shop.example/a.png"}
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host, \
            LiveClient(server.ws_url, "show", device="device-junk-01") as viewer, aiohttp.ClientSession() as http:
        await host.request({"type": "product", "product": card})
        for i in range(20):
            await viewer.send({"type": "product_seen", "product": f"never-pushed-{i}"})
        await viewer.send({"type": "product_seen", "product": "A"})
        statuses = []
        for _ in range(80):  # a script hammering one Buy link from one address
            async with http.get(f"{base}/go/show/A", params={"v": viewer.joined["viewer"]},
                                allow_redirects=False) as r:
                statuses.append((r.status, r.headers["Location"].split("?")[0]))
        assert set(statuses) == {(302, "https://shop.example/a")}  # every shopper still gets to the shop
        writer = server.relay.analytics_writer
        async with asyncio.timeout(10):
            while not writer.idle:  # noqa: ASYNC110 - the writer's own state
                await asyncio.sleep(0.05)
        events = await writer.call(writer.store.events, "show")
    assert [e.product for e in events if e.kind == "impression"] == ["A"]
    clicks = sum(1 for e in events if e.kind == "click")
    assert 50 <= clicks < 80  # the burst, and whatever refilled meanwhile; not all 80


async def test_the_assistants_questions_are_in_the_report(start_server, tmp_path) -> None:
    server = await start_server(rooms=("show",), analytics=str(tmp_path / "a.sqlite3"))
    card = {"id": "A", "title": "Scarf", "price": "9.00", "currency": "EUR", "url": "https://shop.example/a",
            "image": "https://shop.example/a.png"}
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host, \
            LiveClient(server.ws_url, "show", server.token("show", "v")) as viewer:
        await host.request({"type": "assistant", "on": True})
        await host.request({"type": "product", "product": card})
        await viewer.request({"type": "comment", "text": "how much is it?"})
        await viewer.request({"type": "comment", "text": "do you ship to Mars?"})
        await viewer.request({"type": "comment", "text": "lovely"})  # not a question: not counted
        async with asyncio.timeout(10):
            while sum(1 for e in await server.relay.analytics_writer.call(  # noqa: ASYNC110
                    server.relay.analytics_writer.store.events, "show") if e.kind == "question") < 2 or \
                    not server.relay.analytics_writer.idle:
                await asyncio.sleep(0.1)
        events = await server.relay.analytics_writer.call(server.relay.analytics_writer.store.events, "show")
    report = build_report(events)
    assert report["assistant"] == {"questions": 2, "outcomes": {"answered": 1, "unanswered": 1},
                                   "by_product": {"A": 1}}
    assert all(e.data and "text" not in e.data for e in events if e.kind == "question")  # no question text kept


async def test_one_address_cannot_invent_viewers_who_clicked(start_server, tmp_path) -> None:
    """Finding 11: `?v=` took any value, so one address could add "viewers who clicked" at will."""
    server = await start_server(rooms=("show",), analytics=str(tmp_path / "a.sqlite3"))
    base = server.base
    card = {"id": "A", "title": "Scarf", "price": "9.00", "currency": "EUR", "url": "https://shop.example/a",
            "image": "https://shop.example/a.png"}
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host, \
            LiveClient(server.ws_url, "show", server.token("show", "real")) as viewer, aiohttp.ClientSession() as http:
        await host.request({"type": "product", "product": card})
        real = viewer.joined["viewer"]
        forged = [f"{os.urandom(8).hex()}", f"{os.urandom(8).hex()}.{os.urandom(6).hex()}",
                  real[:-1] + ("1" if real.endswith("0") else "0")]  # a real pseudonym, its signature changed
        for v in [*forged * 5, real]:
            async with http.get(f"{base}/go/show/A", params={"v": v}, allow_redirects=False) as r:
                assert r.status == 302  # the shopper gets to the shop either way
        writer = server.relay.analytics_writer
        await eventually(lambda: _writer_idle(writer))
        events = await writer.call(writer.store.events, "show")
    named = {e.viewer for e in events if e.kind == "click"}
    assert named == {real.split(".")[0], None}  # the forged ones count as clicks of nobody in particular
    assert {s["step"]: s["viewers"] for s in build_report(events)["funnel"]}["clicked"] == 1


async def _writer_idle(writer) -> bool:
    return writer.idle
