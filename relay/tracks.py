"""Published tracks and their per-subscriber down-tracks: where RTP packets fan out.

A ``PublishedTrack`` receives a publisher's RTP packets (from the adapter's receiver tap, RTX already
unwrapped) and hands each to its ``DownTrack``s in one synchronous loop: no task, no queue and no await
per subscriber. A ``DownTrack`` asks its ``Forwarder`` (relay/forwarder.py: the keyframe gate, layer
switches, the sequence/timestamp/picture-id offsets that keep a subscriber's stream continuous) what this
subscriber's copy is, builds its header (relay/packets.py: SSRC, payload type, header extensions; RED for
audio), keeps it in a ``SendHistory`` for NACKs and probes, and writes it SRTP-protected straight to the
subscriber's socket through a ``PacketOutput``. Nothing here decodes, re-encodes or re-packetizes.

Keyframes: a new down-track, a subscriber's PLI/FIR, or a down-track that restarts asks the published
track for a keyframe; requests are coalesced (while one is on its way it serves every requester, and PLIs
upstream are at least ``keyframe_interval`` apart).

Frames are still assembled upstream of this (the adapter's marker-bit jitter buffer) for ``observers``
such as the recorder; forwarding never waits for them.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from relay.bwe import SentPackets
from relay.chooser import LayerChooser
from relay.forwarder import Drop, Forwarder, SourcePacket, Translation
from relay.link import SubscriberLink
from relay.packets import HeaderWriter, RedPacker, SenderLink, SendHistory, abs_send_time, rtx_packet
from relay.simulcast import order_layers
from rtc.codecs import Codec, codec_for

log = logging.getLogger(__name__)

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
PAD_CARRY = 1500  # padding carried from one probe tick to the next, at most (bytes: about a packet)
# A keyframe asked for but not seen after this long is asked for again (the PLI or the keyframe was lost).
KEYFRAME_TIMEOUT = 0.5
# Packets a published video layer keeps of what just came: its last keyframe and what followed (a GOP
# cache), for a new subscriber to start from, and late keyframe packets to follow.
RECENT_PACKETS = 1024
# A new subscriber starts from the kept keyframe and the frames since (sent at once, shown at once: see
# Forwarder.catch_up) when the keyframe is at most this old and the frames since fit in this many bytes;
# otherwise it waits for a keyframe asked for. Encoders that ignore keyframe requests (OBS over WHIP, most
# RTMP encoders) send one every 1-2 s: without the cache a new viewer waits that long for a picture. The
# byte bound keeps the burst within what a socket and a viewer's downlink take at once.
KEPT_KEYFRAME_AGE = 3.0
KEPT_BYTES = 384 * 1024
NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900 (NTP) to 1970 (Unix)


class EncodedFrame:
    __slots__ = ("data", "keyframe", "received", "timestamp")

    def __init__(self, data: bytes, timestamp: int, keyframe: bool) -> None:
        self.data = data
        self.timestamp = timestamp
        self.keyframe = keyframe
        self.received = time.monotonic()


class Output(Protocol):
    """Where a down-track's finished packets go (the adapter's ``PacketOutput`` for a real subscriber)."""

    @property
    def ready(self) -> bool:
        """Whether a write now could go out (the subscriber's transport is connected)."""
        ...

    def write(self, data: bytes) -> bool: ...


class DownTrack(MediaStreamTrack):
    """One subscriber's copy of a published track: it binds to the subscriber's sender and carries out what
    its ``Forwarder`` decides for each packet (relay/forwarder.py), writing the bytes ``relay.packets``
    builds, keeping them in a ``SendHistory`` for NACKs and probes, and wrapping audio in RED.

    It is also the ``MediaStreamTrack`` its RTP sender holds (for SDP and RTCP); the sender's own send
    loop finds nothing to read (``recv`` only ends with the track), since packets leave through
    ``forward``."""

    # The clock the transport-wide send times are stamped with (a test gives a stream its own timing).
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, source: PublishedTrack, link: SubscriberLink | None = None) -> None:
        super().__init__()
        self.on_ended: Callable[[DownTrack], None] | None = None
        self.kind = source.kind
        self.source = source
        # What the subscriber's RTCP says of its link, shared with its other down-tracks.
        self.link = link if link is not None else SubscriberLink()
        # Random starting points (the lower half of the sequence space keeps SRTP's rollover guess simple).
        self.forwarder = Forwarder(source.kind, random.randrange(0x8000), random.getrandbits(32),
                                   random.randrange(0x8000))
        self.chooser: LayerChooser | None = None  # set for a simulcast video track
        self.follows_restarts = False  # its subscription goes on from its publisher's user's next publication
        self.priority = 0  # among its viewer's videos (relay/allocation.py): 0 first
        self.history = SendHistory()
        self.packets_sent = 0
        self.packets_skipped = 0
        self.packets_dropped = 0  # the subscriber's socket was full or not connected yet
        self.retransmitted = 0
        self._replaying = False  # forwarding what the publisher sent before this subscriber came
        self.caught_up = 0  # starts from the kept keyframe (not a fresh one)
        self._ended = asyncio.get_event_loop().create_future()
        self._output: Output | None = None
        self._report: Callable[[int, int, int, int], None] | None = None
        self._headers: HeaderWriter | None = None
        self._sent: SentPackets | None = None  # transport-wide numbering (relay/bwe.py), when negotiated
        self._red: RedPacker | None = None
        self._rtx_ssrc = 0
        self._rtx_pt: int | None = None
        self._rtx_seq = random.randrange(0x8000)
        self._octets = 0  # payload octets forwarded (what sender reports count)
        self._pad_credit = 0  # padding asked for and not yet sent (``pad``)

    # The forwarder's state, as the router, the adaptation and the stats read and set it. A "layer" is a
    # simulcast layer, or a spatial layer of a VP9 SVC stream (``PublishedTrack.svc``): the same choice
    # to a chooser, carried out by the forwarder in two ways.
    temporal_cap = property(lambda self: self.forwarder.temporal_cap)
    frames_thinned = property(lambda self: self.forwarder.frames_thinned)
    restarts = property(lambda self: self.forwarder.restarts)

    @property
    def layer(self) -> int | None:
        forwarder = self.forwarder
        if not self.source.svc or forwarder.layer is None:
            return forwarder.layer
        return forwarder.spatial_cap if forwarder.spatial_cap is not None else self.source.layer_count - 1

    @property
    def target_layer(self) -> int | None:
        forwarder = self.forwarder
        if not self.source.svc or forwarder.target_layer is None:
            return forwarder.target_layer
        return forwarder.target_spatial if forwarder.target_spatial is not None else self.source.layer_count - 1

    @target_layer.setter
    def target_layer(self, layer: int | None) -> None:
        if self.source.svc:
            self.forwarder.target_layer = None if layer is None else 0
            self.forwarder.target_spatial = layer
        else:
            self.forwarder.target_layer = layer

    @property
    def target_temporal(self) -> int | None:
        return self.forwarder.target_temporal

    @property
    def octets_sent(self) -> int:
        """Payload octets of the media forwarded so far (repairs and padding not counted)."""
        return self._octets

    @property
    def waiting_keyframe(self) -> bool:
        return self.forwarder.waiting_keyframe

    @waiting_keyframe.setter
    def waiting_keyframe(self, waiting: bool) -> None:
        self.forwarder.waiting_keyframe = waiting

    def bind(self, params: SenderLink, output: Output, report: Callable[[int, int, int, int], None]) -> None:
        """Start sending to a subscriber whose answer settled ``params``; ``report(ntp, rtp_ts, packets,
        octets)`` feeds its sender reports."""
        self._headers = HeaderWriter(params)
        send_side = self.link.send_side
        # Every packet this track writes, repairs and padding too, numbered for the subscriber's feedback.
        self._sent = send_side.sent if send_side is not None and self._headers.transport_wide else None
        self._rtx_ssrc, self._rtx_pt = params.rtx_ssrc, params.rtx_payload_type
        if self.kind == "audio" and params.red_payload_type is not None:
            self._red = RedPacker(params.red_payload_type, params.payload_type)
        self._output, self._report = output, report

    # -- forwarding ---------------------------------------------------------------------------------------

    def forward(self, packet: SourcePacket) -> None:
        """One packet of the published track: this subscriber's copy of it goes out now, or not at all."""
        if self._output is None:
            return
        if not self.packets_sent and not packet.keyframe and self._replay_kept(packet.layer, packet.epoch):
            return
        verdict = self.forwarder.translate(packet, packet.arrived, self.source.clock_rate)
        if isinstance(verdict, Drop):
            self._dropped(verdict, packet)
            return
        self._send(verdict, packet)
        if verdict[5] and self.kind == "video":  # (re)started here
            self._follow_late_keyframe(packet)

    def _forward_one(self, packet: SourcePacket) -> bool:
        """Translate and send one packet; True when it (re)started the stream."""
        verdict = self.forwarder.translate(packet, packet.arrived, self.source.clock_rate)
        if isinstance(verdict, Drop):
            self._dropped(verdict, packet)
            return False
        self._send(verdict, packet)
        return verdict.started

    def _dropped(self, why: Drop, packet: SourcePacket) -> None:
        if why.wants_keyframe:
            self.packets_skipped += 1
            # Keep asking while waiting: a PLI can be lost or ignored by a rate-limiting encoder, and a
            # subscriber that receives nothing sends no PLI of its own. Coalesced upstream.
            self.source.request_keyframe(f"subscriber {why.value}", packet.layer)

    def _send(self, copy: Translation, packet: SourcePacket) -> None:
        assert self._output is not None and self._headers is not None
        seq, timestamp, marker, payload, padding, started = copy
        if started:
            if self._red is not None:
                self._red.reset()  # redundancy never reaches back across a restart
            if not self.forwarder.started and self.kind == "video":
                self._lead_with_padding(copy, packet)
        if self.history.has(seq):
            return  # a duplicate (the publisher answered a NACK for a packet that came after all)
        if self._red is not None:
            payload = self._red.pack(payload, packet.timestamp, self.link.audio_redundancy)
        tw = self._transport_seq(len(payload))
        if self._red is not None:
            header = self._headers.header_as(seq, timestamp, marker, packet.abs_send_time, self._red.payload_type,
                                             transport_seq=tw)
        elif padding:
            header = self._headers.header_as(seq, timestamp, 0, packet.abs_send_time, padding=True, transport_seq=tw)
        else:
            header = self._headers.header(seq, timestamp, marker, packet.abs_send_time, tw)
        if self._output.write(header + payload):
            self.packets_sent += 1
            self._octets += len(payload)
            self.link.bytes_out += len(header) + len(payload)  # media only: not repairs and padding
            if self.kind == "audio":
                self.link.audio_bytes_out += len(header) + len(payload)
        else:
            self.packets_dropped += 1
            if not self.forwarder.started:
                self.forwarder.start_again()  # not connected yet: start at a keyframe once it is
                return
            # The subscriber's socket is full: this packet is lost like on a lossy link (its number is
            # used, so the subscriber sees the gap and can NACK it once the socket drains).
        self.history.put(seq, header, payload)
        if self.forwarder.commit(copy, packet.arrived) and self._report is not None and not self._replaying:
            self._report(packet.ntp, timestamp, self.packets_sent, self._octets)  # a new frame: its time

    def _transport_seq(self, payload_size: int) -> int:
        """The next transport-wide number, the packet's send time and size noted (0 when not negotiated)."""
        if self._sent is None:
            return 0
        assert self._headers is not None
        return self._sent.add(self._headers.length + payload_size, self.clock() * 1000)

    def _lead_with_padding(self, copy: Translation, packet: SourcePacket) -> None:
        """Send a padding-only packet just before a new subscriber's first keyframe (same timestamp, the
        sequence number before it). A receiver learns where a stream begins from the first packet it
        gets, so without it the loss of the keyframe's first packet goes unseen (nothing to NACK) and
        costs a keyframe round trip to the publisher; with it, the loss is a gap like any other."""
        assert self._output is not None and self._headers is not None
        seq = (copy.seq - 1) & 0xFFFF
        header = self._headers.header_as(seq, copy.timestamp, 0, packet.abs_send_time, padding=True,
                                         transport_seq=self._transport_seq(1))
        if self._output.write(header + b"\x01"):  # RTP padding: its last byte counts itself
            self.forwarder.commit_lead(seq)

    def _follow_late_keyframe(self, packet: SourcePacket) -> None:
        """The keyframe's first packet may have come late (a repair from the publisher): its later packets
        came before it and were skipped at the gate. They follow it now, in order, so the subscriber gets
        the whole keyframe instead of waiting for the next one."""
        for later in self.source.received_after(packet.layer, packet.epoch, packet.seq):
            self._forward_one(later)

    def _replay_kept(self, layer: int, epoch: int) -> bool:
        """A new subscriber: if the publisher's last keyframe of ``layer`` and everything since are still at
        hand (a stream that just started, as in a call), start from it now instead of asking for one."""
        if (self._replaying or layer != self.forwarder.target_layer or self._output is None
                or not self._output.ready):
            return False
        since = self.source.since_keyframe(layer, epoch)
        if not since:
            return False
        self._replaying = True
        self.forwarder.catch_up(True)  # frames of the past go out a tick apart: decoded and shown at once
        try:
            for kept in since:
                self._forward_one(kept)
        finally:
            self.forwarder.catch_up(False)
            self._replaying = False
        self.caught_up += 1
        return True

    def on_connected(self) -> None:
        """The subscriber's transport is up: start from the kept keyframe now, not at the next packet (a
        frame interval later), when it is at hand."""
        layer = self.forwarder.target_layer  # the stream (an SVC stream's spatial layers are all in stream 0)
        if self.kind == "video" and not self.packets_sent and layer is not None and layer < len(self.source.layers):
            self._replay_kept(layer, self.source.layers[layer].epoch)

    # -- repairs and probes -------------------------------------------------------------------------------

    def retransmit(self, seq: int, requested: bool = True) -> bool:
        """The subscriber lost ``seq`` (``requested``: it sent a NACK; otherwise a probe pads with it): send it
        again from history (as RTX where it was negotiated)."""
        if self.forwarder.from_before_start(seq):
            # From before the last restart (a layer switch, the keyframe gate): the subscriber's decoder
            # starts over at the keyframe after it, and on a congested link the repair only costs room.
            return False
        kept = self.history.get(seq)
        if requested and kept is not None and self._layer_it_no_longer_gets(kept[1]):
            return False
        if requested:
            self.link.on_nack(seq)
        if kept is None or self._output is None or self._headers is None:
            return False
        header, payload = kept
        first = self.chooser is None or self.chooser.leads
        if requested and not self.link.may_repair(len(payload) + len(header) + 2, first):
            return False  # a congested link's repairs are spent: the subscriber asks again, or moves on
        # On a lossy link a retransmission is lost as often as the original, and a receive-only browser
        # re-asks only after its default 100 ms round trip: send two or three copies where loss is high.
        copies = self.link.retransmission_copies if requested else 1
        sent = False
        for _ in range(copies):
            # Stamped now: bandwidth estimators read each copy as leaving when it does, not the original.
            header = self._headers.restamped(header, abs_send_time(time.time()), self._transport_seq(len(payload) + 2))
            if self._rtx_pt is not None:
                data = rtx_packet(header, payload, self._rtx_pt, self._rtx_seq, self._rtx_ssrc, seq)
                self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
            else:
                data = header + payload
            if self._output.write(data):
                self.retransmitted += 1
                sent = True
        return sent

    def _layer_it_no_longer_gets(self, payload: bytes) -> bool:
        """A VP9 SVC packet of a spatial layer above those this subscriber gets now (sent before it was
        switched down). Its decoder no longer uses that layer, and the switch came from a congested link,
        where repairing it would crowd out the layers it does use: the browser NACKs every such packet lost
        at the switch, and answering each with a full-size top-layer packet kept the link congested, so the
        repairs it then needed were lost too (79% loss at the lowest layer under a 400 kbit/s cap)."""
        cap = self.forwarder.spatial_cap
        if cap is None or not self.source.svc:
            return False
        spatial = self.source.rules.describe(payload).spatial
        return spatial is not None and spatial > cap

    def pad(self, octets: int) -> int:
        """Send ``octets`` more of padding (copies of the latest packets, as RTX) for a bandwidth probe;
        returns what was sent. A copy goes only where it fits in what was asked, the rest carried to the
        next call (at most ``PAD_CARRY`` over one call's worth): sending until ``octets`` was reached sent a
        packet more each 50 ms, and a 200 kbit/s probe padded at twice its rate, past a 600 kbit/s link."""
        budget = min(self._pad_credit + octets, octets + PAD_CARRY)
        sent, seq = 0, self.forwarder.last_seq
        for _ in range(32):
            kept = self.history.get(seq)
            size = 0 if kept is None else len(kept[0]) + len(kept[1]) + 2  # as RTX: the original number too
            if kept is None or sent + size > budget:
                break
            if self.retransmit(seq, requested=False):
                sent += size
            seq = (seq - 1) & 0xFFFF
        self._pad_credit = budget - sent
        return sent

    def on_link_report(self, report: Any) -> None:
        """The subscriber reported on its link (``rtc.adapter.LinkReport``): a receiver report or a REMB
        (ignored where the relay estimates the link itself from transport-cc feedback)."""
        if report.is_estimate:
            if self.link.send_side is None:
                self.link.on_estimate(report.remb_bps)
            return
        self.link.on_receiver_report(report.fraction_lost, report.packets_lost,
                                     round(report.jitter / self.source.clock_rate * 1000, 2),
                                     round(report.rtt * 1000, 1) if report.rtt is not None else None)

    @property
    def loss(self) -> float:
        return self.link.loss

    def quality(self) -> dict[str, Any]:
        link = self.link
        return {"kind": self.kind, "packets_sent": self.packets_sent, "packets_dropped": self.packets_dropped,
                "retransmitted": self.retransmitted, "repairs_refused": link.repairs_refused,
                "loss": round(link.loss, 4), "packets_lost": link.packets_lost,
                "rtt_ms": link.rtt_ms, "jitter_ms": link.jitter_ms, "estimate_bps": link.estimate_bps,
                "estimator": link.estimator,
                "waiting_keyframe": self.waiting_keyframe,
                **({"layer": self.layer, "target_layer": self.target_layer, "layers": self.source.layer_count,
                    "temporal": self.temporal_cap, "frames_thinned": self.frames_thinned,
                    "probe_bps": self.chooser.probe_bps, "switches": dict(self.chooser.switches),
                    "chooser": self.chooser.state.value, "priority": self.priority,
                    "share_bps": None if self.chooser.share is None else round(self.chooser.share)}
                   if self.chooser is not None else {}),
                **({"red": self.red} if self.kind == "audio" else {})}

    @property
    def red(self) -> int:
        """Earlier packets each audio packet carries in RED now (0: RED not negotiated, or not audio)."""
        return self.link.audio_redundancy if self._red is not None else 0

    def adapt(self, sending_bps: float, now: float | None = None) -> None:
        """Let the chooser pick among what the publisher sends now (each layer, and the lowest one's
        temporal layers), and aim this down-track at it."""
        chooser = self.chooser
        if chooser is None:
            return
        rungs = self.source.rungs(now)
        keys = [(layer, temporal) for layer, temporal, _ in rungs]
        # Where it is aimed now, as an option of today's list (which grows when temporal layers show up).
        wanted = (self.target_layer, self.target_temporal)
        same_layer = [i for i, key in enumerate(keys) if key[0] == self.target_layer]
        chooser.current = keys.index(wanted) if wanted in keys else same_layer[-1] if same_layer else None
        choice = chooser.choose([rate for _, _, rate in rungs], sending_bps, now, [layer for layer, _ in keys])
        if choice is None:
            self.set_target_layer(None)
            return
        layer, before = keys[choice][0], self.forwarder.layer
        self.set_target_temporal(keys[choice][1])
        self.set_target_layer(layer)
        if (before is not None and layer < before and not chooser.leads and not self.source.svc
                and self.link.congested(now)):
            # A less important video of a congested link (a co-host beside the host) stops its current
            # layer now rather than keep sending it, bridged, until the lower layer's keyframe: the queue
            # before the viewer is full and drops, and the host's frames are lost with the rest.
            self.forwarder.stop_current()

    def set_target_temporal(self, temporal: int | None) -> None:
        """Forward VP8 temporal layers up to ``temporal`` (None: all) of the current layer."""
        self.forwarder.target_temporal = temporal

    def set_target_layer(self, layer: int | None) -> None:
        """Forward ``layer`` from its next keyframe on (asked for now); None stops video at once. A spatial
        layer of an SVC stream: fewer from the next picture, more from a keyframe (asked for now)."""
        if layer == self.target_layer:
            return
        if self.source.svc and layer is not None and self.forwarder.target_layer is not None:
            current = self.layer
            self.target_layer = layer
            if current is None or layer > current:
                self.source.request_keyframe("spatial layer up", 0)
            return
        self.target_layer = layer
        if layer is None:
            self.forwarder.stop_current()
        else:
            self.source.request_keyframe("layer switch", layer if not self.source.svc else 0)

    def restart_at_keyframe(self, reason: str) -> None:
        self.waiting_keyframe = True
        self.source.request_keyframe(reason, self.forwarder.target_layer or 0)

    async def recv(self) -> av.Packet[Any]:  # never yields: packets leave through forward()
        await self._ended
        raise MediaStreamError

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            if not self._ended.done():
                self._ended.set_result(None)
            self._output = None
            self.source.remove(self)
            if self.on_ended is not None:
                self.on_ended(self)

    def on_subscriber_keyframe_request(self) -> None:
        forwarder = self.forwarder
        layer = forwarder.layer if forwarder.layer is not None else forwarder.target_layer
        if layer is not None:
            self.source.request_keyframe("subscriber PLI/FIR", layer)


