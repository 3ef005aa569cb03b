"""Scene rules on their own: no server, no socket, no peer connection.

``Scenes`` runs against the in-process broker (the real room store, registry and broadcast) and this
file's own implementation of its two other ports: local members that record what they are sent, and a
media port that records the effects asked of it. End-to-end scene tests with real peers are in
tests/test_scenes.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from protocol import CloseCode, ErrorCode, ProtocolError, Role, issue_token, verify_token
from signaling.brokers import MemoryBroker
from signaling.outbound import OutboundEvent
from signaling.scenes import ScenePorts, Scenes, SceneSettings
from signaling.scenes.effects import Effects, Mute
from signaling.scenes.state import Call, CallInvite, PkInvite, PkLink, SceneState, Seat, Stage

SECRET = "scene-rules-secret-of-at-least-32-bytes"


@dataclass
class Member:
    user: str
    role: Role = Role.VIEWER
    room: str | None = "show"
    name: str | None = None
    anonymous: bool = False
    id: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.id = self.id or f"s-{self.user}"

    def deliver(self, event: OutboundEvent) -> None:
        self.received.append(event.message)

    def send(self, message: dict[str, Any]) -> None:
        self.received.append(message)

    def got(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m["type"] == kind]


class Node:
    """The local-members and media ports of one node, recording what scenes ask of them."""

    def __init__(self) -> None:
        self.rooms: dict[str, list[Member]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed: list[tuple[str, CloseCode, str]] = []
        self.muted: list[tuple[str, str, str, bool]] = []
        self.unpublished: list[str] = []
        self.cross_closed: list[tuple[str, str]] = []

    # LocalMembers
    def room_names(self) -> list[str]:
        return list(self.rooms)

    def members(self, room: str) -> list[Member]:
        return list(self.rooms.get(room, []))

    async def disconnect(self, member: Member, code: CloseCode, reason: str) -> None:
        self.closed.append((member.user, code, reason))

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # SceneMedia
    def set_muted(self, room: str, user: str, kind: str, muted: bool) -> int:
        self.muted.append((room, user, kind, muted))
        return 1

    async def unpublish(self, member: Member) -> None:
        self.unpublished.append(member.user)

    async def close_cross_room(self, room: str, other: str) -> None:
        self.cross_closed.append((room, other))

    async def settle(self) -> None:
        while self.tasks:
            await asyncio.gather(*self.tasks)


class Harness:
    def __init__(self, invite_ttl: float = 30.0, max_seats: int = 6) -> None:
        self.broker = MemoryBroker()
        self.node = Node()
        self.events: dict[str, list[dict[str, Any]]] = {}  # room-wide broadcasts the scenes did not consume
        self.scenes = Scenes(
            ScenePorts(store=self.broker, registry=self.broker, stream=self.broker,
                       sign_grant=lambda room, user, role, ttl, name, gid: issue_token(
                           SECRET, room, user, role, ttl, name, gid),
                       local=self.node, media=self.node),  # type: ignore[arg-type]
            SceneSettings(invite_ttl=invite_ttl, max_seats=max_seats))
        self.broker.set_handlers(lambda room, pub: None, self._on_broadcast)

    def _on_broadcast(self, room: str, data: dict[str, Any]) -> None:
        if not self.scenes.observe(room, data):
            self.events.setdefault(room, []).append(data)

    async def join(self, room: str, user: str, role: Role = Role.VIEWER, anonymous: bool = False) -> Member:
        await self.broker.subscribe(room)
        member = Member(user, role, room, name=user.title(), anonymous=anonymous)
        self.node.rooms.setdefault(room, []).append(member)
        if not anonymous:
            await self.broker.set_user(room, user, {"name": member.name, "role": str(role)})
        return member

    async def leave(self, member: Member) -> None:
        assert member.room is not None
        self.node.rooms[member.room].remove(member)
        await self.broker.set_user(member.room, member.user, None)
        await self.scenes.on_leave(member, member.room)
        await self.node.settle()

    async def send(self, member: Member, message_type: str, **fields: Any) -> None:
        route = self.scenes.routes()[message_type]
        await route(member, {"type": message_type, "id": 1, **fields})  # type: ignore[arg-type]
        await self.node.settle()

    async def refused(self, member: Member, message_type: str, code: ErrorCode, **fields: Any) -> None:
        with pytest.raises(ProtocolError) as err:
            await self.send(member, message_type, **fields)
        assert err.value.code is code, (message_type, err.value.message)

    def room_events(self, room: str, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events.get(room, []) if e["type"] == kind]


# -- the stage --------------------------------------------------------------------------------------------------


async def test_raise_hand_accept_grants_a_cohost_token_and_the_role_room_wide():
    h = Harness()
    host, fan = await h.join("show", "host", Role.HOST), await h.join("show", "fan")
    await h.send(fan, "stage_request")
    assert host.got("stage_requested")[0]["user"] == "fan" and fan.got("ok")
    await h.send(host, "stage_accept", user="fan")
    grant = fan.got("grant")[0]
    assert grant["seat"] == 1 and verify_token(SECRET, grant["token"]).role is Role.COHOST
    assert fan.role is Role.COHOST  # the effect, applied where the user is connected
    assert (await h.broker.get_user("show", "fan"))["role"] == "cohost"  # room-wide
    stage = h.room_events("show", "stage")[-1]["state"]
    assert [(s["seat"], s["user"], s["name"]) for s in stage["seats"]] == [(1, "fan", "Fan")]
    assert (await h.broker.get_state("show"))["stage"] == stage  # kept for late joiners


async def test_who_may_ask_and_answer():
    h = Harness(max_seats=1)
    host = await h.join("show", "host", Role.HOST)
    anon = await h.join("show", "anon-1", anonymous=True)
    a, b = await h.join("show", "a"), await h.join("show", "b")
    await h.refused(anon, "stage_request", ErrorCode.FORBIDDEN)
    await h.refused(host, "stage_request", ErrorCode.FORBIDDEN)  # not a viewer
    await h.send(a, "stage_request")
    await h.refused(a, "stage_request", ErrorCode.BUSY)
    await h.refused(b, "stage_accept", ErrorCode.FORBIDDEN, user="a")  # a viewer cannot seat anyone
    await h.refused(host, "stage_accept", ErrorCode.NO_INVITATION, user="b")
    await h.send(host, "stage_accept", user="a")
    await h.refused(b, "stage_request", ErrorCode.STAGE_FULL)
    await h.refused(host, "stage_invite", ErrorCode.STAGE_FULL, user="b")


async def test_a_cohost_answers_requests_only_when_the_host_allows():
    h = Harness()
    host, mod, fan = await h.join("show", "host", Role.HOST), await h.join("show", "mod"), await h.join("show", "fan")
    await h.send(host, "stage_invite", user="mod")
    assert mod.got("stage_invited")[0]["from"] == "host"
    await h.send(mod, "stage_invite_answer", accept=True)
    await h.send(fan, "stage_request")
    assert not mod.got("stage_requested")  # not a moderator yet: only the host hears it
    await h.refused(mod, "stage_accept", ErrorCode.FORBIDDEN, user="fan")
    await h.refused(mod, "stage_allow", ErrorCode.FORBIDDEN, user="mod", allowed=True)
    await h.send(host, "stage_allow", user="mod", allowed=True)
    assert h.room_events("show", "stage")[-1]["state"]["seats"][0]["moderator"] is True
    await h.send(mod, "stage_accept", user="fan")
    assert fan.got("grant")[0]["seat"] == 2


async def test_remove_takes_the_role_back_and_closes_publications():
    h = Harness()
    host, fan = await h.join("show", "host", Role.HOST), await h.join("show", "fan")
    await h.send(fan, "stage_request")
    await h.send(host, "stage_accept", user="fan")
    await h.send(host, "stage_mute", user="fan", kind="audio", muted=True)
    assert h.node.muted == [("show", "fan", "audio", True)]
    assert h.room_events("show", "stage")[-1]["state"]["seats"][0]["muted"] == {"audio": True, "video": False}
    await h.refused(fan, "stage_remove", ErrorCode.FORBIDDEN, user="fan")
    seat_grant = verify_token(SECRET, fan.got("grant")[0]["token"]).grant_id
    assert seat_grant and await h.broker.get_grant("show", seat_grant) is not None
    await h.send(host, "stage_remove", user="fan")
    assert fan.got("grant")[-1] == {**fan.got("grant")[-1], "role": "viewer", "reason": "removed"}
    assert await h.broker.get_grant("show", seat_grant) is None  # taken back room-wide
    assert fan.role is Role.VIEWER and h.node.unpublished == ["fan"]
    assert h.room_events("show", "stage")[-1]["state"]["seats"] == []
    await h.refused(fan, "stage_leave", ErrorCode.NOT_FOUND)


async def test_invitations_and_requests_expire():
    h = Harness(invite_ttl=0.05)
    host, fan, other = await h.join("show", "host", Role.HOST), await h.join("show", "fan"), await h.join("show", "o")
    await h.send(host, "stage_invite", user="fan")
    await h.send(other, "stage_request")
    await asyncio.sleep(0.1)
    await h.scenes.sweep()
    await h.node.settle()
    assert host.got("stage_declined")[0] == {**host.got("stage_declined")[0], "user": "fan", "reason": "expired"}
    assert other.got("stage_rejected")[0]["reason"] == "expired"
    await h.refused(fan, "stage_invite_answer", ErrorCode.NO_INVITATION, accept=True)
    state = await h.scenes.ctx.load("show")
    assert not state.stage.invites and not state.stage.requests


async def test_leaving_gives_up_the_seat():
    h = Harness()
    host, fan = await h.join("show", "host", Role.HOST), await h.join("show", "fan")
    await h.send(fan, "stage_request")
    await h.send(host, "stage_accept", user="fan")
    await h.leave(fan)
    assert h.room_events("show", "stage")[-1]["state"]["seats"] == []
    assert not (await h.scenes.ctx.load("show")).stage.seats


# -- PK -----------------------------------------------------------------------------------------------------------


async def _pk(h: Harness) -> tuple[Member, Member]:
    alice, bob = await h.join("room-a", "alice", Role.HOST), await h.join("room-b", "bob", Role.HOST)
    await h.send(alice, "pk_invite", room="room-b", duration_s=60)
    assert bob.got("pk_invited")[0]["from_room"] == "room-a"
    await h.send(bob, "pk_answer", room="room-a", accept=True)
    return alice, bob


async def test_pk_links_two_rooms_scores_likes_and_ends():
    h = Harness()
    _alice, bob = await _pk(h)
    assert await h.scenes.visible_rooms("room-a") == ("room-b",)
    assert await h.scenes.visible_rooms("room-b") == ("room-a",)
    for room in ("room-a", "room-b"):
        sides = h.room_events(room, "pk")[-1]["state"]["sides"]
        assert {s["room"]: s["host"] for s in sides} == {"room-a": "alice", "room-b": "bob"}
    await h.broker.add_likes("room-a", 7)
    await h.scenes.tick()
    assert h.room_events("room-b", "pk_score")[-1]["scores"] == {"room-a": 7, "room-b": 0}
    await h.refused(await h.join("room-a", "fan"), "pk_end", ErrorCode.FORBIDDEN)
    await h.send(bob, "pk_end")
    await h.node.settle()
    for room in ("room-a", "room-b"):
        ended = h.room_events(room, "pk_ended")[-1]
        assert ended["reason"] == "ended by bob" and ended["scores"]["room-a"] == 7
        assert h.room_events(room, "pk")[-1]["state"] is None  # as a call's end announces `call` null
        assert (await h.broker.get_state(room)).get("pk") is None
    # Every node closes its own subscriptions across the link.
    assert sorted(h.node.cross_closed) == [("room-a", "room-b"), ("room-b", "room-a")]
    assert await h.scenes.visible_rooms("room-a") == ()


async def test_pk_refusals_and_time_up():
    h = Harness()
    alice = await h.join("room-a", "alice", Role.HOST)
    await h.join("room-c", "viewer")  # a room with no host on air
    await h.refused(alice, "pk_invite", ErrorCode.BAD_MESSAGE, room="room-a")
    await h.refused(alice, "pk_invite", ErrorCode.NOT_FOUND, room="room-c")
    bob = await h.join("room-b", "bob", Role.HOST)
    await h.refused(bob, "pk_answer", ErrorCode.NO_INVITATION, room="room-a", accept=True)
    await h.send(alice, "pk_invite", room="room-b", duration_s=60)
    await h.send(bob, "pk_answer", room="room-a", accept=True)
    await h.refused(alice, "pk_invite", ErrorCode.BUSY, room="room-b")
    state = await h.scenes.ctx.load("room-a")
    assert state.pk is not None
    state.pk.ends_at_ms = 0  # time is up
    for room in ("room-a", "room-b"):
        await h.scenes.ctx.save(room, state)
    await h.scenes.tick()
    assert h.room_events("room-b", "pk_ended")[-1]["reason"] == "time is up"


async def test_a_declined_pk_tells_the_inviter_and_a_host_leaving_ends_a_pk():
    h = Harness()
    alice, bob = await h.join("room-a", "alice", Role.HOST), await h.join("room-b", "bob", Role.HOST)
    await h.send(alice, "pk_invite", room="room-b")
    await h.send(bob, "pk_answer", room="room-a", accept=False)
    assert alice.got("pk_declined")[0]["by_room"] == "room-b"
    await h.send(alice, "pk_invite", room="room-b")
    await h.send(bob, "pk_answer", room="room-a", accept=True)
    await h.leave(bob)
    assert h.room_events("room-a", "pk_ended")[-1]["reason"] == "host bob left"


# -- switching to a private 1v1 ---------------------------------------------------------------------------------


async def test_private_call_admits_only_its_parties_and_closes_when_it_ends():
    h = Harness()
    host, guest = await h.join("show", "host", Role.HOST), await h.join("show", "guest")
    await h.refused(guest, "call_invite", ErrorCode.FORBIDDEN, user="host")
    await h.refused(host, "call_invite", ErrorCode.NOT_FOUND, user="nobody")
    await h.send(host, "call_invite", user="guest", keep_video=False)
    await h.refused(host, "call_invite", ErrorCode.BUSY, user="guest")
    await h.send(guest, "call_answer", accept=True)
    grants = {m.user: m.got("call_grant")[0] for m in (host, guest)}
    private = grants["host"]["call_room"]
    assert private == grants["guest"]["call_room"] and grants["guest"]["with"] == "host"
    assert verify_token(SECRET, grants["guest"]["token"]).room == private
    assert h.node.muted == [("show", "host", "video", True)]  # the show stops getting the host's video
    assert h.room_events("show", "call")[-1]["state"] == {**h.room_events("show", "call")[-1]["state"],
                                                          "host": "host", "guest": "guest", "keep_video": False}
    assert await h.scenes.admit(private, "guest") and await h.scenes.admit(private, "host")
    for grant in (verify_token(SECRET, g["token"]) for g in grants.values()):
        assert grant.grant_id and (await h.broker.get_grant(private, grant.grant_id) or {}).get("user") == grant.user
    for outsider in ("fan", None):
        with pytest.raises(ProtocolError) as err:
            await h.scenes.admit(private, outsider)
        assert err.value.code is ErrorCode.FORBIDDEN
    assert not await h.scenes.admit("show", None)
    in_call = [await h.join(private, "host", Role.HOST), await h.join(private, "guest", Role.COHOST)]
    await h.send(guest, "call_end")
    assert h.node.muted[-1] == ("show", "host", "video", False)
    assert host.got("call_ended")[0]["reason"] == "ended by guest"
    assert sorted(c[0] for c in h.node.closed) == sorted(m.user for m in in_call)
    assert all(c[1] is CloseCode.NORMAL for c in h.node.closed)
    assert h.room_events("show", "call")[-1]["state"] is None
    for anyone in ("host", "guest", "fan", None):  # closed to everyone, its parties too
        with pytest.raises(ProtocolError) as err:
            await h.scenes.admit(private, anyone)
        assert err.value.code is ErrorCode.FORBIDDEN
    for grant in (verify_token(SECRET, g["token"]) for g in grants.values()):
        assert grant.grant_id and await h.broker.get_grant(private, grant.grant_id) is None  # taken back


async def test_a_declined_or_expired_call_invitation():
    h = Harness(invite_ttl=0.05)
    host, guest = await h.join("show", "host", Role.HOST), await h.join("show", "guest")
    await h.send(host, "call_invite", user="guest")
    await h.send(guest, "call_answer", accept=False)
    assert host.got("call_declined")[0]["user"] == "guest"
    await h.send(host, "call_invite", user="guest")
    await asyncio.sleep(0.1)
    await h.scenes.sweep()
    assert host.got("call_declined")[-1]["reason"] == "expired"
    await h.refused(guest, "call_answer", ErrorCode.NO_INVITATION, accept=True)


async def test_a_party_leaving_ends_the_call():
    h = Harness()
    host, guest = await h.join("show", "host", Role.HOST), await h.join("show", "guest")
    await h.send(host, "call_invite", user="guest")
    await h.send(guest, "call_answer", accept=True)
    await h.leave(guest)
    assert host.got("call_ended")[0]["reason"] == "guest left"


# -- state and envelopes ----------------------------------------------------------------------------------------


def test_scene_state_and_effects_survive_json():
    state = SceneState(
        stage=Stage(3, seats={"u": Seat(2, "U", {"audio": True, "video": False})}, requests={"r": 1.5},  # type: ignore[dict-item]
                    invites={"i": 2.5}, moderators=["u"]),  # type: ignore[list-item]
        pk_invites={"other": PkInvite("bob", 60, 9.0)},  # type: ignore[dict-item,arg-type]
        pk=PkLink(["a", "b"], {"a": "x", "b": "y"}, 1.0, 2.0, {"a": 0, "b": 3}, {"a": 1, "b": 2}, "node"),  # type: ignore[list-item,dict-item]
        call_invite=CallInvite("h", "g", False, 3.0),  # type: ignore[arg-type]
        call=Call("h", "g", True, 4.0, "show.call-1"),  # type: ignore[arg-type]
    )
    import json

    assert SceneState.from_json(json.loads(json.dumps(state.to_json())), 6) == state
    assert SceneState.from_json(None, 4) == SceneState(Stage(4))
    effects = Effects(set_role=Role.COHOST, unpublish=True, close="bye", mute=Mute("u", "video", True))
    assert Effects.from_json(json.loads(json.dumps(effects.to_json()))) == effects
    assert Effects.from_json(None) == Effects()
