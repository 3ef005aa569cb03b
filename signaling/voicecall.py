"""Calling the assistant: a viewer's 1v1 call whose other side is the room's assistant, speaking.

``assistant_call`` (a signed-in viewer, the assistant on in the room) opens a private call room and answers
``ok`` with the room's name and a token for it (the viewer joins as a co-host, so it can publish its
microphone). The assistant joins the same room through this node's own WebSocket (an ordinary client: the
media path is the relay's, nothing special), publishes its voice and subscribes to the caller's audio;
``assistant.voice.VoiceAssistant`` listens and answers with the room's knowledge. The agent leaves when the
caller's audio ends or after ``max_call_s``; calls are bounded per node, per room and per user (one at a
time), and a caller who does not publish within ``publish_within_s`` frees the slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import shutil
from typing import Any

from aiortc.mediastreams import MediaStreamError

from assistant.speech import SpeechApi, SpeechError
from assistant.voice import OUT_RATE, RATE, Recognizer, SpeechTrack, VoiceAssistant, speak
from clients.client import LiveClient, ServerError
from clients.media import MediaSession
from protocol import ErrorCode, ProtocolError, Role, issue_token
from signaling.assistant import AssistantService
from signaling.hub import Hub
from signaling.session import Session

log = logging.getLogger(__name__)

_URL = re.compile(r"https?://\S+")
_SPOKEN_CURRENCY = {"EUR": "euros", "USD": "dollars", "CNY": "yuan", "GBP": "pounds", "JPY": "yen"}
_SPOKEN_CURRENCY_ZH = {"EUR": "欧元", "USD": "美元", "CNY": "元", "GBP": "英镑", "JPY": "日元"}
_CJK = re.compile(r"[\u3400-\u9fff]")


_PRICE = re.compile(r"(\d+)[.,](\d{2}) ([A-Z]{3})\b")


def spoken(text: str) -> str:
    """A chat answer as something to say: no links, prices as a person says them ("19 euros 90"; in a
    Chinese answer "19.90欧元"), separators as pauses."""
    chinese = bool(_CJK.search(text))

    def price(match: re.Match[str]) -> str:
        units, cents, code = match.groups()
        if chinese:
            return f"{units}{_SPOKEN_CURRENCY_ZH.get(code, code)}" if cents == "00" else \
                f"{units}.{cents}{_SPOKEN_CURRENCY_ZH.get(code, code)}"
        word = _SPOKEN_CURRENCY.get(code, code)
        return f"{units} {word}" if cents == "00" else f"{units} {word} {cents}"

    text = _URL.sub("", text).replace("buy:", "").replace("链接", "").replace("·", ",").replace(":", ",")
    text = _PRICE.sub(price, text)
    return re.sub(r"[,，\s]+$", "", re.sub(r"\s+", " ", text)).strip()  # noqa: RUF001 - Chinese comma


def call_refusal(calls: list[tuple[str, str]], room: str, user: str, max_calls: int,
                 max_per_room: int) -> str | None:
    """Why a new call from ``user`` in ``room`` is refused, given the calls running (room, caller); None: it
    may start. One call per user at a time, ``max_per_room`` per room, ``max_calls`` on the node."""
    if any(caller == user for _, caller in calls):
        return "you are on a call with the assistant already"
    if len(calls) >= max_calls:
        return "the assistant is on other calls; try again soon"
    if sum(1 for r, _ in calls if r == room) >= max_per_room:
        return "the assistant is on other calls in this room; try again soon"
    return None


class VoiceCalls:
    def __init__(self, assistants: AssistantService, hub: Hub, secret: str, node_url: str, max_calls: int = 4,
                 max_call_s: float = 600.0, max_calls_per_room: int = 2, publish_within_s: float = 10.0,
                 speech: SpeechApi | None = None) -> None:
        self.assistants = assistants
        self.speech = speech  # the operator's speech API (any language); None: pocketsphinx and espeak-ng
        self.hub = hub
        self.secret = secret
        self.node_url = node_url
        self.max_calls = max_calls
        self.max_calls_per_room = max_calls_per_room
        self.max_call_s = max_call_s
        self.publish_within_s = publish_within_s
        self.calls: dict[str, VoiceAssistant | None] = {}  # call room -> its assistant, once listening
        self.callers: dict[str, tuple[str, str]] = {}  # call room -> (the show's room, the caller)

    async def handle_call(self, session: Session, message: dict[str, Any]) -> None:
        ref = message.get("id")
        room = session.room
        if room is None or session.anonymous:
            raise ProtocolError(ErrorCode.FORBIDDEN, "sign in (a token) to call the assistant", ref)
        if await self.assistants.room_assistant(room) is None:
            raise ProtocolError(ErrorCode.FORBIDDEN, "the assistant is off in this room", ref)
        if shutil.which("espeak-ng") is None:
            raise ProtocolError(ErrorCode.MEDIA_UNAVAILABLE, "voice calls need espeak-ng on the server", ref)
        refusal = call_refusal(list(self.callers.values()), room, session.user, self.max_calls,
                               self.max_calls_per_room)
        if refusal is not None:
            raise ProtocolError(ErrorCode.RATE_LIMITED, refusal, ref)
        call_room = f"assistant-call-{secrets.token_hex(6)}"
        await self.hub.open_room(call_room)
        self.calls[call_room] = None
        self.callers[call_room] = (room, session.user)
        self.hub.spawn(self._agent(room, call_room, session.user), f"voice-{call_room}")
        token = issue_token(self.secret, call_room, session.user, Role.COHOST, self.max_call_s, session.name)
        reply: dict[str, Any] = {"type": "ok", "call_room": call_room, "token": token}
        if ref is not None:
            reply["id"] = ref
        session.send(reply)

    async def _agent(self, room: str, call_room: str, caller: str) -> None:
        client = LiveClient(self.node_url, call_room,
                            issue_token(self.secret, call_room, "assistant", Role.HOST, self.max_call_s, "Assistant"))
        voice: MediaSession | None = None
        listening: MediaSession | None = None
        try:
            async with asyncio.timeout(self.max_call_s):
                await client.connect()
                track = SpeechTrack()
                voice = await MediaSession.publish(client, [track])
                # The caller's microphone: wait until it publishes in the call room.
                publisher = next((p["publisher"] for p in (client.joined or {})["state"].get("publishers") or []
                                  if p.get("user") == caller), None)
                while publisher is None:  # a caller who never publishes holds the slot this long only
                    event = await client.next_event("media", timeout=self.publish_within_s)
                    if event.get("event") == "publisher_joined" and event.get("user") == caller:
                        publisher = event["publisher"]
                listening = await _subscribe_when_there_is_room(client, publisher)
                heard = await listening.wait_track("audio")
                knowledge = await self.assistants.room_assistant(room)
                phrases = knowledge.vocabulary() if knowledge is not None else []

                async def answer(text: str) -> str | None:
                    reply = await self.assistants.answer_text(room, text)
                    return spoken(reply) if reply else None

                recognize, say = await self._speech(phrases)
                assistant = VoiceAssistant(recognize, answer, track, say)
                self.calls[call_room] = assistant
                await assistant.run(heard.recv)
        except (MediaStreamError, TimeoutError, ConnectionError):
            pass  # the caller hung up (its track ended), never published, or the call ran its length
        except Exception:
            log.exception("assistant voice call failed", extra={"room": room, "call": call_room})
        finally:
            for media in (listening, voice):
                if media is not None:
                    with contextlib.suppress(Exception):
                        await media.close()
            with contextlib.suppress(Exception):
                await client.close()
            self.calls.pop(call_room, None)
            self.callers.pop(call_room, None)

    async def _speech(self, phrases: list[str]) -> tuple[Any, Any]:
        """(recognize, say) for a call: the operator's speech API when there is one (an answer it cannot
        voice is voiced by espeak-ng; a question it cannot hear is asked again), else pocketsphinx over the
        shop's words and espeak-ng."""
        loop = asyncio.get_running_loop()
        api = self.speech
        if api is None:
            recognizer = await loop.run_in_executor(None, Recognizer, phrases)

            async def offline(pcm: bytes) -> str:
                return await loop.run_in_executor(None, recognizer.recognize, pcm)
            return offline, None

        async def recognize(pcm: bytes) -> str:
            try:
                return await api.transcribe(pcm, RATE, phrases)
            except SpeechError as exc:
                log.warning("speech recognition failed", extra={"error": str(exc)})
                # (not nothing: the caller is asked to say it again, in the call's language)
                return "请再说一遍" if (api.language or "").startswith("zh") else "?"

        async def say(text: str) -> Any:
            try:
                return await api.synthesize(text, OUT_RATE)
            except SpeechError as exc:
                log.warning("speech synthesis failed: espeak-ng speaks", extra={"error": str(exc)})
                return await loop.run_in_executor(None, speak, text)
        return recognize, say

    def handlers(self) -> dict[str, Any]:
        return {"assistant_call": self.handle_call}


async def _subscribe_when_there_is_room(client: LiveClient, publisher: str, tries: int = 10) -> MediaSession:
    """The caller's audio; a node busy for a moment (``overloaded``, as any new subscription is refused on a
    saturated loop) is asked again when it says, as a page would, ``tries`` times at most."""
    for _ in range(tries - 1):
        try:
            return await MediaSession.subscribe(client, publisher=publisher, kinds=("audio",))
        except ServerError as exc:
            if exc.code != ErrorCode.OVERLOADED:
                raise
            await asyncio.sleep(min(5.0, (exc.frame.get("retry_after_ms") or 1000) / 1000))
    return await MediaSession.subscribe(client, publisher=publisher, kinds=("audio",))
