"""Browser scenarios, run *inside* a network namespace with only `lo` up (tests/test_browser.py makes it):
a live-relay server, headless Chromium driven by Playwright, and Python clients, all on 127.0.0.1.

    ip netns exec NS python -m tests.browser_scenarios SCENARIO OUT_DIR

Writes OUT_DIR/SCENARIO.json with what was observed (the test asserts on it) and screenshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page, async_playwright

from clients.client import LiveClient
from clients.media import MediaSession
from clients.sources import CounterVideoTrack, ToneAudioTrack
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
        # Each look bounded too: a page that stops answering fails here, in words, not at pytest's timeout.
        try:
            value = await asyncio.wait_for(page.evaluate(expression), max(deadline - time.monotonic(), 0) + 5)
        except TimeoutError:
            raise TimeoutError(f"the page stopped answering while waiting for: {expression}") from None
        except PlaywrightError as exc:
            # The page's script has not run (yet): a weak-network lab saw `window.liveRelay` undefined after
            # the load event three times in one batch. Look again until the deadline, then say what the
            # page was, so the next time says why.
            if "liveRelay" not in expression or await page.evaluate("typeof window.liveRelay") != "undefined":
                raise
            if time.monotonic() > deadline:
                body = await page.evaluate("document.body ? document.body.innerText.slice(0, 300) : ''")
                # Which of its files came, and how (a module that failed to arrive stops the whole page).
                files = await page.evaluate("""performance.getEntriesByType('resource').map(e =>
                    e.name.split('/').pop() + ':' + (e.responseStatus || 0) + ':' + Math.round(e.duration))""")
                raise TimeoutError(f"the page's script never ran ({exc.message.splitlines()[0]}): {page.url} "
                                   f"{await page.title()!r} {body!r} files: {files}") from None
            await asyncio.sleep(0.1)
            continue
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for: {expression}")
        await asyncio.sleep(0.1)


async def frames_decoded(page: Page) -> int:
    return int(await page.evaluate("window.liveRelay.framesDecoded"))


async def host_on_air(base: str, room: str, browser: Any, query: str = "") -> Page:
    """A host page (with ``query`` added to its address) that has joined and published its (fake) camera."""
    host = await browser.new_page()
    await host.goto(f"{base}/?view=host&room={room}&token={token(room, 'host', Role.HOST, 'Host')}{query}")
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
    result["connections"] = await audience.evaluate("window.liveRelay.mediaConnections()")
    result["labels"] = await audience.evaluate(
        "[...document.querySelectorAll('#stage .label')].map(l => l.textContent)")
    await audience.screenshot(path=str(out / "stage.png"))
    # The co-host leaves the stage from the page: back to viewer, camera off, one tile for the audience.
    await guest.click("#leave-stage")
    await wait_for(audience, "document.querySelectorAll('#stage video').length === 1")
    # The host's tile goes on, on the same connection (the co-host's tracks were taken out of it).
    frames = await audience.evaluate("window.liveRelay.mediaStats().then(s => s.video.framesDecoded)")
    result["host_goes_on"] = await wait_for(audience, f"window.liveRelay.mediaStats().then(s => s.video.framesDecoded"
                                                      f" > {frames} + 10 && window.liveRelay.mediaConnections() === 1)")
    result["left_stage"] = await wait_for(guest, "!window.liveRelay.publisher && " + HIDDEN % "#leave-stage"
                                          + " && !(" + HIDDEN % "#raise-hand" + ")")
    result["camera_released"] = await guest.evaluate("!document.querySelector('#self-tile')")
    # On stage again, then taken off by the host: the co-host is told it is live, then why it is not.
    await guest.click("#raise-hand")
    await host.wait_for_selector("#requests li button", timeout=20000)
    await host.click("#requests li button >> text=Accept")
    result["told_live"] = await wait_for(guest, "window.liveRelay.publisher && window.liveRelay.publisher.mediaId"
                                                " && document.querySelector('#status').textContent === 'on air'"
                                                " && 'on air'")
    result["self_view"] = await wait_for(guest, "document.querySelector('#self-tile video')?.videoWidth > 0")
    await host.wait_for_selector("#seats li[data-user=gina] .remove", timeout=20000)
    await host.click("#seats li[data-user=gina] .remove")
    result["told_removed"] = await wait_for(guest, "!window.liveRelay.publisher"
                                                   " && document.querySelector('#status').textContent")
    return result


async def call(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """Two people in a 1v1 call, one on a phone-sized screen: what each sees and can do."""
    pages = []
    for user, role, size in (("amy", Role.HOST, {"width": 1280, "height": 900}),
                             ("bo", Role.COHOST, {"width": 390, "height": 844})):
        page = await browser.new_page(viewport=size)
        await page.goto(f"{base}/?view=call&room=call-1&token={token('call-1', user, role)}")
        pages.append(page)
    amy, bo = pages
    setups = [await wait_for(p, "window.liveRelay.callSetupMs") for p in pages]
    decoded = []
    for p in pages:
        decoded.append(await wait_for(p, """(async () => {
            const s = await window.liveRelay.callPc.getStats(); let n = 0;
            s.forEach(r => { if (r.type === 'inbound-rtp' && r.kind === 'video') n = r.framesDecoded; });
            return n > 5 ? n : 0; })()"""))
    r: dict[str, Any] = {"setup_ms": setups, "frames_decoded": decoded,
                         "shown_setup": await amy.text_content("#stat-setup")}
    # The phone: the call fits its screen (no sideways scrolling), oneself in a corner, the controls on it.
    r["phone"] = await bo.evaluate("""(() => {
        const box = document.querySelector('.call').getBoundingClientRect();
        const self = document.querySelector('#call-self');
        const bar = [...document.querySelectorAll('.call-bar button')].filter(b => !b.hidden);
        return { width: box.width, viewport: innerWidth, scroll: document.scrollingElement.scrollWidth,
                 bottom: box.bottom, height: innerHeight, self_playing: self.videoWidth > 0,
                 self_inside: self.getBoundingClientRect().right <= box.right,
                 buttons: bar.map(b => b.textContent),
                 min_height: Math.min(...bar.map(b => b.getBoundingClientRect().height)),
                 remote_muted: document.querySelector('#call-remote').muted }; })()""")
    # The stats line counts the call's frames (it said 0 during a working call).
    r["stats_frames"] = await wait_for(amy, "Number(document.querySelector('#stat-frames').textContent) > 5"
                                            " && Number(document.querySelector('#stat-frames').textContent)")
    r["timer"] = await wait_for(amy, "/^00:0[1-9] · connected in [0-9.]+ s$/.test(document.querySelector('#call-timer')"
                                     ".textContent) && document.querySelector('#call-timer').textContent")
    await bo.screenshot(path=str(out / "call-phone.png"))
    # Mute and camera off: the tracks this side sends, and what the buttons then say.
    await amy.click("#call-mute")
    await amy.click("#call-camera")
    r["muted"] = await amy.evaluate("""(() => {
        const s = document.querySelector('#call-self').srcObject;
        return { audio: s.getAudioTracks().map(t => t.enabled), video: s.getVideoTracks().map(t => t.enabled),
                 mute: document.querySelector('#call-mute').textContent,
                 mute_pressed: document.querySelector('#call-mute').getAttribute('aria-pressed'),
                 camera: document.querySelector('#call-camera').textContent }; })()""")
    await amy.click("#call-mute")
    r["unmuted"] = await amy.evaluate("document.querySelector('#call-self').srcObject.getAudioTracks()[0].enabled")
    r["switch_offered"] = await amy.evaluate("""navigator.mediaDevices.enumerateDevices().then(d =>
        [d.filter(x => x.kind === 'videoinput').length, !document.querySelector('#call-switch').hidden])""")
    await amy.screenshot(path=str(out / "call.png"))
    # Hang up: this side's camera released and the call's end said; the other side told.
    await amy.click("#call-hangup")
    r["ended"] = await wait_for(amy, "document.querySelector('#call-timer').textContent.startsWith('call ended')"
                                     " && document.querySelector('#call-timer').textContent")
    r["tracks_stopped"] = await amy.evaluate(
        "document.querySelector('#call-self').srcObject.getTracks().every(t => t.readyState === 'ended')")
    r["other_told"] = await wait_for(bo, "document.querySelector('#call-timer').textContent"
                                         " === 'the other side hung up'")
    return r


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
                  "announcement": await viewer.text_content("#announcement"),
                  "image_loaded": await wait_for(
                      viewer, "document.querySelector('#product-card img').naturalWidth > 0")}
        await viewer.screenshot(path=str(out / "demo.png"))
        return result
    finally:
        await host.stop()


HIDDEN = "getComputedStyle(document.querySelector('%s')).display === 'none'"
# Whether the element a selector names overlaps any tile's name label (page.evaluate(COVERS_A_NAME, selector)).
COVERS_A_NAME = """(selector) => {
    const a = document.querySelector(selector).getBoundingClientRect();
    return [...document.querySelectorAll('#stage .tile .label')].some(l => {
        const b = l.getBoundingClientRect();
        return a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom; });
}"""


async def guest_hint_fits_a_phone(browser: Any, base: str) -> bool:
    """Whether a guest's comment hint fits the comment box of a phone (measured with the box's own font)."""
    page = await browser.new_page(viewport={"width": 390, "height": 844})
    await page.goto(f"{base}/?view=viewer&room=show")
    await wait_for(page, "window.liveRelay.channel && window.liveRelay.channel.joined")
    fits = await page.evaluate("""(() => {
        const input = document.querySelector('#comment-input'), style = getComputedStyle(input);
        const ctx = document.createElement('canvas').getContext('2d'); ctx.font = style.font;
        const room = input.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
        return ctx.measureText(input.placeholder).width <= room; })()""")
    await page.close()
    return bool(fits)


async def viewer_page(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """What a viewer meets: sound, the product card and its countdown, history, guests, phones, outages."""
    r: dict[str, Any] = {}
    host = await host_on_air(base, "show", browser)
    async with LiveClient(ws, "show", token("show", "chatty", Role.VIEWER, "Chatty")) as chatty:
        for n in range(3):
            await chatty.comment(f"before you came {n}")
    phone_context = await browser.new_context(viewport={"width": 390, "height": 844})
    phone = await phone_context.new_page()
    missing: list[str] = []
    phone.on("response", lambda response: missing.append(response.url) if response.status == 404 else None)
    r["not_found"] = missing
    await phone.goto(f"{base}/?view=viewer&room=show&token={token('show', 'ann', Role.VIEWER, 'Ann')}")
    await wait_for(phone, "window.liveRelay.framesDecoded > 0")
    # A late joiner sees the recent comments, listed but not flown across the video.
    r["history"] = await wait_for(phone, "[...document.querySelectorAll('#comments li')].map(l => l.textContent)"
                                         ".filter(t => t.includes('before you came')).length")
    r["history_bullets"] = await phone.evaluate("document.querySelectorAll('#danmaku .bullet').length")
    # The history was sent before this viewer came: no latency figure from it (it read ~3 s).
    r["e2e_from_history"] = await phone.text_content("#stat-e2e")
    # The page names its icon, and it is there (browsers asked for /favicon.ico: 404).
    r["icon_status"] = await phone.evaluate(
        "(async () => { const l = document.querySelector('link[rel=icon]'); "
        "return l ? (await fetch(l.href)).status : null; })()")
    # No product yet: no card at all (not an empty white card).
    r["card_hidden_before_product"] = await phone.evaluate(HIDDEN % "#product-card")
    # Sound: muted until one tap, which is remembered.
    r["muted_at_first"] = await phone.evaluate("[...document.querySelectorAll('#stage video')].every(v => v.muted)")
    r["unmute_offered"] = not await phone.evaluate(HIDDEN % "#unmute")
    await phone.click("#unmute")
    r["unmuted_after_tap"] = await phone.evaluate("[...document.querySelectorAll('#stage video')].every(v => !v.muted)")
    # Phone layout: the whole 4:3 camera in the 9:16 stage, buttons big enough for a thumb.
    r["phone_object_fit"] = await phone.evaluate("getComputedStyle(document.querySelector('#stage video')).objectFit")
    r["phone_button_heights"] = await phone.evaluate(
        "[...document.querySelectorAll('.controls button')].filter(b => !b.hidden)"
        ".map(b => b.getBoundingClientRect().height)")
    # The product card, its countdown counting down, and its close button. Images come from this server.
    await host.click("#shelf button >> nth=0")  # Jade bracelet, countdown 300 s
    await wait_for(phone, "!(" + HIDDEN % "#product-card" + ")")
    first = await phone.text_content("#product-card .product-extra")
    await asyncio.sleep(2.2)
    r["countdown"] = [first, await phone.text_content("#product-card .product-extra")]
    r["image_loaded"] = await wait_for(phone, "document.querySelector('#product-card img').naturalWidth > 0")
    # A phone (touch, no hover): the like button keeps its colour after a tap.
    touch = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    tapper = await touch.new_page()
    await tapper.goto(f"{base}/?view=viewer&room=show")
    await wait_for(tapper, "window.liveRelay.channel && window.liveRelay.channel.joined")
    await tapper.tap("#like")
    await asyncio.sleep(0.3)
    r["like_colour_after_tap"] = await tapper.evaluate(
        "getComputedStyle(document.querySelector('#like')).backgroundColor")
    await touch.close()
    # The card's image is the server's own file, fetched from wherever this viewer reached the server (it
    # carried the host page's own address: broken for a viewer who came another way).
    r["image_src"] = await phone.evaluate("document.querySelector('#product-card img').getAttribute('src')")
    r["card_covers_name"] = await phone.evaluate(COVERS_A_NAME, "#product-card")
    # On a phone the comments sit over the video's lower left (they were below the fold), above the card,
    # clear of the names.
    r["comments_overlay"] = await phone.evaluate("""(() => {
        const c = document.querySelector('#comments').getBoundingClientRect();
        const s = document.querySelector('#stage').getBoundingClientRect();
        const card = document.querySelector('#product-card').getBoundingClientRect();
        return { inside: c.top >= s.top && c.bottom <= s.bottom && c.left >= s.left, above_card: c.bottom <= card.top,
                 shown: c.height > 0 && c.bottom <= innerHeight }; })()""")
    r["comments_cover_name"] = await phone.evaluate(COVERS_A_NAME, "#comments")
    # A pinned note on a phone: over the video, never over the tiles' names (item 5 of issue 27).
    await host.fill("#pin-form input[name=text]", "Free shipping over 99 today")
    await host.click("#pin-form button >> nth=0")
    await wait_for(phone, "!(" + HIDDEN % "#announcement" + ")")
    r["note_covers_name"] = await phone.evaluate(COVERS_A_NAME, "#announcement")
    # The engineers' figures are one tap away, not on a shopper's screen.
    r["stats_hidden_at_first"] = await phone.evaluate(HIDDEN % "#stats")
    await phone.click("#stats-toggle")
    r["stats_after_toggle"] = await phone.evaluate(
        "!(" + HIDDEN % "#stats" + ") && document.querySelector('#stats-toggle').getAttribute('aria-expanded')")
    await phone.click("#stats-toggle")
    # Issue 27, item 4: the show fills the phone's screen (the picture covers it), like, share and fit in a
    # column down the right edge, clear of the comments and above the comment box.
    r["full_screen"] = await phone.evaluate("""(() => {
        const s = document.querySelector('#stage').getBoundingClientRect();
        const v = document.querySelector('#stage video').getBoundingClientRect();
        return [s.left, s.top, s.width, s.height, v.width >= innerWidth - 1 && v.height >= innerHeight - 1]; })()""")
    r["rail"] = await phone.evaluate("""(() => {
        const box = (sel) => document.querySelector(sel).getBoundingClientRect();
        const controls = box('#comment-form'), comments = box('#comments'), card = box('#product-card');
        return ['#like', '#share', '#fit'].map(sel => { const b = box(sel);
            return { right_edge: innerWidth - b.right <= 12, above_box: b.bottom <= controls.top,
                     clear_of_comments: b.left >= comments.right, clear_of_card: b.left >= card.right }; }); })()""")
    # Share: the room's link (never this viewer's token) copied, marked as a share for the dashboard's sources.
    # (On a page of its own: in a context given clipboard permissions, a reloaded page here never decoded
    # its video again, with no error on the page.)
    sharing = await browser.new_context(viewport={"width": 390, "height": 844},
                                        permissions=["clipboard-read", "clipboard-write"])
    sharer = await sharing.new_page()
    await sharer.goto(f"{base}/?view=viewer&room=show&token={token('show', 'sue', Role.VIEWER, 'Sue')}")
    await wait_for(sharer, "window.liveRelay.channel && window.liveRelay.channel.joined")
    await sharer.click("#share")
    r["share_toast"] = await wait_for(sharer, "!(" + HIDDEN % "#toast" + ")"
                                              " && document.querySelector('#toast').textContent")
    r["shared_link"] = await sharer.evaluate("navigator.clipboard.readText()")
    await sharing.close()
    # The whole picture on a tap, and back.
    fit = "getComputedStyle(document.querySelector('#stage video')).objectFit"
    await phone.click("#fit")
    r["fit_whole"] = [await phone.evaluate(fit), await phone.get_attribute("#fit", "aria-pressed")]
    await phone.click("#fit")
    r["fit_back"] = await phone.evaluate(fit)
    # A double tap on the video likes, as in the apps shoppers know.
    likes = int(await phone.text_content("#like-count"))
    await phone.dblclick("#stage", position={"x": 195, "y": 420})
    r["double_tap_liked"] = bool(await wait_for(
        phone, f"Number(document.querySelector('#like-count').textContent) > {likes}"))
    await phone.click("#product-card .close")
    r["card_closed"] = await phone.evaluate(HIDDEN % "#product-card")
    r["e2e_shown"] = await phone.text_content("#stat-e2e")
    await phone.screenshot(path=str(out / "viewer-phone.png"))
    # Reloaded, the page remembers the sound choice.
    await phone.reload()
    await wait_for(phone, "window.liveRelay.framesDecoded > 0")
    r["unmuted_after_reload"] = await phone.evaluate(
        "[...document.querySelectorAll('#stage video')].every(v => !v.muted)")
    r["unmute_hidden_after_reload"] = await phone.evaluate(HIDDEN % "#unmute")
    # A guest (no token) is told how to comment instead of being answered "forbidden".
    guest = await browser.new_page()
    await guest.goto(f"{base}/?view=viewer&room=show")
    await wait_for(guest, "window.liveRelay.channel && window.liveRelay.channel.joined")
    # A desktop: the comments in a column at the right of the show.
    r["desktop_side_column"] = await guest.evaluate("""(() => {
        const s = document.querySelector('#stage').getBoundingClientRect();
        const c = document.querySelector('#comments').getBoundingClientRect();
        return c.left >= s.right && c.top <= s.top + 1; })()""")
    r["guest_hint_fits"] = await guest_hint_fits_a_phone(browser, base)
    r["guest_box"] = await guest.evaluate(
        "({disabled: document.querySelector('#comment-input').disabled,"
        " hint: document.querySelector('#comment-input').placeholder})")
    # An outage is noticed within seconds: the page says it is reconnecting, then comes back.
    joins = await phone.evaluate("window.liveRelay.joins")
    await phone.context.set_offline(True)
    started = time.monotonic()
    await wait_for(phone, "document.querySelector('#status').textContent.includes('reconnecting')", timeout=10)
    r["outage_noticed_s"] = round(time.monotonic() - started, 2)
    await phone.context.set_offline(False)
    await wait_for(phone, f"window.liveRelay.joins > {joins}", timeout=20)
    r["back_after_outage"] = True
    return r


async def host_page(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """What a host meets: no echo of their own stream, pinning, the stage list, PK time, a private call."""
    r: dict[str, Any] = {}
    host = await host_on_air(base, "show", browser)
    viewer = await browser.new_page()
    await viewer.goto(f"{base}/?view=viewer&room=show")
    await wait_for(viewer, "window.liveRelay.framesDecoded > 0")
    await asyncio.sleep(1.0)
    r["host_own_tiles"] = await host.evaluate("document.querySelectorAll('#stage .tile:not(.self) video').length")
    # The host sees itself on its stage as the audience does (it was black, a 160 px preview aside).
    r["self_view"] = await wait_for(host, """(() => { const v = document.querySelector('#self-tile video');
        return v && v.videoWidth > 0 && v.muted && {
            width: v.getBoundingClientRect().width, label: document.querySelector('#self-tile .label').textContent,
            stage: document.querySelector('#stage').getBoundingClientRect().width }; })()""")
    # Pin and unpin a note.
    await host.fill("#pin-form input[name=text]", "Free shipping tonight")
    await host.click("#pin-form button >> text=Pin")
    await wait_for(viewer, "document.querySelector('#announcement').textContent.includes('Free shipping')"
                           " && !(" + HIDDEN % "#announcement" + ")")
    await host.click("#unpin")
    r["unpinned"] = bool(await wait_for(viewer, HIDDEN % "#announcement"))
    # A co-host on stage: listed for the host with mute and remove; the co-host can leave.
    async with LiveClient(ws, "show", token("show", "gus", Role.VIEWER, "Gus")) as gus:
        await gus.request({"type": "stage_request"})
        await host.wait_for_selector("#requests li button", timeout=20000)
        await host.click("#requests li button >> text=Accept")
        await host.wait_for_selector("#seats li[data-user=gus] .remove", timeout=20000)
        await host.click("#seats li[data-user=gus] .mute-audio")
        while not (await gus.next_event("stage", timeout=10))["state"]["seats"][0]["muted"]["audio"]:
            pass
        r["cohost_muted"] = True
        await host.click("#seats li[data-user=gus] .remove")
        r["cohost_removed"] = (await gus.next_event("grant", timeout=10))["reason"]
    # A PK with its time left, and the bar gone when it ends.
    from clients.sources import CounterVideoTrack

    async with LiveClient(ws, "rival", token("rival", "rita", Role.HOST)) as rita:
        rival_stream = await MediaSession.publish(rita, [CounterVideoTrack(320, 240)])
        # Picked from the list of live shows (issue 27: not typed): rita's room, not the host's own.
        await host.fill("#pk-form input[name=duration]", "60")
        await host.click("#pk-refresh")
        await host.wait_for_selector("#pk-rooms li[data-room=rival] button", timeout=20000)
        r["pk_list"] = await host.evaluate("[...document.querySelectorAll('#pk-rooms li')].map(li => li.textContent)")
        await host.click("#pk-rooms li[data-room=rival] button")
        await rita.next_event("pk_invited", timeout=10)
        await rita.request({"type": "pk_answer", "room": "show", "accept": True})
        await wait_for(viewer, "!(" + HIDDEN % "#pk-bar" + ")")
        r["pk_time"] = await wait_for(viewer, "document.querySelector('#pk-bar .time')?.textContent")
        # Each host's tile under its own half of the bar (issue 27, item 1): left name, left tile.
        await wait_for(viewer, "document.querySelectorAll('#stage .tile').length === 2")
        r["pk_halves"] = await viewer.evaluate("""(() => {
            const x = (el) => el.getBoundingClientRect().left;
            const name = (sel) => document.querySelector(sel).textContent.trim();
            const left = name('#pk-bar .a').split(' ')[0], right = name('#pk-bar .b').split(' ').pop();
            const tile = (user) => [...document.querySelectorAll('#stage .tile')]
                .find(t => t.querySelector('.label').textContent === user);
            return [left, right, x(tile(left)) < x(tile(right))]; })()""")
        # On a phone the PK is a split screen: the two hosts side by side in the upper part, each side's
        # name and score right under its own host.
        phone = await browser.new_page(viewport={"width": 390, "height": 844})
        await phone.goto(f"{base}/?view=viewer&room=show")
        await wait_for(phone, "document.querySelectorAll('#stage .tile video').length === 2"
                              " && !(" + HIDDEN % "#pk-bar" + ")")
        await wait_for(phone, "[...document.querySelectorAll('#stage .tile video')].every(v => v.videoWidth > 0)")
        r["pk_phone"] = await phone.evaluate("""(() => {
            const box = (el) => el.getBoundingClientRect();
            const tiles = [...document.querySelectorAll('#stage .tile')].map(box).sort((a, b) => a.left - b.left);
            const mid = (el) => { const b = box(el); return (b.left + b.right) / 2; };
            const a = document.querySelector('#pk-bar .a'), b = document.querySelector('#pk-bar .b');
            const bar = box(document.querySelector('#pk-bar'));
            return { side_by_side: tiles[0].right <= tiles[1].left + 1 && Math.abs(tiles[0].top - tiles[1].top) < 1
                                   && tiles.every(t => t.width >= innerWidth / 2 - 4),
                     upper_part: tiles.every(t => t.bottom <= innerHeight * 0.6),
                     bar_under_tiles: bar.top >= tiles[0].bottom,
                     scores_over_own_host: mid(a) < tiles[0].right && mid(b) > tiles[1].left }; })()""")
        await phone.screenshot(path=str(out / "pk-phone.png"))
        await phone.close()
        await rita.request({"type": "pk_end"})
        await rival_stream.close()
        r["pk_bar_gone"] = bool(await wait_for(viewer, HIDDEN % "#pk-bar"))
    # The host takes a viewer into a private call: the others are told why the picture froze.
    async with LiveClient(ws, "show", token("show", "vip", Role.VIEWER)) as vip:
        await host.fill("#call-form input[name=user]", "vip")
        await host.uncheck("#call-form input[name=keep]")
        await host.click("#call-form button")
        await vip.next_event("call_invited", timeout=10)
        await vip.request({"type": "call_answer", "accept": True})
        r["call_notice"] = await wait_for(viewer, "!(" + HIDDEN % "#notice" + ")"
                                                  " && document.querySelector('#notice').textContent")
        r["host_status_in_call"] = await wait_for(host, "document.querySelector('#call-hangup')"
                                                        " && document.querySelector('#status').textContent")
        await host.screenshot(path=str(out / "host.png"))
        await vip.request({"type": "call_end"})
        r["call_notice_gone"] = bool(await wait_for(viewer, HIDDEN % "#notice"))
        # Its header says what it is doing now (it kept saying "call invitation sent").
        r["host_status_after_call"] = await wait_for(
            host, "(() => { const s = document.querySelector('#status').textContent;"
                  " return s !== 'in call' && s; })()")
    # The studio (issue 27, item 7): a viewer's comment carries a one-tap call (no user id to type).
    async with LiveClient(ws, "show", token("show", "zoe", Role.VIEWER, "Zoe")) as zoe:
        await zoe.request({"type": "comment", "text": "can I see the back?"})
        call_button = "#comments li:has-text('can I see the back?') .mod button >> text=1v1"
        await host.wait_for_selector(call_button, timeout=10000)
        await host.click(call_button)
        invited = await zoe.next_event("call_invited", timeout=10)
        r["tap_call_from"] = invited["from"]
        r["tap_call_status"] = await wait_for(host, "(() => { const s = document.querySelector('#status').textContent;"
                                                    " return s.startsWith('call invitation') && s; })()")
        await zoe.request({"type": "call_answer", "accept": False})
        r["declined_status"] = await wait_for(host, "(() => { const s = document.querySelector('#status').textContent;"
                                                    " return s.includes('declined') && s; })()")
    # Record: every viewer sees the REC mark while it records; the host's button says what a tap does next.
    await host.click("#record")
    r["rec_seen"] = bool(await wait_for(viewer, "!(" + HIDDEN % "#rec" + ")"))
    r["record_button"] = await wait_for(host, "(() => { const b = document.querySelector('#record'); return"
                                              " b.getAttribute('aria-pressed') === 'true' && b.textContent; })()")
    # End the show: recording stops (the mark goes), the host's camera goes off and its video leaves the
    # audience's stage, and the host is offered the replay and the numbers.
    await host.click("#end-show")
    r["rec_gone"] = bool(await wait_for(viewer, HIDDEN % "#rec"))
    r["tiles_after_end"] = await wait_for(viewer, "(() => { const n = document.querySelectorAll('#stage .tile').length;"
                                                  " return n === 0 ? 'none' : false; })()")
    r["ended"] = await wait_for(host, "!(" + HIDDEN % "#show-ended" + ") && {"
                                      " replay: document.querySelector('#show-ended .replay').getAttribute('href'),"
                                      " camera: !document.querySelector('#self-tile'),"
                                      " status: document.querySelector('#status').textContent }")
    await host.screenshot(path=str(out / "host-ended.png"))
    return r


async def whip(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """The page's own WHIP and WHEP client (plain HTTP, no WebSocket) in Chromium."""
    r: dict[str, Any] = {}
    async with LiveClient(ws, "show") as watcher:
        studio = await browser.new_page()
        await studio.goto(f"{base}/?view=whip&room=show&token={token('show', 'studio', Role.HOST)}")
        joined = await watcher.next_event("media", timeout=20)
        r["joined_user"] = joined["user"]
        session = await MediaSession.subscribe(watcher, publisher=joined["publisher"], kinds=("video",))
        track = await session.wait_track("video", timeout=20)
        frames = [await asyncio.wait_for(track.recv(), 20) for _ in range(5)]
        r["python_decoded"] = [frames[-1].width, frames[-1].height]
        await session.close()
        player = await browser.new_page()
        await player.goto(f"{base}/?view=whep&room=show")
        r["whep_frames"] = await wait_for(player, """(async () => {
            if (!window.liveRelay.whep) return 0;
            const s = await window.liveRelay.whep.pc.getStats(); let n = 0;
            s.forEach(x => { if (x.type === 'inbound-rtp' && x.kind === 'video') n = x.framesDecoded; });
            return n > 5 ? n : 0; })()""")
        r["whep_stop"] = await player.evaluate("window.liveRelay.whep.stop()")
        r["whip_stop"] = await studio.evaluate("window.liveRelay.whip.stop()")
        while (left := await watcher.next_event("media", timeout=10))["event"] != "publisher_left":
            pass
        r["left"] = left["publisher"] == joined["publisher"]
    return r


