"""`live-relay autohost`: a host that never sleeps. It keeps a room on air with nobody in front of a camera.

One product after another from the catalog: its slide (title, price, stock, rendered with Pillow, in a colour of
its own) is the video, its card is pushed while the slide is on screen, and it is narrated aloud (espeak-ng in
the product's language: Mandarin for Chinese titles). Viewers' questions in the comments are answered from the
cards and the catalog (the room assistant's engines) aloud and, when the room's own assistant is off, in the
comments. A person who publishes in the room (the human host taking over) pauses it: it stops publishing and
pushing, and comes back when they leave. Everything it holds is bounded (the slides, one per product; the
questions waiting, ``MAX_WAITING``), so it runs for hours with flat memory.

The timing decisions are pure (``narration``, ``next_step``); ``AutoHost`` carries them out over an ordinary
client of the server.
"""

from __future__ import annotations

import asyncio
import colorsys
import contextlib
import fractions
import logging
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

from assistant.catalog import Catalog
from assistant.room import RoomAssistant
from assistant.text import is_question
from assistant.voice import SpeechTrack, speak
from clients.client import ConnectionClosed, LiveClient, ServerError
from clients.media import MediaSession
from signaling.voicecall import spoken

log = logging.getLogger(__name__)

WIDTH, HEIGHT, FPS = 640, 360, 10
MAX_WAITING = 20  # questions waiting for an answer; older ones are dropped
ANSWER_EVERY_S = 3.0  # at most one spoken answer this often
_CJK = re.compile(r"[\u3400-\u9fff]")
FONTS = ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
         "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
_CURRENCY = {"CNY": ("元", "yuan"), "EUR": ("欧元", "euros"), "USD": ("美元", "dollars"), "GBP": ("英镑", "pounds"),
             "JPY": ("日元", "yen")}


def slide_colour(index: int) -> tuple[int, int, int]:
    """A product's background: hues far apart for neighbours, dark enough for white text."""
    r, g, b = colorsys.hsv_to_rgb((index * 0.38) % 1.0, 0.7, 0.55)
    return int(r * 255), int(g * 255), int(b * 255)


def narration(product: dict[str, Any]) -> str:
    """What is said while a product is on screen, in its title's language."""
    title, price, currency = product["title"], product["price"], product.get("currency", "")
    units, _, cents = str(price).partition(".")
    zh_word, en_word = _CURRENCY.get(currency, (currency, currency))
    stock = product.get("stock")
    if _CJK.search(title):
        said = f"{title}，{price if cents.strip('0') else units}{zh_word}"
        if isinstance(stock, int):
            said += "，已售罄" if stock == 0 else f"，还剩{stock}件"
        return said + "。有问题请在评论里问我。"
    said = f"{title}. {units} {en_word}" + (f" {cents}" if cents.strip("0") else "")
    if isinstance(stock, int):
        said += ". Sold out" if stock == 0 else f". {stock} left"
    return said + ". Ask me anything in the comments."


@dataclass(frozen=True)
class Step:
    """What to do now: show and push ``product`` (an index), or wait ``wait_s``."""

    product: int | None
    wait_s: float


def next_step(current: int | None, shown_at: float, now: float, count: int, dwell_s: float,
              speaking: bool) -> Step:
    """The next product once the current one has been on screen ``dwell_s`` and its narration is over."""
    if count == 0:
        return Step(None, 1.0)
    if current is None:
        return Step(0, 0.0)
    left = shown_at + dwell_s - now
    if left > 0 or speaking:
        return Step(None, max(0.05, min(left, 0.25)) if left > 0 else 0.25)
    return Step((current + 1) % count, 0.0)


class SlideTrack(MediaStreamTrack):
    """The video: the current product's slide, the same picture repeated at ``FPS`` (one rendering per
    product, kept)."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._slides: dict[str, np.ndarray] = {}
        self._current: np.ndarray | None = None
        self._start: float | None = None
        self._count = 0

    def show(self, key: str, product: dict[str, Any], index: int) -> None:
        slide = self._slides.get(key)
        if slide is None:
            slide = self._slides[key] = render_slide(product, index)
        self._current = slide

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self._count / FPS - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if self._current is None:
            self._current = render_slide({"title": "…", "price": ""}, 0)
        frame = av.VideoFrame.from_ndarray(self._current, format="rgb24")
        frame.pts, frame.time_base = self._count * (90000 // FPS), fractions.Fraction(1, 90000)
        self._count += 1
        return frame


def render_slide(product: dict[str, Any], index: int) -> np.ndarray:
    """A product's slide: its colour, its title, price and stock in large type."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (WIDTH, HEIGHT), slide_colour(index))
    draw = ImageDraw.Draw(image)

    def font(size: int) -> Any:
        for path in FONTS:
            with contextlib.suppress(OSError):
                return ImageFont.truetype(path, size)
        return ImageFont.load_default()

    draw.text((40, 70), str(product.get("title", ""))[:40], font=font(48), fill=(255, 255, 255))
    price = f"{product.get('price', '')} {product.get('currency', '')}".strip()
    draw.text((40, 170), price, font=font(64), fill=(255, 240, 160))
    stock = product.get("stock")
    if isinstance(stock, int):
        draw.text((40, 270), f"× {stock}", font=font(36), fill=(230, 230, 230))
    return np.asarray(image, dtype=np.uint8)


