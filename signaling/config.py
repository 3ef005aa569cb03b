"""The server's configuration: one typed tree, defaults first.

The CLI (``cli/main.py``) maps flags and ``LIVE_RELAY_*`` environment variables onto these fields;
tests build a ``ServerConfig`` directly. Nothing else reads the environment.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Per-connection and per-user limits. Zero disables a limit where noted."""

    # Largest frame the WebSocket reader accepts at all; beyond it aiohttp closes with 1009.
    max_frame_bytes: int = 64 * 1024
    # Largest message the protocol accepts; bigger frames get a `too_large` error and the connection stays.
    max_message_bytes: int = 8 * 1024
    max_comment_chars: int = 200
    max_announce_chars: int = 500
    # Comments: token bucket per user per room; hosts and co-hosts get their own, wider one (a pasted loop
    # from a leaked host token must not flood the room either); and one per remote address in a room,
    # generous because many real viewers share an address (a venue's Wi-Fi, carrier NAT), so that a
    # script with many signed-in users behind one address is still held together. A rate of 0 turns that
    # bound off (`serve --max-conns-per-ip 0`, for load tests from one machine, does).
    comment_rate: float = 2.0
    comment_burst: int = 5
    host_comment_rate: float = 5.0
    host_comment_burst: int = 20
    comment_address_rate: float = 20.0
    comment_address_burst: int = 60
    # Likes are counted in taps (a `like` message carries up to `max_like_count`). Taps per second (and
    # burst) per connection, per signed-in user, and per remote address in a room: the address bound is
    # what keeps a script with many connections from buying likes (and PK scores); it is generous because
    # many real viewers can share one address (a venue's Wi-Fi, carrier NAT). Taps over a bound are dropped.
    like_rate: float = 20.0
    like_burst: int = 60
    like_address_rate: float = 200.0
    like_address_burst: int = 600
    max_like_count: int = 50
    # Product pushes and announcements, per user.
    product_rate: float = 10.0
    product_burst: int = 20
    # Connections from one remote address (0 = unlimited).
    max_conns_per_ip: int = 500
    # A connection that sends this many malformed or out-of-place messages (protocol.BAD_INPUT_CODES) in a
    # burst is closed with 4000 (0 = never); the allowance refills at `bad_input_refill` per second, so a
    # long-lived client's occasional slip never adds up. Refusals (rate limits, roles) never count.
    max_errors_per_conn: int = 50
    bad_input_refill: float = 1.0
    # Outbound buffering (bytes waiting in user space for one connection): beyond `soft`, droppable
    # events (comments, likes, presence) are skipped for that connection; beyond `hard`, it is
    # disconnected with close code 4008 and resumes by sequence number.
    send_buffer_soft: int = 64 * 1024
    send_buffer_hard: int = 1024 * 1024
    # SO_SNDBUF for WebSocket connections (0: the kernel's autotuning). A smaller kernel buffer makes a
    # slow viewer's backlog visible to the limits above sooner.
    socket_send_buffer: int = 0
    # Seconds a client has to send its `join` after connecting.
    join_timeout: float = 10.0
    # A TCP connection must send its first complete HTTP request head within this many seconds, and at most
    # `max_pending_per_ip` connections per address may be waiting to do so (slowloris; 0 = no cap).
    handshake_timeout: float = 10.0
    max_pending_per_ip: int = 64
    # The listen queue: a flash crowd's connection burst waits here instead of being dropped by the kernel.
    listen_backlog: int = 4096
    # Media sessions (peer connections) a client can make the server hold (0 = unlimited): per WebSocket
    # (a viewer of a full stage and a PK needs about 8), publications per WebSocket, per remote address,
    # per room on this node. Over a bound: `too_many_media`.
    max_media_per_conn: int = 10
    max_publish_per_conn: int = 2
    max_media_per_ip: int = 200
    max_media_per_room: int = 2000
    # The node is saturated when its event loop runs timers this late (smoothed over ~1 s): new media
    # subscriptions are refused (`overloaded`, retry_after_ms) until it is back under half. 0: never.
    overload_lag_ms: float = 150.0
    # Sessions still starting (answered, not yet connected) are counted apart: the room bound above counts
    # connected ones only, so sessions that never connect cannot fill a room; an address may have this many
    # starting at once (a page of a full stage and a PK starts about 8), the node this many in all.
    max_pending_media_per_ip: int = 16
    max_pending_media: int = 500
    # A subscription to a user's publication (subscribe with `user`) waits this long for it to exist.
    publication_wait_s: float = 10.0
    # A peer connection not connected this long after the answer is closed and its slot freed (seconds).
    media_connect_timeout: float = 20.0
    # A connected publisher silent this long (no RTP or RTCP: an encoder gone without a DELETE) is closed and
    # its room told `publisher_left` (seconds; checked each second, so noticed within 4.5; ICE consent alone
    # would take 30). A live publisher is never this quiet: audio flows at 50 packets a second even when
    # muted, and browsers and libdatachannel send RTCP every second or so.
    media_silent_timeout: float = 3.5
    # A WHEP session outlives its publisher this long (seconds), and goes on from its user's next publication
    # if one comes meanwhile (an encoder's reconnect: DELETE, then POST); then it ends.
    media_follow_window: float = 15.0