WHEP_FRAMES = """(async () => {
    if (!window.liveRelay.whep) return 0;
    const s = await window.liveRelay.whep.pc.getStats(); let n = 0;
    s.forEach(x => { if (x.type === 'inbound-rtp' && x.kind === 'video') n = x.framesDecoded; });
    return n; })()"""


async def whep_restart(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """A WHEP player opened before the stream starts, then a publisher that restarts as OBS does (DELETE,
    then a new POST): the player waits, plays, and plays again, with no reload."""
    r: dict[str, Any] = {}
    player = await browser.new_page()
    await player.goto(f"{base}/?view=whep&room=show")
    await asyncio.sleep(1.0)
    r["waiting_status"] = await player.text_content("#status")
    host = token("show", "studio", Role.HOST)
    studio = await browser.new_page()
    await studio.goto(f"{base}/?view=whip&room=show&token={host}")
    over_five = f"(async () => {{ const n = await {WHEP_FRAMES}; return n > 5 ? n : 0; }})()"
    r["first_frames"] = await wait_for(player, over_five)
    r["whip_stop"] = await studio.evaluate("window.liveRelay.whip.stop()")
    await studio.close()
    restarted = time.monotonic()
    before = int(await player.evaluate(WHEP_FRAMES))
    studio = await browser.new_page()
    await studio.goto(f"{base}/?view=whip&room=show&token={host}")
    # Frames again: on the same session (the server hands it to the new stream of the same user), or on a
    # new one the page started if the restart took longer than its 3 s of silence.
    more = f"(async () => {{ const n = await {WHEP_FRAMES}; return (n > {before} + 5 || " \
           f"(window.liveRelay.whepPlayer.sessions >= 2 && n > 5)) ? n : 0; }})()"
    r["second_frames"] = await wait_for(player, more, timeout=30)
    r["back_after_s"] = round(time.monotonic() - restarted, 2)
    r["sessions"] = await player.evaluate("window.liveRelay.whepPlayer.sessions")
    r["status"] = await player.text_content("#status")
    r["whep_stop"] = await player.evaluate("window.liveRelay.whep.stop()")
    await studio.evaluate("window.liveRelay.whip.stop()")
    return r


async def replay(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """A recorded show replayed in the page: its product card and comment at their moments, and seeking."""
    from clients.sources import CounterVideoTrack, ToneAudioTrack

    r: dict[str, Any] = {}
    async with LiveClient(ws, "show", token("show", "host", Role.HOST)) as host:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240), ToneAudioTrack()])
        await host.request({"type": "record_start"})
        await asyncio.sleep(0.5)
        await host.push_product({"id": "r1", "title": "Replay teapot", "price": "9.00", "currency": "EUR",
                                 "url": "https://shop.example/teapot", "image": f"{base}/static/demo/tea.svg"})
        await asyncio.sleep(1.0)
        await host.comment("replayed comment")
        await asyncio.sleep(1.5)
        await host.request({"type": "record_stop"})
        await publisher.close()
    page = await browser.new_page()
    await page.goto(f"{base}/?view=replay&room=show&token={token('show', 'host', Role.HOST)}")
    await wait_for(page, "window.liveRelay.replay && window.liveRelay.replayMs > 2300", timeout=30)
    r["duration"] = await page.evaluate("window.liveRelay.replay.video.duration")
    r["comment_listed"] = await page.evaluate(COMMENT_SHOWN % "replayed comment")
    r["product"] = await page.text_content("#product-card .product-title")
    await page.screenshot(path=str(out / "replay.png"))
    # Seek back to the start: the screen is as it was then (no card, no comment yet), and it plays again.
    await page.evaluate("window.liveRelay.replay.video.currentTime = 0.05")
    r["after_seek_clean"] = bool(await wait_for(
        page, "!(" + COMMENT_SHOWN % "replayed comment" + ") && " + HIDDEN % "#product-card"))
    await wait_for(page, "window.liveRelay.replayMs > 1200", timeout=20)
    r["product_again"] = await wait_for(page, "!(" + HIDDEN % "#product-card" + ")")
    # The host shares the replay; a visitor with no token watches it from the link, and its card's Buy goes
    # through the server as a replay click.
    await page.click("#share-replay")
    r["share_link"] = await wait_for(page, "!document.querySelector('#share-link').hidden && "
                                           "document.querySelector('#share-link').value")
    visitor = await (await browser.new_context()).new_page()  # (no session storage of the host's)
    await visitor.goto(r["share_link"])
    await wait_for(visitor, "window.liveRelay.replay && window.liveRelay.replayMs > 2000", timeout=30)
    r["visitor_buy"] = await visitor.evaluate("document.querySelector('#product-card .buy').href")
    r["visitor_no_share_button"] = await visitor.evaluate("!document.querySelector('#share-replay')")
    async with aiohttp.ClientSession() as http:
        async with http.get(r["visitor_buy"], allow_redirects=False) as bought:
            r["buy_location"] = bought.headers.get("Location", "")
    return r


