"""What one subscriber gets of a published track, packet by packet: the forwarder's decisions, and no I/O.

A ``Forwarder`` (as LiveKit's DownTrack asks its Forwarder, and mediasoup's consumers their RTP stream)
takes each incoming ``SourcePacket`` and answers with a plain value: a ``Translation`` (the sequence number,
timestamp, marker and payload this subscriber's copy carries) or a ``Drop`` saying why nothing goes out.
It owns the keyframe gate, the layer switch (simulcast layers, VP9 spatial layers, temporal layers) and the offsets that
keep the subscriber's numbering continuous across restarts. ``commit`` tells it what was really written.
``DownTrack`` (relay/tracks.py) carries its decisions out; ``tests/test_forwarder.py`` is its table.

Continuity: a stream starts at a keyframe. Whenever it has to restart (it joined, it switched layer, the
publisher's stream restarted with a new SSRC, its subscriber could not take the first packets) it waits
for the right keyframe and then continues its own sequence numbers, timestamps and picture ids from where
it stopped, so the subscriber's decoder sees one continuous stream.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from rtc.codecs import Codec, codec_for


class SourcePacket:
    """One incoming RTP packet as every down-track reads it; computed once, shared by all of them."""

    __slots__ = ("abs_send_time", "arrived", "codec", "epoch", "keyframe", "layer", "layer_end", "marker", "ntp",
                 "payload", "picture_id", "seq", "spatial", "temporal", "timestamp")

    def __init__(self, seq: int, timestamp: int, marker: int, payload: bytes, keyframe: bool, epoch: int,
                 ntp: int, abs_send_time: bytes, picture_id: tuple[int, int, int] | None, layer: int = 0,
                 temporal: int | None = None, arrived: float = 0.0, codec: Codec | None = None,
                 spatial: int | None = None, layer_end: bool = False) -> None:
        self.codec = codec or codec_for(None)  # what the payload is (rtc/codecs): how to rewrite its picture id
        self.arrived = arrived  # monotonic seconds: read once here rather than once per subscriber
        self.seq = seq
        self.timestamp = timestamp
        self.marker = marker
        self.payload = payload
        self.keyframe = keyframe
        self.epoch = epoch
        self.ntp = ntp
        self.abs_send_time = abs_send_time
        self.picture_id = picture_id  # (offset, width, value) of its picture id, as its codec described it
        self.layer = layer  # which simulcast layer it belongs to (0 when there is one)
        self.temporal = temporal  # its temporal layer (TID), None when the publisher sends none
        self.spatial = spatial  # its spatial layer (VP9 SVC's SID), None when its stream has one
        self.layer_end = layer_end  # it ends its spatial layer's frame (VP9's E bit)


class Drop(enum.Enum):
    """Why a packet does not go to this subscriber."""

    OTHER_LAYER = "other layer"  # a simulcast layer this subscriber is not on (nor switching to)
    WAITING_KEYFRAME = "waiting for a keyframe"  # the gate is shut: a keyframe of the wanted layer is needed
    BEFORE_START = "from before the start"  # older than the keyframe this subscriber (re)started at

    @property
    def wants_keyframe(self) -> bool:
        return self is Drop.WAITING_KEYFRAME


class Translation(NamedTuple):
    """This subscriber's copy of a packet, before its SSRC, payload type and header extensions are added."""

    seq: int
    timestamp: int
    marker: int
    payload: bytes
    padding: bool  # sent as padding only (a frame above the temporal layers this subscriber gets)
    started: bool  # the first packet of a (re)start: a keyframe


_new_translation = tuple.__new__  # a Translation without NamedTuple's keyword handling: one per copy sent


