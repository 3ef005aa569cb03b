"""The assistant in the room: its engines on their own, then through a real server with real clients, and
its model path against a small OpenAI-compatible server this test starts on loopback (a stand-in for a
hosted model, named so here: no outside model is contacted)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from assistant.catalog import parse_catalog
from assistant.engine import Knowledge, OfflineEngine, check_facts
from assistant.text import is_question
from clients.client import LiveClient, ServerError
from protocol import ErrorCode, Role

CATALOG = """
products:
  - id: A
    title: Silk scarf
    description: pure mulberry silk scarf
    sizes: "S, M, L"
    colors: "red, blue"
faq:
  - q: How long is shipping?
    a: We ship within 48 hours; delivery takes 3-5 days.
  - q: 发货要多久？
    a: 48小时内发货，3-5天送达。
"""

CARD = {"id": "A", "title": "Silk scarf", "price": "19.90", "currency": "EUR", "url": "https://shop.example/scarf",
        "image": "https://shop.example/scarf.jpg", "stock": 12}


def knowledge(price: str = "19.90") -> Knowledge:
    return Knowledge(parse_catalog(CATALOG, "yaml"), {"A": {**CARD, "price": price, "server_ts": 0}})


def test_questions_in_english_and_chinese() -> None:
    for text in ("how much is this", "Is there size L?", "这个多少钱", "有L码吗", "price?", "发货要多久"):
        assert is_question(text), text
    for text in ("love it", "好漂亮", "hello everyone", "666"):
        assert not is_question(text), text


def test_offline_engine_answers_from_the_card_and_the_catalog() -> None:
    engine = OfflineEngine()
    price = engine.answer("how much is this?", knowledge(), "A", 0)
    assert price is not None and "19.90 EUR" in price.text and CARD["url"] in price.text and "12 left" in price.text
    assert "17.50" in engine.answer("how much?", knowledge("17.50"), "A", 0).text  # type: ignore[union-attr]
    chinese = engine.answer("这个多少钱？", knowledge(), "A", 0)
    assert chinese is not None and "19.90 EUR" in chinese.text and "库存 12 件" in chinese.text
    sizes = engine.answer("is there size L?", knowledge(), "A", 0)
    assert sizes is not None and "S, M, L" in sizes.text
    assert "48" in engine.answer("how long is shipping?", knowledge(), "A", 0).text  # type: ignore[union-attr]
    assert "48小时" in engine.answer("发货要多久？", knowledge(), "A", 0).text  # type: ignore[union-attr]
    assert engine.answer("do you ship to mars?", knowledge(), "A", 0) is None


def test_the_fact_check_refuses_what_no_card_says() -> None:
    cards = {"A": CARD}
    assert check_facts("The silk scarf is 19.90 EUR, buy: https://shop.example/scarf", cards) is None
    assert check_facts("Only 15.00 EUR today!", cards) is not None
    assert check_facts("Buy it at https://evil.example/scarf", cards) is not None
    assert check_facts("Hurry, 3 left!", cards) is not None
    assert check_facts("¥ 99 only", cards) is not None


async def assistant_comment(client: LiveClient, timeout: float = 5.0) -> dict:
    while True:
        event = await client.next_event("comment", timeout=timeout)
        if event.get("role") == "assistant":
            return event


async def no_assistant_comment(client: LiveClient, seconds: float = 1.0) -> None:
    with pytest.raises(TimeoutError):
        await assistant_comment(client, timeout=seconds)


@pytest.fixture
async def room(start_server) -> AsyncIterator[tuple[object, LiveClient, list[LiveClient]]]:
    server = await start_server(rooms=("show",), assistant_digest_interval=0.3)
    host = LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST))
    viewers = [LiveClient(server.ws_url, "show", server.token("show", f"v{i}")) for i in range(3)]
    for c in (host, *viewers):
        await c.connect()
    yield server, host, viewers
    for c in (host, *viewers):
        await c.close()


async def test_price_questions_get_the_live_price_threaded_to_the_question(room) -> None:
    server, host, (v0, v1, _) = room
    await host.request({"type": "assistant", "on": True, "catalog": CATALOG, "format": "yaml"})
    await host.request({"type": "product", "product": CARD})
    ack = await v0.request({"type": "comment", "text": "how much is this?"})
    answer = await assistant_comment(v1)
    assert answer["reply_to"] == ack["seq"] and answer["user"] == "assistant" and answer["role"] == "assistant"
    assert "19.90 EUR" in answer["text"] and answer["engine"] == "offline"
    assert answer["product"] == CARD["id"]  # the card it is about: a client shows it beside the answer
    await host.request({"type": "product", "product": {**CARD, "price": "17.90"}})  # a new price
    await v0.request({"type": "comment", "text": "how much is this?"})
    assert "17.90 EUR" in (await assistant_comment(v1))["text"]
    joined = LiveClient(server.ws_url, "show")
    await joined.connect()
    assert joined.joined["state"]["assistant"] == {"on": True, "mode": "auto"}  # every client can show it
    await joined.close()


async def test_unanswerable_questions_reach_only_the_hosts_digest(room) -> None:
    _, host, (v0, v1, v2) = room
    await host.request({"type": "assistant", "on": True, "catalog": CATALOG, "format": "yaml"})
    for v in (v0, v1, v2):
        await v.request({"type": "comment", "text": "do you ship to Mars?"})
    digest = await host.next_event("assistant_digest", timeout=5)
    assert digest["unanswered"] == [{"question": "do you ship to Mars?", "count": 3}]
    await no_assistant_comment(v1)
    with pytest.raises(TimeoutError):
        await v1.next_event("assistant_digest", timeout=0.5)  # viewers never see it


async def test_a_repeated_question_is_answered_once_and_counted(room) -> None:
    _, host, (v0, v1, v2) = room
    await host.request({"type": "assistant", "on": True, "catalog": CATALOG, "format": "yaml"})
    for v, text in ((v0, "How long is shipping?"), (v1, "how long is shipping"), (v2, "shipping, how long?")):
        await v.request({"type": "comment", "text": text})
    assert "48 hours" in (await assistant_comment(v0))["text"]
    await no_assistant_comment(v0)
    digest = await host.next_event("assistant_digest", timeout=5)
    assert digest["answered_again"] == [{"question": "How long is shipping?", "count": 3}]


async def test_off_means_silence_and_only_the_host_switches_it(room) -> None:
    _, host, (v0, v1, _) = room
    await host.request({"type": "product", "product": CARD})
    await v0.request({"type": "comment", "text": "how much is this?"})  # never turned on
    await no_assistant_comment(v1)
    with pytest.raises(ServerError) as refused:
        await v0.request({"type": "assistant", "on": True})
    assert refused.value.code == ErrorCode.FORBIDDEN
    await host.request({"type": "assistant", "on": True})
    await host.request({"type": "assistant", "on": False})
    await v0.request({"type": "comment", "text": "how much is it now?"})
    await no_assistant_comment(v1)


async def test_suggest_mode_posts_only_what_the_host_approves(room) -> None:
    _, host, (v0, v1, _) = room
    await host.request({"type": "assistant", "on": True, "mode": "suggest", "catalog": CATALOG, "format": "yaml"})
    await host.request({"type": "product", "product": CARD})
    ack = await v0.request({"type": "comment", "text": "how much is this?"})
    suggestion = await host.next_event("assistant_suggestion", timeout=5)
    assert suggestion["reply_to"] == ack["seq"] and "19.90" in suggestion["text"]
    await no_assistant_comment(v1, 0.5)
    await host.request({"type": "assistant_approve", "suggestion": suggestion["id"]})
    posted = await assistant_comment(v1)
    assert posted["text"] == suggestion["text"] and posted["reply_to"] == ack["seq"]
    with pytest.raises(ServerError):
        await host.request({"type": "assistant_approve", "suggestion": suggestion["id"]})  # once only


async def test_catalog_over_http_needs_the_host(room) -> None:
    server, _host, (v0, v1, _) = room
    url = server.ws_url.replace("ws://", "http://").rsplit("/ws", 1)[0] + "/api/rooms/show/assistant"
    markdown = "# Do you ship abroad?\nYes, to 30 countries.\n"
    async with aiohttp.ClientSession() as http:
        body = {"on": True, "catalog": markdown, "format": "markdown"}
        async with http.put(url, json=body, headers={"Authorization": f"Bearer {server.token('show', 'v0')}"}) as r:
            assert r.status == 403
        async with http.put(url, json={"on": True, "catalog": "a: [", "format": "yaml"},
                            headers={"Authorization": f"Bearer {server.token('show', 'host', Role.HOST)}"}) as r:
            assert r.status == 400 and "not valid yaml" in await r.text()
        async with http.put(url, json=body,
                            headers={"Authorization": f"Bearer {server.token('show', 'host', Role.HOST)}"}) as r:
            # What the catalog holds, as read: the studio tells the host (one question, no products).
            assert r.status == 200 and await r.json() == {"room": "show", "on": True, "products": 0, "faq": 1}
    await v0.request({"type": "comment", "text": "do you ship abroad?"})
    assert "30 countries" in (await assistant_comment(v1))["text"]


async def test_the_model_path_with_its_deadline_and_fact_check(start_server, model) -> None:
    stand_in, url = model
    server = await start_server(rooms=("show",), assistant_llm=url, assistant_model="stand-in",
                                assistant_deadline=0.5)
    async with LiveClient(server.ws_url, "show", server.token("show", "host", Role.HOST)) as host, \
            LiveClient(server.ws_url, "show", server.token("show", "v0")) as v0:
        await host.request({"type": "assistant", "on": True, "catalog": CATALOG, "format": "yaml"})
        await host.request({"type": "product", "product": CARD})
        stand_in.reply = "Yes, the scarf is pure mulberry silk."
        await v0.request({"type": "comment", "text": "is the scarf real silk?"})
        answer = await assistant_comment(v0)
        assert answer["engine"] == "llm" and answer["text"] == "Yes, the scarf is pure mulberry silk."
        assert stand_in.requests[-1]["model"] == "stand-in" and stand_in.requests[-1]["stream"] is True
        assert "19.90" in stand_in.requests[-1]["messages"][0]["content"]  # the card's facts went with it
        # The viewer's words go as quoted data, after the instructions.
        assert stand_in.requests[-1]["messages"][1]["content"].endswith('"is the scarf real silk?"')
        stand_in.reply = "The Silk scarf is 19.90 EUR today."  # right, but a price: the card's own answer goes
        await v0.request({"type": "comment", "text": "how much is the scarf?"})
        priced = await assistant_comment(v0)
        assert priced["engine"] == "offline" and "19.90 EUR" in priced["text"]
        stand_in.reply = "It is only 9.90 EUR, buy at https://shop.example/scarf"  # a wrong price
        await v0.request({"type": "comment", "text": "what does it cost?"})
        caught = await assistant_comment(v0)
        assert caught["engine"] == "offline" and "19.90 EUR" in caught["text"] and "9.90 EUR," not in caught["text"]
        stand_in.reply, stand_in.delay = "The price is 19.90 EUR.", 2.0  # too slow for the deadline
        await v0.request({"type": "comment", "text": "price please?"})
        late = await assistant_comment(v0)
        assert late["engine"] == "offline" and "19.90 EUR" in late["text"]
        assistant = server.relay.assistant.rooms["show"]
        assert assistant.llm is not None and assistant.llm.claims == 2 and assistant.llm.timeouts == 1


def test_command_line_clients_mark_the_assistant() -> None:
    from cli.apps import describe

    line = describe({"type": "comment", "role": "assistant", "user": "assistant", "reply_to": 45, "text": "19.90 EUR"})
    assert line is not None and line.startswith("🤖 [assistant] ↳ #45")
    assert describe({"type": "comment", "role": "viewer", "user": "assistant", "text": "hi"}) == "💬 assistant: hi"
