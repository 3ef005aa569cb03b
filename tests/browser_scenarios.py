"""Browser scenarios, run *inside* a network namespace with only `lo` up (tests/test_browser.py makes it):
a live-relay server, headless Chromium driven by Playwright, and Python clients, all on 127.0.0.1.

    ip netns exec NS python -m tests.browser_scenarios SCENARIO OUT_DIR

Writes OUT_DIR/SCENARIO.json with what was observed (the test asserts on it) and screenshots.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from playwright.async_api import Page, async_playwright

from clients.client import LiveClient
from clients.media import MediaSession
from protocol import CloseCode, Role, issue_token
from signaling.app import SERVER, create_app, serve
from signaling.config import ServerConfig

SECRET = "browser-test-secret-at-least-32-bytes!!"
WEB_ROOT = str(Path(__file__).resolve().parent.parent / "clients" / "web")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream", "--allow-loopback-in-peer-connection",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", "--autoplay-policy=no-user-gesture-required",
]


COMMENT_SHOWN = "[...document.querySelectorAll('#comments li')].some(li => li.textContent.includes('%s'))"


def token(room: str, user: str, role: Role = Role.VIEWER, name: str | None = None) -> str:
    return issue_token(SECRET, room, user, role, 3600, name)


async def wait_for(page: Page, expression: str, timeout: float = 20.0) -> Any:
    """Poll a JS expression until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for: {expression}")
        await asyncio.sleep(0.1)


async def frames_decoded(page: Page) -> int:
    return int(await page.evaluate("window.liveRelay.framesDecoded"))


async def host_on_air(base: str, room: str, browser: Any) -> Page:
    """A host page that has joined and published its (fake) camera."""
    host = await browser.new_page()
    await host.goto(f"{base}/?view=host&room={room}&token={token(room, 'host', Role.HOST, 'Host')}")
    await wait_for(host, "window.liveRelay.channel && window.liveRelay.channel.joined")
    await host.click("#go-live")
    await wait_for(host, "window.liveRelay.publisher && window.liveRelay.publisher.mediaId")
    return host


async def kick(relay: Any, room: str, user: str) -> None:
    """The server drops a user's connection as it drops a slow consumer (close code 4008)."""
    for session in [s for s in relay.hub.rooms[room].sessions.values() if s.user == user]:
        await relay.hub.disconnect(session, CloseCode.SLOW_CONSUMER, "test: as if too slow")