# The pixel code of clients/sources (frame counter, send time in ms) read back from a <video>'s picture.
READ_PICTURE_STAMP = """(video) => {
  const c = document.createElement("canvas"); c.width = video.videoWidth; c.height = video.videoHeight;
  const g = c.getContext("2d"); g.drawImage(video, 0, 0);
  const d = g.getImageData(0, 0, c.width, 64).data; const perRow = Math.floor(c.width / 16); let v = 0n;
  for (let bit = 0; bit < 64; bit++) {
    const row = Math.floor(bit / perRow), col = bit % perRow; let sum = 0, n = 0;
    for (let y = row * 16 + 4; y < row * 16 + 12; y++)
      for (let x = col * 16 + 4; x < col * 16 + 12; x++) { sum += d[(y * c.width + x) * 4]; n++; }
    v = (v << 1n) | (sum / n > 128 ? 1n : 0n);
  }
  return Number(v & 0xffffffffn);
}"""


async def replay_tiles(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """Issue 26: a show recorded with a co-host who came on 2 s in and left 4 s later, replayed in the page:
    the co-host's tile is there only while it was on, and at a moment when both were, the two tiles show
    pictures made at the same time (each picture carries the wall-clock time it was made)."""
    from clients.sources import CounterVideoTrack, ToneAudioTrack

    r: dict[str, Any] = {}
    async with LiveClient(ws, "show", token("show", "host", Role.HOST)) as host, \
            LiveClient(ws, "show", token("show", "guest", Role.COHOST, "Guest")) as guest:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240), ToneAudioTrack()])
        await asyncio.sleep(1.0)
        await host.request({"type": "record_start"})
        await asyncio.sleep(2.0)
        cohost = await MediaSession.publish(guest, [CounterVideoTrack(320, 240), ToneAudioTrack()])
        await asyncio.sleep(4.0)
        await cohost.close()
        await asyncio.sleep(2.0)
        await host.request({"type": "record_stop"})
        await publisher.close()
    await asyncio.sleep(1.0)  # both files closed
    page = await browser.new_page()
    await page.goto(f"{base}/?view=replay&room=show&token={token('show', 'host', Role.HOST)}")
    await wait_for(page, "window.liveRelay.replay && window.liveRelay.replayMs > 200", timeout=30)
    r["tiles"] = await page.evaluate("window.liveRelay.replay.tiles.map(t => [t.user, t.start, t.end])")
    r["guest_shown_at_start"] = await page.evaluate("!window.liveRelay.replay.tiles[1].el.hidden")
    guest = "window.liveRelay.replay.tiles[1]"
    # Halfway through the guest's time on: pause there, let the guest's tile settle, read both pictures.
    await page.evaluate("""(() => { const r = window.liveRelay.replay, g = r.tiles[1];
        r.video.currentTime = ((g.start + g.end) / 2 - r.start) / 1000; })()""")
    await wait_for(page, f"!{guest}.el.hidden && {guest}.video.readyState >= 2 && "
                         "window.liveRelay.replay.video.readyState >= 2", timeout=20)
    await page.evaluate("window.liveRelay.replay.video.pause()")
    await asyncio.sleep(1.0)
    stamps = await page.evaluate(f"""(() => {{ const read = {READ_PICTURE_STAMP};
        const r = window.liveRelay.replay; return [read(r.video), read(r.tiles[1].video)]; }})()""")
    diff = (stamps[0] - stamps[1]) & 0xFFFFFFFF
    r["made_apart_ms"] = diff - 2**32 if diff >= 2**31 else diff
    r["guest_layout_cols"] = await page.evaluate("getComputedStyle(document.querySelector('#stage'))"
                                                 ".getPropertyValue('--cols').trim()")
    await page.screenshot(path=str(out / "replay-tiles.png"))
    # After the guest left: its tile goes.
    await page.evaluate("""(() => { const r = window.liveRelay.replay, g = r.tiles[1];
        r.video.currentTime = (g.end - r.start) / 1000 + 1.0; r.video.play(); })()""")
    r["guest_gone_after"] = bool(await wait_for(page, f"{guest}.el.hidden", timeout=10))
    return r


