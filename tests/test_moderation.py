"""Moderation for hosts and co-hosts (remove, mute, delete a comment, blocked words, slow mode), the
operator's review hook, and token revocation: the rules' decisions as table tests, then end to end across
two nodes sharing a real redis-server (the moderator on one node, the user on the other)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web

from clients.client import ConnectionClosed, LiveClient, ServerError
from protocol import CloseCode, Grant, Role, issue_admin_token
from signaling.review import decide
from signaling.rules import RoomRules, is_revoked, may_moderate, normalize
from tests.conftest import free_port

# -- the rules, as pure decisions ------------------------------------------------------------------------------


@pytest.mark.parametrize("words, text, blocked", [
    (["scam"], "this is a SCAM", "scam"),
    (["scam"], "\uff53\uff43\uff41\uff4d here", "scam"),  # full-width letters
    (["scam"], "s\u200bcam", "scam"),  # a zero-width space inside
    (["ass"], "first class seats", None),  # Latin words match whole words only
    (["ass"], "what an ass!", "ass"),
    (["假货"], "这是假货吗", "假货"),  # Chinese matches anywhere
    (["加微信"], "加微信领红包", "加微信"),
    ([], "anything", None),
])
def test_blocked_words(words, text, blocked):
    assert RoomRules().with_words(words).blocked_word(text) == blocked


def test_removed_and_muted_users_expire_and_lists_are_bounded():
    rules = RoomRules().with_removed("eve", until_ms=2000, now_ms=0).with_muted("bob", 5000, now_ms=0)
    assert rules.removed_until("eve", 1000) == 2000 and rules.removed_until("eve", 2000) is None
    assert rules.muted_until("bob", 4999) == 5000 and rules.with_muted("bob", None, 0).muted_until("bob", 1) is None
    assert "eve" not in rules.with_removed("zed", 9000, now_ms=3000).removed  # expired entries are dropped
    deleted = RoomRules()
    for seq in range(1, 1500):
        deleted = deleted.with_deleted(seq)
    assert len(deleted.deleted) == 1000 and deleted.is_deleted(1499) and not deleted.is_deleted(1)
    assert RoomRules.from_dict(rules.to_dict()) == rules


@pytest.mark.parametrize("moderator, target, allowed", [
    ("host", "viewer", True), ("host", "cohost", True), ("host", "host", False), ("host", None, True),
    ("cohost", "viewer", True), ("cohost", None, True), ("cohost", "cohost", False), ("cohost", "host", False),
    ("viewer", "viewer", False),
])
def test_who_may_moderate_whom(moderator, target, allowed):
    assert may_moderate(moderator, target) is allowed


@pytest.mark.parametrize("token_id, issued, entries, revoked", [
    ("a", 100.0, {}, False),
    ("a", 100.0, {"jti:a": 50.0}, True),  # a token id entry whatever the token's age
    ("a", 100.0, {"jti:b": 500.0}, False),
    ("a", 100.0, {"user:eve": 100.0}, True),  # issued at or before the cutoff
    ("a", 101.0, {"user:eve": 100.0}, False),  # issued after: a new token works
    ("a", 100.0, {"*": 200.0}, True),
    (None, None, {"user:eve": 1.0}, True),  # no iat: counts as issued at 0
])
def test_revocation(token_id, issued, entries, revoked):
    grant = Grant("show", "eve", Role.HOST, token_id=token_id, issued_at=issued)
    assert is_revoked(grant, entries) is revoked


@pytest.mark.parametrize("answer, verdict, outcome", [
    ({"action": "allow"}, "hi", "allow"),
    ({"action": "deny"}, None, "deny"),
    ({"action": "replace", "text": "h*"}, "h*", "replace"),
    ({"action": "replace", "text": ""}, "hi", "bad_answer"),  # fail-open: as written
    ("nonsense", "hi", "bad_answer"),
    (None, "hi", "bad_answer"),
])
def test_review_answers(answer, verdict, outcome):
    got, label = decide(answer, "hi", fail_open=True)
    assert got.text == verdict and label == outcome
    assert decide(None, "hi", fail_open=False)[0].unavailable


def test_normalize():
    assert normalize("\uff28\uff25\uff2c\uff2c\uff2f\u200d") == "hello"  # full-width HELLO, a zero-width joiner


# -- end to end, two nodes through Redis -------------------------------------------------------------------------


async def _comment_seen(client: LiveClient, text: str, timeout: float = 10) -> dict:
    while (event := await client.next_event("comment", timeout=timeout))["text"] != text:
        pass
    return event


async def test_a_host_on_one_node_removes_a_viewer_on_the_other(nodes):
    a, b = nodes
    async with LiveClient(a.ws_url, "show", a.token("show", "host", Role.HOST)) as host, \
            LiveClient(b.ws_url, "show", b.token("show", "troll")) as troll:
        await host.request({"type": "remove_user", "user": "troll", "duration_s": 60, "reason": "spam"})
        told = await host.next_event("moderation")
        assert told["action"] == "removed" and told["user"] == "troll" and told["by"] == "host"
        with pytest.raises(ConnectionClosed):
            await troll.next_event("no-such-event", timeout=10)
        assert troll.close_code == CloseCode.REMOVED
        for node in (a, b):  # refused on every node while the removal lasts
            with pytest.raises(ServerError) as err:
                await LiveClient(node.ws_url, "show", node.token("show", "troll")).connect()
            assert err.value.code == "removed"
        async with aiohttp.ClientSession() as http:  # and over HTTP (WHEP) too
            response = await http.post(b.base + "/whep/show", data="v=0\r\n", headers={
                "Content-Type": "application/sdp", "Authorization": f"Bearer {b.token('show', 'troll')}"})
            assert response.status == 403 and "removed" in await response.text()
        with pytest.raises(ServerError) as err:  # nobody removes the host
            await host.request({"type": "remove_user", "user": "host"})
        assert err.value.code == "bad_message"


async def test_a_cohost_mutes_a_viewer_and_may_not_touch_the_host(nodes):
    a, b = nodes
    async with LiveClient(a.ws_url, "show", a.token("show", "host", Role.HOST)) as host, \
            LiveClient(a.ws_url, "show", a.token("show", "mod", Role.COHOST)) as mod, \
            LiveClient(b.ws_url, "show", b.token("show", "loud")) as loud:
        await mod.request({"type": "mute_user", "user": "loud", "duration_s": 120})
        told = await loud.next_event("moderation")
        assert told["action"] == "muted" and told["until_ms"] > time.time() * 1000
        with pytest.raises(ServerError) as err:
            await loud.comment("I am loud")
        assert err.value.code == "muted" and "minute" in err.value.args[0]
        assert await loud.ping() > 0  # muted, not gone: still watching
        with pytest.raises(ServerError) as err:
            await mod.request({"type": "mute_user", "user": "host"})
        assert err.value.code == "forbidden"
        with pytest.raises(ServerError) as err:  # a viewer moderates nobody
            await loud.request({"type": "mute_user", "user": "mod"})
        assert err.value.code == "forbidden"
        await host.request({"type": "mute_user", "user": "loud", "muted": False})
        await loud.comment("back again")
        await _comment_seen(host, "back again")


async def _recovered(node, join: dict) -> list[tuple[str, str | None]]:
    """What a raw join (with ``history`` or ``resume``) is sent before anything live: (type, text)."""
    async with aiohttp.ClientSession() as http, http.ws_connect(node.ws_url) as ws:
        await ws.send_json({"type": "join", "room": "show", **join})
        joined = await ws.receive_json(timeout=10)
        assert joined["type"] == "joined", joined
        return [((m := await ws.receive_json(timeout=10))["type"], m.get("text")) for _ in range(joined["missed"])]


async def test_a_deleted_comment_goes_for_live_viewers_late_joiners_and_resumers(nodes):
    a, b = nodes
    async with LiveClient(a.ws_url, "show", a.token("show", "host", Role.HOST)) as host, \
            LiveClient(b.ws_url, "show") as watcher:
        async with LiveClient(b.ws_url, "show", b.token("show", "spammer")) as spammer:
            await spammer.comment("buy followers at spam.example")
            await spammer.comment("a fair question")
        bad = await _comment_seen(host, "buy followers at spam.example")
        await _comment_seen(host, "a fair question")
        await host.request({"type": "delete_comment", "seq": bad["seq"]})
        gone = await watcher.next_event("comment_deleted")  # live, on the other node, in order
        assert gone["target"] == bad["seq"] and gone["seq"] > bad["seq"]
        for node in (a, b):  # a late joiner's history leaves it out; so does a resumer's catch-up
            assert await _recovered(node, {"history": 10}) == [("comment", "a fair question"),
                                                                 ("comment_deleted", None)]
            resume = {"resume": {"epoch": bad["epoch"], "seq": bad["seq"] - 1}}
            assert await _recovered(node, resume) == [("comment", "a fair question"), ("comment_deleted", None)]
        with pytest.raises(ServerError) as err:
            await watcher.request({"type": "delete_comment", "seq": bad["seq"]})
        assert err.value.code in ("forbidden", "unauthorized")


async def test_blocked_words_and_slow_mode_apply_before_fan_out(nodes):
    a, b = nodes
    async with LiveClient(a.ws_url, "show", a.token("show", "host", Role.HOST)) as host, \
            LiveClient(b.ws_url, "show", b.token("show", "fan")) as fan:
        await host.request({"type": "block_words", "words": ["假货", "scam"]})
        await host.next_event("moderation")
        for text in ("这是假货", "total SCAM"):
            with pytest.raises(ServerError) as err:
                await fan.comment(text)
            assert err.value.code == "blocked"
        await fan.comment("a class act")  # no false match inside a word
        await _comment_seen(host, "a class act")
        async with LiveClient(b.ws_url, "show", b.token("show", "keen")) as keen:
            await host.request({"type": "slow_mode", "seconds": 30})
            assert (await keen.next_event("moderation"))["seconds"] == 30  # everyone is told of slow mode
            await keen.comment("one")
            with pytest.raises(ServerError) as err:
                await keen.comment("two")
            assert err.value.code == "slow_mode" and "30 s" in err.value.args[0]
            await host.comment("hosts are not slowed")
            await host.comment("not at all")
            await host.request({"type": "slow_mode", "seconds": 0})
            await keen.next_event("moderation")
            await keen.comment("two, later")
        async with aiohttp.ClientSession() as http:
            metrics = await (await http.get(b.base + "/metrics")).text()
        assert 'live_relay_comments_blocked_total{reason="word"} 2.0' in metrics


async def test_a_leaked_host_token_is_revoked_on_every_node(nodes):
    """Finding 10: a leaked 10-year host token could only be stopped by rotating the secret."""
    a, b = nodes
    leaked = a.token("show", "shop", Role.HOST, ttl=10 * 365 * 86400)
    async with LiveClient(b.ws_url, "show", leaked) as intruder:
        admin = {"Authorization": f"Bearer {issue_admin_token(a.config.secret)}"}
        async with aiohttp.ClientSession() as http:
            refused = await http.post(a.base + "/api/admin/revoke", json={"room": "show", "token": leaked},
                                      headers={"Authorization": f"Bearer {leaked}"})  # a room token is no admin
            assert refused.status == 401
            response = await http.post(a.base + "/api/admin/revoke", json={"room": "show", "token": leaked},
                                       headers=admin)
            assert response.status == 200 and (await response.json())["revoked"].startswith("jti:")
        with pytest.raises(ConnectionClosed):  # the live connection on the other node is closed
            await intruder.next_event("no-such-event", timeout=10)
        assert intruder.close_code == CloseCode.UNAUTHORIZED
    for node in (a, b):
        with pytest.raises(ServerError) as err:
            await LiveClient(node.ws_url, "show", leaked).connect()
        assert err.value.code == "revoked"
    async with LiveClient(a.ws_url, "show", a.token("show", "shop", Role.HOST)) as fresh:  # a new token works
        assert fresh.joined["role"] == "host"
    # Every token of a user issued until now.
    old = a.token("show", "eve")
    async with aiohttp.ClientSession() as http:
        response = await http.post(b.base + "/api/admin/revoke", json={"room": "show", "user": "eve"}, headers={
            "Authorization": f"Bearer {issue_admin_token(b.config.secret)}"})
        assert response.status == 200
        bad = await http.post(b.base + "/api/admin/revoke", data="{", headers={
            "Authorization": f"Bearer {issue_admin_token(b.config.secret)}", "Content-Type": "application/json"})
        assert bad.status == 400
    with pytest.raises(ServerError) as err:
        await LiveClient(a.ws_url, "show", old).connect()
    assert err.value.code == "revoked"


# -- the review hook -------------------------------------------------------------------------------------------


async def _stand_in_review_service(answer) -> tuple[web.AppRunner, str, list]:
    """A stand-in for the operator's review service (an outside service): answers with ``answer(body)``."""
    seen: list = []

    async def review(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        result = answer(body)
        if result == "slow":
            await asyncio.sleep(2)
            result = {"action": "allow"}
        return web.json_response(result)

    app = web.Application()
    app.router.add_post("/review", review)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/review", seen


async def test_the_review_hook_allows_denies_and_replaces(start_server):
    def answer(body):
        if "phone" in body["text"]:
            return {"action": "replace", "text": body["text"].replace("138-0000-0000", "***")}
        if "hate" in body["text"]:
            return {"action": "deny", "reason": "not in this room"}
        if "slow" in body["text"]:
            return "slow"
        return {"action": "allow"}

    runner, url, seen = await _stand_in_review_service(answer)
    try:
        for fail_open in (True, False):
            srv = await start_server(rooms=("show",), comment_review_url=url, comment_review_deadline=0.5,
                                     comment_review_fail_open=fail_open)
            async with LiveClient(srv.ws_url, "show", srv.token("show", "fan")) as fan:
                await fan.comment("hello")
                assert (await _comment_seen(fan, "hello"))["user"] == "fan"
                await fan.comment("call my phone 138-0000-0000")
                await _comment_seen(fan, "call my phone ***")
                with pytest.raises(ServerError) as err:
                    await fan.comment("I hate you")
                assert err.value.code == "blocked" and "not in this room" in err.value.args[0]
                if fail_open:  # past the deadline the policy decides
                    await fan.comment("a slow one")
                    await _comment_seen(fan, "a slow one")
                else:
                    with pytest.raises(ServerError) as err:
                        await fan.comment("a slow one")
                    assert err.value.code == "unavailable"
            async with aiohttp.ClientSession() as http:
                metrics = await (await http.get(srv.base + "/metrics")).text()
            assert 'live_relay_comment_reviews_total{outcome="timeout"} 1.0' in metrics
            assert 'live_relay_comment_reviews_total{outcome="replace"} 1.0' in metrics
        assert seen[0] == {"room": "show", "user": "fan", "role": "viewer", "text": "hello"}
    finally:
        await runner.cleanup()
