"""The media graph: MediaRouter -> MediaRoom -> TrackSource (published tracks) / Subscriber (down-tracks).

Modelled on mediasoup's Router/Producer/Consumer: parents hold children in maps, children remove
themselves when they close, and closing cascades downward (a publisher that leaves closes its published
tracks, which end every down-track made from them). A ``TrackSource`` is either a ``Publisher`` (its own
RTCPeerConnection) or a ``RemotePublisher`` (another node's publisher, fed by the cascade); subscribers
cannot tell them apart. Each Publisher and Subscriber owns one RTCPeerConnection.

The signaling side drives this only through ``MediaRouter``'s public methods (commands and queries) and
learns about changes through its ``on_event`` callback; nothing here imports signaling or aiohttp.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters
from aiortc.rtp import RtpPacket
from aiortc.sdp import candidate_from_sdp

from protocol import ErrorCode
from relay.adaptation import Adaptation
from relay.allocation import viewing_priority
from relay.chooser import LayerChooser
from relay.link import SubscriberLink
from relay.recorder import DiskBudget, Recording
from relay.tracks import DownTrack, PublishedTrack
from rtc import adapter
from rtc.codecs import codec_for
from rtc.udpmux import UdpMux
from rtc.udpmux import interface_addresses as _interface_addresses

log = logging.getLogger(__name__)


class MediaError(Exception):
    """A media request that cannot be served; ``code`` is the protocol error code the client gets."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TrackSource(Protocol):
    """A publisher as a room's media graph sees it: local (``Publisher``) or relayed from another node
    (``RemotePublisher``). Subscribers are attached to its tracks the same way either way."""

    id: str
    user: str
    role: str  # "host" or "cohost"
    room: MediaRoom
    tracks: dict[str, PublishedTrack]  # by kind
    codecs: dict[str, RTCRtpCodecParameters]
    closed: bool
    announced: bool  # the room was told it joined (so it is told when it leaves)

    @property
    def local(self) -> bool:
        """True for a publisher connected to this node; False for a mirror of another node's."""
        ...

    @property
    def subscriber_count(self) -> int: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What the signaling side may know of a source (never the object itself)."""

    id: str
    room: str
    user: str
    kinds: tuple[str, ...]
    local: bool
    role: str = "host"  # "host" or "cohost"


@dataclass(frozen=True, slots=True)
class RouterStats:
    publishers: int
    subscribers: int
    keyframe_requests: int  # PLIs sent upstream, over every published track
    # Over the current subscribers' down-tracks: RTP packets written, lost at a full (or not yet
    # connected) subscriber socket, and sent again on a subscriber's NACK.
    packets_forwarded: int = 0
    packets_dropped: int = 0
    packets_retransmitted: int = 0
    repairs_refused: int = 0  # NACKs left unanswered: a congested link's repair budget was spent
    # Down-tracks by the loss their subscriber last reported: "<1%", "1-5%", "5-20%", ">20%".
    loss_buckets: dict[str, int] = field(default_factory=dict)
    # Simulcast video down-tracks by the layer forwarded ("0", "1", ..., "paused", "None" while starting),
    # their layer switches by direction, subscribers by their receiver's estimate, audio by RED redundancy.
    layers: dict[str, int] = field(default_factory=dict)
    switches: dict[str, int] = field(default_factory=dict)
    estimates: dict[str, int] = field(default_factory=dict)
    redundancy: dict[str, int] = field(default_factory=dict)
    # Subscribers by whence their estimate comes ("send_side", "remb"), and the transport feedback packets
    # the current ones sent that were not read (malformed, or past the per-second bound).
    estimators: dict[str, int] = field(default_factory=dict)
    bad_feedback: int = 0


@dataclass(frozen=True, slots=True)
class MediaConfig:
    # STUN/TURN servers to use (none by default: the relay contacts no outside server unless told).
    ice_servers: tuple[str, ...] = ()
    # Addresses offered as ICE host candidates. Empty: aioice's choice (every non-loopback interface).
    host_addresses: tuple[str, ...] = ("127.0.0.1",)
    # Most bytes waiting in one subscriber's socket buffer; beyond it packets to that subscriber are
    # dropped (it NACKs what it still wants) instead of growing memory or delaying anyone else.
    max_buffered_bytes: int = 256 * 1024
    # Least time between two keyframe requests to one publisher (seconds).
    keyframe_interval: float = 0.1
    # Client ICE candidates on these networks are ignored: a client must not aim the relay's connectivity
    # checks at link-local addresses (the cloud metadata address 169.254.169.254 among them).
    deny_networks: tuple[str, ...] = ("169.254.0.0/16", "fe80::/10")
    # A peer connection not connected this long after its answer is closed (its client went away, or ICE
    # cannot get through): nothing a client starts and abandons is held for long.
    connect_timeout: float = 20.0
    # A connected publisher from which nothing (no RTP, RTCP or consent answer) came for this long is closed:
    # an encoder that vanished without a DELETE (a crash, a pulled cable) leaves its room at once, not when
    # its ICE consent runs out 30 s later.
    silent_timeout: float = 3.5
    # With a socket per peer connection: the UDP ports those sockets may use (first, last), or None.
    port_range: tuple[int, int] | None = None
    # Estimate a viewer's link from its transport-cc acknowledgements where it offers them (relay/bwe.py);
    # False: from its REMB.
    send_side_estimation: bool = True
    # A subscription that follows restarts (WHEP) outlives its publisher this long (seconds): when the same
    # user publishes again meanwhile (an encoder's reconnect: DELETE, then POST), it goes on from the new one.
    follow_window: float = 15.0


MediaEvent = Callable[[str, dict[str, Any]], None]
"""(room, event) for the signaling side: publisher_joined / publisher_left / subscriber_closed."""


def _rtc_configuration(config: MediaConfig) -> RTCConfiguration:
    servers = []
    for url in config.ice_servers:
        # turn:user:pass@host:port is accepted as a convenience; stun:host:port as is.
        if url.startswith(("turn:", "turns:")) and "@" in url:
            scheme, rest = url.split(":", 1)
            creds, host = rest.rsplit("@", 1)
            user, _, password = creds.partition(":")
            servers.append(RTCIceServer(urls=f"{scheme}:{host}", username=user, credential=password))
        else:
            servers.append(RTCIceServer(urls=url))
    return RTCConfiguration(iceServers=servers)


class _Peer:
    """What publishers and subscribers share: one RTCPeerConnection and its lifecycle."""

    def __init__(self, peer_id: str, room: MediaRoom) -> None:
        self.id = peer_id
        self.room = room
        self.pc = RTCPeerConnection(_rtc_configuration(room.router.config))
        adapter.connect_quietly(self.pc)
        adapter.accept_rsa_certificates(self.pc)
        self.closed = False
        self._trickled = 0  # candidates trickled so far (bounded)

        @self.pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("peer connection state", extra={"peer": self.id, "state": self.pc.connectionState})
            if self.pc.connectionState in ("failed", "closed"):
                await self.close()
            elif self.pc.connectionState == "connected":
                self.on_connected()

    def on_connected(self) -> None:
        """ICE and DTLS are up (a subscriber starts its down-tracks from what is kept)."""

    async def _answer(self) -> str:
        answer = await self.pc.createAnswer()
        mux = self.room.router.mux
        addresses = list(self.room.router.config.host_addresses)
        if mux is not None:  # every peer connection on the node's one UDP port
            for connection in adapter.ice_connections(self.pc):
                mux.attach(connection)
        elif addresses or self.room.router.port_range is not None:
            adapter.restrict_host_addresses(self.pc, addresses or _interface_addresses(),
                                            self.room.router.port_range)
        adapter.quicken_handshakes(self.pc)
        await self.pc.setLocalDescription(answer)
        adapter.answer_leaves(self.pc)  # (within a few ms) its first DTLS flight times its resends from this
        return adapter.one_fingerprint(self.pc.localDescription.sdp)

    def _screen(self, offer_sdp: str) -> str:
        """The offer's candidates screened as trickled ones are (denied networks dropped, a bounded count)."""
        networks = self.room.router.deny_networks
        screened, dropped = screen_offer_candidates(offer_sdp, lambda ip: _denied(ip, networks))
        self.room.router.candidates_denied += dropped
        self._trickled = 0
        return screened

    async def add_candidate(self, candidate: dict[str, Any]) -> bool:
        """Add a client's trickled candidate; False if it was ignored (its address is on a denied network).
        Raises MediaError past the bound on candidates per peer."""
        text = candidate.get("candidate") or ""
        if not text:
            return True  # end of candidates
        self._trickled += 1
        if self._trickled > MAX_OFFER_CANDIDATES:
            raise MediaError(ErrorCode.BAD_CANDIDATE, f"at most {MAX_OFFER_CANDIDATES} candidates per session")
        parsed = candidate_from_sdp(text.removeprefix("candidate:"))
        if _denied(parsed.ip, self.room.router.deny_networks):
            return False
        parsed.sdpMid = candidate.get("sdpMid")
        parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
        await self.pc.addIceCandidate(parsed)
        return True

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._on_close()
        # Whoever started it learns it is gone, however it ended (closed by the client, ICE failure, timeout).
        self.room.router.emit(self.room.name, {"type": "peer_closed", "peer": self.id})
        await self.pc.close()

    def _on_close(self) -> None:
        raise NotImplementedError


