"""Client-side media sessions: publish tracks to the relay, or subscribe to a publisher, over a joined
``LiveClient``. The client offers, the server answers (see docs/protocol.md, "Media").

    async with LiveClient(url, room, token) as client:
        pub = await MediaSession.publish(client, [CounterVideoTrack(), ToneAudioTrack()])
        ...
        sub = await MediaSession.subscribe(client)        # another connection
        frame = await sub.tracks["video"].recv()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from clients.client import ConnectionClosed, LiveClient, ServerError
from rtc import adapter


def _turn_transport(url: str) -> str:
    """"udp", "tcp" or "tls" for a turn:/turns: URL."""
    if url.startswith("turns:"):
        return "tls"
    return "tcp" if "transport=tcp" in url else "udp"


class MediaSession:
    def __init__(self, client: LiveClient, pc: RTCPeerConnection) -> None:
        self.client = client
        self.pc = pc
        self.media_id = ""  # the server's id for this session, once answered
        self.role = ""  # "publish" or "subscribe"
        self.tracks: dict[str, MediaStreamTrack] = {}
        self.track_ready: dict[str, asyncio.Event] = {"video": asyncio.Event(), "audio": asyncio.Event()}
        self.offer_sent: float = 0.0  # perf_counter when the offer went out
        self.answered: float = 0.0

        # Load tests set this before negotiating: encoded frames go to it and are never decoded.
        self.frame_sink: Callable[[str, Any, Any], None] | None = None  # (kind, frame, RTCRtpCodecParameters)
        # Cascades set this too: every RTP packet (RTX unwrapped) goes to it, before frames are assembled.
        self.packet_sink: Callable[[str, Any, Any], None] | None = None  # (kind, RtpPacket, codec)
        # With a frame sink: the tapped receivers and the sender's SSRC per kind (to ask for keyframes).
        self.receivers: dict[str, Any] = {}
        self.ssrcs: dict[str, int] = {}
        # A subscription carrying several publishers (``add``): each one's tracks by kind, and which
        # publisher each of our sections receives.
        self.publishers: dict[str, dict[str, MediaStreamTrack]] = {}
        self.sections: dict[str, str] = {}
        # The SDP rewriting given to ``subscribe`` (a test's forwarder), applied to renegotiations too.
        self._offer_filter: Callable[[str], str] | None = None
        self._answer_filter: Callable[[str], str] | None = None

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if self.frame_sink is not None:
                receiver = next(t.receiver for t in pc.getTransceivers() if t.receiver.track is track)
                sink, kind = self.frame_sink, track.kind
                self.receivers[kind] = receiver

                def on_frame(codec: Any, frame: Any, ssrc: int) -> None:
                    self.ssrcs[kind] = ssrc
                    sink(kind, frame, codec)

                packets = self.packet_sink

                def on_packet(codec: Any, packet: Any) -> None:
                    if packets is not None:
                        packets(kind, packet, codec)

                adapter.tap_receiver(receiver, kind, on_frame, on_packet if packets is not None else None)
            elif track.kind == "video":
                receiver = next(t.receiver for t in pc.getTransceivers() if t.receiver.track is track)
                adapter.release_frames_on_marker(receiver)
            mid = next((t.mid for t in pc.getTransceivers() if t.receiver.track is track), None)
            publisher = self.sections.get(mid or "")
            if publisher is not None:
                self.publishers.setdefault(publisher, {})[track.kind] = track
            self.tracks.setdefault(track.kind, track)  # (the first publisher's, for one-publisher use)
            self.track_ready[track.kind].set()

    @staticmethod
    def _peer_connection(ice_servers: list[str] | None, client: LiveClient | None = None,
                         turn: str | None = None) -> RTCPeerConnection:
        """No STUN unless asked (aiortc would otherwise ask a public server); the TURN server the relay
        gave in ``joined.ice_servers``, with its credentials. aioice uses one TURN URL per connection:
        ``turn`` ("udp", "tcp" or "tls") says which, the first one given otherwise."""
        servers = [RTCIceServer(urls=u) for u in ice_servers or []]
        given = (client.joined or {}).get("ice_servers") if client is not None else None
        for entry in given if isinstance(given, list) else []:
            urls = [u for u in entry.get("urls", []) if isinstance(u, str)]
            if turn is not None:
                urls = [u for u in urls if _turn_transport(u) == turn]
            if urls:
                servers.append(RTCIceServer(urls=urls[0], username=entry.get("username"),
                                            credential=entry.get("credential")))
        adapter.end_ice_monitor_on_close()  # (an ICE transport closed as it started spun a core forever)
        return RTCPeerConnection(RTCConfiguration(iceServers=servers))

    async def _negotiate(self, message: dict[str, Any], host_addresses: list[str] | None,
                         answer_filter: Callable[[str], str] | None = None,
                         offer_filter: Callable[[str], str] | None = None) -> None:
        offer = await self.pc.createOffer()
        if host_addresses:
            adapter.restrict_host_addresses(self.pc, host_addresses)
        adapter.quicken_handshakes(self.pc)
        adapter.set_stun_retransmission_timeout()  # as libwebrtc: a lost ICE check costs ~50 ms, not 500
        await self.pc.setLocalDescription(offer)
        message["sdp"] = self.pc.localDescription.sdp
        self._offer_filter, self._answer_filter = offer_filter, answer_filter
        if offer_filter is not None:
            message["sdp"] = offer_filter(message["sdp"])
        self.role = message["type"]
        self.offer_sent = time.perf_counter()
        answer = await self.client.request(message, timeout=20.0)
        self.answered = time.perf_counter()
        self.media_id = answer["media"]
        carried = answer.get("publishers") or []
        if carried:  # our sections are this publisher's (a subscription starts with one)
            self.sections.update({t.mid: carried[0] for t in self.pc.getTransceivers() if t.mid})
        sdp = answer["sdp"] if answer_filter is None else answer_filter(answer["sdp"])
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        adapter.demux_by_mid(self.pc)  # streams added later (``add``) must not be taken for this one

    @classmethod
    async def publish(cls, client: LiveClient, tracks: list[MediaStreamTrack], *,
                      video_codec: str | None = None, ice_servers: list[str] | None = None,
                      host_addresses: tuple[str, ...] = ("127.0.0.1",),
                      answer_filter: Callable[[str], str] | None = None,
                      offer_filter: Callable[[str], str] | None = None, turn: str | None = None) -> MediaSession:
        session = cls(client, cls._peer_connection(ice_servers, client, turn))
        for track in tracks:
            transceiver = session.pc.addTransceiver(track, direction="sendonly")
            if track.kind == "video" and video_codec:
                wanted = f"video/{video_codec}".lower()
                transceiver.setCodecPreferences(
                    [c for c in RTCRtpSender.getCapabilities("video").codecs
                     if c.mimeType.lower() in (wanted, "video/rtx")])
        try:
            await session._negotiate({"type": "publish"}, list(host_addresses or []), answer_filter, offer_filter)
        except BaseException:
            await session.pc.close()
            raise
        return session

    @classmethod
    async def subscribe(cls, client: LiveClient, publisher: str | None = None,
                        kinds: tuple[str, ...] = ("video", "audio"), *, ice_servers: list[str] | None = None,
                        host_addresses: tuple[str, ...] = ("127.0.0.1",),
                        answer_filter: Callable[[str], str] | None = None,
                        offer_filter: Callable[[str], str] | None = None,
                        frame_sink: Callable[[str, Any, Any], None] | None = None,
                        packet_sink: Callable[[str, Any, Any], None] | None = None,
                        turn: str | None = None, user: str | None = None, keep: bool = False,
                        rtp_counter: Callable[[bytes], None] | None = None) -> MediaSession:
        """Subscribe to a publisher (default: the room's first). ``answer_filter`` may rewrite the
        server's answer SDP before use, ``offer_filter`` our offer before it is sent (tests and benchmarks
        route media through their own forwarder with them);
        ``frame_sink(kind, encoded_frame, codec)`` takes the encoded frames instead of decoding them;
        with it, ``packet_sink(kind, rtp_packet, codec)`` sees every RTP packet first; ``turn`` picks the
        relay's TURN URL by transport; ``user`` subscribes to that user's publication, which the server
        waits for (up to 10 s) if it does not exist yet; ``keep``: the connection stays when its publishers
        leave, for ``add`` to bring the next ones in; ``rtp_counter(packet_bytes)`` takes every RTP packet
        instead of aiortc's receive path (load generators: no tracks, no frames, no NACKs)."""
        session = cls(client, cls._peer_connection(ice_servers, client, turn))
        session.frame_sink = frame_sink
        session.packet_sink = packet_sink
        for kind in kinds:
            session.pc.addTransceiver(kind, direction="recvonly")
        message: dict[str, Any] = {"type": "subscribe"}
        if publisher:
            message["publisher"] = publisher
        if user:
            message["user"] = user
        if keep:
            message["keep"] = True
        try:
            await session._negotiate(message, list(host_addresses or []), answer_filter, offer_filter)
        except BaseException:
            await session.pc.close()
            raise
        if rtp_counter is not None:
            adapter.count_rtp(session.pc, rtp_counter)
        return session

    async def add(self, publisher: str, kinds: tuple[str, ...] = ("video", "audio"),
                  timeout: float = 20.0) -> dict[str, MediaStreamTrack]:
        """Receive another publisher on this subscription's connection: new receive-only sections and a new
        offer (renegotiation; no new ICE or DTLS handshake). Returns its tracks by kind once they exist."""
        new = [self.pc.addTransceiver(kind, direction="recvonly") for kind in kinds]
        await self.pc.setLocalDescription(await self.pc.createOffer())
        for transceiver in new:
            if transceiver.mid:
                self.sections[transceiver.mid] = publisher
        offer = self.pc.localDescription.sdp
        message = {"type": "subscribe", "media": self.media_id, "publisher": publisher,
                   "sdp": offer if self._offer_filter is None else self._offer_filter(offer)}
        try:
            answer = await self.client.request(message, timeout=timeout)
        except ServerError:
            # Refused before the server applied it (aiortc cannot roll an offer back): the new sections go
            # in the next offer as inactive, which the server leaves unused.
            for transceiver in new:
                transceiver.direction = "inactive"
                self.sections.pop(transceiver.mid or "", None)
            raise
        sdp = answer["sdp"] if self._answer_filter is None else self._answer_filter(answer["sdp"])
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        return self.publishers.get(publisher, {})

    async def remove(self, publisher: str) -> None:
        """Stop receiving one publisher; the connection and its other publishers stay."""
        await self.client.request({"type": "unsubscribe", "media": self.media_id, "publisher": publisher})
        self.publishers.pop(publisher, None)

    async def set_video_quality(self, quality: str) -> None:
        """A subscription's wish: the highest simulcast layer ("high", "medium", "low"), or "off" (no video)."""
        await self.client.request({"type": "video_quality", "media": self.media_id, "quality": quality})

    def request_keyframe(self, kind: str = "video") -> None:
        """With a frame sink: ask the sender for a keyframe (RTCP PLI), as a decoder would."""
        if kind in self.receivers and kind in self.ssrcs:
            adapter.send_pli(self.receivers[kind], self.ssrcs[kind])

    def codecs(self) -> dict[str, RTCRtpCodecParameters]:
        """The media codec negotiated for each kind (retransmission codecs left out)."""
        out: dict[str, RTCRtpCodecParameters] = {}
        for transceiver in self.pc.getTransceivers():
            codecs = [c for c in adapter.negotiated_codecs(transceiver) if not c.mimeType.lower().endswith("/rtx")]
            if codecs and transceiver.kind:
                out[transceiver.kind] = codecs[0]
        return out

    async def wait_track(self, kind: str, timeout: float = 10.0) -> MediaStreamTrack:
        async with asyncio.timeout(timeout):
            await self.track_ready[kind].wait()
        return self.tracks[kind]

    async def close(self) -> None:
        """Close the peer connection and tell the server (if the connection is still up)."""
        if self.media_id and self.client.connected:
            kind = "unpublish" if self.role == "publish" else "unsubscribe"
            # The server may be going away meanwhile; the local close below happens regardless.
            with contextlib.suppress(ServerError, ConnectionClosed, TimeoutError):
                await self.client.request({"type": kind, "media": self.media_id}, timeout=5.0)
        await self.pc.close()
