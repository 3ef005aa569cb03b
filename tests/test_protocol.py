"""The protocol's message names and the server's one dispatch table stay in step."""

from __future__ import annotations

import pytest

from protocol import CLIENT_MESSAGES, SCENE_KINDS, ErrorCode, ProtocolError, Role
from signaling.app import RelayServer
from signaling.config import ServerConfig
from signaling.dispatch import Dispatcher, Route
from signaling.metrics import ServerMetrics


@pytest.mark.parametrize("media", [True, False])
async def test_every_client_message_has_exactly_one_handler(media: bool):
    server = RelayServer(ServerConfig(secret="x" * 32, media_enabled=media))
    assert server.connections.dispatcher is not None
    routes = server.connections.dispatcher.routes
    assert set(routes) == set(CLIENT_MESSAGES)
    assert set(server.scenes.handlers()) == SCENE_KINDS
    assert {kind for kind, route in routes.items() if not route.needs_join} == {"join", "ping"}


async def test_a_table_out_of_step_with_the_protocol_does_not_start():
    async def noop(session, message) -> None:
        return None

    routes = {kind: Route(noop) for kind in CLIENT_MESSAGES}
    Dispatcher(routes, ServerMetrics())
    with pytest.raises(RuntimeError, match="no handler for \\['ping'\\]"):
        Dispatcher({k: r for k, r in routes.items() if k != "ping"}, ServerMetrics())
    with pytest.raises(RuntimeError, match="unknown types \\['stage_teleport'\\]"):
        Dispatcher({**routes, "stage_teleport": Route(noop)}, ServerMetrics())


async def test_media_messages_on_a_server_without_media_say_so():
    server = RelayServer(ServerConfig(secret="x" * 32, media_enabled=False))
    assert server.connections.dispatcher is not None
    handler = server.connections.dispatcher.routes["publish"].handler

    class Joined:
        joined = True
        role = Role.HOST

    with pytest.raises(ProtocolError) as err:
        await handler(Joined(), {"type": "publish", "sdp": "v=0", "id": 7})  # type: ignore[arg-type]
    assert err.value.code is ErrorCode.MEDIA_UNAVAILABLE and err.value.ref == 7


@pytest.mark.parametrize(("image", "ok"), [
    ("https://shop.example/p/1.jpg", True),
    ("/static/demo/tea.svg", True),  # a file of the server's own: each page fetches it where it reached it
    ("/static/../secrets.yaml", False),
    ("/static/.hidden", False),
    ("/etc/passwd", False),
    ("javascript:alert(1)", False),
    ("//evil.example/x.png", False),
])
def test_a_product_image_is_a_web_address_or_a_file_of_the_server_s_static_folder(image, ok):
    from protocol.messages import PRODUCT_FIELDS

    check, _required = PRODUCT_FIELDS["image"]
    if ok:
        assert check(image) == image
    else:
        with pytest.raises((ValueError, ProtocolError)):
            check(image)