class AutoHost:
    def __init__(self, url: str, room: str, token: str, products: list[dict[str, Any]], catalog: Catalog,
                 dwell_s: float = 20.0) -> None:
        self.client = LiveClient(url, room, token, reconnect=True)
        self.products = products
        self.dwell_s = dwell_s
        self.assistant = RoomAssistant(catalog=catalog)
        self.slides = SlideTrack()
        self.voice = SpeechTrack()
        self.media: MediaSession | None = None
        self.paused_for: str | None = None  # the user whose publication paused it
        self.current: int | None = None
        self.shown_at = 0.0
        self.pushed: list[tuple[float, str]] = []  # (time, product id), for tests and the soak bench (bounded)
        self.answered: deque[tuple[str, str]] = deque(maxlen=100)  # (question, answer)
        self._waiting: deque[tuple[int | None, str]] = deque(maxlen=MAX_WAITING)
        self._last_answer = 0.0
        self._room_assistant_on = False
        self._reconnects = 0

    async def run(self, duration_s: float | None = None) -> None:
        await self.client.connect()
        joined = self.client.joined or {}
        me = joined.get("user")
        self._room_assistant_on = bool((joined.get("state", {}).get("assistant") or {}).get("on"))
        others = [p for p in joined.get("state", {}).get("publishers") or [] if p.get("user") != me]
        if others:
            self.paused_for = others[0].get("user")
        else:
            await self._publish()
        tasks = [asyncio.create_task(self._listen(me)), asyncio.create_task(self._show())]
        try:
            await asyncio.wait(tasks, timeout=duration_s, return_when=asyncio.FIRST_EXCEPTION)
            for task in tasks:
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._unpublish()
            await self.client.close()

    async def _publish(self) -> None:
        self.slides, self.voice = SlideTrack(), SpeechTrack()
        self.media = await MediaSession.publish(self.client, [self.slides, self.voice])
        self.current = None  # start the round again where a viewer can follow it

    async def _unpublish(self) -> None:
        if self.media is not None:
            with contextlib.suppress(Exception):
                await self.media.close()
            self.media = None

    async def _show(self) -> None:
        while True:
            if self.paused_for is not None:
                await asyncio.sleep(0.25)
                continue
            if self.media is None or self.media.pc.connectionState in ("failed", "closed") or \
                    self.client.reconnects != self._reconnects:
                # Its media died (a reconnect closes a connection's media with it; a saturated node once
                # closed a publisher it heard nothing from): publish again, and start the round over.
                self._reconnects = self.client.reconnects
                await self._unpublish()
                try:
                    await self._publish()
                except (ServerError, ConnectionClosed, TimeoutError) as exc:
                    log.warning("autohost: could not publish again yet", extra={"error": str(exc)})
                    await asyncio.sleep(2.0)
                    continue
            step = next_step(self.current, self.shown_at, time.monotonic(), len(self.products), self.dwell_s,
                             self.voice.speaking)
            if step.product is None:
                await self._answer_one()
                await asyncio.sleep(step.wait_s)
                continue
            self.current, self.shown_at = step.product, time.monotonic()
            product = self.products[step.product]
            self.slides.show(product["id"], product, step.product)
            try:
                await self.client.request({"type": "product", "product": product})
            except ServerError as exc:
                log.warning("autohost: a card was refused", extra={"error": str(exc)})
            self.pushed.append((time.monotonic(), product["id"]))
            del self.pushed[:-1000]
            self.assistant.on_card({"product": product, "server_ts": time.time() * 1000})
            await self._say(narration(product))

    async def _say(self, text: str) -> None:
        samples = await asyncio.get_running_loop().run_in_executor(None, speak, text)
        self.voice.say(samples)

    async def _answer_one(self) -> None:
        if not self._waiting or time.monotonic() - self._last_answer < ANSWER_EVERY_S:
            return
        _seq, question = self._waiting.popleft()
        answer = await self.assistant.answer(question, time.time() * 1000)
        if answer is None:
            return
        self._last_answer = time.monotonic()
        self.answered.append((question, answer.text))
        if not self._room_assistant_on:
            with contextlib.suppress(ServerError):
                await self.client.request({"type": "comment", "text": answer.text[:200]})
        self.voice.stop_speaking()  # the question is more pressing than the narration
        await self._say(spoken(answer.text))

    async def _listen(self, me: str | None) -> None:
        async for event in self.client.events():
            kind = event.get("type")
            if kind == "comment" and event.get("user") != me and event.get("role") != "assistant" \
                    and is_question(str(event.get("text", ""))):
                self._waiting.append((event.get("seq"), str(event["text"])[:200]))
            elif kind == "assistant":
                self._room_assistant_on = bool((event.get("state") or {}).get("on"))
            elif kind == "media" and event.get("user") != me:
                await self._on_media(event)
        raise ConnectionClosed(self.client.close_code)

    async def _on_media(self, event: dict[str, Any]) -> None:
        if event.get("event") == "publisher_joined" and self.paused_for is None:
            self.paused_for = event.get("user")  # a person is on air: step aside
            self.voice.stop_speaking()
            await self._unpublish()
            log.info("autohost paused", extra={"for": self.paused_for})
        elif event.get("event") == "publisher_left" and event.get("user") == self.paused_for:
            self.paused_for = None
            await self._publish()
            log.info("autohost resumed")