class StreamLayer:
    """One RTP stream of a published track: the track itself, or one simulcast layer of it. Keeps what
    is per stream: its SSRC and epoch, keyframe requests, how many bits per second it carries, the size
    its keyframes declare and its last packets.

    ``index`` is its rank among the track's layers (0 = lowest), ``source`` its place in the publisher's
    offer (how the demux and keyframe requests name it); the two differ when the offer lists the highest
    first (relay/simulcast.py)."""

    __slots__ = ("_pli_pending", "awaiting_keyframe_since", "bitrate", "epoch", "highest_seq", "index", "last_packet",
                 "last_pli", "last_timestamp", "ntp", "octets", "pixels", "previous_marker", "recent", "source",
                 "spatial_layers", "spatial_octets", "spatial_share", "ssrc", "temporal_layers", "temporal_octets",
                 "temporal_share")

    def __init__(self, index: int) -> None:
        self.index = index
        self.source = index
        self.pixels: int | None = None  # width x height its keyframes declare, once one did
        # Its last packets as they came (repairs among them, out of order): what a down-track opening at a
        # late keyframe start still needs of that keyframe.
        self.recent: deque[SourcePacket] = deque(maxlen=RECENT_PACKETS)
        self.ssrc: int | None = None
        self.epoch = -1
        self.previous_marker = True
        self.last_timestamp: int | None = None
        self.highest_seq: int | None = None
        self.ntp = 0
        self.octets = 0  # since the last rate update
        self.bitrate = 0.0  # bit/s, smoothed
        # VP8 temporal layers (TID) seen in this stream, and the share of its bits up to each TID (smoothed):
        # what it costs to forward only TID <= t.
        self.temporal_layers = 0
        self.temporal_octets = [0, 0, 0, 0]
        self.temporal_share = [1.0, 1.0, 1.0, 1.0]
        # Spatial layers in this one stream (VP9 SVC), and the share of its bits up to each (smoothed).
        self.spatial_layers = 0
        self.spatial_octets = [0, 0, 0, 0, 0, 0, 0, 0]
        self.spatial_share = [1.0] * 8
        self.last_packet = 0.0
        self.last_pli = 0.0
        self.awaiting_keyframe_since: float | None = None
        self._pli_pending: asyncio.TimerHandle | None = None