class Publisher(_Peer):
    def __init__(self, peer_id: str, room: MediaRoom, user: str, role: str = "host") -> None:
        super().__init__(peer_id, room)
        self.role = role
        self._silence: asyncio.TimerHandle | None = None  # the once-a-second check, while connected
        self._watch = adapter.SilenceWatch(self.pc)
        self.user = user
        self.tracks: dict[str, PublishedTrack] = {}  # by kind
        self.codecs: dict[str, RTCRtpCodecParameters] = {}
        # Set once it connects (ICE and DTLS up): the room is told then, not when its offer came, so a publisher
        # that never gets through (or fails its handshake) is never announced, and viewers never wait on it.
        self.announced = False
        self._receivers: dict[str, Any] = {}
        self._demux: dict[str, adapter.SimulcastDemux] = {}  # by kind: a simulcast track's SSRC -> layer
        self._feedback: adapter.TransportFeedbackSender | None = None  # transport-cc, when the offer has it
        self.receive: adapter.SyncReceive | None = None

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            receiver = next(t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track)
            self._attach(track.kind, track.id, receiver)

    @property
    def local(self) -> bool:
        return True

    @property
    def subscriber_count(self) -> int:
        return sum(len(t.down_tracks) for t in self.tracks.values())

    def _attach(self, kind: str, track_id: str, receiver: Any) -> None:
        config = self.room.router.config
        ssrc_box: dict[int, int] = {}  # the SSRC each layer arrives on
        pli_wanted: set[int] = set()

        def send_pli(layer: int) -> None:
            if layer in ssrc_box:
                adapter.send_pli(receiver, ssrc_box[layer])
            else:
                pli_wanted.add(layer)  # no packet of it seen yet: ask as soon as we know its SSRC

        published = PublishedTrack(kind, track_id, self.id, send_pli, keyframe_interval=config.keyframe_interval)

        def on_packet(codec: RTCRtpCodecParameters, packet: RtpPacket) -> bool:
            demux = self._demux.get(kind)
            layer = 0 if demux is None else demux.layer_of.get(packet.ssrc)
            if layer is None:
                return False  # a layer not known yet (its rid not seen): nothing can place it
            if layer in pli_wanted:
                pli_wanted.discard(layer)
                adapter.send_pli(receiver, packet.ssrc)
            ssrc_box[layer] = packet.ssrc
            published.on_packet(codec.name, codec.clockRate, packet, layer)
            # Frames are assembled from the top layer (a recorder's, HLS's), and from a lower one while an HLS
            # rendition ladder takes it.
            return published.wants_frames(layer)

        def on_frame(codec: RTCRtpCodecParameters, frame: Any, ssrc: int) -> None:
            demux = self._demux.get(kind)
            source = None if demux is None else demux.layer_of.get(ssrc)
            published.on_frame(codec.name, codec.clockRate, frame.data, frame.timestamp,
                               getattr(frame, "after_gap", False), source)

        adapter.tap_receiver(receiver, kind, on_frame, on_packet)
        self.tracks[kind] = published
        self._receivers[kind] = receiver

    async def negotiate(self, offer_sdp: str) -> str:
        offer_sdp = self._screen(offer_sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        simulcast: dict[str | None, list[str]] = {}
        for transceiver in self.pc.getTransceivers():
            transceiver.direction = "recvonly"  # a publisher only sends to us
            adapter.enable_opus_fec(transceiver)  # its encoder adds in-band FEC when our reports show loss
            receiver = self._receivers.get(transceiver.kind)
            if transceiver.kind == "video" and receiver is not None:
                # VP9 (SVC from a browser) when the publisher prefers it: aiortc would answer VP8 instead.
                adapter.accept_offered_codec(transceiver, offer_sdp, "video/VP9", only=False, first_only=True)
                if self._feedback is None and adapter.accept_transport_cc(transceiver, offer_sdp):
                    self._feedback = adapter.TransportFeedbackSender(receiver)  # its uplink estimate from us
                rids = adapter.accept_simulcast(transceiver, offer_sdp)
                if rids:  # one published track with a layer per rid (ranked by size: relay/simulcast.py)
                    simulcast[transceiver.mid] = rids
                    self.tracks["video"].set_layers(len(rids))
                    self._demux["video"] = adapter.SimulcastDemux(receiver, rids)
        answer = await self._answer()
        # Its SRTP handled as each datagram arrives (no queue, no task switch per packet): what a publisher
        # costs the node before anyone watches. None off the one-port mux (aiortc's path then).
        self.receive = adapter.receive_synchronously(self.pc)
        for mid, rids in simulcast.items():
            answer = adapter.answer_simulcast(answer, mid, rids)
        for transceiver in self.pc.getTransceivers():
            codecs = [c for c in adapter.negotiated_codecs(transceiver) if not c.mimeType.lower().endswith("/rtx")]
            if codecs and transceiver.kind in self.tracks:
                self.codecs[transceiver.kind] = codecs[0]
                self.tracks[transceiver.kind].codec = codecs[0]
        if not self.tracks:
            raise MediaError(ErrorCode.BAD_SDP, "the offer carries no audio or video to publish")
        return answer

    def on_connected(self) -> None:
        if not self.announced and not self.closed:
            self.room.adopt(self)  # subscriptions its user's last publication left waiting
            self.announced = True
            self.room.router.emit(self.room.name, {"type": "publisher_joined", "publisher": self.id, "user": self.user,
                                                   "kinds": sorted(self.tracks)})
        if self._silence is None:
            self._silence = asyncio.get_running_loop().call_later(1.0, self._check_silence)

    def _check_silence(self) -> None:
        """Once a second while connected: close it when nothing has come from it for ``silent_timeout``."""
        self._silence = None
        if self.closed:
            return
        quiet = self._watch.quiet_for(time.monotonic())
        if quiet > self.room.router.config.silent_timeout:
            log.warning("publisher silent; closing it", extra={"peer": self.id, "silent_s": round(quiet, 1)})
            self.room.router.close_soon(self.id)
            return
        self._silence = asyncio.get_running_loop().call_later(1.0, self._check_silence)

    def _on_close(self) -> None:
        if self._silence is not None:
            self._silence.cancel()
            self._silence = None
        if self._feedback is not None:
            self._feedback.close()
        self.room.park(self)  # its following subscriptions wait for its user's next publication
        for track in self.tracks.values():
            track.close()
        self.room.remove_publisher(self)


class RemotePublisher:
    """A publisher of another node, mirrored here (origin/edge cascade): its tracks are fed by an upstream
    subscription to the origin (``feed``), not by a peer connection of ours. Subscribers see it as any
    publisher; their keyframe requests go upstream through ``request_keyframe`` (one way, to the origin)."""

    def __init__(self, peer_id: str, room: MediaRoom, user: str, request_keyframe: Callable[[str], None]) -> None:
        self.id = peer_id
        self.room = room
        self.user = user
        self.role = "host"  # (the origin knows; a mirror is ranked as a host by its viewers' allocation)
        self.tracks: dict[str, PublishedTrack] = {}
        self.codecs: dict[str, RTCRtpCodecParameters] = {}
        self.closed = False
        self.announced = True  # the origin announced it; the edge tells its room when the mirror ends
        self._request_keyframe = request_keyframe

    @property
    def local(self) -> bool:
        return False

    def add_track(self, kind: str, codec: RTCRtpCodecParameters) -> None:
        """The upstream subscription negotiated ``codec`` for ``kind``: subscribers here get exactly it."""
        config = self.room.router.config
        track = PublishedTrack(kind, f"{self.id}-{kind}", self.id, lambda _layer: self._request_keyframe(kind),
                               keyframe_interval=config.keyframe_interval)
        track.codec = codec
        self.tracks[kind] = track
        self.codecs[kind] = codec

    def feed(self, kind: str, codec_name: str, clock_rate: int, packet: RtpPacket) -> None:
        """One RTP packet from upstream, fanned out to this node's subscribers."""
        track = self.tracks.get(kind)
        if track is not None:
            track.on_packet(codec_name, clock_rate, packet)

    @property
    def subscriber_count(self) -> int:
        return sum(len(t.down_tracks) for t in self.tracks.values())

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for track in self.tracks.values():
            track.close()
        self.room.remove_publisher(self)


class Subscriber(_Peer):
    """One viewer's receiving peer connection. The first offer makes it (a subscription to one publisher);
    a later offer on it (renegotiation, no new handshake) adds another publisher's tracks in its new
    receive-only sections, so a viewer watching the host, a PK opponent and co-hosts keeps one connection,
    one estimate and one allocation (relay/allocation.py). A section once used is never reused: a publisher
    that left leaves its sections answered inactive, and a connection holds at most
    ``MAX_SESSION_SECTIONS`` over its life."""

    def __init__(self, peer_id: str, room: MediaRoom, user: str, follows: bool = False, keep: bool = False) -> None:
        super().__init__(peer_id, room)
        self.user = user
        self.follows = follows  # goes on from its publisher's user's next publication (MediaRoom.park)
        self.keep = keep  # a viewer's one connection: it stays when its publishers go, for the next ones
        self.down_tracks: list[DownTrack] = []
        self.link = SubscriberLink()  # its link, as its RTCP tells it; shared by its down-tracks
        self.sections: dict[str, str] = {}  # mid -> the publisher its section carries ("": none)
        self._acknowledged: set[int] = set()  # transports whose transport-cc feedback is taken
        self._settled: dict[str, tuple[list[Any], list[Any]]] = {}  # mid -> the codecs and extensions agreed
        self._negotiating = False

    def on_connected(self) -> None:
        for down in self.down_tracks:
            down.on_connected()

    @property
    def publishers(self) -> set[str]:
        """The publishers this connection carries now."""
        return {d.source.publisher_id for d in self.down_tracks if d.readyState == "live"}

    async def negotiate(self, offer_sdp: str, publisher: TrackSource) -> str:
        """Answer the first offer, or a renegotiation adding ``publisher``; raises MediaError (after a
        failed renegotiation the connection is unusable: the caller closes it)."""
        renegotiation = self.pc.remoteDescription is not None
        if renegotiation:
            self._check_renegotiation(offer_sdp, publisher)
        self._negotiating = True
        try:
            offer_sdp = self._screen(offer_sdp)
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            fresh = [t for t in self.pc.getTransceivers() if t.mid not in self.sections]
            for transceiver in self.pc.getTransceivers():
                if transceiver.mid in self._settled:
                    # aiortc renegotiates every section from its own lists: what was agreed (the publisher's
                    # exact codec, RED, transport-cc...) stays agreed, as the down-tracks' headers are.
                    transceiver._codecs, transceiver._headerExtensions = self._settled[transceiver.mid]
                if transceiver.mid in self.sections and not self._carries(transceiver):
                    transceiver.direction = "inactive"  # its publisher left or was taken out
            added = self._attach(fresh, offer_sdp, publisher)
            if not added:
                raise MediaError(ErrorCode.BAD_SDP, "the offer asks for no media this room publishes"
                                 if not renegotiation else "the offer adds no receive-only section for it")
            answer = await (self._answer() if not renegotiation else self._answer_again())
            for transceiver in added:
                self._settled[transceiver.mid] = (list(transceiver._codecs), list(transceiver._headerExtensions))
            if renegotiation:
                # The subscriber must apply the answer before it can place the new sections' packets (a
                # browser or aiortc drops them until then): what comes first would be the kept keyframe,
                # and a stream whose keyframe was dropped waits for the publisher's next one.
                asyncio.get_running_loop().call_later(self._start_delay(), self._bind, added)
            else:
                self._bind(added)
            return answer
        finally:
            self._negotiating = False

    def _check_renegotiation(self, offer_sdp: str, publisher: TrackSource) -> None:
        if self._negotiating or self.pc.signalingState != "stable":
            raise MediaError(ErrorCode.BUSY, "a renegotiation of this session is under way")
        if offer_sdp.count("\nm=") > MAX_SESSION_SECTIONS:
            raise MediaError(ErrorCode.TOO_MANY_MEDIA,
                             f"at most {MAX_SESSION_SECTIONS} media sections in one session: open another")
        if publisher.id in self.publishers:
            raise MediaError(ErrorCode.BUSY, "this session already carries that publisher")

    def _carries(self, transceiver: Any) -> bool:
        track = transceiver.sender.track
        return isinstance(track, DownTrack) and track.readyState == "live"

    def _attach(self, transceivers: list[Any], offer_sdp: str, publisher: TrackSource) -> list[Any]:
        """Give ``publisher``'s tracks to the new sections that receive them; the rest are answered
        inactive. Returns the sections given a track."""
        added: list[Any] = []
        link = self.link
        priority = viewing_priority(self.room.name, publisher.room.name, publisher.role)
        for transceiver in transceivers:
            self.sections[transceiver.mid] = ""
            source = publisher.tracks.get(transceiver.kind)
            codec = publisher.codecs.get(transceiver.kind)
            taken = any(self.sections.get(t.mid) == publisher.id and t.kind == transceiver.kind for t in added)
            if source is None or codec is None or source.closed or taken \
                    or transceiver._offerDirection not in ("sendonly", "sendrecv"):
                transceiver.direction = "inactive"
                continue
            # Exactly the publisher's codec: the subscriber gets the publisher's bytes as they are.
            if codec.mimeType.lower() in adapter.FORWARDED_ONLY:
                accepted = adapter.accept_offered_codec(transceiver, offer_sdp, codec.mimeType, only=True)
            else:
                transceiver.setCodecPreferences(_capabilities_for(transceiver.kind, codec))
                accepted = bool(adapter.narrow_answer_codecs(transceiver))
            if not accepted:
                raise MediaError(ErrorCode.BAD_SDP, f"the offer cannot receive {codec.mimeType}, the publisher's codec")
            if transceiver.kind == "audio":
                adapter.accept_red(transceiver, offer_sdp)  # Opus in RED where the subscriber can take it
                adapter.enable_opus_fec(transceiver)
            if self.room.router.config.send_side_estimation and adapter.accept_transport_cc(
                    transceiver, offer_sdp, kinds=("audio", "video")):
                link.estimate_on_send_side()  # the browser acknowledges each packet: estimate from that
            chooser = None
            if source.layered and transceiver.kind == "video":
                chooser = LayerChooser(link)
                down = source.add_down_track(link, chooser.start(source.layer_count - 1))
                down.chooser = chooser
            else:
                down = source.add_down_track(link)
            down.priority = priority
            down.on_ended = self._down_track_ended
            down.follows_restarts = self.follows
            transceiver.direction = "sendonly"
            transceiver.sender.replaceTrack(down)
            adapter.on_keyframe_request(transceiver.sender, down.on_subscriber_keyframe_request)
            adapter.on_nack(transceiver.sender, down.retransmit)
            adapter.on_link_report(transceiver.sender, down.on_link_report)
            self.sections[transceiver.mid] = publisher.id
            self.down_tracks.append(down)
            added.append(transceiver)
        return added

    async def _answer_again(self) -> str:
        """A renegotiation's answer: the transport exists (bundled), so nothing about it is set up again."""
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        return adapter.one_fingerprint(self.pc.localDescription.sdp)

    def _start_delay(self) -> float:
        """How long after a renegotiation's answer its new down-tracks start: the answer's way to the
        subscriber and its applying it (the media's own way is as long as the answer's)."""
        rtt = (self.link.rtt_ms or 0.0) / 1000
        return max(RENEGOTIATION_START, rtt)

    def _bind(self, transceivers: list[Any]) -> None:
        """Start the down-tracks of sections the answer settled: their header, output and sender reports."""
        if self.closed:
            return
        max_buffered = self.room.router.config.max_buffered_bytes
        link = self.link
        for transceiver in transceivers:
            down, params = transceiver.sender.track, adapter.send_parameters(transceiver)
            if not isinstance(down, DownTrack) or params is None:
                continue
            sender = transceiver.sender

            def report(ntp: int, rtp_timestamp: int, packets: int, octets: int, sender: Any = sender) -> None:
                adapter.report_sent(sender, ntp, rtp_timestamp, packets, octets)

            if params.transport_cc_id is not None and link.send_side is not None \
                    and id(sender.transport) not in self._acknowledged:
                adapter.on_transport_feedback(sender, link.on_transport_feedback)
                self._acknowledged.add(id(sender.transport))
            down.bind(params, adapter.PacketOutput(sender, max_buffered), report)
            if self.pc.connectionState == "connected":
                down.on_connected()  # a renegotiation: the transport is up already
            if down.chooser is not None:
                down.chooser.can_probe = params.rtx_payload_type is not None  # padding goes out as RTX
                self.room.router.adaptation.add(down)

    def remove_publisher(self, publisher_id: str) -> bool:
        """Stop carrying one publisher (its sections go inactive at the next renegotiation); False if it
        never carried it (one that left already is done: a client taking out a tile races its leaving)."""
        downs = [d for d in self.down_tracks if d.source.publisher_id == publisher_id]
        for down in downs:
            down.stop()
        return bool(downs)

    def set_video_quality(self, quality: str, publisher: str | None = None) -> None:
        """The subscriber's own wish: the highest layer it wants, or no video ("off"), for one publisher's
        video or all it carries."""
        for down in self.down_tracks:
            if down.kind != "video" or (publisher is not None and down.source.publisher_id != publisher):
                continue
            chooser = down.chooser
            if chooser is None:  # one stream: only on or off
                down.set_target_layer(None if quality == "off" else 0)
                continue
            chooser.paused_by_subscriber = quality == "off"
            top = down.source.layer_count - 1
            chooser.max_layer = {"low": 0, "medium": min(1, top)}.get(quality)
            down.adapt(chooser.link.sending_bps)

    def link_view(self) -> dict[str, Any]:
        """What the subscriber is told of its link: the layer it gets, the estimate, loss, audio redundancy."""
        link = self.link
        video = next((d for d in self.down_tracks if d.kind == "video"), None)
        audio = next((d for d in self.down_tracks if d.kind == "audio"), None)
        view: dict[str, Any] = {"estimate_bps": link.estimate_bps, "estimator": link.estimator,
                                "loss": round(link.loss, 4), "rtt_ms": link.rtt_ms,
                                "sending_bps": round(link.sending_bps)}
        if video is not None:
            view.update(layer=video.layer, layers=video.source.layer_count, paused=video.target_layer is None,
                        temporal=video.temporal_cap)
        if audio is not None:
            view["red"] = audio.red
        return view

    def _down_track_ended(self, down: DownTrack) -> None:
        # Its publisher left: once nothing is left to forward, the peer connection goes too (unless it is a
        # viewer's one connection, kept for the next publisher).
        if not self.closed and not self.keep and all(d.readyState == "ended" for d in self.down_tracks):
            self.room.router.close_soon(self.id)

    def _on_close(self) -> None:
        for down in self.down_tracks:
            down.on_ended = None
            down.stop()
        self.room.remove_subscriber(self)


def _loss_buckets(losses: Any) -> dict[str, int]:
    buckets = {"<1%": 0, "1-5%": 0, "5-20%": 0, ">20%": 0}
    for loss in losses:
        key = "<1%" if loss < 0.01 else "1-5%" if loss < 0.05 else "5-20%" if loss < 0.2 else ">20%"
        buckets[key] += 1
    return buckets


def _layer_counts(downs: Any) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for down in downs:
        counts["paused" if down.target_layer is None else str(down.layer)] += 1
    return dict(counts)


def _switch_counts(choosers: Any) -> dict[str, int]:
    counts: Counter[str] = Counter({"up": 0, "down": 0, "pause": 0, "resume": 0})
    for chooser in choosers:
        counts.update(chooser.switches)
    return dict(counts)


def _estimate_buckets(estimates: Any) -> dict[str, int]:
    buckets = {"unknown": 0, "<300k": 0, "300k-1M": 0, "1M-3M": 0, ">3M": 0}
    for bps in estimates:
        key = ("unknown" if bps is None else "<300k" if bps < 300_000 else "300k-1M" if bps < 1_000_000
               else "1M-3M" if bps < 3_000_000 else ">3M")
        buckets[key] += 1
    return buckets


MAX_OFFER_CANDIDATES = 64
RENEGOTIATION_START = 0.1  # seconds at least between a renegotiation's answer and its new tracks' first packet
MAX_SESSION_SECTIONS = 16  # media sections in one subscriber connection over its life (8 publishers)
"""ICE candidates an offer may carry, and a peer may trickle in all (a browser sends a handful per network)."""


def screen_offer_candidates(sdp: str, denied: Callable[[str], bool],
                            max_candidates: int = MAX_OFFER_CANDIDATES) -> tuple[str, int]:
    """The offer without its candidates on denied networks, and how many were dropped: candidates in an
    offer get the same screening as trickled ones. Raises MediaError(bad_candidate) past ``max_candidates``."""
    lines = sdp.split("\n")
    kept: list[str] = []
    count = dropped = 0
    for line in lines:
        if line.startswith("a=candidate:"):
            count += 1
            if count > max_candidates:
                raise MediaError(ErrorCode.BAD_CANDIDATE, f"an offer may carry at most {max_candidates} candidates")
            fields = line.split()
            if len(fields) >= 5 and denied(fields[4]):
                dropped += 1
                continue
        kept.append(line)
    return "\n".join(kept), dropped


def _denied(address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False  # a hostname (mDNS .local): nothing to compare; aioice resolves or drops it
    return any(ip in network for network in networks)


def _capabilities_for(kind: str, codec: RTCRtpCodecParameters) -> list[RTCRtpCodecCapability]:
    def same(c: RTCRtpCodecCapability) -> bool:
        if c.mimeType.lower() != codec.mimeType.lower() or c.clockRate != codec.clockRate:
            return False
        return all(c.parameters.get(k) == codec.parameters.get(k) for k in codec_for(codec.name).identity_parameters)

    capabilities = RTCRtpSender.getCapabilities(kind).codecs
    rtx = [c for c in capabilities if c.mimeType.lower() == f"{kind}/rtx"]
    return [c for c in capabilities if same(c)][:1] + rtx


@dataclass
class _Waiting:
    """Down-tracks a publisher left behind, waiting for its user's next publication: (kind, codec, track)."""

    downs: list[tuple[str, str, DownTrack]]
    timer: asyncio.TimerHandle | None = None


@dataclass
class MediaRoom:
    name: str
    router: MediaRouter
    publishers: dict[str, TrackSource] = field(default_factory=dict)
    subscribers: dict[str, Subscriber] = field(default_factory=dict)
    waiting: dict[str, _Waiting] = field(default_factory=dict)  # by the publisher's user

    def park(self, publisher: Publisher) -> None:
        """``publisher`` is leaving: its down-tracks whose subscriptions follow restarts (WHEP) wait up to
        ``follow_window`` for its user to publish again, instead of ending with it."""
        parked = [(kind, publisher.codecs[kind].mimeType.lower(), down)
                  for kind, track in publisher.tracks.items() if kind in publisher.codecs
                  for down in tuple(track.down_tracks) if down.follows_restarts and down.readyState == "live"]
        if not parked or self.router.closed:
            return
        for kind, _, down in parked:
            publisher.tracks[kind].remove(down)
        waiting = self.waiting.setdefault(publisher.user, _Waiting([]))
        waiting.downs += parked
        if waiting.timer is not None:
            waiting.timer.cancel()
        waiting.timer = asyncio.get_running_loop().call_later(self.router.config.follow_window, self.give_up,
                                                              publisher.user)

    def adopt(self, publisher: Publisher) -> None:
        """``publisher`` connected: the down-tracks its user's last publication left waiting go on from its
        tracks of the same kind and codec (the others keep waiting)."""
        waiting = self.waiting.get(publisher.user)
        if waiting is None:
            return
        left = []
        for kind, mime, down in waiting.downs:
            track, codec = publisher.tracks.get(kind), publisher.codecs.get(kind)
            if down.readyState != "live":
                continue  # its subscriber went meanwhile
            if track is not None and codec is not None and codec.mimeType.lower() == mime:
                track.adopt(down)
            else:
                left.append((kind, mime, down))
        waiting.downs = left
        if not left:
            self.give_up(publisher.user)

    def give_up(self, user: str) -> None:
        """No new publication in time (or nothing left to wait): what still waits ends."""
        waiting = self.waiting.pop(user, None)
        if waiting is None:
            return
        if waiting.timer is not None:
            waiting.timer.cancel()
        for _, _, down in waiting.downs:
            down.stop()

    def remove_publisher(self, publisher: TrackSource) -> None:
        self.router.forget(publisher.id)
        if self.publishers.pop(publisher.id, None) is not None and publisher.announced:
            self.router.emit(self.name, {"type": "publisher_left", "publisher": publisher.id,
                                         "user": publisher.user})
        self.router.forget_if_empty(self)

    def remove_subscriber(self, subscriber: Subscriber) -> None:
        self.subscribers.pop(subscriber.id, None)
        self.router.forget_if_empty(self)


class MediaRouter:
    """All media rooms of one node: commands (publish, subscribe, mirror a remote publisher, candidates,
    mute, close) and queries (what is published where, by whom, who watches what)."""

    def __init__(self, config: MediaConfig, on_event: MediaEvent | None = None) -> None:
        adapter.end_ice_monitor_on_close()  # (an ICE transport closed as it started spun a core forever)
        self.config = config
        self.deny_networks = tuple(ipaddress.ip_network(n) for n in config.deny_networks)
        self.candidates_denied = 0  # offers' candidates dropped for their network (trickled ones: the caller counts)
        self.rooms: dict[str, MediaRoom] = {}
        self.peers: dict[str, Publisher | Subscriber] = {}  # this node's peer connections, by id
        self.sources: dict[str, TrackSource] = {}  # publishers, local and mirrored, by id
        self._on_event = on_event or (lambda room, event: None)
        self._closing: set[asyncio.Task[None]] = set()
        self.closed = False
        self.adaptation = Adaptation()  # simulcast subscribers' layers and probes, on one timer
        adapter.set_stun_retransmission_timeout()  # a lost ICE check costs 50 ms, not 500
        self.mux: UdpMux | None = None  # the node's one UDP port (open_port); None: a socket per connection
        # With a socket per connection: the ports they may use (None: any).
        self.port_range = adapter.PortRange(*config.port_range) if config.port_range else None

    async def open_port(self, port: int, announce: dict[str, str] | None = None,
                        discover: tuple[str, int] | None = None) -> UdpMux:
        """Carry every peer connection's ICE, DTLS, SRTP and SRTCP on one UDP ``port`` (0: the system
        chooses) on each host address, announcing ``announce[local]`` instead of a local address, or else
        what the STUN server ``discover`` sees it as (a VM behind 1:1 NAT). Raises OSError."""
        addresses = list(self.config.host_addresses) or _interface_addresses()
        self.mux = await UdpMux.open(addresses, port, announce)
        if discover is not None:
            found = await self.mux.discover(discover)
            for local, public in found.items():
                if local not in (announce or {}):
                    self.mux.announced[local] = public
            if not found:
                log.warning("public address not discovered; announcing the bound addresses",
                            extra={"stun_server": f"{discover[0]}:{discover[1]}"})
        return self.mux

    def emit(self, room: str, event: dict[str, Any]) -> None:
        self._on_event(room, event)

    def _room(self, name: str) -> MediaRoom:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = MediaRoom(name, self)
        return room

    def forget_if_empty(self, room: MediaRoom) -> None:
        if not room.publishers and not room.subscribers:
            self.rooms.pop(room.name, None)

    def forget(self, peer_id: str) -> None:
        """A peer or source closed: drop it from the node's maps (its room does the rest)."""
        self.peers.pop(peer_id, None)
        self.sources.pop(peer_id, None)

    # -- commands -------------------------------------------------------------------------------------------

    async def publish(self, room_name: str, peer_id: str, user: str, offer_sdp: str, role: str = "host") -> str:
        """Accept a publisher's offer (``role``: "host" or "cohost", what its viewers' allocation ranks it
        by); return the answer SDP. Raises MediaError."""
        if peer_id in self.peers or peer_id in self.sources:
            raise MediaError(ErrorCode.ALREADY_PUBLISHING, "this connection already has a media session")
        room = self._room(room_name)
        publisher = Publisher(peer_id, room, user, role)
        room.publishers[peer_id] = publisher
        self.peers[peer_id] = publisher
        self.sources[peer_id] = publisher
        answer = await self._or_close(peer_id, publisher.negotiate(offer_sdp))
        self._watch_connect(peer_id)  # the room hears of it once it connects (Publisher.on_connected)
        return answer

    async def subscribe(self, room_name: str, peer_id: str, user: str, offer_sdp: str,
                        publisher_id: str | None = None, also_visible: tuple[str, ...] = (),
                        follows: bool = False, keep: bool = False) -> str:
        """Accept a subscriber's (receive-only) offer for a publisher (default: the room's first).
        ``follows``: when that publisher leaves, the subscription waits for its user's next publication
        (``MediaConfig.follow_window``) and goes on from it (WHEP players). ``keep``: the connection stays
        when its publishers leave, for ``renegotiate`` to add the next ones (a viewer's one connection)."""
        if peer_id in self.peers:
            raise MediaError(ErrorCode.BUSY, "this connection already has this media session")
        room = self._room(room_name)
        source = self._source_for(room, publisher_id, also_visible)
        subscriber = Subscriber(peer_id, room, user, follows, keep)
        room.subscribers[peer_id] = subscriber
        self.peers[peer_id] = subscriber
        answer = await self._or_close(peer_id, subscriber.negotiate(offer_sdp, source))
        self._watch_connect(peer_id)
        return answer

    async def renegotiate(self, peer_id: str, offer_sdp: str, publisher_id: str | None = None,
                          also_visible: tuple[str, ...] = ()) -> str:
        """A subscriber's new offer on its connection: its new receive-only sections carry ``publisher_id``
        (default: the room's first publisher it does not carry yet). Refusals before the offer is applied
        leave the connection as it was; an offer that fails once applied closes it (MediaError either way)."""
        subscriber = self.peers.get(peer_id)
        if not isinstance(subscriber, Subscriber) or subscriber.closed:
            raise MediaError(ErrorCode.UNKNOWN_MEDIA, "no such subscription (it may have ended)")
        room = subscriber.room
        if publisher_id is None:
            carried = subscriber.publishers
            publisher_id = next((p for p in room.publishers if p not in carried), None)
        source = self._source_for(room, publisher_id, also_visible)
        subscriber._check_renegotiation(offer_sdp, source)
        return await self._or_close(peer_id, subscriber.negotiate(offer_sdp, source))

    async def _or_close(self, peer_id: str, negotiation: Awaitable[str]) -> str:
        """The answer ``negotiation`` makes; if it fails the peer is closed, and a MediaError says why."""
        try:
            return await negotiation
        except MediaError:
            await self.close_peer(peer_id)
            raise
        except Exception as exc:  # aiortc raises ValueError & co. for SDP it cannot use
            await self.close_peer(peer_id)
            raise MediaError(ErrorCode.BAD_SDP, f"cannot use this offer: {exc}") from None

    def session_publishers(self, peer_id: str) -> list[str]:
        """The publishers a subscription carries now (in the order they were added)."""
        subscriber = self.peers.get(peer_id)
        if not isinstance(subscriber, Subscriber):
            return []
        return list(dict.fromkeys(d.source.publisher_id for d in subscriber.down_tracks if d.readyState == "live"))

    def drop_room_from_session(self, peer_id: str, other_room: str) -> bool:
        """A kept subscription stops receiving ``other_room``'s publishers (a PK ended) and stays; False
        for any other subscription (the caller closes it)."""
        subscriber = self.peers.get(peer_id)
        if not isinstance(subscriber, Subscriber) or not subscriber.keep:
            return False
        for down in [d for d in subscriber.down_tracks if d.readyState == "live"]:
            source = self.sources.get(down.source.publisher_id)
            if source is not None and source.room.name == other_room:
                down.stop()
        return True

    def remove_from_session(self, peer_id: str, publisher_id: str) -> bool:
        """A subscriber stops receiving one publisher and keeps its connection; False if it had none such."""
        subscriber = self.peers.get(peer_id)
        return isinstance(subscriber, Subscriber) and subscriber.remove_publisher(publisher_id)

    def _source_for(self, room: MediaRoom, publisher_id: str | None, also_visible: tuple[str, ...]) -> TrackSource:
        source: TrackSource | None
        if publisher_id is None:
            source = next(iter(room.publishers.values()), None)
        else:
            # A named publisher may be in a linked room (PK): the caller says which rooms may be seen.
            found = self.sources.get(publisher_id)
            source = found if found is not None and found.room.name in {room.name, *also_visible} else None
        if source is None:
            self.forget_if_empty(room)
            raise MediaError(ErrorCode.NO_PUBLISHER, "nobody publishes in this room yet")
        return source

    def add_remote_publisher(self, room_name: str, peer_id: str, user: str,
                             request_keyframe: Callable[[str], None]) -> RemotePublisher:
        """Mirror another node's publisher here; the caller feeds it (``RemotePublisher.feed``)."""
        room = self._room(room_name)
        mirror = RemotePublisher(peer_id, room, user, request_keyframe)
        room.publishers[peer_id] = mirror
        self.sources[peer_id] = mirror
        return mirror

    def set_muted(self, room_name: str, user: str, kind: str, muted: bool) -> int:
        """Mute or unmute a user's published tracks of ``kind`` in a room; returns how many changed."""
        changed = 0
        for publisher in self.publishers_of(room_name, user):
            track = publisher.tracks.get(kind)
            if track is not None:
                track.set_muted(muted)
                changed += 1
        return changed

    async def add_candidate(self, peer_id: str, candidate: dict[str, Any]) -> bool:
        """Add a trickled candidate; False if ignored (a denied network). Raises MediaError."""
        peer = self.peers.get(peer_id)
        if peer is None:
            raise MediaError(ErrorCode.UNKNOWN_MEDIA, "no such media session (it may have ended)")
        try:
            return await peer.add_candidate(candidate)
        except Exception as exc:  # aiortc/aioice raise ValueError, IndexError, KeyError... for malformed text
            raise MediaError(ErrorCode.BAD_CANDIDATE, f"cannot use this candidate: {exc!r}") from None

    async def close_peer(self, peer_id: str) -> None:
        """Close a publisher, subscriber or mirror by id (nothing if it is gone already)."""
        peer: Publisher | Subscriber | TrackSource | None = self.peers.get(peer_id) or self.sources.get(peer_id)
        self.forget(peer_id)
        if peer is not None:
            await peer.close()

    def _watch_connect(self, peer_id: str) -> None:
        asyncio.get_running_loop().call_later(self.config.connect_timeout, self._check_connected, peer_id)

    def _check_connected(self, peer_id: str) -> None:
        peer = self.peers.get(peer_id)
        if peer is not None and peer.pc.connectionState != "connected":
            log.info("peer never connected; closing it", extra={"peer": peer_id, "state": peer.pc.connectionState})
            self.close_soon(peer_id)

    def room_peer_count(self, room_name: str, connected_only: bool = False) -> int:
        """Peer connections (publishers and subscribers) this node holds for a room; with
        ``connected_only``, those whose ICE and DTLS are done (a session still starting is not counted)."""
        room = self.rooms.get(room_name)
        if room is None:
            return 0
        peers = [*(p for p in room.publishers.values() if isinstance(p, Publisher)), *room.subscribers.values()]
        return sum(1 for p in peers if not connected_only or p.pc.connectionState == "connected")

    def peer_connected(self, peer_id: str) -> bool | None:
        """Whether a peer connection has connected (None: no such peer on this node)."""
        peer = self.peers.get(peer_id)
        return None if peer is None else peer.pc.connectionState == "connected"

    def close_soon(self, peer_id: str) -> None:
        """Close a peer from a synchronous callback; the task is kept and awaited in ``close``."""
        task = asyncio.ensure_future(self.close_peer(peer_id))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        self.closed = True
        for room in list(self.rooms.values()):
            for user in list(room.waiting):
                room.give_up(user)
        self.adaptation.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        for peer_id in [*self.peers, *self.sources]:
            try:
                await self.close_peer(peer_id)
            except Exception:
                log.exception("closing media peer failed", extra={"peer": peer_id})
        if self.mux is not None:
            self.mux.close()

    # -- queries --------------------------------------------------------------------------------------------

    def source(self, source_id: str) -> SourceInfo | None:
        """A publisher (local or mirrored) by id."""
        source = self.sources.get(source_id)
        if source is None:
            return None
        return SourceInfo(source.id, source.room.name, source.user, tuple(sorted(source.tracks)), source.local,
                          source.role)

    def local_sources(self, room_name: str) -> list[SourceInfo]:
        """This node's own publishers in a room, as the signaling side may know them."""
        return [info for p in self.publishers_of(room_name) if (info := self.source(p.id)) is not None]

    def record(self, source_id: str, path: Path, budget: DiskBudget | None = None,
               on_first_frame: Callable[[Recording], None] | None = None) -> Recording | None:
        """Start recording a local publisher's tracks as received into ``path`` (None: no such publisher
        here). The caller stops the recording; a publisher that leaves simply stops feeding it."""
        source = self.sources.get(source_id)
        if source is None or not source.local:
            return None
        return Recording(path, dict(source.tracks), budget=budget, on_first_frame=on_first_frame)

    def receive_failed(self) -> int:
        """Packets of this node's publishers whose handling raised (``adapter.SyncReceive.failed``)."""
        return sum(p.receive.failed for p in self.peers.values() if isinstance(p, Publisher) and p.receive)

    def is_publisher(self, peer_id: str) -> bool:
        """Whether ``peer_id`` is a publisher connected to this node."""
        return isinstance(self.peers.get(peer_id), Publisher)

    def publishers_of(self, room_name: str, user: str | None = None) -> list[Publisher]:
        """This node's own publishers in a room (mirrors of other nodes' publishers are not listed)."""
        room = self.rooms.get(room_name)
        if room is None:
            return []
        return [p for p in room.publishers.values()
                if isinstance(p, Publisher) and (user is None or p.user == user)]

    def has_local_publisher(self, room_name: str) -> bool:
        return bool(self.publishers_of(room_name))

    def subscriptions_across(self, room_name: str, other_room: str) -> list[str]:
        """Ids of ``room_name``'s subscribers that watch a publisher of ``other_room`` (a PK link)."""
        room, other = self.rooms.get(room_name), self.rooms.get(other_room)
        if room is None or other is None:
            return []
        return [s.id for s in room.subscribers.values()
                if any(d.source.publisher_id in other.publishers for d in s.down_tracks)]

    def quality(self, room_name: str) -> list[dict[str, Any]]:
        """Each subscriber of ``room_name`` on this node and how its link is doing, per down-track."""
        room = self.rooms.get(room_name)
        if room is None:
            return []
        return [{"subscriber": s.id, "user": s.user,
                 "tracks": [{"publisher": d.source.publisher_id, **d.quality()} for d in s.down_tracks]}
                for s in room.subscribers.values()]

    def set_video_quality(self, peer_id: str, quality: str, publisher: str | None = None) -> bool:
        subscriber = self.peers.get(peer_id)
        if not isinstance(subscriber, Subscriber):
            return False
        subscriber.set_video_quality(quality, publisher)
        return True

    def link_view(self, peer_id: str) -> dict[str, Any] | None:
        subscriber = self.peers.get(peer_id)
        return subscriber.link_view() if isinstance(subscriber, Subscriber) else None

    def stats(self) -> RouterStats:
        publishers = sum(len(r.publishers) for r in self.rooms.values())
        downs = [d for r in self.rooms.values() for s in r.subscribers.values() for d in s.down_tracks]
        links = [s.link for r in self.rooms.values() for s in r.subscribers.values()]
        return RouterStats(publishers=publishers, subscribers=sum(len(r.subscribers) for r in self.rooms.values()),
                           keyframe_requests=sum(t.pli_sent for r in self.rooms.values()
                                                 for p in r.publishers.values() for t in p.tracks.values()),
                           packets_forwarded=sum(d.packets_sent for d in downs),
                           packets_dropped=sum(d.packets_dropped for d in downs),
                           packets_retransmitted=sum(d.retransmitted for d in downs),
                           repairs_refused=sum(link.repairs_refused for link in links),
                           loss_buckets=_loss_buckets(d.loss for d in downs),
                           layers=_layer_counts(d for d in downs if d.chooser is not None),
                           switches=_switch_counts(d.chooser for d in downs if d.chooser is not None),
                           estimates=_estimate_buckets(link.estimate_bps for link in links),
                           redundancy=Counter(str(d.red) for d in downs if d.kind == "audio"),
                           estimators=Counter(link.estimator for link in links),
                           bad_feedback=sum(link.bad_feedback for link in links))