async def shop(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """Analytics from the page: a viewer from a campaign sees a product card (an impression), its Buy link
    goes through the server's redirect (a click), and the host's dashboard shows it live with its charts."""
    import aiohttp

    r: dict[str, Any] = {}
    async with LiveClient(ws, "show", token("show", "host", Role.HOST)) as host:
        viewer = await browser.new_page()
        await viewer.goto(f"{base}/?view=viewer&room=show&src=douyin")
        await wait_for(viewer, "window.liveRelay.channel && window.liveRelay.channel.joined")
        r["viewer_id"] = await viewer.evaluate("window.liveRelay.channel.joined.viewer")
        await host.push_product({"id": "A", "title": "Silk scarf", "price": "39.00", "currency": "EUR",
                                 "url": "https://shop.example/scarf", "image": f"{base}/static/demo/tea.svg",
                                 "countdown_s": 300})
        await wait_for(viewer, "!(" + HIDDEN % "#product-card" + ")")
        href = await viewer.evaluate("document.querySelector('#product-card .buy').href")
        r["buy_href"] = href
        async with aiohttp.ClientSession() as http, http.get(href, allow_redirects=False) as resp:
            r["click_status"], r["click_location"] = resp.status, resp.headers.get("Location", "")
        # The studio's live numbers (issue 27, host studio): the viewer watching, the click counted.
        studio = await browser.new_page(viewport={"width": 1280, "height": 900})
        await studio.goto(f"{base}/?view=host&room=show&token={token('show', 'host', Role.HOST)}")
        number = "document.querySelector('#studio-numbers [data-number=%s]').textContent"
        r["studio_clicks"] = await wait_for(studio, f"{number % 'clicks'} === '1' && {number % 'clicks'}")
        r["studio_watching"] = await studio.text_content("#studio-numbers [data-number=watching]")
        # The catalog editor: a file opened (its format from its name), given to the assistant; a bad one
        # refused with the server's reason.
        await studio.set_input_files("#catalog-file", files=[{
            "name": "catalog.json", "mimeType": "application/json",
            "buffer": b'{"products": [{"id": "B", "title": "Wool hat"}], "faq": [{"q": "Do you ship abroad?",'
                      b' "a": "Yes, to 30 countries."}]}'}])
        await wait_for(studio, "document.querySelector('#catalog-text').value.includes('Wool hat')")
        r["catalog_format"] = await studio.evaluate("document.querySelector('#catalog-format').value")
        await studio.click("#catalog-form button")
        result = "document.querySelector('#catalog-result').textContent"
        r["catalog_saved"] = await wait_for(studio, f"{result}.startsWith('Saved') && {result}")
        r["assistant_mode"] = await studio.evaluate("document.querySelector('#assistant-mode').value")
        await studio.fill("#catalog-text", "a: [")
        await studio.select_option("#catalog-format", "yaml")
        await studio.click("#catalog-form button")
        r["catalog_refused"] = await wait_for(studio, f"{result}.startsWith('Not saved') && {result}")
        await studio.screenshot(path=str(out / "studio.png"), full_page=True)
        await studio.close()
        dashboard = await browser.new_page()
        await dashboard.goto(f"{base}/?view=dashboard&room=show&token={token('show', 'host', Role.HOST)}")
        report = await wait_for(dashboard, "(() => { const r = window.liveRelay.report; return r && r.funnel && "
                                           "r.funnel[3].viewers >= 1 && r; })()", timeout=30)
        r["funnel"] = {step["step"]: step["viewers"] for step in report["funnel"]}
        r["live"] = report["live"]
        drawn = "[...document.querySelectorAll('#dashboard img')].filter(i => i.complete && i.naturalWidth > 0).length"
        # Both charts drawn (each refresh reloads them, so wait until both are, and count them then).
        r["charts_drawn"] = await wait_for(dashboard, f"(({drawn}) >= 2) && ({drawn})")
        r["live_line"] = await dashboard.text_content("#dash-live")
        # In words a seller reads: headings, the funnel's steps, rates as percentages (not of_entered, 1.0).
        r["dash_words"] = await dashboard.evaluate("""(() => {
            const [funnel, products] = document.querySelectorAll('#dashboard table');
            return { heads: [...funnel.querySelectorAll('th')].map(th => th.textContent),
                     first: [...funnel.tBodies[0].rows[0].cells].map(c => c.textContent),
                     product: products.tBodies[0].rows[0].cells[0].textContent }; })()""")
        await dashboard.screenshot(path=str(out / "dashboard.png"), full_page=True)
        # The assistant answers a viewer's question; the page shows it with its badge, under the question.
        await host.request({"type": "assistant", "on": True})
        async with LiveClient(ws, "show", token("show", "asker")) as asker:
            await asker.request({"type": "comment", "text": "how much is the scarf?"})
            r["assistant_item"] = await wait_for(viewer, "(() => { const li = document.querySelector("
                                                         "'#comments li.assistant'); return li && li.textContent; })()")
        # Its reply bubble: the answer without the raw link, and a chip for the card it is about (title,
        # price, a countdown that goes on), tappable where it is, linking through /go like Buy.
        chip = """(() => { const li = document.querySelector('#comments li.assistant');
            const c = li.querySelector('.chip'); if (!c) return null;
            c.scrollIntoView({ block: 'center' }); const box = c.getBoundingClientRect();
            const hit = document.elementFromPoint(box.x + box.width / 2, box.y + box.height / 2);
            return { text: li.querySelector(':scope > span:nth-of-type(2)').textContent, href: c.href,
                     title: c.querySelector('b').textContent, extra: c.querySelector('.chip-extra').textContent,
                     tappable: !!hit && c.contains(hit), height: box.height,
                     flown: [...document.querySelectorAll('#danmaku .bullet')]
                         .some(b => b.textContent.includes('scarf:')) }; })()"""
        r["chip"] = await wait_for(viewer, chip)
        await asyncio.sleep(2.2)
        r["chip_later"] = await viewer.evaluate(chip)
        async with aiohttp.ClientSession() as http, http.get(r["chip"]["href"], allow_redirects=False) as resp:
            r["chip_click"] = resp.status, resp.headers.get("Location", "")
        await viewer.screenshot(path=str(out / "assistant.png"))
    return r


async def moderation(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """A host moderating from the page (delete, mute, remove, blocked words), and a crafted link whose
    `nodes=` would send the viewer to a foreign server when its connection drops (finding 2)."""
    from aiohttp import web

    from tests.conftest import free_port

    r: dict[str, Any] = {}
    foreign_hits: list[str] = []

    async def foreign(request: web.Request) -> web.StreamResponse:  # the attacker's server
        foreign_hits.append(request.path_qs)
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", foreign)
    runner = web.AppRunner(app)
    await runner.setup()
    evil_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", evil_port).start()
    try:
        host = await browser.new_page()
        await host.goto(f"{base}/?view=host&room=show&token={token('show', 'host', Role.HOST, 'Host')}")
        await wait_for(host, "window.liveRelay.channel && window.liveRelay.channel.joined")
        viewer = await browser.new_page(viewport={"width": 390, "height": 844})
        await viewer.goto(f"{base}/?view=viewer&room=show&nodes=ws://127.0.0.1:{evil_port}/ws"
                          f"&token={token('show', 'troll', Role.VIEWER, 'Troll')}")
        await wait_for(viewer, "window.liveRelay.channel && window.liveRelay.channel.joined")
        # The server drops the viewer (as a slow consumer): it comes back to this server, never the other.
        await kick(relay, "show", "troll")
        await wait_for(viewer, "window.liveRelay.joins >= 2")
        r["rejoined_here"] = True
        r["foreign_hits"] = list(foreign_hits)
        async with LiveClient(ws, "show") as watcher, \
                LiveClient(ws, "show", token("show", "spammer", Role.VIEWER, "Spammer")) as spammer, \
                LiveClient(ws, "show", token("show", "loud", Role.VIEWER, "Loud")) as loud:
            await spammer.comment("cheap followers at spam dot example")
            await wait_for(viewer, COMMENT_SHOWN % "cheap followers")
            # Delete: the host clicks it on its own page; the viewer's page and a Python viewer lose it.
            await host.click("#comments li:has-text('cheap followers') .mod button:has-text('Delete')")
            r["deleted_event"] = (await watcher.next_event("comment_deleted", timeout=10))["target"] > 0
            r["gone_on_viewer"] = await wait_for(viewer, "!(" + COMMENT_SHOWN % "cheap followers" + ")")
            # Mute: the muted user's next comment is refused.
            await loud.comment("LOUD NOISES")
            await wait_for(host, COMMENT_SHOWN % "LOUD NOISES")
            await host.click("#comments li:has-text('LOUD NOISES') .mod button:has-text('Mute')")
            r["mute_told"] = (await loud.next_event("moderation", timeout=10))["action"]
            try:
                await loud.comment("still loud")
                r["muted_refused"] = None
            except Exception as exc:  # what the refusal says is the result
                r["muted_refused"] = getattr(exc, "code", repr(exc))
            # Blocked words from the host panel.
            await host.fill("#words-form input[name=words]", "假货, scam")
            await host.click("#words-form button")
            await wait_for(host, "document.querySelector('#status').textContent.includes('words blocked')")
            try:
                await spammer.comment("这是假货")
                r["word_refused"] = None
            except Exception as exc:
                r["word_refused"] = getattr(exc, "code", repr(exc))
            # Remove: the troll comments from the page; the host removes them; the page says so and stays out.
            await viewer.fill("#comment-input", "you all smell")
            await viewer.press("#comment-input", "Enter")
            await wait_for(host, COMMENT_SHOWN % "you all smell")
            await host.click("#comments li:has-text('you all smell') .mod button:has-text('Remove')")
            r["removed_status"] = await wait_for(viewer, "(() => { const t = document.querySelector('#status')"
                                                         ".textContent; return t.includes('removed') && t; })()")
            await asyncio.sleep(1.5)  # a page that retried would have rejoined by now
            r["joins_after_removal"] = await viewer.evaluate("window.liveRelay.joins")
            await host.screenshot(path=str(out / "moderation-host.png"))
            await viewer.screenshot(path=str(out / "moderation-viewer.png"))
        r["foreign_hits"] = list(foreign_hits)
    finally:
        await runner.cleanup()
    return r


@contextlib.asynccontextmanager
async def saturated(relay: Any) -> AsyncIterator[None]:
    """The node saturated for as long as this lasts: the load gauge's threshold set below the loop's ordinary
    lateness; room again after (the gauge recovers once the loop's lateness is under half of it)."""
    normal = relay.load.high
    relay.load.high = 1e-6  # any lateness at all is "saturated" now
    try:
        async with asyncio.timeout(20):
            while not relay.load.saturated:  # noqa: ASYNC110 - the gauge samples on a timer
                await asyncio.sleep(0.05)
        yield
    finally:
        relay.load.high = normal


async def overload(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """A viewer who arrives while the node is saturated is told the video comes in a moment, and gets it once
    the node has room, with no reload. Saturation comes from the gauge's threshold, set below the loop's
    ordinary lateness: blocking the loop for real (as tests/test_overload.py does with Python clients) on
    2 cores shared with Chromium encoding three layers left the phone's own page unable to load and ask in
    time in full-suite runs. How real lag makes a node saturated is test_overload's."""
    r: dict[str, Any] = {}
    host = await host_on_air(base, "show", browser)
    async with saturated(relay):
        phone = await browser.new_page(viewport={"width": 390, "height": 844})
        await phone.goto(f"{base}/?view=viewer&room=show&token={token('show', 'bea', Role.VIEWER, 'Bea')}")
        r["busy_retries"] = await wait_for(phone, "window.liveRelay.busyRetries", timeout=40)
        r["told"] = await phone.text_content("#status")
    await wait_for(phone, "window.liveRelay.framesDecoded > 0", timeout=40)
    r["frames"] = await frames_decoded(phone)
    r["status_after"] = await phone.text_content("#status")
    r["refused"] = relay.media.refused_overloaded
    await phone.close()
    await host.close()
    return r


OBS_STYLE_WHIP = """async ([url, token]) => {
  // OBS 31's WHIP simulcast, from Chromium: rid "0" the full picture first, then "1" and "2" smaller.
  const stream = await navigator.mediaDevices.getUserMedia({video: {width: 1280, height: 720}});
  const pc = new RTCPeerConnection();
  const layers = [
    {rid: "0", maxBitrate: 1500000}, {rid: "1", scaleResolutionDownBy: 2, maxBitrate: 500000},
    {rid: "2", scaleResolutionDownBy: 4, maxBitrate: 150000}];
  const t = pc.addTransceiver(stream.getVideoTracks()[0], {direction: "sendonly", sendEncodings: layers});
  const wanted = RTCRtpSender.getCapabilities("video").codecs.filter(c => c.mimeType === "video/H264");
  if (wanted.length) t.setCodecPreferences(wanted);
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(done => { if (pc.iceGatheringState === "complete") done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done(); setTimeout(done, 2000); });
  const answer = await fetch(url, {method: "POST", body: pc.localDescription.sdp,
    headers: {"Content-Type": "application/sdp", "Authorization": "Bearer " + token}});
  await pc.setRemoteDescription({type: "answer", sdp: await answer.text()});
  window.obsLike = pc;
  return {codec: wanted.length ? "H264" : "VP8", rids: pc.localDescription.sdp.match(/a=simulcast:send (.*)/)[1]};
}"""


async def obs_simulcast(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """An OBS-style simulcast WHIP publisher (full size listed first) and a WHEP player in Chromium: the
    player should be given the full-size layer."""
    r: dict[str, Any] = {}
    async with LiveClient(ws, "show") as watcher:
        studio = await browser.new_page()
        await studio.goto(f"{base}/?view=whep&room=none")  # any page of the server: the script does the WHIP
        r.update(await studio.evaluate(OBS_STYLE_WHIP, [f"{base}/whip/show", token("show", "obs", Role.HOST)]))
        joined = await watcher.next_event("media", timeout=20)
        player = await browser.new_page()
        started = time.monotonic()
        await player.goto(f"{base}/?view=whep&room=show")
        widths = []
        while time.monotonic() - started < 12:
            width = await player.evaluate("""(async () => { if (!window.liveRelay.whep) return 0; let w = 0;
                (await window.liveRelay.whep.pc.getStats()).forEach(x => {
                  if (x.type === 'inbound-rtp' && x.kind === 'video') w = x.frameWidth || 0; });
                return w; })()""")
            widths.append((round(time.monotonic() - started, 2), width))
            await asyncio.sleep(0.25)
        r["widths"] = widths
        r["top_at"] = next((t for t, w in widths if w >= 1280), None)
        r["last_width"] = widths[-1][1]
        published = relay.media.router.rooms["show"].publishers[joined["publisher"]].tracks["video"]
        r["ranked_sources"] = [stream.source for stream in published.layers]
        r["layers"] = [(s.source, s.pixels, round(s.bitrate), s.ssrc) for s in published.layers]
        r["sender"] = await studio.evaluate("""(async () => { const out = [];
            (await window.obsLike.getStats()).forEach(x => { if (x.type === 'outbound-rtp') out.push([x.rid,
              x.frameWidth, x.qualityLimitationReason, x.targetBitrate]); });
            (await window.obsLike.getStats()).forEach(x => { if (x.type === 'candidate-pair' && x.nominated)
              out.push(['estimate', x.availableOutgoingBitrate]); });
            return out; })()""")
        await player.evaluate("window.liveRelay.whep.stop()")
        await studio.evaluate("window.obsLike.close()")
    return r


async def hls_ladder(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """An OBS-style simulcast WHIP publisher (H.264, three layers) over LL-HLS: a rendition per layer in the
    multivariant playlist, each read by ffprobe at its size; hls.js in Chromium plays it and, told to take
    the lowest rendition, decodes it at that size; a card pushed meanwhile is on every rendition's timeline."""
    r: dict[str, Any] = {}
    async with LiveClient(ws, "show", token("show", "producer", Role.HOST, "Producer")) as producer:
        studio = await browser.new_page()
        await studio.goto(f"{base}/?view=whep&room=none")  # any page of the server: the script does the WHIP
        r.update(await studio.evaluate(OBS_STYLE_WHIP, [f"{base}/whip/show", token("show", "obs", Role.HOST)]))
        published = None
        for _ in range(80):  # until every layer has sent a keyframe (Chromium starts the top one last)
            publishers = relay.media.router.publishers_of("show")
            published = publishers[0].tracks.get("video") if publishers else None
            if published is not None and len(published.layers) == 3 and all(s.pixels for s in published.layers):
                break
            await asyncio.sleep(0.25)
        assert published is not None
        r["layers"] = [s.pixels for s in published.layers]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/hls/show/index.m3u8") as answer:
                r["master_status"] = answer.status
            await asyncio.sleep(2.5)  # every rendition has a segment by now (a keyframe asked of each layer)
            async with http.get(f"{base}/hls/show/index.m3u8") as answer:
                r["master"] = await answer.text()
        r["variants"] = [line for line in r["master"].splitlines() if line.startswith("video")]
        r["probed"] = {name: await asyncio.to_thread(_probe_video, f"{base}/hls/show/{name}", 3)
                       for name in r["variants"]}
        await producer.push_product({"id": "sku-ladder", "title": "Ladder tea", "price": "5.00", "currency": "EUR",
                                     "url": "https://shop.example/t", "image": "https://shop.example/t.jpg"})
        await asyncio.sleep(0.3)
        async with aiohttp.ClientSession() as http:
            r["dateranges"] = {}
            for name in r["variants"]:
                async with http.get(f"{base}/hls/show/{name}") as answer:
                    r["dateranges"][name] = (await answer.text()).count("#EXT-X-DATERANGE:")
        page = await browser.new_page()
        await page.goto(f"{base}/healthz")
        await page.add_script_tag(url=f"{base}/static/vendor/hls.js")
        await page.evaluate("""(url) => {
            const video = document.createElement('video'); video.muted = true; video.autoplay = true;
            document.body.appendChild(video);
            const hls = new Hls({lowLatencyMode: true}); window.player = {hls, video};
            hls.loadSource(url); hls.attachMedia(video); }""", f"{base}/hls/show/index.m3u8")
        await wait_for(page, "window.player.video.getVideoPlaybackQuality().totalVideoFrames > 20", timeout=40)
        r["levels"] = await page.evaluate("window.player.hls.levels.map(l => [l.width, l.height, l.bitrate])")
        lowest = await page.evaluate("""(() => { const l = window.player.hls.levels; let k = 0;
            l.forEach((x, i) => { if (x.height < l[k].height) k = i; }); window.player.hls.currentLevel = k;
            return k; })()""")
        r["lowest_width"] = await wait_for(page, f"""(() => {{ const v = window.player.video;
            return window.player.hls.currentLevel === {lowest} && v.videoWidth > 0
                && v.videoWidth === window.player.hls.levels[{lowest}].width && v.videoWidth; }})()""", timeout=30)
        await page.close()
        await studio.evaluate("window.obsLike.close()")
    return r


async def blocked(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """A host whose network lets the page and its WebSocket through but nothing else (UDP and every other TCP
    port dropped, as a strict office firewall does, in this test's own network namespace): its page must
    say it is not on air (it said "on air" over video nobody got)."""
    import subprocess

    port = int(base.rsplit(":", 1)[1])
    rules = (f"table inet lr_block {{\n chain out {{\n type filter hook output priority 0; policy accept;\n"
             f" tcp dport {port} accept\n tcp sport {port} accept\n meta l4proto {{ tcp, udp }} drop\n }}\n}}\n")
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)  # noqa: ASYNC221 - before the pages
    r: dict[str, Any] = {"statuses": []}
    try:
        host = await browser.new_page()
        await host.goto(f"{base}/?view=host&room=show&token={token('show', 'host', Role.HOST, 'Host')}")
        await wait_for(host, "window.liveRelay.channel && window.liveRelay.channel.joined")
        await host.click("#go-live")
        started = time.monotonic()
        while time.monotonic() - started < 90:
            status = await host.text_content("#status")
            if not r["statuses"] or r["statuses"][-1] != status:
                r["statuses"].append(status)
            if status and status.startswith("not on air"):
                break
            await asyncio.sleep(0.5)
        r["told_after_s"] = round(time.monotonic() - started, 1)
        await host.screenshot(path=str(out / "host-blocked.png"))
    finally:
        subprocess.run(["nft", "delete", "table", "inet", "lr_block"], check=False)  # noqa: ASYNC221
    return r


async def page_host_recording(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """Issue 26: a host going live from the page (three simulcast layers, transport-cc) recorded for 10 s
    from the moment it is on air: when the file's first frame came after the recording started, how long
    the file plays, and its picture size (the recorder keeps the top layer)."""
    import av

    r: dict[str, Any] = {}
    async with LiveClient(ws, "rival", token("rival", "producer", Role.HOST)) as producer:
        host = await host_on_air(base, "rival", browser)
        await producer.request({"type": "record_start"})
        await asyncio.sleep(10)
        await producer.request({"type": "record_stop"})
        await host.close()
    folder = out / "recordings" / "rival"
    log = max(folder.glob("*-events.jsonl"))  # the newest
    for _ in range(100):
        events = [json.loads(line) for line in log.read_text().splitlines()]
        if any(e["type"] == "recording_stopped" for e in events):
            break
        await asyncio.sleep(0.1)
    mark = {e["type"]: e for e in events if e["type"].startswith("recording_")}
    r["first_frame_after_ms"] = mark["recording_first_frame"]["media_ms"] - mark["recording_started"]["media_ms"]
    r["duration_s"] = mark["recording_stopped"]["duration_s"]
    with av.open(str(folder / mark["recording_stopped"]["file"])) as container:
        frames = [(frame.time, frame.width) for frame in container.decode(video=0)]
    r["frames"], r["span_s"] = len(frames), frames[-1][0] - frames[0][0]
    r["widths"] = sorted({w for _, w in frames})
    return r


# A hidden tab's timers (a phone in the background, a host's tab behind OBS): never more often than once a
# second, and up to seconds later when the browser's budget for background work runs out (Firefox's budget
# throttling, Chromium's intensive throttling). Installed before the page's own scripts.
HIDDEN_TAB_TIMERS = """(() => {
  const later = window.setTimeout.bind(window), stop = window.clearTimeout.bind(window);
  const throttled = (ms) => Math.max(ms || 0, 1000) + Math.random() * 3000;
  window.setTimeout = (fn, ms, ...args) => later(fn, throttled(ms), ...args);
  const intervals = new Map(); let next = 1;
  window.setInterval = (fn, ms, ...args) => {
    const id = next++;
    const tick = () => { intervals.set(id, later(tick, throttled(ms))); fn(...args); };
    intervals.set(id, later(tick, throttled(ms)));
    return id;
  };
  window.clearInterval = (id) => { stop(intervals.get(id)); intervals.delete(id); };
  const Socket = window.WebSocket;
  window.socketsOpened = 0;
  window.WebSocket = function (...args) { window.socketsOpened += 1; return new Socket(...args); };
  window.WebSocket.prototype = Socket.prototype;
  Object.assign(window.WebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
})();"""


async def background_tab(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """Issue 27: a host whose tab is in the background (its timers throttled as a hidden tab's) in a quiet
    room, a like now and then, for 24 s: how many times its page opened a WebSocket and published, and
    whether a viewer's video went on without a restart."""
    r: dict[str, Any] = {}
    host = await browser.new_page()
    await host.add_init_script(HIDDEN_TAB_TIMERS)
    await host.goto(f"{base}/?view=host&room=show&token={token('show', 'host', Role.HOST, 'Host')}")
    await wait_for(host, "window.liveRelay.channel && window.liveRelay.channel.joined")
    await host.click("#go-live")
    await wait_for(host, "window.liveRelay.publisher && window.liveRelay.publisher.mediaId")
    first_publication = await host.evaluate("window.liveRelay.publisher.mediaId")
    rng = random.Random(27)
    async with LiveClient(ws, "show", token("show", "fan", Role.VIEWER, "Fan")) as fan:
        viewer = await MediaSession.subscribe(fan, user="host", kinds=("video",))
        track = await viewer.wait_track("video", 20)
        await asyncio.wait_for(track.recv(), 20)
        end = time.monotonic() + 24
        while time.monotonic() < end:  # a quiet room: a like every 2-5 s
            await fan.like()
            await asyncio.sleep(rng.uniform(2.0, 5.0))
        r["viewer_frame_after"] = (await asyncio.wait_for(track.recv(), 5)).width
        await viewer.close()
    r["sockets_opened"] = await host.evaluate("window.socketsOpened")
    r["joins"] = await host.evaluate("window.liveRelay.joins")
    r["same_publication"] = first_publication == await host.evaluate("window.liveRelay.publisher.mediaId")
    await host.close()
    return r


async def languages(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """A shopper whose phone speaks Chinese, then switches to English: what the page says in each."""
    r: dict[str, Any] = {}
    host = await host_on_air(base, "show", browser)
    context = await browser.new_context(locale="zh-CN", viewport={"width": 390, "height": 844})
    phone = await context.new_page()
    try:
        await phone.goto(f"{base}/?view=viewer&room=show&token={token('show', 'mei', Role.VIEWER, '小美')}")
        await wait_for(phone, "window.liveRelay.framesDecoded > 0")
        # The language choice and formatting as pure functions: a table of cases, in the page itself.
        r["table"] = await phone.evaluate("""import('/static/i18n.js').then(m => ({
            picks: [[null, ['zh-CN']], [null, ['zh-TW', 'en']], [null, ['fr-FR', 'en-GB']], ['en', ['zh-CN']],
                    ['xx', ['zh']], [null, []]].map(([saved, prefs]) => m.pickLanguage(saved, prefs)),
            same_keys: JSON.stringify(Object.keys(m.STRINGS.en).sort())
                       === JSON.stringify(Object.keys(m.STRINGS.zh).sort()),
            counts: [m.translator('zh').count(12345), m.translator('en').count(12345), m.translator('zh').count(999)],
            prices: [m.translator('zh').price('199.00', 'CNY'), m.translator('en').price('39.00', 'EUR'),
                     m.translator('en').price('5', 'ZZZ')],
            filled: m.translator('zh').t('watching', {n: 3}) }))""")
        # Firefox refuses loopback ICE candidates: the page knows from the answer alone (a table, in the page).
        host_line = "a=candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host"
        lan_line = "a=candidate:2 1 udp 1 10.0.0.5 7882 typ host"
        firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
        chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36"
        r["ice_table"] = await phone.evaluate("""([host, lan, firefox, chrome]) => import('/static/ice.js').then(m => ({
            loopback: [host + '\\r\\n', host + '\\r\\n' + lan,
                       'a=candidate:1 1 tcp 1 ::1 7882 typ host tcptype passive', 'v=0', ''].map(m.loopbackOnly),
            browsers: [firefox, chrome, navigator.userAgent].map(m.refusesLoopback) }))""",
                                              [host_line, lan_line, firefox, chrome])
        async with LiveClient(ws, "show", token("show", "host2", Role.HOST, "Host")) as shop:
            await shop.push_product({"id": "T", "title": "龙井茶 Longjing tea", "price": "199.00", "currency": "CNY",
                                     "stock": 3, "countdown_s": 120, "url": "https://shop.example/tea",
                                     "image": "/static/demo/tea.svg"})
            await wait_for(phone, "!document.querySelector('#product-card').hidden")
        await wait_for(phone, "document.querySelector('#viewers').textContent.length > 0")

        def said() -> str:
            return """({ lang: document.documentElement.lang, language: window.liveRelay.language,
                hint: document.querySelector('#comment-input').placeholder,
                send: document.querySelector('#comment-send').textContent,
                unmute: document.querySelector('#unmute').textContent,
                viewers: document.querySelector('#viewers').textContent,
                status: document.querySelector('#status').textContent,
                buy: document.querySelector('#product-card .buy').textContent,
                price: document.querySelector('#product-card .product-price').textContent,
                extra: document.querySelector('#product-card .product-extra').textContent,
                stage: document.querySelector('#raise-hand').textContent,
                switch_to: document.querySelector('#language').textContent })"""

        r["zh"] = await phone.evaluate(said())
        # A seller whose browser speaks Chinese: the studio's own lines too (its shelf, its status).
        studio = await context.new_page()
        await studio.goto(f"{base}/?view=host&room=show&token={token('show', 'host3', Role.HOST, '主播')}")
        await wait_for(studio, "window.liveRelay.channel && window.liveRelay.channel.joined")
        r["studio_zh"] = await studio.evaluate("({ shelf: document.querySelector('#shelf button').textContent,"
                                               " status: document.querySelector('#status').textContent,"
                                               " end: document.querySelector('#end-show').textContent })")
        await studio.close()
        await phone.screenshot(path=str(out / "viewer-zh.png"))
        await phone.click("#language", timeout=10000)  # English, remembered
        # (The switch reloads the page: until its script has run there is no window.liveRelay.)
        await wait_for(phone, "window.liveRelay?.language === 'en' && window.liveRelay.framesDecoded > 0")
        r["en"] = await phone.evaluate(said())
        await phone.screenshot(path=str(out / "viewer-en.png"))
        await phone.reload(wait_until="domcontentloaded", timeout=15000)
        r["en_after_reload"] = await wait_for(phone, "window.liveRelay?.language")
    finally:
        await context.close()
        await host.close()
    return r


# -- Firefox beside Chromium (issue 27): Debian's firefox-esr over WebDriver BiDi (tests/firefox.py) ---------

LAN_ADDRESS = "10.77.0.1"  # an interface in the test's namespace: stock Firefox never pairs with loopback


def add_lan_address() -> None:
    """Give the namespace an address that is not loopback (Firefox's ICE and the server's both use it)."""
    import subprocess

    if LAN_ADDRESS not in subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout:
        # (a veth pair, both ends here: this kernel has no dummy interfaces)
        for args in (["link", "add", "lrlan0", "type", "veth", "peer", "name", "lrlan1"],
                     ["addr", "add", f"{LAN_ADDRESS}/24", "dev", "lrlan0"], ["link", "set", "lrlan0", "up"],
                     ["link", "set", "lrlan1", "up"],
                     # Firefox gathers no candidate at all on a machine without a default route
                     ["route", "add", "default", "dev", "lrlan0"]):
            subprocess.run(["ip", *args], check=True)


FRAMES_OF = """(async () => {
    let n = 0;
    for (const pc of %s) {
        const s = await pc.getStats();
        s.forEach(r => { if (r.type === 'inbound-rtp' && r.kind === 'video') n += r.framesDecoded || 0; });
    }
    return n; })()"""


async def firefox_viewer(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """A Chromium host, a Firefox shopper on a phone-sized screen: video, comments both ways, the layout."""
    from tests.firefox import Firefox

    r: dict[str, Any] = {}
    host = await host_on_air(base, "show", browser)
    async with await Firefox.launch() as firefox:
        page = await firefox.new_page(f"{base}/?view=viewer&room=show&token={token('show', 'fay', Role.VIEWER, 'Fay')}",
                                      {"width": 390, "height": 844})
        r["frames"] = await wait_for(page, "window.liveRelay.framesDecoded > 5 && window.liveRelay.framesDecoded", 30)
        r["user_agent"] = await page.evaluate("navigator.userAgent")
        r["layout"] = await page.evaluate("""(() => {
            const s = document.querySelector('#stage').getBoundingClientRect();
            const like = document.querySelector('#like').getBoundingClientRect();
            const fit = getComputedStyle(document.querySelector('#stage video')).objectFit;
            return { stage: [s.width, s.height], fit,
                     like_at_right: innerWidth - like.right <= 12 }; })()""")
        await page.fill("#comment-input", "hello from Firefox")
        await page.click("#comment-send")
        r["host_saw_comment"] = bool(await wait_for(host, COMMENT_SHOWN % "hello from Firefox"))
        await host.fill("#comment-input", "welcome, Fay")
        await host.click("#comment-send")
        r["firefox_saw_comment"] = bool(await wait_for(page, COMMENT_SHOWN % "welcome, Fay"))
        await host.click("#shelf button >> nth=0")
        r["card"] = await wait_for(page, "!(" + HIDDEN % "#product-card" + ")"
                                         " && document.querySelector('#product-card .product-title').textContent")
        await asyncio.sleep(0.5)  # (the card's pop-in)
        r["card_on_screen"] = await page.evaluate("""(() => {
            const b = document.querySelector('#product-card').getBoundingClientRect();
            return b.top >= 0 && b.bottom <= innerHeight && b.height > 40
                && getComputedStyle(document.querySelector('#product-card')).opacity === '1'; })()""")
        await page.screenshot(path=str(out / "firefox-viewer.png"))
        r["errors"] = await page.errors()
    return r


async def firefox_host(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """A host live from Firefox (its simulcast and codecs differ from Chromium's): a Chromium viewer and a
    Python viewer get its video; the host's page says it is on air."""
    from tests.firefox import Firefox

    r: dict[str, Any] = {}
    async with await Firefox.launch() as firefox:
        host = await firefox.new_page(f"{base}/?view=host&room=show&token={token('show', 'host', Role.HOST, 'Host')}",
                                      {"width": 1280, "height": 900})
        await wait_for(host, "window.liveRelay.channel && window.liveRelay.channel.joined")
        await host.click("#go-live")
        r["on_air"] = await wait_for(host, "window.liveRelay.publisher && window.liveRelay.publisher.pc"
                                           " && window.liveRelay.publisher.pc.connectionState === 'connected'"
                                           " && document.querySelector('#status').textContent", 30)
        sending = """window.liveRelay.publisher.pc.getStats().then(s => {
            const rids = []; s.forEach(x => { if (x.type === 'outbound-rtp' && x.kind === 'video' && x.packetsSent > 0)
                rids.push(x.rid || '-'); }); return rids.sort(); })"""
        try:  # all three layers, unless Firefox holds one back on this busy machine (it may, as Chromium does)
            r["sent_layers"] = await wait_for(host, f"{sending}.then(rids => rids.length === 3 && rids)", 15)
        except TimeoutError:
            r["sent_layers"] = await host.evaluate(sending)
        viewer = await browser.new_page()
        await viewer.goto(f"{base}/?view=viewer&room=show")
        r["chromium_frames"] = await wait_for(
            viewer, "window.liveRelay.framesDecoded > 5 && window.liveRelay.framesDecoded", 30)
        size = "(() => { const v = document.querySelector('#stage video'); return [v.videoWidth, v.videoHeight]; })()"
        try:  # the element learns the size a moment after the decoder's first frames (CI once read 0x0 at 15)
            r["chromium_size"] = await wait_for(viewer, f"(s => s[0] > 0 && s)({size})", 10)
        except TimeoutError:
            r["chromium_size"] = await viewer.evaluate(size)
        async with LiveClient(ws, "show", token("show", "py", Role.VIEWER)) as py:
            session = await MediaSession.subscribe(py, kinds=("video",))
            frame = await asyncio.wait_for((await session.wait_track("video")).recv(), 20)
            r["python_frame"] = [frame.width, frame.height]
            await session.close()
        await host.screenshot(path=str(out / "firefox-host.png"))
        r["errors"] = await host.errors()
    return r


async def firefox_call(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """A 1v1 call between Firefox and Chromium: each decodes the other, hang-up reaches the other side."""
    from tests.firefox import Firefox

    r: dict[str, Any] = {}
    async with await Firefox.launch() as firefox:
        amy = await browser.new_page(viewport={"width": 1280, "height": 900})
        await amy.goto(f"{base}/?view=call&room=call-ff&token={token('call-ff', 'amy', Role.HOST)}")
        fay = await firefox.new_page(f"{base}/?view=call&room=call-ff&token={token('call-ff', 'fay', Role.COHOST)}",
                                     {"width": 390, "height": 844})
        decoded = FRAMES_OF % "[window.liveRelay.callPc].filter(Boolean)"
        r["chromium_frames"] = await wait_for(amy, f"{decoded}.then(n => n > 5 && n)", 30)
        r["firefox_frames"] = await wait_for(fay, f"{decoded}.then(n => n > 5 && n)", 30)
        r["firefox_fits"] = await fay.evaluate("document.scrollingElement.scrollWidth <= innerWidth")
        await fay.screenshot(path=str(out / "firefox-call.png"))
        await fay.click("#call-hangup")
        r["other_told"] = await wait_for(amy, "document.querySelector('#call-timer').textContent"
                                              " === 'the other side hung up'")
        r["errors"] = await fay.errors()
    return r


# -- A first-time seller's whole show (issue 27's "done when"), per language and browser --------------------


async def seller_journey(base: str, ws: str, out: Path, browser: Any, relay: Any, lang: str,
                         engine: str) -> dict[str, Any]:
    """Go live from the studio, push a card, take a co-host, a PK with a room picked from the list, call a
    viewer from their comment, record, end the show and open the replay: each step checked by what the
    others receive and by what the studio says, in ``lang``'s words, in ``engine`` (chromium or firefox)."""
    from clients.sources import CounterVideoTrack
    from tests.firefox import Firefox

    r: dict[str, Any] = {"steps": []}
    firefox = await Firefox.launch() if engine == "firefox" else None
    host = token("show", "host", Role.HOST, "Mei" if lang == "zh" else "May")
    studio_url = f"{base}/?view=host&room=show&token={host}"
    try:
        if firefox is not None:
            studio: Any = await firefox.new_page(studio_url, {"width": 1280, "height": 900})
        else:
            studio = await browser.new_page(viewport={"width": 1280, "height": 900})
            await studio.goto(studio_url)
        await wait_for(studio, "!!window.liveRelay?.channel?.joined")
        await studio.evaluate(f"localStorage.setItem('live-relay:lang', '{lang}');"
                              " setTimeout(() => location.reload(), 0)")
        await asyncio.sleep(0.5)
        await wait_for(studio, f"window.liveRelay?.language === '{lang}' && !!window.liveRelay.channel?.joined")

        async def said(key: str, **values: Any) -> str:
            return str(await studio.evaluate(f"import('/static/i18n.js').then(m => m.translator('{lang}')"
                                             f".t({json.dumps(key)}, {json.dumps(values)}))"))

        async def status_is(key: str, **values: Any) -> str:
            expected = await said(key, **values)
            await wait_for(studio, f"document.querySelector('#status').textContent === {json.dumps(expected)}")
            r["steps"].append(expected)
            return expected

        async with LiveClient(ws, "show", token("show", "vic", Role.VIEWER, "Vic")) as vic, \
                LiveClient(ws, "show", token("show", "gus", Role.VIEWER, "Gus")) as gus, \
                LiveClient(ws, "rival", token("rival", "rita", Role.HOST, "Rita")) as rita:
            # Live from the studio.
            await studio.click("#go-live")
            await status_is("on_air")
            # A card pushed from the shelf reaches the viewer.
            await studio.click("#shelf button")
            r["card"] = (await vic.next_event("product", timeout=10))["product"]["title"]
            # A co-host taken from the stage requests.
            await gus.request({"type": "stage_request"})
            await wait_for(studio, "!!document.querySelector('#requests li button')")
            await studio.click("#requests li button")
            r["cohost"] = (await gus.next_event("grant", timeout=10))["role"]
            # A PK with a room picked from the live shows.
            rival_stream = await MediaSession.publish(rita, [CounterVideoTrack(160, 120)])
            await studio.click("#pk-refresh")
            await wait_for(studio, "!!document.querySelector('#pk-rooms li[data-room=rival] button')")
            r["pk_pick"] = await studio.evaluate(
                "document.querySelector('#pk-rooms li[data-room=rival] button').textContent")
            await studio.click("#pk-rooms li[data-room=rival] button")
            await status_is("pk.sent", room="rival")
            invited = await rita.next_event("pk_invited", timeout=10)
            await rita.request({"type": "pk_answer", "room": invited["from_room"], "accept": True})
            r["pk_bar"] = await wait_for(studio, "!document.querySelector('#pk-bar').hidden"
                                                 " && document.querySelector('#pk-bar').textContent")
            await studio.click("#pk-end")
            await wait_for(studio, "document.querySelector('#pk-bar').hidden")
            await rival_stream.close()
            # A viewer called from their comment.
            await vic.comment("can I see it up close?")
            call_label = await said("mod.call_title", who="Vic")
            button = f"#comments li button[aria-label={json.dumps(call_label, ensure_ascii=False)}]"
            await wait_for(studio, f"!!document.querySelector({json.dumps(button, ensure_ascii=False)})")
            # Reply and pin, one tap each on the comment.
            reply_label = json.dumps(await said("mod.reply_title", who="Vic"), ensure_ascii=False)
            reply = f"#comments li button[aria-label={reply_label}]"
            await studio.click(reply)
            r["reply_box"] = await studio.evaluate("document.querySelector('#comment-input').value")
            pin = f"#comments li button[aria-label={json.dumps(await said('mod.pin_title'), ensure_ascii=False)}]"
            await studio.click(pin)
            while not (announced := await vic.next_event("announce", timeout=10)).get("pinned"):
                pass
            r["pinned"] = announced["text"]
            await studio.click(button)
            await status_is("call.invited", who="Vic")
            await vic.next_event("call_invited", timeout=10)
            await vic.request({"type": "call_answer", "accept": True})
            await wait_for(studio, "!!document.querySelector('#invites #call-hangup')")
            await status_is("call.in_call")
            await studio.click("#invites #call-hangup")
            r["call_ended"] = (await vic.next_event("call_ended", timeout=10))["reason"]
            # Recording, with the mark every viewer sees.
            await studio.click("#record")
            r["recording"] = (await vic.next_event("recording", timeout=10))["state"] is not None
            r["rec_mark"] = await wait_for(studio, "!document.querySelector('#rec').hidden"
                                                   " && document.querySelector('#rec').textContent.trim()")
            await asyncio.sleep(3)  # (a few seconds of show on the record)
            # The show ends; the replay opens from the link the studio gives.
            await studio.click("#end-show")
            await status_is("show.ended")
            await wait_for(studio, "!document.querySelector('#show-ended').hidden")
            await studio.click("#show-ended .replay")
            await asyncio.sleep(0.5)
            r["replay"] = await wait_for(studio, "window.liveRelay?.replayMs > 0 && document.querySelector('#status')"
                                                 ".textContent", 30)
            r["replay_said"] = await said("replay.of", show="")
        if firefox is not None:
            r["errors"] = await studio.errors()
        await studio.screenshot(path=str(out / f"journey-{engine}-{lang}.png"))
    finally:
        if firefox is not None:
            await firefox.close()
    return r


def _journey(lang: str, engine: str) -> Any:
    async def scenario(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
        return await seller_journey(base, ws, out, browser, relay, lang, engine)
    return scenario


async def hls_player(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """hls.js (npm) in Chromium plays the room's H.264 show over LL-HLS in its low-latency mode: what it
    parsed of the playlist, the frames it decoded, the sound (the publisher's Opus as AAC), and how far behind
    live it says it is."""
    r: dict[str, Any] = {}
    async with LiveClient(ws, "show", token("show", "host", Role.HOST)) as host:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240), ToneAudioTrack()],
                                               video_codec="H264")
        page = await browser.new_page()
        await page.goto(f"{base}/healthz")  # any page of the server's origin (CORS is checked in test_hls.py)
        await page.add_script_tag(url=f"{base}/static/vendor/hls.js")  # as the server serves it to its page
        r["probe"] = await page.evaluate("""async (url) => { try { const x = await fetch(url);
            return x.status + ' ' + (await x.text()).slice(0, 80); } catch (e) { return String(e); } }""",
                                         f"{base}/hls/show/index.m3u8")
        r["mse_h264"] = await page.evaluate("MediaSource.isTypeSupported('video/mp4; codecs=\"avc1.42e01f\"')")
        await page.evaluate("""(url) => {
            const video = document.createElement('video');
            video.muted = true; video.autoplay = true; document.body.appendChild(video);
            const hls = new Hls({lowLatencyMode: true});
            window.player = {hls, video, errors: []};
            hls.on(Hls.Events.ERROR, (_, data) =>
                window.player.errors.push(data.details + (data.fatal ? ' (fatal)' : '') + ' ' + (data.reason || '')));
            hls.loadSource(url); hls.attachMedia(video);
        }""", f"{base}/hls/show/index.m3u8")
        try:
            r["frames"] = await wait_for(page, """(() => { const v = window.player.video;
                const n = v.getVideoPlaybackQuality().totalVideoFrames; return n > 60 ? n : 0; })()""", timeout=40)
        except TimeoutError:
            state = await page.evaluate("""(() => { const p = window.player; return {errors: p.errors,
                ready: p.video.readyState, buffered: p.video.buffered.length, time: p.video.currentTime,
                levels: p.hls.levels.length, error: p.video.error && p.video.error.message}; })()""")
            raise AssertionError(f"hls.js did not play: {state} {r['probe']}") from None
        r["details"] = await page.evaluate("""(() => { const d = window.player.hls.levels[0].details;
            return {parts: (d.partList || []).length, canBlockReload: d.canBlockReload, partTarget: d.partTarget,
                    live: d.live}; })()""")
        r["playing"] = await page.evaluate("!window.player.video.paused && window.player.video.currentTime > 1")
        # A card pushed now reaches the player on its timeline: hls.js parses the EXT-X-DATERANGE and puts a
        # metadata cue at its media time on the video's text track; the cue's payload is the card.
        await host.push_product({"id": "sku-hls", "title": "龙井茶 Longjing tea", "price": "199.00", "currency": "CNY",
                                 "url": "https://shop.example/tea", "image": "https://shop.example/tea.jpg"})
        r["cue"] = await wait_for(page, """(() => {
            for (const track of window.player.video.textTracks) {
                for (const cue of track.cues || []) {
                    if (String(cue.id || '').startsWith('product-') || (cue.value && cue.value.key === 'X-DATA')) {
                        const hex = cue.value && cue.value.data;
                        return {id: cue.id, start: cue.startTime, now: window.player.video.currentTime,
                                kind: track.kind, hex: typeof hex === 'string' ? hex.slice(0, 20) : String(hex)};
                    }
                }
            }
            return null; })()""", timeout=20)
        r["dateranges"] = await page.evaluate("Object.keys(window.player.hls.levels[0].details.dateRanges || {})")
        r["latency_s"] = await page.evaluate("window.player.hls.latency")
        r["audio_bytes"] = await wait_for(page, "window.player.video.webkitAudioDecodedByteCount || 0")
        r["audio_codec"] = await page.evaluate("(window.player.hls.levels[0].audioCodec || '')")
        r["fatal_errors"] = await page.evaluate("window.player.errors.filter(e => e.endsWith('(fatal)'))")
        r["width"] = await page.evaluate("window.player.video.videoWidth")
        await page.screenshot(path=str(out / "hls-player.png"))
        await publisher.close()
    return r


async def hls_fallback(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """A viewer who arrives while the node is full for live video (the overload scenario's saturation) sees
    the show over LL-HLS at once (hls.js from the server), told so, with comments still live; once the node
    has room, live video takes over and the HLS tile goes."""
    r: dict[str, Any] = {}
    async with LiveClient(ws, "show", token("show", "host", Role.HOST, "Host")) as host:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240)], video_codec="H264")
        async with saturated(relay):
            phone = await browser.new_page(viewport={"width": 390, "height": 844})
            console: list[str] = []
            phone.on("console", lambda m: console.append(m.text[:200]) if m.type in ("error", "warning") else None)
            r["console"] = console
            await phone.goto(f"{base}/?view=viewer&room=show&token={token('show', 'bea', Role.VIEWER, 'Bea')}")
            try:
                r["hls_frames"] = await wait_for(phone, """(() => { const h = window.liveRelay.hls;
                    const n = h ? h.video.getVideoPlaybackQuality().totalVideoFrames : 0;
                    return n > 30 ? n : 0; })()""", timeout=40)
            except TimeoutError:
                state = await phone.evaluate("""(() => { const h = window.liveRelay.hls; return h && {errors: h.errors,
                    ready: h.video.readyState, time: h.video.currentTime, paused: h.video.paused, src: h.video.src,
                    levels: h.hls && h.hls.levels.length, media: Boolean(h.hls && h.hls.media), url: h.hls && h.hls.url,
                    inDom: document.contains(h.video), frag: h.hls && h.hls.levels[0] && h.hls.levels[0].details
                    && h.hls.levels[0].details.fragments.length}; })()""")
                raise AssertionError(f"no HLS frames: {state} {console}") from None
            r["told"] = await phone.text_content("#status")
            r["label"] = await phone.text_content("#stage .tile.hls .label")
            await host.comment("Welcome, HLS viewers")
            r["comment_shown"] = await wait_for(phone, COMMENT_SHOWN % "Welcome, HLS viewers")
            await phone.screenshot(path=str(out / "hls-fallback.png"))
        await wait_for(phone, "window.liveRelay.framesDecoded > 0", timeout=40)
        r["hls_after"] = await wait_for(phone, "window.liveRelay.hls === null && !document.querySelector('.tile.hls')")
        r["status_after"] = await phone.text_content("#status")
        await phone.close()
        await publisher.close()
    return r


async def hls_cards(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """Cards at their picture over HLS: a viewer watching the page's HLS fallback (the node full for live
    video) gets each product card the host pushes when the frame on screen is the one the host's camera made
    as the card was pushed, not when the WebSocket brings it (a second or more earlier). Each frame on screen
    is read back (the send time the publisher burned into it) as the video presents it; for each card, the
    frame on screen when it appeared against the push's server time."""
    r: dict[str, Any] = {}
    async with LiveClient(ws, "show", token("show", "host", Role.HOST, "Host")) as host:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240)], video_codec="H264")
        async with saturated(relay):
            phone = await browser.new_page(viewport={"width": 390, "height": 844})
            await phone.goto(f"{base}/?view=viewer&room=show&token={token('show', 'bea', Role.VIEWER, 'Bea')}")
            await wait_for(phone, """(() => { const h = window.liveRelay.hls;
                return h && h.video.getVideoPlaybackQuality().totalVideoFrames > 30; })()""", timeout=40)
            # Every frame the video presents, read back: its media time -> the time its picture was made.
            await phone.evaluate(f"""() => {{ const read = {READ_PICTURE_STAMP}; const v = window.liveRelay.hls.video;
                window.stamps = new Map();
                const onFrame = (_, meta) => {{ window.stamps.set(meta.mediaTime, read(v));
                    if (window.stamps.size > 600) window.stamps.delete(window.stamps.keys().next().value);
                    v.requestVideoFrameCallback(onFrame); }};
                v.requestVideoFrameCallback(onFrame); }}""")
            cards = []
            for n in range(5):
                await asyncio.sleep(1.3)
                await host.push_product({"id": f"sku-{n}", "title": f"Card {n}", "price": "9.90", "currency": "EUR",
                                         "url": f"https://shop.example/{n}", "image": f"https://shop.example/{n}.jpg"})
                shown = await wait_for(phone, f"""(() => {{ const h = window.liveRelay.hls;
                    const s = h && h.shown.find((x) => x.key.startsWith('product-') && x.seen !== true
                        && document.querySelector('#product-card').dataset.productId === 'sku-{n}');
                    if (!s) return null; s.seen = true;
                    const stamp = window.stamps.get(s.mediaTime);
                    return {{...s, stamp: stamp === undefined ? null : stamp,
                             visible: !document.querySelector('#product-card').hidden}}; }})()""", timeout=15)
                if shown["stamp"] is not None and shown["ts"] is not None:
                    diff = (shown["stamp"] - (int(shown["ts"]) & 0xFFFFFFFF)) & 0xFFFFFFFF
                    shown["picture_minus_push_ms"] = diff - 2**32 if diff >= 2**31 else diff
                cards.append(shown)
            r["cards"] = cards
            await phone.screenshot(path=str(out / "hls-cards.png"))
        await phone.close()
        await publisher.close()
    return r


def _probe_video(target: str, seconds: float | None = None) -> dict[str, Any]:
    """ffprobe's word on a file or URL's first video stream: codec, size, frames decoded (every one, or of
    the first ``seconds``: a live playlist never ends)."""
    window = ["-read_intervals", f"%+{seconds}"] if seconds else []
    proc = subprocess.run(["ffprobe", "-v", "error", "-rw_timeout", "15000000", *window, "-select_streams", "v:0",
                           "-count_frames", "-show_entries", "stream=codec_name,width,height,nb_read_frames",
                           "-of", "json", target],
                          capture_output=True, text=True, timeout=60)
    streams = json.loads(proc.stdout or "{}").get("streams") or [{}]
    return {**streams[0], "errors": proc.stderr.strip()[-300:]}


def _decoded_sizes(path: Path, decoder_name: str) -> dict[str, int]:
    """How many pictures of each size ``decoder_name`` shows from a file's video."""
    import av

    sizes: dict[str, int] = {}
    with av.open(str(path)) as container:
        decoder: Any = av.CodecContext.create(decoder_name, "r")
        for packet in container.demux(container.streams.video[0]):
            if packet.size:
                for picture in decoder.decode(packet):
                    key = f"{picture.width}x{picture.height}"
                    sizes[key] = sizes.get(key, 0) + 1
    return sizes


async def vp9_show(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """A host page sending VP9 with three spatial layers (``?video=svc``, L3T3_KEY) is served over LL-HLS (each
    picture's layer frames assembled as one superframe, decoded by libvpx to its top layer and made H.264 once)
    and recorded as VP9 that decodes from the file: ffprobe reads both."""
    r: dict[str, Any] = {}
    host = await host_on_air(base, "show", browser, "&video=svc")
    track = None
    for _ in range(60):
        publishers = relay.media.router.publishers_of("show")
        track = publishers[0].tracks.get("video") if publishers else None
        if track is not None and track.svc and track.frames_in > 30:
            break
        await asyncio.sleep(0.25)
    assert track is not None
    r["codec"], r["svc"], r["layers"] = track.codec_name, track.svc, track.layer_count
    async with LiveClient(ws, "show", token("show", "producer", Role.HOST, "Producer")) as producer:
        await producer.request({"type": "record_start"})
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/hls/show/index.m3u8") as answer:  # (answered at its first segment)
                r["hls_status"] = answer.status
                r["hls_said"] = (await answer.text())[:200]
        await asyncio.sleep(3)
        r["hls"] = await asyncio.to_thread(_probe_video, f"{base}/hls/show/video.m3u8", 4)
        await producer.request({"type": "record_stop"})
    await asyncio.sleep(1)
    media = sorted((out / "recordings" / "show").glob("*.mkv"))
    r["recorded"] = await asyncio.to_thread(_probe_video, str(media[-1])) if media else None
    if media:  # the pictures each decoder shows: libvpx (the browsers'), FFmpeg's own (VLC's, ffplay's)
        r["recorded_sizes"] = {name: await asyncio.to_thread(_decoded_sizes, media[-1], name)
                               for name in ("libvpx-vp9", "vp9")}
    r["frames_in"], r["keyframes_in"] = track.frames_in, track.keyframes_in
    await host.close()
    return r


async def restream_studio(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """A host adds a destination in the studio (a stand-in platform: nginx-rtmp checking the key, as in
    tests/test_restream.py): the list shows it going live; the key is in no page the host sees afterwards; a
    wrong URL is refused with the reason."""
    from tests.test_restream import GOOD_KEY, stand_in_platform

    r: dict[str, Any] = {}
    async with stand_in_platform(out) as platform, \
            LiveClient(ws, "show", token("show", "host", Role.HOST, "Host")) as host:
        publisher = await MediaSession.publish(host, [CounterVideoTrack(320, 240)], video_codec="H264")
        studio = await browser.new_page()
        await studio.goto(f"{base}/?view=host&room=show&token={token('show', 'producer', Role.HOST, 'Producer')}")
        await wait_for(studio, "window.liveRelay.channel && window.liveRelay.channel.joined")
        await studio.fill("#restream-form [name=url]", "ftp://nowhere")
        await studio.fill("#restream-form [name=key]", "x")
        await studio.click("#restream-form button")
        r["refused"] = await wait_for(studio, "document.querySelector('#restream-result').textContent || null")
        await studio.fill("#restream-form [name=url]", f"rtmp://127.0.0.1:{platform.port}/live")
        await studio.fill("#restream-form [name=key]", GOOD_KEY)
        await studio.click("#restream-form button")
        r["live"] = await wait_for(studio, "(() => { const li = document.querySelector('#restreams li');"
                                           " return li && li.dataset.state === 'live' ? li.textContent : null; })()",
                                   timeout=40)
        r["key_field"] = await studio.input_value("#restream-form [name=key]")
        r["key_in_page"] = await studio.evaluate(f"document.documentElement.outerHTML.includes({GOOD_KEY!r})")
        await studio.screenshot(path=str(out / "host-restream.png"), full_page=True)
        await studio.click("#restreams li button")
        r["removed"] = await wait_for(studio, "document.querySelectorAll('#restreams li').length === 0")
        await publisher.close()
    return r


async def show_page(base: str, ws: str, out: Path, browser: Any, relay: Any) -> dict[str, Any]:
    """A host schedules a show from the studio (its shelf's products); a signed-in viewer opens the show's page
    in Chinese: countdown, products, remind me and follow (kept by the server); an anonymous visitor is told
    how to get a reminder."""
    r: dict[str, Any] = {}
    studio = await browser.new_page()
    await studio.goto(f"{base}/?view=host&room=show&token={token('show', 'producer', Role.HOST, 'Producer')}")
    await wait_for(studio, "window.liveRelay.channel && window.liveRelay.channel.joined")
    await studio.fill("#schedule-form [name=title]", "春季上新")
    # Two hours ahead in the browser's own zone (the form sends the moment with its zone).
    await studio.evaluate("""(() => { const d = new Date(Date.now() + 2 * 3600e3 + 90e3); d.setSeconds(0, 0);
        const local = new Date(d.getTime() - d.getTimezoneOffset() * 60e3).toISOString().slice(0, 16);
        document.querySelector('#schedule-form [name=when]').value = local; })()""")
    await studio.click("#schedule-form button")
    r["scheduled"] = await wait_for(studio, "document.querySelector('#schedule-result').textContent || null")
    r["listed"] = await wait_for(studio, "document.querySelector('#schedule-list li a') && "
                                         "document.querySelector('#schedule-list li a').textContent")
    link = r["scheduled"].rsplit(" ", 1)[-1]
    show_id = link.rsplit("show=", 1)[-1]
    viewer = await browser.new_page()
    await viewer.add_init_script("localStorage.setItem('live-relay:lang', 'zh')")
    await viewer.goto(f"{base}/?view=show&show={show_id}&token={token('show', 'mei', Role.VIEWER, 'Mei')}")
    r["title"] = await wait_for(viewer, "document.querySelector('#show-title').textContent || null")
    r["countdown"] = await wait_for(viewer, "document.querySelector('#show-countdown').textContent || null")
    r["products"] = await viewer.evaluate("document.querySelectorAll('#show-products li').length")
    await viewer.click("#show-remind")
    r["remind_pressed"] = await wait_for(viewer, "document.querySelector('#show-remind').getAttribute('aria-pressed')"
                                                 " === 'true' && document.querySelector('#show-remind').textContent")
    await viewer.click("#show-follow")
    r["following"] = await wait_for(viewer, "document.querySelector('#show-follow').getAttribute('aria-pressed')"
                                            " === 'true'")
    r["reservations_text"] = await viewer.evaluate("document.querySelector('#show-reservations').textContent")
    await viewer.fill("#show-ask [name=question]", "How much is the silk scarf?")
    await viewer.click("#show-ask button")
    r["answer"] = await wait_for(viewer, "document.querySelector('#show-answer').textContent || null")
    shows = relay.shows
    r["reserved_users"] = [v for v, _ in await relay.analytics_writer.call(shows.book.reservations, show_id)]
    r["followers"] = await relay.analytics_writer.call(shows.book.followers, "producer")
    await viewer.screenshot(path=str(out / "show-page-zh.png"), full_page=True)
    anonymous = await browser.new_page()
    await anonymous.goto(f"{base}/?view=show&show={show_id}")
    await wait_for(anonymous, "document.querySelector('#show-title').textContent || null")
    await anonymous.click("#show-remind")
    r["anonymous"] = await wait_for(anonymous, "document.querySelector('#show-result').textContent || null")
    async with asyncio.timeout(10):  # the question is in the store (the writer batches once a second)
        while not relay.analytics_writer.idle:  # noqa: ASYNC110 - the writer's own state
            await asyncio.sleep(0.05)
    await studio.reload()  # the host's brief beside the show: who reserved, what was asked (the scarf)
    await wait_for(studio, "window.liveRelay.channel && window.liveRelay.channel.joined")
    r["brief"] = await wait_for(studio, "document.querySelector('#schedule-list li .brief') && "
                                        "document.querySelector('#schedule-list li .brief').textContent")
    missing = await browser.new_page()
    await missing.goto(f"{base}/?view=show&show=nope")
    r["missing"] = await wait_for(missing, "document.querySelector('#status').textContent || null")
    return r


SCENARIOS = {"journey_chromium_en": _journey("en", "chromium"), "journey_chromium_zh": _journey("zh", "chromium"),
             "journey_firefox_en": _journey("en", "firefox"), "journey_firefox_zh": _journey("zh", "firefox"),
             "firefox_viewer": firefox_viewer, "firefox_host": firefox_host, "firefox_call": firefox_call,
             "obs_simulcast": obs_simulcast, "background_tab": background_tab, "replay_tiles": replay_tiles,
             "page_host_recording": page_host_recording, "blocked": blocked,
             "whep_restart": whep_restart, "overload": overload,
             "moderation": moderation, "shop": shop, "replay": replay, "whip": whip, "broadcast": broadcast,
             "cohost": cohost, "call": call, "demo": demo, "viewer_page": viewer_page, "host_page": host_page,
             "languages": languages, "hls_player": hls_player, "hls_fallback": hls_fallback,
             "hls_cards": hls_cards, "vp9_show": vp9_show, "hls_ladder": hls_ladder, "show_page": show_page,
             "restream_studio": restream_studio}


@contextlib.asynccontextmanager
async def running(config: ServerConfig) -> AsyncIterator[Any]:
    """A live-relay server in this process for the block's duration; yields its RelayServer."""
    ready, stop = asyncio.Event(), asyncio.Event()
    app = create_app(config)
    server = asyncio.create_task(serve(config, ready=ready, stop=stop, app=app))
    await ready.wait()
    try:
        yield app[SERVER]
    finally:
        stop.set()
        await server


ANALYTICS_SCENARIOS = ("shop", "show_page", "replay")  # (the Buy redirect, shows, replay clicks need a store)


async def main(scenario: str, out: Path) -> None:
    from tests.conftest import free_port

    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before anything runs
    for old in out.glob("analytics.sqlite3*"):  # noqa: ASYNC240 - a fresh database for each run
        old.unlink()
    ice: dict[str, Any] = {}
    if scenario.startswith(("firefox", "journey")):
        add_lan_address()
        ice = {"ice_addresses": ("127.0.0.1", LAN_ADDRESS)}
    config = ServerConfig(secret=SECRET, port=free_port(), rooms=("show", "stage", "demo", "rival"), web_root=WEB_ROOT,
                          **ice,
                          recordings_dir=str(out / "recordings"),
                          analytics=str(out / "analytics.sqlite3") if scenario in ANALYTICS_SCENARIOS else None)
    base, ws = f"http://127.0.0.1:{config.port}", f"ws://127.0.0.1:{config.port}/ws"
    result: dict[str, Any]
    async with running(config) as relay, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            result = await asyncio.wait_for(SCENARIOS[scenario](base, ws, out, browser, relay), 150)
            result["ok"] = True
        except Exception as exc:
            result = {"ok": False, "error": repr(exc)}
            pages = [page for context in browser.contexts for page in context.pages]
            for i, page in enumerate(pages):
                await page.screenshot(path=str(out / f"{scenario}-failure-{i}.png"))
        finally:
            await browser.close()
    (out / f"{scenario}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
