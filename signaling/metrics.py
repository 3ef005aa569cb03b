"""Prometheus metrics of one server instance, on its own registry (no process-wide globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Latency buckets in seconds, fine-grained where a relay should live (sub-millisecond to 100 ms).
_LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge("live_relay_connections", "Open WebSocket connections", registry=r)
        self.rooms = Gauge("live_relay_rooms", "Rooms with members or kept history", registry=r)
        self.messages_in = Counter("live_relay_messages_in", "Client messages accepted, by type",
                                   ["type"], registry=r)
        self.messages_out = Counter("live_relay_messages_out", "Messages written to connections, by type",
                                    ["type"], registry=r)
        self.drops = Counter("live_relay_drops", "Messages not delivered to a connection, by reason",
                             ["reason"], registry=r)
        self.errors = Counter("live_relay_errors", "Error frames sent to clients, by code", ["code"],
                              registry=r)
        self.disconnects = Counter("live_relay_disconnects", "Connections closed by the server, by reason",
                                   ["reason"], registry=r)
        self.uplink_latency = Histogram(
            "live_relay_uplink_latency_seconds",
            "Sender's timestamp to server receive (needs the sender's clock estimate), by type",
            ["type"], buckets=_LATENCY_BUCKETS, registry=r)
        self.fanout_latency = Histogram(
            "live_relay_fanout_latency_seconds",
            "Server receive to the last write of the event to local connections, by type",
            ["type"], buckets=_LATENCY_BUCKETS, registry=r)
        self.media_setup = Histogram(
            "live_relay_media_setup_seconds", "Offer received to answer sent, by kind (publish/subscribe/renegotiate)",
            ["kind"], buckets=_LATENCY_BUCKETS, registry=r)
        self.media_peers = Gauge("live_relay_media_peers", "Media peer connections, by role", ["role"],
                                 registry=r)
        self.media_keyframe_requests = Gauge("live_relay_media_keyframe_requests",
                                             "PLIs sent to publishers (current publishers)", registry=r)
        self.media_subscriber_loss = Gauge(
            "live_relay_media_subscriber_loss", "Subscribers' down-tracks by the loss their last receiver "
            "report gave (video and audio counted apart)", ["loss"], registry=r)
        self.media_subscriber_layer = Gauge(
            "live_relay_media_subscriber_layer", "Simulcast video down-tracks by the layer they forward "
            "(0 = lowest; paused: no video fits the subscriber's link or it asked for none)", ["layer"], registry=r)
        self.media_layer_switches = Gauge(
            "live_relay_media_layer_switches", "Layer switches of the current simulcast down-tracks, by direction",
            ["direction"], registry=r)
        self.media_subscriber_bandwidth = Gauge(
            "live_relay_media_subscriber_bandwidth", "Subscribers by their link's bandwidth estimate (the relay's "
            "own from transport-cc, or the receiver's REMB)", ["bandwidth"], registry=r)
        self.media_subscriber_estimator = Gauge(
            "live_relay_media_subscriber_estimator", "Subscribers by whence their link's estimate comes (send_side: "
            "the relay's own from their transport-cc feedback; remb: their receiver's)", ["estimator"], registry=r)
        self.media_bad_feedback = Gauge(
            "live_relay_media_bad_feedback", "Transport feedback packets from current subscribers not read "
            "(malformed, or more than 100 a second)", registry=r)
        self.media_audio_redundancy = Gauge(
            "live_relay_media_audio_redundancy", "Audio down-tracks by the earlier packets each RED packet carries "
            "(0: no RED negotiated)", ["red"], registry=r)
        self.analytics_events = Counter("live_relay_analytics_events", "Analytics events recorded, by kind",
                                        ["kind"], registry=r)
        self.analytics_dropped = Counter("live_relay_analytics_dropped",
                                         "Analytics events dropped: the writer's queue was full", registry=r)
        self.analytics_rejected = Counter("live_relay_analytics_rejected",
                                          "Analytics HTTP requests refused, by reason", ["reason"], registry=r)
        self.analytics_queue = Gauge("live_relay_analytics_queue", "Analytics events waiting to be written",
                                     registry=r)
        self.media_packets = Gauge("live_relay_media_packets",
                                   "RTP packets to current subscribers: forwarded, dropped at a full socket, "
                                   "retransmitted on NACK, NACKs unanswered on a congested link (repair_refused)",
                                   ["outcome"], registry=r)
        self.client_call_setup = Histogram(
            "live_relay_client_call_setup_seconds", "1v1 call set-up (offer sent to first decoded frame), "
            "as reported by clients", buckets=_LATENCY_BUCKETS, registry=r)
        self.client_first_frame = Histogram(
            "live_relay_client_first_frame_seconds", "Subscribe to first decoded frame, as reported by clients",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.ice_candidates_denied = Counter(
            "live_relay_ice_candidates_denied", "Client ICE candidates ignored: on a denied network", registry=r)
        self.recording_bytes = Gauge("live_relay_recording_bytes",
                                     "Bytes in the recording directory (serve --record)", registry=r)
        self.broker_up = Gauge("live_relay_broker_up", "1 when the broker is reachable", registry=r)
        self.moderation = Counter("live_relay_moderation", "Moderation actions taken on this node, by action",
                                  ["action"], registry=r)
        self.comments_blocked = Counter("live_relay_comments_blocked",
                                        "Comments refused before fan-out: a blocked word, or the review hook",
                                        ["reason"], registry=r)
        self.comment_reviews = Counter("live_relay_comment_reviews",
                                       "Comment reviews by outcome (allow, deny, replace, timeout, error, "
                                       "bad_answer, overloaded)", ["outcome"], registry=r)
        self.analytics_up = Gauge("live_relay_analytics_up", "1 while the analytics store takes writes", registry=r)
        self.loop_lag = Gauge("live_relay_loop_lag_seconds",
                              "How late the event loop runs timers, smoothed (the node's saturation)", registry=r)
        self.saturated = Gauge("live_relay_saturated", "1 while the node refuses new subscriptions for load",
                               registry=r)
        self.media_refused_overloaded = Gauge("live_relay_media_refused_overloaded",
                                              "New media subscriptions refused because the node was saturated",
                                              registry=r)
        self.bad_requests = Counter("live_relay_bad_http_requests",
                                    "HTTP requests refused before routing (oversized or malformed heads)",
                                    registry=r)

        self.hls_streams = Gauge("live_relay_hls_streams", "Rooms streamed over LL-HLS now", registry=r)
        self.hls_requests = Gauge("live_relay_hls_requests", "LL-HLS requests answered or refused, since start",
                                  registry=r)
        self.hls_refused_full = Gauge("live_relay_hls_refused_full",
                                      "LL-HLS requests refused: the node streamed hls_max_streams rooms", registry=r)
        self.restreams = Gauge("live_relay_restreams", "Restreaming destinations, by state", ["state"], registry=r)
        self.restream_frames_dropped = Gauge("live_relay_restream_frames_dropped",
                                             "Frames a destination could not keep up with, over all destinations",
                                             registry=r)
        self.webhook = Gauge("live_relay_webhook_deliveries",
                             "Scheduled shows' webhook deliveries since start: delivered, failed attempts, given up",
                             ["outcome"], registry=r)
        self.show_asks_refused = Gauge("live_relay_show_asks_refused",
                                       "Questions on show pages refused by the per-address or per-show limit",
                                       registry=r)
        self.receive_failed = Gauge("live_relay_media_receive_failed",
                                    "Publishers' packets whose handling raised (each logged once per connection)",
                                    registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