def _update_shares(octets: list[int], shares: list[float]) -> None:
    """Smooth each layer's cumulative share of the octets counted since the last update, and restart the
    count (temporal or spatial layers of one stream: what forwarding only up to layer k costs)."""
    total = sum(octets)
    if total:
        running = 0
        for layer, count in enumerate(octets):
            running += count
            shares[layer] = shares[layer] * 0.6 + running / total * 0.4
        octets[:] = [0] * len(octets)


LAYER_GONE = 1.0  # seconds without a packet after which a layer counts as not sent (the encoder dropped it)


class PublishedTrack:
    """One incoming track of a publisher, fanned out to down-tracks packet by packet.

    A simulcast track has several layers, ranked 0 = lowest by the picture size their keyframes declare
    (relay/simulcast.py; the offer's order until they do); each down-track forwards one of them.
    ``on_packet`` and ``send_pli(layer)`` name a layer by its place in the publisher's offer."""

    def __init__(self, kind: str, track_id: str, publisher_id: str,
                 send_pli: Callable[[int], None], keyframe_interval: float = 0.1,
                 keyframe_timeout: float = KEYFRAME_TIMEOUT, layers: int = 1) -> None:
        self.kind = kind
        self.id = track_id
        self.publisher_id = publisher_id
        self.codec_name: str | None = None
        self.rules: Codec = codec_for(None)  # what its payloads are (rtc/codecs), once its codec is known
        self.codec: RTCRtpCodecParameters | None = None  # known once negotiated
        self.clock_rate = 90000 if kind == "video" else 48000
        self.time_base = VIDEO_TIME_BASE if kind == "video" else fractions.Fraction(1, 48000)
        self.down_tracks: set[DownTrack] = set()
        # Called with every assembled frame (a recorder): (track, frame, chain_broken); must not block.
        self.observers: list[Callable[[PublishedTrack, EncodedFrame, bool], None]] = []
        # The same for a simulcast layer below the top, by rank (an HLS rendition ladder): only a layer with
        # an observer here is assembled into frames at all.
        self.layer_observers: dict[int, list[Callable[[PublishedTrack, EncodedFrame, bool], None]]] = {}
        self.layers = [StreamLayer(i) for i in range(max(1, layers))]  # by rank, lowest first
        self._by_source = list(self.layers)  # by place in the offer
        self.frames_in = 0
        self.keyframes_in = 0
        self.packets_in = 0
        self.pli_sent = 0
        self.closed = False
        self.muted = False  # a muted track forwards nothing (a host muting a co-host, a private call)
        self._send_pli = send_pli
        self._keyframe_interval = keyframe_interval
        self._keyframe_timeout = keyframe_timeout
        self._epochs = 0  # every (layer, SSRC) stream gets its own epoch: a down-track restarts across them
        self._rates_at = time.monotonic()

    def set_layers(self, count: int) -> None:
        """The publisher sends ``count`` simulcast layers (known once its offer is read, before any packet)."""
        self.layers = [StreamLayer(i) for i in range(max(1, count))]
        self._by_source = list(self.layers)

    @property
    def top_source(self) -> int:
        """The offer's place of the highest layer (what a recorder keeps)."""
        return self.layers[-1].source

    def _rank_layers(self) -> None:
        """Order the layers by the sizes known now. A layer that changes rank starts a new epoch: its
        down-tracks restart at one of its keyframes, never splicing one layer's packets onto another's."""
        order = order_layers([s.pixels for s in self._by_source], [s.source for s in self.layers])
        if order == [s.source for s in self.layers]:
            return
        self.layers = [self._by_source[source] for source in order]
        moved = set()
        for rank, stream in enumerate(self.layers):
            if stream.index != rank:
                stream.index = rank
                stream.epoch = self._epochs
                self._epochs += 1
                moved.add(rank)
        for down in self.down_tracks:  # a down-track on a layer that moved needs that layer's keyframe now
            if down.forwarder.target_layer in moved:
                self.request_keyframe("layers ranked", down.forwarder.target_layer)
        log.info("simulcast layers ranked by size", extra={"track": self.id, "order": order,
                                                           "pixels": [s.pixels for s in self.layers]})

    def since_keyframe(self, layer: int, epoch: int, now: float | None = None) -> list[SourcePacket] | None:
        """The packets of ``layer`` from its last keyframe start to now, in sequence order, if all of them
        are still kept (none missing), the keyframe came less than ``KEPT_KEYFRAME_AGE`` ago and they add up
        to at most ``KEPT_BYTES``; else None."""
        if layer >= len(self.layers):
            return None
        recent = [p for p in self.layers[layer].recent if p.epoch == epoch]
        start = next((p for p in reversed(recent) if p.keyframe), None)
        now = time.monotonic() if now is None else now
        if start is None or now - start.arrived > KEPT_KEYFRAME_AGE:
            return None
        later = self.received_after(layer, epoch, start.seq)
        if later and (later[-1].seq - start.seq) & 0xFFFF != len(later):
            return None  # a gap: something of it is missing (lost, or not repaired yet)
        if len(start.payload) + sum(len(p.payload) for p in later) > KEPT_BYTES:
            return None
        return [start, *later]

    def received_after(self, layer: int, epoch: int, seq: int) -> list[SourcePacket]:
        """The packets of ``layer`` (in ``epoch``) already received that come after ``seq`` in sequence,
        in sequence order, each once."""
        if layer >= len(self.layers):
            return []
        recent = self.layers[layer].recent
        later = {p.seq: p for p in recent if p.epoch == epoch and 0 < (p.seq - seq) & 0xFFFF < 0x8000}
        return [later[k] for k in sorted(later, key=lambda k: (k - seq) & 0xFFFF)]

    @property
    def simulcast(self) -> bool:
        return len(self.layers) > 1

    def _set_codec(self, codec_name: str, clock_rate: int) -> None:
        self.codec_name = codec_name
        self.rules = codec_for(codec_name)
        self.clock_rate = clock_rate
        self.time_base = fractions.Fraction(1, clock_rate)

    def on_packet(self, codec_name: str, clock_rate: int, packet: RtpPacket, source: int = 0) -> None:
        """One RTP packet from the publisher (of the layer at place ``source`` in its offer), forwarded to
        every down-track before this returns."""
        if self.closed or self.muted:
            return
        if self.codec_name != codec_name:
            self._set_codec(codec_name, clock_rate)
        stream = self._by_source[source]
        if packet.ssrc != stream.ssrc:
            # The first packet of this layer, or its stream restarted (new SSRC, sequence and timestamps).
            stream.epoch = self._epochs
            self._epochs += 1
            stream.last_timestamp = None
            stream.highest_seq = None
            stream.ssrc = packet.ssrc
            # A keyframe asked for before this stream existed (a subscriber that came first) was asked of
            # nobody: a subscriber still waiting asks again at once.
            stream.awaiting_keyframe_since = None
        self.packets_in += 1
        payload = packet.payload
        if stream.highest_seq is None or 0 < (packet.sequence_number - stream.highest_seq) & 0xFFFF < 0x8000:
            # Only new packets count towards a layer's bitrate: the publisher's retransmissions and the
            # padding it probes its own link with (old packets again, as RTX) are not what it encodes.
            stream.highest_seq = packet.sequence_number
            stream.octets += len(payload)
        rules = self.rules
        keyframe = rules.starts_keyframe(payload, stream.previous_marker)
        stream.previous_marker = bool(packet.marker)
        wall = time.time()
        stream.last_packet = arrived = time.monotonic()
        if keyframe and self.kind == "video":
            stream.awaiting_keyframe_since = None
            if stream.pixels is None and len(self.layers) > 1:
                size = rules.keyframe_size(payload)
                if size is not None:
                    stream.pixels = size[0] * size[1]
                    self._rank_layers()
        if packet.timestamp != stream.last_timestamp:
            # The NTP time a sender report pairs with this frame's timestamp: when its first packet came.
            stream.last_timestamp = packet.timestamp
            stream.ntp = int((wall + NTP_EPOCH_OFFSET) * (1 << 32))
        picture_id, temporal, spatial, layer_end = rules.describe(payload)
        if temporal is not None:
            stream.temporal_octets[temporal] += len(payload)
            if temporal >= stream.temporal_layers:
                stream.temporal_layers = temporal + 1
        if spatial is not None:
            stream.spatial_octets[spatial] += len(payload)
            if spatial >= stream.spatial_layers:
                stream.spatial_layers = spatial + 1
        incoming = SourcePacket(packet.sequence_number, packet.timestamp, packet.marker, payload, keyframe,
                                stream.epoch, stream.ntp, abs_send_time(wall), picture_id, stream.index, temporal,
                                arrived, rules, spatial, layer_end)
        if self.kind == "video":
            stream.recent.append(incoming)
        for down in tuple(self.down_tracks):
            down.forward(incoming)

    def layer_rates(self, now: float | None = None) -> list[float | None]:
        """Each layer's bitrate (bit/s, smoothed over about a second), None for a layer not coming now.
        Updates the figures when called at least 0.25 s after the previous update."""
        now = time.monotonic() if now is None else now
        elapsed = now - self._rates_at
        if elapsed >= 0.25:
            self._rates_at = now
            for stream in self.layers:
                rate = stream.octets * 8 / elapsed
                stream.bitrate = rate if not stream.bitrate else stream.bitrate * 0.6 + rate * 0.4
                stream.octets = 0
                _update_shares(stream.temporal_octets, stream.temporal_share)
                _update_shares(stream.spatial_octets, stream.spatial_share)
        return [stream.bitrate if stream.ssrc is not None and now - stream.last_packet < LAYER_GONE else None
                for stream in self.layers]

    @property
    def svc(self) -> bool:
        """Spatial layers in one stream (VP9 SVC): a subscriber's layer is a spatial layer of it."""
        return len(self.layers) == 1 and self.layers[0].spatial_layers > 1

    @property
    def layered(self) -> bool:
        """Whether a subscriber can be given less of it than all: simulcast or SVC."""
        return self.simulcast or self.svc

    @property
    def layer_count(self) -> int:
        """Layers a subscriber can be given: simulcast layers, or an SVC stream's spatial layers."""
        return self.layers[0].spatial_layers if self.svc else len(self.layers)

    def rungs(self, now: float | None = None) -> list[tuple[int, int | None, float | None]]:
        """What a subscriber can be given, cheapest first, as (layer, highest temporal layer or None for all,
        bitrate or None while that layer is not coming): the lowest layer's temporal layers (a lower frame
        rate before no video at all), then every layer whole. An SVC stream's layers are its spatial ones,
        each costing its share of the stream up to it."""
        rates = self.layer_rates(now)
        if self.svc:
            stream = self.layers[0]
            rate = rates[0]
            return [(s, None, None if rate is None else rate * stream.spatial_share[s])
                    for s in range(stream.spatial_layers)]
        lowest = self.layers[0]
        out: list[tuple[int, int | None, float | None]] = [
            (0, tid, None if rates[0] is None else rates[0] * lowest.temporal_share[tid])
            for tid in range(lowest.temporal_layers - 1)]
        return out + [(layer, None, rate) for layer, rate in enumerate(rates)]

    def wants_frames(self, source: int) -> bool:
        """Whether the layer at ``source`` in the offer is assembled into frames: the top one always (the
        observers'), another while something observes its rank."""
        if source == self.top_source:
            return True
        if not self.layer_observers or not 0 <= source < len(self._by_source):
            return False
        return bool(self.layer_observers.get(self._by_source[source].index))

    def on_frame(self, codec_name: str, clock_rate: int, data: bytes, timestamp: int, chain_broken: bool,
                 source: int | None = None) -> None:
        """One assembled frame of the layer at ``source`` (None: the top one): the top layer's counted and
        handed to the observers, another's to its rank's ``layer_observers`` (forwarding does not wait)."""
        if self.closed or self.muted:
            return
        if source is not None and source != self.top_source:
            rank = self._by_source[source].index if 0 <= source < len(self._by_source) else None
            listeners = self.layer_observers.get(rank) if rank is not None else None
            if listeners:
                lower = EncodedFrame(data, timestamp, self.rules.is_keyframe(data))
                for observe in tuple(listeners):
                    observe(self, lower, chain_broken)
            return
        if self.codec_name != codec_name:
            self._set_codec(codec_name, clock_rate)
        keyframe = self.rules.is_keyframe(data)
        self.frames_in += 1
        if keyframe:
            self.keyframes_in += 1
        if self.observers:
            frame = EncodedFrame(data, timestamp, keyframe)
            for observe in tuple(self.observers):
                observe(self, frame, chain_broken)

    def set_muted(self, muted: bool) -> None:
        if muted == self.muted:
            return
        self.muted = muted
        if not muted and self.kind == "video":
            # Subscribers resume at a keyframe: their decoders lost the chain while nothing came.
            for down in self.down_tracks:
                down.waiting_keyframe = True
                self.request_keyframe("unmuted", down.forwarder.target_layer or 0)

    def add_down_track(self, link: SubscriberLink | None = None, layer: int = 0) -> DownTrack:
        down = DownTrack(self, link)
        down.target_layer = layer
        self.down_tracks.add(down)
        if self.kind == "video":
            self.request_keyframe("new subscriber", down.forwarder.target_layer or 0)
        return down

    def remove(self, down: DownTrack) -> None:
        self.down_tracks.discard(down)

    def adopt(self, down: DownTrack) -> None:
        """A down-track of a publisher that left (the same user publishing again: an encoder's reconnect)
        goes on from this track: its numbering continues from where it stopped, from this track's next
        keyframe (asked for now), so its subscriber's session and decoder carry on."""
        down.source = self
        down.forwarder.new_source()
        self.down_tracks.add(down)
        if self.kind == "video":
            self.request_keyframe("publisher restarted", down.forwarder.target_layer or 0)

    def request_keyframe(self, reason: str, layer: int = 0) -> None:
        """Ask the publisher for a keyframe on ``layer``, coalescing: while one is on its way (asked less
        than ``KEYFRAME_TIMEOUT`` ago and not yet arrived) it serves every new requester too, and PLIs
        are at least ``keyframe_interval`` apart."""
        if self.kind != "video" or self.closed or not 0 <= layer < len(self.layers):
            return
        stream = self.layers[layer]
        if stream._pli_pending is not None:
            return
        now = time.monotonic()
        if stream.awaiting_keyframe_since is not None and now - stream.awaiting_keyframe_since < self._keyframe_timeout:
            return
        wait = stream.last_pli + self._keyframe_interval - now
        loop = asyncio.get_running_loop()
        stream._pli_pending = loop.call_later(max(0.0, wait), self._fire_pli, reason, stream)

    def _fire_pli(self, reason: str, stream: StreamLayer) -> None:
        stream._pli_pending = None
        if self.closed:
            return
        stream.last_pli = stream.awaiting_keyframe_since = time.monotonic()
        self.pli_sent += 1
        log.debug("PLI upstream", extra={"track": self.id, "reason": reason, "layer": stream.index})
        self._send_pli(stream.source)

    def close(self) -> None:
        """The publisher left: end every down-track (their senders stop) and refuse new ones."""
        if self.closed:
            return
        self.closed = True
        for stream in self.layers:
            if stream._pli_pending is not None:
                stream._pli_pending.cancel()
                stream._pli_pending = None
        for down in tuple(self.down_tracks):
            if down.source is self:  # not handed over to a new publisher meanwhile
                down.stop()