class Forwarder:
    """The translation state of one down-track; ``kind`` is "video" or "audio"."""

    def __init__(self, kind: str, last_seq: int, last_ts: int, last_pid: int) -> None:
        self.kind = kind
        # Simulcast: the layer forwarded now (None: none yet, or paused), and the one wanted (None: no
        # video); a switch happens on the wanted layer's keyframe, the current one flowing until then.
        self.layer: int | None = None
        self.target_layer: int | None = 0
        self.waiting_keyframe = True  # every stream starts at a keyframe (audio: at its first packet)
        # VP8 temporal layers: the highest forwarded now and the one wanted (None: all). Fewer goes at once;
        # more waits for a base-layer (TID 0) frame, which every higher frame after it can refer back to.
        self.temporal_cap: int | None = None
        self.target_temporal: int | None = None
        # Spatial layers in one stream (VP9 SVC): the highest forwarded now and the one wanted (None: all).
        # Fewer goes at the next picture; more waits for a keyframe (a higher layer's chain starts there).
        self.spatial_cap: int | None = None
        self.target_spatial: int | None = None
        # Leaving this layer for a lower one (the link no longer carries it): until the lower layer's
        # keyframe comes, only the base temporal layer of this one goes, from a frame's start (see _leaving).
        self.bridging = False
        self.restarts = 0
        self.frames_thinned = 0  # frames sent as padding only, above the temporal cap
        self.started = False  # something was sent since the first start
        # Rewriting state: out = in + offset (mod 2^16 / 2^32 / picture-id space), set at each (re)start.
        self._epoch = -1
        self.restart_out_seq = 0  # our sequence number of the last (re)start's first packet
        self._start_is_near = True  # (False once the stream is far past it: see from_before_start)
        self._seq_offset = 0
        self._ts_offset = 0
        self._pid_offset = 0
        self._pid_out: dict[int, int] = {}  # publisher picture id -> ours, for the last frames (late packets agree)
        self._dropped_pids: dict[int, None] = {}  # picture ids of the last frames left out (counted once each)
        self.last_seq = last_seq  # the last sequence number, timestamp and picture id sent
        self.last_ts = last_ts
        self.last_pid = last_pid
        self.last_wall = 0.0
        # Catching up (a new subscriber started from a kept keyframe): the source timestamp of the frame
        # being sent, and ours for it; None when not catching up.
        self._catch_up: tuple[int, int] | None = None
        self._catching_up = False

    # -- decisions ---------------------------------------------------------------------------------------

    def translate(self, packet: SourcePacket, now: float, clock_rate: int) -> Translation | Drop:
        """This subscriber's copy of ``packet`` (``now``: monotonic seconds, for a restart's timestamps).

        Complexity 22, over the aim of 20, on purpose: this runs for every packet of every subscriber, and
        each decision it makes is one or two comparisons whose rare branches call out (``_restart``,
        ``_thinned``, ``_bridge_cap``, ``_spatial_marker``); splitting the common path into more calls would
        cost every packet a call for readability the table tests (tests/test_forwarder.py) already give."""
        started = False
        if packet.layer != self.layer:
            if packet.layer != self.target_layer:
                if self.target_layer is None:
                    self.layer = None  # paused: the current layer stops here
                return Drop.OTHER_LAYER
            if not packet.keyframe:
                return Drop.WAITING_KEYFRAME
            self.layer = packet.layer  # the wanted layer's keyframe: switch here, continuing our numbering
            self.waiting_keyframe = True
        if packet.epoch != self._epoch:
            self.waiting_keyframe = True  # the publisher's stream restarted: wait for its keyframe
        if self.waiting_keyframe:
            if not packet.keyframe:
                return Drop.WAITING_KEYFRAME
            self._restart(packet, now, clock_rate)
            started = True
        elif self.from_before_start((packet.seq + self._seq_offset) & 0xFFFF):
            return Drop.BEFORE_START  # it never had the frame around it
        seq = (packet.seq + self._seq_offset) & 0xFFFF
        timestamp = (packet.timestamp + self._ts_offset) & 0xFFFFFFFF
        if self._catching_up:
            timestamp = self._caught_up(packet.timestamp, timestamp)
        if packet.temporal is not None:
            if self.temporal_cap != self.target_temporal:
                self._follow_temporal_target(packet)
            cap = self._bridge_cap(packet) if self.bridging or self._leaving(packet) else self.temporal_cap
            if cap is not None and packet.temporal > cap:
                return self._thinned(packet, seq, timestamp, started)
        marker = packet.marker if packet.spatial is None else self._spatial_marker(packet)
        if marker is None:  # a spatial layer above this subscriber's: padding only, the picture goes on
            return _new_translation(Translation, (seq, timestamp, 0, b"\x01", True, started))
        picture_id = packet.picture_id
        if picture_id is None:
            payload = packet.payload
        elif not self._pid_offset and self.temporal_cap is None and not self._dropped_pids:
            payload = packet.payload  # the publisher's own picture ids (the usual case): its bytes, shared
            self.last_pid = picture_id[2]
        else:
            payload = self._renumbered(packet)
        return _new_translation(Translation, (seq, timestamp, marker, payload, False, started))

    def from_before_start(self, seq: int) -> bool:
        """Whether our sequence number ``seq`` lies before the last (re)start (a late packet or a NACK for the
        frames before the keyframe the subscriber started at). Sixteen-bit numbers wrap, so this is only asked
        near the start: once the stream is 16,384 packets past it, nothing from before it can still come, and
        every number counts as after it (asked later, the half of the circle behind the start would take in
        the stream's own packets from 32,768 on: every viewer's video stopped after about five minutes)."""
        if not self._start_is_near:
            return False
        if 0x4000 <= (self.last_seq - self.restart_out_seq) & 0xFFFF < 0xFF00:  # (just behind: the lead padding)
            self._start_is_near = False
            return False
        return (seq - self.restart_out_seq) & 0xFFFF >= 0x8000

    def commit(self, sent: Translation, now: float) -> bool:
        """``sent`` went out (or was lost on the way: its number is used either way). True when it began a
        newer frame (a sender report pairs its timestamp with now)."""
        self.started = True
        seq, timestamp = sent[0], sent[1]
        if (seq - self.last_seq) & 0xFFFF < 0x8000:
            self.last_seq = seq
        if timestamp != self.last_ts and (timestamp - self.last_ts) & 0xFFFFFFFF < 0x80000000:
            self.last_ts = timestamp
            self.last_wall = now
            return True
        return False

    def catch_up(self, on: bool) -> None:
        """Frames of the past (a kept keyframe and what followed it) are about to go to a new subscriber,
        or have gone. Meanwhile each frame's timestamp is one tick after the one before, not its own: its
        jitter buffer decodes and shows them at once instead of playing the past at its pace (a viewer would
        stay that far behind for good). Live frames then carry on from the last one, their spacing kept."""
        self._catching_up = on
        self._catch_up = None

    def _caught_up(self, source_ts: int, timestamp: int) -> int:
        if self._catch_up is None:
            self._catch_up = (source_ts, timestamp)  # the keyframe: where the (re)start put it
        elif source_ts != self._catch_up[0]:
            self._catch_up = (source_ts, (self._catch_up[1] + 1) & 0xFFFFFFFF)
        out = self._catch_up[1]
        self._ts_offset = (out - source_ts) & 0xFFFFFFFF  # what comes next continues from here
        return out

    def stop_current(self) -> None:
        """The current layer stops here (a pause, or a switch down that does not wait for the lower
        layer's keyframe); the wanted layer's keyframe starts the next."""
        self.layer = None

    def commit_lead(self, seq: int) -> None:
        self.last_seq = seq

    def new_source(self) -> None:
        """Another publisher's track feeds this subscriber from now on: its numbers and timestamps start
        elsewhere, so restart at its keyframe as for a new stream (ours continue)."""
        self._epoch = -1
        self.waiting_keyframe = True
        self.layer = None

    def start_again(self) -> None:
        """The first packets could not go out (the subscriber's transport is not up): start at a keyframe."""
        self.waiting_keyframe = True

    # -- how --------------------------------------------------------------------------------------------

    def _restart(self, packet: SourcePacket, now: float, clock_rate: int) -> None:
        """Continue this subscriber's numbering from ``packet`` on, one step after what it last got."""
        if packet.epoch != self._epoch or not self.started:
            # A new stream (or the first): its timestamps start elsewhere; carry ours on by the wall time
            # that passed, so the subscriber's jitter buffer and A/V sync see real time go by.
            elapsed = int((now - self.last_wall) * clock_rate) if self.started else 0
            self._ts_offset = (self.last_ts + max(1, elapsed) - packet.timestamp) & 0xFFFFFFFF
            self._epoch = packet.epoch
        if packet.picture_id is not None:
            # The first start keeps the publisher's picture ids: with a zero offset the payload is the
            # source's own bytes, shared by every subscriber and its history, never copied.
            self._pid_offset = 0 if not self.started else (self.last_pid + 1 - packet.picture_id[2]) & 0x7FFF
            self._pid_out.clear()
            self._dropped_pids.clear()
        self.temporal_cap = self.target_temporal  # a keyframe: every temporal layer may start here
        self.bridging = False
        self.spatial_cap = self.target_spatial  # ...and every spatial layer
        lead = 0 if self.started or self.kind != "video" else 1  # room for the lead padding packet
        self._seq_offset = (self.last_seq + 1 + lead - packet.seq) & 0xFFFF
        self.restart_out_seq = (self.last_seq + 1 + lead) & 0xFFFF
        self._start_is_near = True
        self.waiting_keyframe = False
        self.restarts += 1

    def _leaving(self, packet: SourcePacket) -> bool:
        """Whether ``packet``'s layer is being left for a lower one (a simulcast switch down, waiting for
        the lower layer's keyframe)."""
        return self.target_layer is not None and self.target_layer < packet.layer

    def _bridge_cap(self, packet: SourcePacket) -> int | None:
        """The temporal cap for ``packet`` while a switch down may be pending. The wait for the lower
        layer's keyframe (a keyframe request's round trip, then the encoder) is when the link suffers
        most: it no longer carries this layer, and the queue before it fills and drops, breaking every
        frame. Its base temporal layer alone (a VP8 simulcast layer's TID 0 is about 40% of its bits, at a
        quarter of its frame rate: no freeze) goes meanwhile, with no keyframe needed. Decided at a
        frame's start, so a frame is never cut in half; and ended at a base-layer frame's start only (a
        higher frame after it may refer to one that was thinned: the switch called off, the layer kept)."""
        leaving = self._leaving(packet)
        if leaving != self.bridging and packet.codec.starts_frame(packet.payload) and (leaving or not packet.temporal):
            self.bridging = leaving
        cap = self.temporal_cap
        return (0 if cap is None else min(cap, 0)) if self.bridging else cap

    def _follow_temporal_target(self, packet: SourcePacket) -> None:
        target, cap = self.target_temporal, self.temporal_cap
        if target is not None and (cap is None or target < cap):
            self.temporal_cap = target  # fewer layers: at once, dropping higher frames never breaks a chain
        elif packet.temporal == 0 and packet.codec.starts_frame(packet.payload):
            self.temporal_cap = target  # more: from a base-layer frame on

    def _spatial_marker(self, packet: SourcePacket) -> int | None:
        """A spatial layer's packet: its marker for this subscriber (set where the highest layer it gets
        ends the picture), or None when its layer is above that."""
        assert packet.spatial is not None
        if self.spatial_cap != self.target_spatial:
            self._follow_spatial_target(packet)
        cap = self.spatial_cap
        if cap is None or packet.spatial < cap:
            return packet.marker
        if packet.spatial > cap:
            return None
        return 1 if packet.layer_end else packet.marker

    def _follow_spatial_target(self, packet: SourcePacket) -> None:
        target, cap = self.target_spatial, self.spatial_cap
        if not packet.spatial and packet.codec.starts_frame(packet.payload):  # a picture starts
            if target is not None and (cap is None or target < cap):
                self.spatial_cap = target  # fewer: from this picture on
            elif packet.keyframe:
                self.spatial_cap = target  # more: from a keyframe (the DownTrack asked for one)

    def _thinned(self, packet: SourcePacket, seq: int, timestamp: int, started: bool) -> Translation:
        """A frame above the temporal layers this subscriber gets: its packets go out as padding only (the
        sequence stays whole, nothing is NACKed), and kept frames' picture ids close the gap."""
        if packet.picture_id is not None and packet.picture_id[2] not in self._dropped_pids:
            self._dropped_pids[packet.picture_id[2]] = None
            if len(self._dropped_pids) > 64:
                del self._dropped_pids[next(iter(self._dropped_pids))]
            self._pid_offset = (self._pid_offset - 1) & 0x7FFF
        self.frames_thinned += packet.marker
        return Translation(seq, timestamp, 0, b"\x01", True, started)

    def _renumbered(self, packet: SourcePacket) -> bytes:
        """The payload with this subscriber's picture id (the publisher's own bytes when it is the same)."""
        assert packet.picture_id is not None
        value = packet.picture_id[2]
        payload = packet.payload
        if self.temporal_cap is None and not self._dropped_pids:
            pid = (value + self._pid_offset) & 0x7FFF  # one offset since the restart: nothing to remember
        elif value in self._pid_out:
            pid = self._pid_out[value]  # a later packet of a frame already numbered
        else:  # a frame's first packet to come: its number, kept for the rest of its packets
            pid = self._pid_out[value] = (value + self._pid_offset) & 0x7FFF
            if len(self._pid_out) > 64:
                del self._pid_out[next(iter(self._pid_out))]
        if pid != value:
            payload = packet.codec.with_picture_id(payload, packet.picture_id, pid)
        self.last_pid = pid
        return payload