async def broadcast(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    host = await host_on_air(base, "show", browser)
    viewer = await browser.new_page(viewport={"width": 390, "height": 844})  # a phone-sized screen
    await viewer.goto(f"{base}/?view=viewer&room=show&token={token('show', 'ann', Role.VIEWER, 'Ann')}")
    await wait_for(viewer, "window.liveRelay.framesDecoded > 0")
    first = await frames_decoded(viewer)
    await asyncio.sleep(1.5)
    result["browser_frames"] = [first, await frames_decoded(viewer)]
    result["token_in_address_bar"] = "token=" in await host.evaluate("location.href")

    # A Python viewer receives the browser host's video too, decoded.
    async with LiveClient(ws, "show") as py_viewer:
        session = await MediaSession.subscribe(py_viewer)
        track = await session.wait_track("video", timeout=20)
        frames = [await asyncio.wait_for(track.recv(), 20) for _ in range(10)]
        result["python_frames"] = len(frames)
        result["python_frame_size"] = [frames[-1].width, frames[-1].height]
        await session.close()

    # A comment typed in the viewer page appears on the host page and in the viewer's overlay.
    await viewer.fill("#comment-input", "Does it come in blue?")
    await viewer.press("#comment-input", "Enter")
    await wait_for(host, COMMENT_SHOWN % "come in blue")
    result["comment_on_host"] = True
    # The viewer's own page flies it across the video too (a bullet lives 8 s: wait for it, do not race it).
    result["bullet_in_overlay"] = bool(await wait_for(
        viewer, "[...document.querySelectorAll('#danmaku .bullet')].some(b => b.textContent.includes('come in blue'))",
        timeout=7))

    # Text that looks like markup is shown as text.
    hostile = "<script>window.pwned = 1</script><b>bold</b><img src=x onerror=\"window.pwned=2\">"
    async with LiveClient(ws, "show", token("show", "mallory")) as mallory:
        await mallory.comment(hostile)
    await wait_for(viewer, COMMENT_SHOWN % "<script>")
    result["hostile_shown_as_text"] = await viewer.evaluate(
        "[...document.querySelectorAll('#comments li span:last-child')]"
        f".some(s => s.textContent === {json.dumps(hostile)})")
    result["hostile_elements"] = await viewer.evaluate(
        "document.querySelectorAll('#comments b, #comments img, #comments script, #danmaku b, #danmaku img').length")
    result["pwned"] = await viewer.evaluate("window.pwned || 0")

    # The host pushes a product from the shelf: the viewer sees the card with a buy link.
    await host.click("#shelf button >> nth=0")
    await wait_for(viewer, "!document.querySelector('#product-card').hidden")
    result["product_title"] = await viewer.text_content("#product-card .product-title")
    result["product_href"] = await viewer.get_attribute("#product-card .buy", "href")
    await viewer.click("#like")
    await wait_for(viewer, "Number(document.querySelector('#like-count').textContent) >= 1")
    result["likes_counted"] = True
    await viewer.screenshot(path=str(out / "viewer.png"))

    # The viewer's connection drops (as for a slow consumer): it reconnects, resumes and watches again.
    before = await frames_decoded(viewer)
    await kick(relay, "show", "ann")
    await wait_for(viewer, "window.liveRelay.joins >= 2")
    await wait_for(viewer, f"window.liveRelay.framesDecoded > 0 && window.liveRelay.framesDecoded !== {before}")
    result["rejoined_and_decoding"] = True
    # So does the host's: it publishes again and the viewer sees the new stream.
    old_id = await host.evaluate("window.liveRelay.publisher.mediaId")
    await kick(relay, "show", "host")
    new_id = await wait_for(host, "window.liveRelay.joins >= 2 && window.liveRelay.publisher"
                                  " && window.liveRelay.publisher.mediaId")
    await wait_for(viewer, f"document.querySelector('#stage video[data-publisher=\"{new_id}\"]')?.videoWidth > 0")
    result["host_republished"] = new_id != old_id
    return result


async def cohost(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    host = await host_on_air(base, "stage", browser)
    guest = await browser.new_page()
    await guest.goto(f"{base}/?view=viewer&room=stage&token={token('stage', 'gina', Role.VIEWER, 'Gina')}")
    audience = await browser.new_page()
    await audience.goto(f"{base}/?view=viewer&room=stage")
    await wait_for(audience, "document.querySelectorAll('#stage video').length === 1")
    await wait_for(guest, "window.liveRelay.channel && window.liveRelay.channel.joined")
    await guest.click("#raise-hand")
    await host.wait_for_selector("#requests li button", timeout=20000)
    await host.click("#requests li button >> text=Accept")
    await wait_for(guest, "window.liveRelay.publisher && window.liveRelay.publisher.mediaId")
    # The audience now shows two tiles, and both decode.
    await wait_for(audience, "document.querySelectorAll('#stage video').length === 2")
    await wait_for(audience, """(async () => {
        const v = [...document.querySelectorAll('#stage video')];
        return v.every(x => x.videoWidth > 0);
    })()""")
    result["tiles"] = await audience.evaluate("document.querySelectorAll('#stage video').length")
    result["labels"] = await audience.evaluate(
        "[...document.querySelectorAll('#stage .label')].map(l => l.textContent)")
    await audience.screenshot(path=str(out / "stage.png"))
    return result


async def call(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    pages = []
    for user, role in (("amy", Role.HOST), ("bo", Role.COHOST)):
        page = await browser.new_page()
        await page.goto(f"{base}/?view=call&room=call-1&token={token('call-1', user, role)}")
        pages.append(page)
    setups = [await wait_for(p, "window.liveRelay.callSetupMs") for p in pages]
    decoded = []
    for p in pages:
        decoded.append(await wait_for(p, """(async () => {
            const s = await window.liveRelay.callPc.getStats(); let n = 0;
            s.forEach(r => { if (r.type === 'inbound-rtp' && r.kind === 'video') n = r.framesDecoded; });
            return n > 5 ? n : 0; })()"""))
    await pages[0].screenshot(path=str(out / "call.png"))
    return {"setup_ms": setups, "frames_decoded": decoded,
            "shown_setup": await pages[0].text_content("#stat-setup")}


async def demo(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """What `live-relay serve --demo` promises: open the printed URL, see a live show at once."""
    from cli.demo import DemoHost

    host = DemoHost(ws, "demo", SECRET)
    await host.start()
    try:
        viewer = await browser.new_page()
        await viewer.goto(f"{base}/?view=viewer&room=demo")
        await wait_for(viewer, "window.liveRelay.framesDecoded > 10")
        await wait_for(viewer, "!document.querySelector('#product-card').hidden")
        result = {"product": await viewer.text_content("#product-card .product-title"),
                  "announcement": await viewer.text_content("#announcement")}
        await viewer.screenshot(path=str(out / "demo.png"))
        return result
    finally:
        await host.stop()


SCENARIOS = {"broadcast": broadcast, "cohost": cohost, "call": call, "demo": demo}


async def main(scenario: str, out: Path) -> None:
    from tests.conftest import free_port

    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before anything runs
    config = ServerConfig(secret=SECRET, port=free_port(), rooms=("show", "stage", "demo"), web_root=WEB_ROOT)
    ready, stop = asyncio.Event(), asyncio.Event()
    app = create_app(config)
    server = asyncio.create_task(serve(config, ready=ready, stop=stop, app=app))
    await ready.wait()
    base, ws = f"http://127.0.0.1:{config.port}", f"ws://127.0.0.1:{config.port}/ws"
    result: dict[str, Any]
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            try:
                result = await asyncio.wait_for(SCENARIOS[scenario](base, ws, out, browser, app[SERVER]), 90)
                result["ok"] = True
            except Exception as exc:
                result = {"ok": False, "error": repr(exc)}
                pages = [page for context in browser.contexts for page in context.pages]
                for i, page in enumerate(pages):
                    await page.screenshot(path=str(out / f"{scenario}-failure-{i}.png"))
            finally:
                await browser.close()
    finally:
        stop.set()
        await server
    (out / f"{scenario}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