@dataclass(frozen=True, slots=True)
class RoomConfig:
    history_size: int = 1000
    history_ttl: float = 300.0
    # Likes are aggregated and broadcast as totals at most this often (seconds).
    likes_interval: float = 0.2
    # Presence (viewer count, joins/leaves) is broadcast at most this often (seconds).
    presence_interval: float = 1.0
    # Presence events name at most this many joined/left users; beyond it, only counts.
    presence_max_names: int = 20
    # Scenes: co-host seats per room, and how long invitations and stage requests stay open (seconds).
    stage_seats: int = 6
    invite_ttl: float = 30.0


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    # Viewers without a token may watch and like (read-only chat); `--no-anonymous` turns this off.
    allow_anonymous: bool = True
    # Rooms that exist from start-up even when empty (the demo room).
    rooms: tuple[str, ...] = ()
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    room: RoomConfig = field(default_factory=RoomConfig)
    # Redis URL (redis://HOST:PORT/DB): rooms shared with other nodes. None: the in-process broker.
    redis_url: str | None = None
    # How other nodes reach this one's WebSocket (ws://HOST:PORT/ws), for the media cascade.
    node_url: str | None = None
    # Other nodes' public WebSocket URLs (wss://HOST/ws) a page may fail over to: told to clients in `joined`
    # (`nodes`). The page takes them from here only, never from its own address, so a crafted link cannot
    # send a viewer (and its token) to a server the operator did not name.
    failover_nodes: tuple[str, ...] = ()
    # --workers: share the public port with sibling processes, and listen on a private node port too.
    reuse_port: bool = False
    node_port: int | None = None
    # Media relay: STUN/TURN servers (none: contact no outside server) and the local addresses offered as
    # ICE host candidates (empty: every interface but loopback, as aioice chooses).
    media_enabled: bool = True
    ice_servers: tuple[str, ...] = ()
    ice_addresses: tuple[str, ...] = ("127.0.0.1",)
    # Every peer connection's ICE, DTLS, SRTP and SRTCP on this one UDP port (on each of ice_addresses; 0: a
    # port the system chooses, as tests want); None: a socket per connection on a random port (or, with
    # udp_ports, one from that range). `serve` listens on 7882 by default: the one port to open.
    udp_port: int | None = 0
    udp_ports: tuple[int, int] | None = None
    # Addresses announced instead of bound ones (a VM behind 1:1 NAT: local -> public).
    ice_announce: tuple[tuple[str, str], ...] = ()
    # Or learnt at start: a STUN server (host, port) asked from the one UDP port which address it sees; the
    # answer is announced for each bound address not in ice_announce.
    ice_discover: tuple[str, int] | None = None
    # TURN for clients whose network blocks UDP: the URLs clients are given (turn:HOST:3478?transport=udp,
    # ...?transport=tcp, turns:HOST:5349?transport=tcp) with credentials minted from turn_secret (the TURN
    # REST API scheme), valid turn_ttl seconds. turn_port: start coturn beside the relay on this port (and
    # turn_tls_port with the TLS certificate), announcing turn_host (default: the first ICE address).
    turn_urls: tuple[str, ...] = ()
    turn_secret: str | None = None
    turn_ttl: float = 3600.0
    turn_port: int | None = None
    turn_tls_port: int | None = None
    turn_host: str | None = None
    # Client ICE candidates on these networks are ignored (link-local, the cloud metadata address among them).
    ice_deny: tuple[str, ...] = ("169.254.0.0/16", "fe80::/10")
    # Viewers whose browser offers transport-cc get it, and their link is estimated on the relay's side from
    # their acknowledgements (relay/bwe.py); False: from their REMB, as before (benchmarks' baseline).
    send_side_estimation: bool = True
    # The browser page's files (served at / and /static/); None serves no page.
    web_root: str | None = None
    # HTTPS/WSS (browsers give camera access only on localhost or HTTPS).
    tls_cert: str | None = None
    tls_key: str | None = None
    # `serve --record DIR`: record every publisher on this node as received, and each room's events, into DIR;
    # recording stops (and is refused) once DIR holds `record_max_bytes`.
    record_dir: str | None = None
    # LL-HLS (/hls/ROOM/index.m3u8): rooms streamed over HLS at once on this node (each from its H.264
    # publisher, not re-encoded; a room's stream stops 30 s after its last request).
    hls_max_streams: int = 16
    # VP8 shows (a browser host's default) made H.264 for HLS at once on this node: one decode and one encode
    # each (docs/benchmarks.md says what one costs); past it such a show answers 409 over HLS.
    hls_max_transcodes: int = 2
    # VP8 shows made H.264 for restreaming at once on this node (one transcode per room, shared by its
    # destinations; an H.264 show is passed through at no cost); past it a VP8 show's destination is refused.
    restream_max_transcodes: int = 2
    # An HLS player's viewing session (counted in analytics as a viewer, `via: hls`) ends this long after its
    # last playlist request.
    hls_viewer_idle_s: float = 30.0
    record_max_bytes: int = 10 * 1024**3
    # Where a host's `record_start` records when the server runs without --record (no recording of every room).
    recordings_dir: str = "recordings"
    # Conversion analytics: None (off), a SQLite file path (sqlite:///PATH or PATH) or a PostgreSQL URL
    # (postgresql://...). `serve` turns it on by default with data/analytics.sqlite3.
    analytics: str | None = None
    # Events older than this are deleted (days; 0 keeps everything).
    analytics_retention_days: float = 90.0
    # The shop's order webhook (POST /api/orders) is signed with this (HMAC-SHA256); None: webhook off.
    order_secret: str | None = None
    # The operator's webhook for scheduled shows (signaling/webhooks.py): where reminders, new shows for
    # followers, show starts and follow-up lists are POSTed, signed with webhook_secret (HMAC-SHA256); None:
    # no deliveries (shows, reservations and follow-up lists still work). Reminders go reminder_lead_s
    # before a show starts; a failed delivery is retried after 1, 2, 4 ... at most webhook_max_backoff_s.
    webhook_url: str | None = None
    webhook_secret: str | None = None
    reminder_lead_s: float = 900.0
    webhook_max_backoff_s: float = 300.0
    # How people reach this server (https://shop.example.com): the links in reminders, calendar files and
    # follow-up messages. None: the address the scheduling request came in by.
    public_url: str | None = None
    # The assistant in the room: an OpenAI-compatible chat-completions base URL (…/v1) and model (None: the
    # offline engine only; the key comes from LIVE_RELAY_ASSISTANT_KEY or OPENAI_API_KEY), how long a model
    # answer may take before the offline one is used, and how often hosts get the digest (seconds).
    assistant_llm: str | None = None
    assistant_model: str | None = None
    assistant_deadline: float = 2.0
    assistant_digest_interval: float = 10.0
    # The voice assistant's speech (1v1 calls): an OpenAI-compatible speech API's base URL (…/v1; a self-hosted
    # Whisper server, for example) for recognition and the answer's voice, in any language it knows (Chinese
    # among them); the key from LIVE_RELAY_SPEECH_KEY. None: pocketsphinx (English) and espeak-ng offline.
    # speech_language: the callers' language as a hint ("zh"; None: the server detects it).
    speech_url: str | None = None
    speech_language: str | None = None
    speech_stt_model: str = "whisper-1"
    speech_tts_model: str = "tts-1"
    speech_voice: str = "alloy"
    # The operator's comment review hook (a URL that gets each comment before it fans out and answers
    # allow / deny / replace), how long it may take, and what happens when it does not answer in time:
    # fail-open publishes the comment as written, fail-closed refuses it (`unavailable`).
    comment_review_url: str | None = None
    comment_review_deadline: float = 0.5
    comment_review_fail_open: bool = True
    # /metrics asks for `Authorization: Bearer <token>` when set (None: open, as on a private network).
    metrics_token: str | None = None
    # Grace period for in-flight writes at shutdown (seconds).
    shutdown_timeout: float = 5.0
    # The whole shutdown's bound (seconds): past it the process says what it was still waiting on and ends
    # (a stop must stop: a CI run once saw a worker stay up after SIGTERM, idle).
    shutdown_deadline: float = 20.0

    def replace(self, **changes: object) -> ServerConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
