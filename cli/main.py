"""The ``live-relay`` command: serve, token, loadtest ... (click).

Flags also read environment variables: ``LIVE_RELAY_SECRET`` for ``--secret`` everywhere, and
``LIVE_RELAY_<COMMAND>_<FLAG>`` for the rest (click's auto_envvar_prefix), e.g. ``LIVE_RELAY_SERVE_PORT``.
Subcommands import their modules lazily: ``live-relay token`` should not pay for loading aiortc.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import re
import signal
import sys
from typing import Any

import click

from protocol import Role


@click.group(context_settings={"auto_envvar_prefix": "LIVE_RELAY", "show_default": True})
@click.option("--log-level", default=None,
              help="Logging level [default: INFO for serve, WARNING for the interactive commands].")
@click.option("--log-json/--no-log-json", default=None,
              help="JSON-lines logs [default: on for serve (structured), off for the interactive commands].")
@click.pass_context
def main(ctx: click.Context, log_level: str | None, log_json: bool | None) -> None:
    """live-relay: a self-hosted media and message relay for live commerce."""
    from signaling.logs import setup_logging

    # The server keeps structured logs; a person at a terminal (host, view, call, token, loadtest) gets
    # warnings and worse in plain text, not a stream of JSON interleaved with the program's own output.
    server = ctx.invoked_subcommand == "serve"
    setup_logging(log_level or ("INFO" if server else "WARNING"), server if log_json is None else log_json)
    if ctx.invoked_subcommand in ("serve", "autohost", "ingest"):
        from cli.memory import steady_memory

        steady_memory()  # processes that run for days: RSS flat, not creeping (cli/memory.py says why)
    ctx.ensure_object(dict)


def _udp_port(value: str, ports: str | None) -> int | None:
    if ports is not None or value.lower() == "off":
        return None
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise click.BadParameter(f"{value!r} is not a port (0-65535) or 'off'", param_hint="--udp-port")
    return int(value)


def _stun_server(value: str | None) -> tuple[str, int] | None:
    """HOST or HOST:PORT (3478 by default; [v6]:PORT for IPv6) of a STUN server, resolved later."""
    if value is None:
        return None
    match = re.fullmatch(r"(?:stun:)?(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?", value.strip())
    if match is None or not 0 < int(match.group(2) or 3478) <= 65535:
        raise click.BadParameter(f"{value!r} is not a STUN server like stun.example.com:3478",
                                 param_hint="--stun-discover")
    return match.group(1).strip("[]"), int(match.group(2) or 3478)


def _port_range(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    first, _, last = value.partition("-")
    if not (first.isdigit() and last.isdigit() and 1 <= int(first) <= int(last) <= 65535):
        raise click.BadParameter(f"{value!r} is not a port range like 50000-50100", param_hint="--udp-ports")
    return int(first), int(last)


def _ws_urls(urls: tuple[str, ...]) -> tuple[str, ...]:
    for url in urls:
        if not re.fullmatch(r"wss?://[^\s/?#]+(/[^\s?#]*)?", url):
            raise click.BadParameter(f"{url!r} is not a ws:// or wss:// URL", param_hint="--failover-node")
    return urls


@main.command()
@click.option("--host", default="127.0.0.1", help="Address to listen on.")
@click.option("--port", default=8080, type=int, help="Port to listen on.")
@click.option("--secret", default=None, envvar="LIVE_RELAY_SECRET",
              help="Token signing secret (random if unset; host tokens are printed either way).")
@click.option("--room", "rooms", multiple=True, help="A room that exists from start-up (repeatable).")
@click.option("--demo", is_flag=True, help="Create the room 'demo' and print tokens for it.")
@click.option("--anonymous/--no-anonymous", default=True,
              help="Let viewers without a token join read-only (they may like, not comment).")
@click.option("--max-conns-per-ip", default=500, type=int,
              help="Connections per remote address (0: no limit, for load tests from one machine: it also lifts "
                   "the per-address bounds on connections and media sessions still starting).")
@click.option("--max-media-per-ip", default=200, type=int,
              help="Media sessions (peer connections) per remote address (0: no limit).")
@click.option("--max-media-per-room", default=2000, type=int,
              help="Media sessions per room on this node (0: no limit).")
@click.option("--overload-lag-ms", default=150.0, type=float, show_default=True,
              help="Refuse new media subscriptions ('overloaded', with a retry hint) while the event loop runs this "
                   "late (smoothed); viewers already watching keep their stream. 0: never.")
@click.option("--comment-rate", default=2.0, type=float, help="Comments per second per user.")
@click.option("--comment-burst", default=5, type=int, help="Comment burst per user.")
@click.option("--history-size", default=1000, type=int, help="Durable events kept per room.")
@click.option("--history-ttl", default=300.0, type=float, help="Seconds durable events are kept.")
@click.option("--media/--no-media", default=True, help="Run the WebRTC media relay (SFU).")
@click.option("--ice-server", "ice_servers", multiple=True,
              help="STUN/TURN server for the relay (stun:HOST:PORT, turn:USER:PASS@HOST:PORT); none by default.")
@click.option("--ice-address", "ice_addresses", multiple=True, default=("127.0.0.1",),
              help="Local address offered as an ICE host candidate (repeatable); 'auto' for every interface; "
                   "LOCAL/PUBLIC binds LOCAL and announces PUBLIC (a VM behind 1:1 NAT).")
@click.option("--stun-discover", default=None, metavar="HOST[:PORT]",
              help="Learn the public address from this STUN server at start, from the one UDP port, and announce "
                   "it (a VM behind 1:1 NAT; an address given as LOCAL/PUBLIC keeps PUBLIC).")
@click.option("--udp-port", default="7882", show_default=True,
              help="The one UDP port every peer connection's media uses (open it in the firewall); 'off' for "
                   "a socket per connection.")
@click.option("--udp-ports", default=None, metavar="FIRST-LAST",
              help="Instead of one port: a socket per connection, on a port of this range (e.g. 50000-50100).")
@click.option("--ice-deny", "ice_deny", multiple=True, default=("169.254.0.0/16", "fe80::/10"),
              help="Ignore client ICE candidates on this network (repeatable; default: link-local).")
@click.option("--tls-cert", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Serve HTTPS/WSS with this certificate (PEM); browsers need it off localhost for cameras.")
@click.option("--tls-key", default=None, type=click.Path(exists=True, dir_okay=False), help="Its private key (PEM).")
@click.option("--web/--no-web", default=True, help="Serve the browser page at /.")
@click.option("--redis", "redis_url", default=None,
              help="Share rooms with other nodes through this Redis (redis://HOST:PORT/DB).")
@click.option("--node-url", default=None,
              help="How other nodes reach this one (ws://HOST:PORT/ws), for the media cascade.")
@click.option("--turn", "turn_port", default=None, type=int, is_flag=False, flag_value=3478,
              help="Start coturn beside the relay on this port (3478 if no value), for viewers whose network "
                   "blocks UDP; with --tls-cert also TURN over TLS on --turn-tls-port.")
@click.option("--turn-tls-port", default=5349, type=int, show_default=True, help="coturn's TLS port (with --turn).")
@click.option("--turn-host", default=None, help="The address clients reach coturn at (default: the first ICE address).")
@click.option("--turn-url", "turn_urls", multiple=True,
              help="An existing TURN server's URL to give clients (turn:HOST:3478?transport=udp, ...; repeatable).")
@click.option("--turn-secret", default=None, envvar="LIVE_RELAY_TURN_SECRET",
              help="Its static-auth-secret (coturn use-auth-secret): clients get credentials minted from it.")
@click.option("--failover-node", "failover_nodes", multiple=True,
              help="Another node's public WebSocket URL (wss://HOST/ws) pages may fail over to (repeatable).")
@click.option("--record", "record_dir", default=None, type=click.Path(file_okay=False),
              help="Record every publisher as received (Matroska) and each room's events into this directory.")
@click.option("--record-max-gb", default=10.0, type=float, help="Stop recording once the directory holds this much.")
@click.option("--recordings-dir", default="recordings", type=click.Path(file_okay=False),
              help="Where a host's record_start records when there is no --record.")
@click.option("--metrics-token", default=None, help="Require 'Authorization: Bearer TOKEN' on /metrics.")
@click.option("--analytics", default="data/analytics.sqlite3",
              help="Conversion analytics: a SQLite file, a postgresql:// URL, or 'off'.")
@click.option("--analytics-retention-days", default=90.0, type=float,
              help="Delete analytics events older than this (0 keeps them).")
@click.option("--assistant-llm", default=None,
              help="The room assistant's model: an OpenAI-compatible base URL (…/v1); key from "
                   "LIVE_RELAY_ASSISTANT_KEY or OPENAI_API_KEY. Without it answers come from the offline engine.")
@click.option("--assistant-model", default=None, help="The model name to ask for (with --assistant-llm).")
@click.option("--order-secret", default=None, envvar="LIVE_RELAY_ORDER_SECRET",
              help="HMAC secret of the shop's order webhook (POST /api/orders); without it the webhook is off.")
@click.option("--webhook-url", default=None,
              help="Your webhook for scheduled shows: reminders, new shows for followers, follow-up lists.")
@click.option("--webhook-secret", default=None, envvar="LIVE_RELAY_WEBHOOK_SECRET",
              help="HMAC secret the webhook's deliveries are signed with (needed with --webhook-url).")
@click.option("--reminder-lead-min", default=15.0, type=click.FloatRange(0, 7 * 24 * 60),
              help="Minutes before a scheduled show starts that its reminder leaves through the webhook.")
@click.option("--public-url", default=None,
              help="How people reach this server (https://live.example.com): links in reminders and calendars.")
@click.option("--speech-url", default=None,
              help="The voice assistant's speech: an OpenAI-compatible speech API (…/v1, e.g. a Whisper server) for "
                   "recognition and voice in any language; key from LIVE_RELAY_SPEECH_KEY. Without it: English "
                   "recognition offline, answers spoken by espeak-ng (Mandarin for Chinese).")
@click.option("--speech-language", default=None, help="The callers' language as a hint to the speech API (zh, en).")
@click.option("--comment-review-url", default=None,
              help="Your review service: each comment is POSTed there before it fans out (allow/deny/replace).")
@click.option("--comment-review-deadline", default=0.5, type=float, help="Seconds a review may take.")
@click.option("--comment-review-fail-open/--comment-review-fail-closed", default=True,
              help="Without a review in time: publish the comment as written (open) or refuse it (closed).")
@click.option("--workers", default=1, type=int, help="Node processes on this machine (needs --redis).")
@click.option("--reuse-port", is_flag=True, hidden=True)
@click.option("--node-port", default=None, type=int, hidden=True)
def serve(host: str, port: int, secret: str | None, rooms: tuple[str, ...], demo: bool, anonymous: bool,
          max_conns_per_ip: int, max_media_per_ip: int, max_media_per_room: int, overload_lag_ms: float,
          comment_rate: float,
          comment_burst: int, history_size: int,
          history_ttl: float, media: bool, ice_servers: tuple[str, ...], ice_addresses: tuple[str, ...],
          stun_discover: str | None, udp_port: str, udp_ports: str | None,
          ice_deny: tuple[str, ...],
          tls_cert: str | None, tls_key: str | None, web: bool, redis_url: str | None, node_url: str | None,
          turn_port: int | None, turn_tls_port: int, turn_host: str | None, turn_urls: tuple[str, ...],
          turn_secret: str | None, failover_nodes: tuple[str, ...], record_dir: str | None, record_max_gb: float,
          recordings_dir: str,
          metrics_token: str | None,
          analytics: str, analytics_retention_days: float, assistant_llm: str | None, assistant_model: str | None,
          order_secret: str | None, webhook_url: str | None, webhook_secret: str | None, reminder_lead_min: float,
          public_url: str | None, speech_url: str | None, speech_language: str | None,
          comment_review_url: str | None, comment_review_deadline: float,
          comment_review_fail_open: bool, workers: int,
          reuse_port: bool, node_port: int | None) -> None:
    """Run the server (uvloop; in-process broker unless --redis)."""
    import secrets as _secrets
    from pathlib import Path

    import uvloop

    import clients
    from cli.demo import DemoHost
    from cli.errors import explain_listen_error
    from protocol import issue_token
    from signaling.app import reachable_host
    from signaling.app import serve as run_server
    from signaling.config import LimitsConfig, RoomConfig, ServerConfig

    if turn_urls and not turn_secret:
        raise click.UsageError("--turn-url needs --turn-secret (the TURN server's static-auth-secret)")
    for url in turn_urls:
        if not re.fullmatch(r"turns?:[^\s/]+(\?transport=(udp|tcp))?", url):
            raise click.BadParameter(f"{url!r} is not a turn: or turns: URL", param_hint="--turn-url")
    if comment_review_url and not re.fullmatch(r"https?://\S+", comment_review_url):
        raise click.BadParameter(f"{comment_review_url!r} is not an http:// or https:// URL",
                                 param_hint="--comment-review-url")
    for flag, given in (("--webhook-url", webhook_url), ("--public-url", public_url), ("--speech-url", speech_url)):
        if given and not re.fullmatch(r"https?://\S+", given):
            raise click.BadParameter(f"{given!r} is not an http:// or https:// URL", param_hint=flag)
    if webhook_url and not webhook_secret:
        raise click.UsageError("--webhook-url needs --webhook-secret (or LIVE_RELAY_WEBHOOK_SECRET): deliveries "
                               "are signed so your receiver can tell them from forgeries")
    printed_secret = secret is None
    secret = check_secret(secret) if secret is not None else _secrets.token_urlsafe(32)
    if workers > 1:
        if not redis_url:
            raise click.UsageError("--workers N shares rooms through Redis: give --redis too")
        _run_workers(workers, secret, redis_url, _udp_port(udp_port, udp_ports))
        return
    if demo and "demo" not in rooms:
        rooms = (*rooms, "demo")
    config = ServerConfig(
        host=host, port=port, secret=secret, allow_anonymous=anonymous, rooms=rooms,
        # --max-conns-per-ip 0 (load tests from one machine) lifts the cap on connections still sending their
        # request head too: a crowd from one address opens thousands at the same instant.
        limits=LimitsConfig(max_conns_per_ip=max_conns_per_ip, max_pending_per_ip=64 if max_conns_per_ip else 0,
                            max_pending_media_per_ip=16 if max_conns_per_ip else 0,
                            max_media_per_ip=max_media_per_ip,
                            max_media_per_room=max_media_per_room, overload_lag_ms=max(0.0, overload_lag_ms),
                            comment_rate=comment_rate,
                            comment_address_rate=20.0 if max_conns_per_ip else 0.0,
                            comment_burst=comment_burst),
        room=RoomConfig(history_size=history_size, history_ttl=history_ttl),
        media_enabled=media, ice_servers=ice_servers,
        ice_addresses=() if "auto" in ice_addresses else tuple(a.split("/", 1)[0] for a in ice_addresses),
        ice_announce=tuple(tuple(a.split("/", 1)) for a in ice_addresses if "/" in a),  # type: ignore[misc]
        udp_port=_udp_port(udp_port, udp_ports), udp_ports=_port_range(udp_ports), ice_deny=ice_deny,
        ice_discover=_stun_server(stun_discover),
        web_root=str(Path(clients.__file__).parent / "web") if web else None, tls_cert=tls_cert, tls_key=tls_key,
        redis_url=redis_url, node_url=node_url, reuse_port=reuse_port, node_port=node_port,
        failover_nodes=_ws_urls(failover_nodes), turn_port=turn_port, turn_tls_port=turn_tls_port,
        turn_host=turn_host, turn_urls=turn_urls, turn_secret=turn_secret,
        metrics_token=metrics_token, record_dir=record_dir, record_max_bytes=int(record_max_gb * 1024**3),
        recordings_dir=recordings_dir, analytics=None if analytics.lower() == "off" else analytics,
        analytics_retention_days=analytics_retention_days, order_secret=order_secret,
        webhook_url=webhook_url, webhook_secret=webhook_secret, public_url=public_url,
        reminder_lead_s=reminder_lead_min * 60, speech_url=speech_url, speech_language=speech_language,
        assistant_llm=assistant_llm, assistant_model=assistant_model,
        comment_review_url=comment_review_url, comment_review_deadline=comment_review_deadline,
        comment_review_fail_open=comment_review_fail_open,
    )
    scheme = "https" if tls_cert else "http"
    base = f"{scheme}://{reachable_host(host)}:{port}"
    click.echo(f"live-relay listening on {base} (WebSocket {base.replace('http', 'ws', 1)}/ws)", err=True)
    if printed_secret:
        click.echo(f"no --secret given: this run signs tokens with {secret}", err=True)
        click.echo(f"  more tokens: live-relay token --secret {secret} --room ROOM --user NAME --role viewer",
                   err=True)
    for room in rooms:
        host_token = issue_token(secret, room, "host", Role.HOST, 86400)
        click.echo(f"room {room!r}: host token {host_token}", err=True)
        if web:
            click.echo(f"  watch:   {base}/?view=viewer&room={room}", err=True)
            click.echo(f"  comment: {base}/?view=viewer&room={room}&token="
                       f"{issue_token(secret, room, 'guest', Role.VIEWER, 86400, 'Guest')}", err=True)
            if config.analytics:
                click.echo(f"  dashboard: {base}/?view=dashboard&room={room}&token={host_token}", err=True)
            live_note = " (the demo's synthetic host is on air: you would publish beside it)" \
                if demo and room == "demo" else ""
            click.echo(f"  go live: {base}/?view=host&room={room}&token={host_token}{live_note}", err=True)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        ready = asyncio.Event()
        server = asyncio.create_task(run_server(config, ready=ready, stop=stop))
        await asyncio.wait({server, asyncio.ensure_future(ready.wait())}, return_when=asyncio.FIRST_COMPLETED)
        # The cyclic GC's full passes walk every object a connection holds, so their cost grows with the
        # audience (measured: CPU per join rose with room size). Everything loaded by now lives as long as
        # the process: freeze it out of collection, and collect the young generation less often.
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        demo_host = None
        if demo and not server.done():
            ws_scheme = "wss" if tls_cert else "ws"
            demo_host = DemoHost(f"{ws_scheme}://127.0.0.1:{port}/ws", "demo", secret, insecure_tls=bool(tls_cert))
            await demo_host.start()
        try:
            await server
        finally:
            if demo_host is not None:
                await demo_host.stop()

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run())
    except OSError as exc:  # the listening socket: a busy port, a foreign address, a privileged port
        udp = getattr(exc, "udp_port", None)
        if udp is not None:
            raise click.ClickException(explain_listen_error(exc, host, udp).replace("--port", "--udp-port")
                                       .replace("port ", "UDP port ", 1)) from None
        raise click.ClickException(explain_listen_error(exc, host, port)) from None


def _run_workers(workers: int, secret: str, redis_url: str, udp_port: int | None) -> None:
    """Start N `serve` processes sharing the port (SO_REUSEPORT) and one Redis; stop them on SIGTERM/SIGINT.

    Each gets a private loopback node port (for the media cascade between workers) and, with one UDP port,
    a UDP port of its own (the given one plus its index: datagrams cannot be spread by the kernel the way
    connections are); only the first runs the demo host. The flags given here are passed on."""
    import socket
    import subprocess

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    argv = sys.argv[1:]
    base = [a for a in argv if not a.startswith("--workers")]
    if "--workers" in argv:  # drop "--workers N" (the spaced form)
        i = argv.index("--workers")
        base = argv[:i] + argv[i + 2:]
    if "--udp-port" in base:
        i = base.index("--udp-port")
        base = base[:i] + base[i + 2:]
    base = [a for a in base if not a.startswith("--udp-port=")]
    children = []
    for n in range(workers):
        args = [*base, "--reuse-port", "--node-port", str(free_port())]
        args += ["--udp-port", "off" if udp_port is None else str(udp_port + n if udp_port else 0)]
        if "--secret" not in args:
            args += ["--secret", secret]
        if n > 0 and "--demo" in args:
            args.remove("--demo")
        children.append(subprocess.Popen([sys.executable, "-m", "cli.main", *args]))

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    sys.exit(max(codes))


@main.command()
@click.option("--room", required=True, help="The room whose show to report.")
@click.option("--show", default=None, help="Which show (default: the latest); `--list` names them.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Write report.html, report.json, CSV tables and PNG charts here.")
@click.option("--analytics", default="data/analytics.sqlite3", help="The analytics database (as for serve).")
@click.option("--list", "list_shows", is_flag=True, help="List the room's shows and exit.")
def report(room: str, show: str | None, out_dir: str | None, analytics: str, list_shows: bool) -> None:
    """A show's conversion report: funnel, audience, sources, products, quality against dwell."""
    import json
    import time
    from pathlib import Path

    from analytics.report import build_report, write_report
    from analytics.store import open_store

    if not analytics.startswith(("postgresql://", "postgres://")) and not Path(
            analytics.removeprefix("sqlite://")).exists():
        raise click.ClickException(f"no analytics database at {analytics} (serve writes one there by default)")
    store = open_store(analytics, Path("data"))
    try:
        store.migrate()
        shows = store.shows(room)
        if list_shows:
            for show_id, first, last in shows:
                click.echo(f"{show_id}  {time.strftime('%Y-%m-%d %H:%M', time.localtime(first / 1000))}"
                           f"  {round((last - first) / 60000)} min")
            return
        if not shows:
            raise click.ClickException(f"no show recorded for room {room!r}")
        chosen = show or shows[-1][0]
        if chosen not in {s for s, _, _ in shows}:
            raise click.ClickException(f"room {room!r} has no show {chosen!r} (see --list)")
        data = build_report(store.events(room, chosen))
    finally:
        store.close()
    if out_dir:
        for path in write_report(data, Path(out_dir)):
            click.echo(str(path))
    else:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@main.command()
@click.option("--room", required=True, help="Room name.")
@click.option("--user", required=True, help="User id (the token's subject).")
@click.option("--role", type=click.Choice([r.value for r in Role]), default="viewer")
@click.option("--ttl", default=3600.0, type=float, help="Seconds until the token expires.")
@click.option("--name", default=None, help="Display name.")
@click.option("--secret", required=True, envvar="LIVE_RELAY_SECRET", help="Token signing secret (the server's).")
def token(room: str, user: str, role: str, ttl: float, name: str | None, secret: str) -> None:
    """Print a signed token for a room (its id, for `live-relay revoke --token-id`, is its jti claim)."""
    from protocol import ProtocolError, issue_token, validate_room_name

    try:
        validate_room_name(room)
    except ProtocolError as exc:
        raise click.BadParameter(exc.message, param_hint="--room") from None
    click.echo(issue_token(check_secret(secret), room, user, Role(role), ttl, name))


@main.command()
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, help="Any node of the deployment.")
@click.option("--room", required=True, help="The room whose tokens are revoked.")
@click.option("--token", "revoked_token", default=None, help="Revoke this one token.")
@click.option("--token-id", default=None, help="Revoke the token with this id (its jti).")
@click.option("--user", default=None, help="Revoke every token of this user for the room issued until now.")
@click.option("--all", "everyone", is_flag=True, help="Revoke every token of the room issued until now.")
@click.option("--secret", required=True, envvar="LIVE_RELAY_SECRET", help="Token signing secret (the server's).")
def revoke(url: str, room: str, revoked_token: str | None, token_id: str | None, user: str | None, everyone: bool,
           secret: str) -> None:
    """Revoke tokens on every node (a leaked token, a user who must go): refused from now on."""
    import asyncio as _asyncio

    from protocol import issue_admin_token

    given = {"token": revoked_token, "token_id": token_id, "user": user}
    chosen = {k: v for k, v in given.items() if v}
    if len(chosen) + everyone != 1:
        raise click.UsageError("say what to revoke: one of --token, --token-id, --user or --all")
    base = url.rstrip("/").replace("ws://", "http://", 1).replace("wss://", "https://", 1).removesuffix("/ws")
    if not base.startswith(("http://", "https://")):
        raise click.BadParameter(f"{url!r} is not an http:// or https:// URL", param_hint="--url")

    async def send() -> tuple[int, str]:
        import aiohttp

        admin = issue_admin_token(check_secret(secret))
        async with aiohttp.ClientSession() as http, http.post(
                f"{base}/api/admin/revoke", json={"room": room, **chosen},
                headers={"Authorization": f"Bearer {admin}"}, timeout=aiohttp.ClientTimeout(total=10)) as response:
            return response.status, await response.text()

    try:
        status, text = _asyncio.run(send())
    except OSError as exc:
        raise click.ClickException(f"cannot reach {base}: {exc.strerror or exc}") from None
    except TimeoutError:
        raise click.ClickException(f"{base} did not answer in 10 s") from None
    if status != 200:
        raise click.ClickException(f"the server refused ({status}): {text.strip()}")
    import json as _json

    click.echo(f"revoked {_json.loads(text)['revoked']} in room {room!r} on every node")


@main.command()
@click.option("--url", required=True, help="The server: ws://HOST:PORT/ws (or http://HOST:PORT).")
@click.option("--room", required=True)
@click.option("--token", required=True, help="A host (or co-host) token for the room.")
@click.option("--source", default=None, type=click.Path(exists=True, dir_okay=False),
              help="A video file to publish (looped); default: a synthetic pattern.")
@click.option("--synthetic", is_flag=True, help="Publish the synthetic test pattern and tone (the default).")
@click.option("--products", "products_file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Product cards, YAML or JSON list.")
@click.option("--every", default=None, type=float, help="Push the next product every S seconds.")
@click.option("--duration", default=None, type=float, help="Stop after S seconds.")
def host(url: str, room: str, token: str, source: str | None, synthetic: bool, products_file: str | None,
         every: float | None, duration: float | None) -> None:
    """Go live: publish video and audio, push product cards, see comments and stage requests."""
    import uvloop

    from cli.apps import load_products, run_host
    from cli.errors import friendly_errors, websocket_url

    url = websocket_url(url)
    products = load_products(products_file) if products_file else []
    with friendly_errors(url, room, needs_publisher=True):
        uvloop.run(run_host(url, room, token, None if synthetic else source, products, every, duration))


@main.command()
@click.option("--url", required=True, help="The server: ws://HOST:PORT/ws (or http://HOST:PORT).")
@click.option("--room", required=True)
@click.option("--token", required=True, help="A host token for the room.")
@click.option("--catalog", "catalog_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="YAML or JSON: products (cards: id, title, price, currency, url, image, stock) and an optional faq.")
@click.option("--dwell", default=20.0, type=click.FloatRange(2, 3600), show_default=True,
              help="Seconds each product stays on screen (longer while its narration lasts).")
@click.option("--duration", default=None, type=float, help="Stop after S seconds (default: until stopped).")
def autohost(url: str, room: str, token: str, catalog_file: str, dwell: float, duration: float | None) -> None:
    """Keep a room on air with nobody in front of a camera: the products one after another (a slide, its card,
    narrated aloud), viewers' questions answered aloud and in the comments; pauses while a person publishes."""
    from pathlib import Path

    import uvloop

    from assistant.catalog import CatalogError, parse_catalog
    from cli.apps import load_products
    from cli.autohost import AutoHost
    from cli.errors import friendly_errors, websocket_url
    from protocol import ProtocolError, validate_product

    url = websocket_url(url)
    try:
        products = [validate_product(p) for p in load_products(catalog_file)]
        fmt = "json" if catalog_file.endswith(".json") else "yaml"
        catalog = parse_catalog(Path(catalog_file).read_text(encoding="utf-8"), fmt)
    except ProtocolError as exc:
        raise click.ClickException(f"{catalog_file}: {exc.message}") from None
    except CatalogError as exc:
        raise click.ClickException(f"{catalog_file}: {exc}") from None
    if not products:
        raise click.ClickException(f"{catalog_file}: no products to show")
    with friendly_errors(url, room, needs_publisher=True):
        uvloop.run(AutoHost(url, room, token, products, catalog, dwell).run(duration))


@main.command()
@click.option("--url", required=True, help="The server: ws://HOST:PORT/ws (or http://HOST:PORT).")
@click.option("--room", required=True)
@click.option("--token", default=None,
              help="A viewer token: lines typed then are sent as comments. Anonymous (watch only) without.")
@click.option("--record", default=None, help="Save the received video here (.webm for VP8, .mkv for H.264) as is.")
@click.option("--duration", default=None, type=float, help="Stop after S seconds.")
def view(url: str, room: str, token: str | None, record: str | None, duration: float | None) -> None:
    """Watch: print comments, product cards and live latency figures; optionally record."""
    import uvloop

    from cli.apps import run_view
    from cli.errors import friendly_errors, websocket_url

    url = websocket_url(url)
    with friendly_errors(url, room):
        stats = uvloop.run(run_view(url, room, token, record, duration))
    click.echo(f"frames {stats['frames']}, freezes {stats['freezes']}, messages {stats['messages']}"
               + (f", recorded {stats.get('recorded_frames', 0)} frames to {record}" if record else ""))


@main.command()
@click.option("--listen", "listens", multiple=True, default=["rtmp://0.0.0.0:1935/live"], show_default=True,
              help="Where encoders push, once per door: rtmp://HOST:PORT/APP (OBS: Server rtmp://HOST:1935/live, "
                   "Stream Key: a host token) or srt://HOST:PORT (streamid: a host token; add ?passphrase=... "
                   "to encrypt).")
@click.option("--url", required=True, help="The server: ws://HOST:PORT/ws (or http://HOST:PORT).")
@click.option("--max-streams", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Encoders on air at once; more are refused at the door.")
def ingest(listens: tuple[str, ...], url: str, max_streams: int) -> None:
    """Relay encoders' RTMP or SRT pushes (OBS, vMix, hardware encoders, Larix) into rooms: each encoder's
    stream key (SRT: streamid) is a host token, and its room is the token's. H.264 as sent, AAC as Opus."""
    import uvloop

    from cli.apps import run_ingest_bridge
    from cli.errors import friendly_errors, websocket_url
    from clients.ingest import IngestError
    from clients.ingest_doors import rtmp_door_address, srt_listener_url

    for listen in listens:
        try:
            if listen.startswith("srt://"):
                srt_listener_url(listen)
            elif listen.startswith("rtmp://"):
                rtmp_door_address(listen)
            else:
                raise IngestError(f"{listen!r} is not an rtmp:// or srt:// address to listen at")
        except IngestError as exc:
            raise click.BadParameter(str(exc), param_hint="--listen") from None
    url = websocket_url(url)
    with friendly_errors(url, ""):
        try:
            relayed = uvloop.run(run_ingest_bridge(list(listens), url, max_streams=max_streams))
        except IngestError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"relayed {relayed} stream(s)")


@main.command()
@click.option("--url", required=True, help="The server: ws://HOST:PORT/ws (or http://HOST:PORT).")
@click.option("--room", required=True)
@click.option("--token", required=True, help="A token for the call's room.")
@click.option("--duration", default=None, type=float, help="Hang up after S seconds.")
def call(url: str, room: str, token: str, duration: float | None) -> None:
    """One side of a 1v1 call: publish, see the other side, print set-up time and latency."""
    import uvloop

    from cli.apps import run_call
    from cli.errors import friendly_errors, websocket_url

    url = websocket_url(url)
    with friendly_errors(url, room, needs_publisher=True):
        result = uvloop.run(run_call(url, room, token, duration))
    click.echo(f"call over: set-up {result['setup_ms']:.0f} ms, {result['frames']} frames")


MIN_SECRET_BYTES = 32


def check_secret(secret: str) -> str:
    """HS256 secrets shorter than 32 bytes can be guessed offline from any one token: refuse them."""
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise click.BadParameter(f"must be at least {MIN_SECRET_BYTES} bytes (e.g. $(openssl rand -hex 32))",
                                 param_hint="--secret")
    return secret


class LazyGroup(click.Group):
    """A group whose commands are imported when used (click's documented lazy-loading pattern): listing
    them or running `live-relay token` does not load aiortc, av or numpy."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy  # command name -> "module:attribute"

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, _, attribute = self.lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            _show_envvars(command)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@main.group(cls=LazyGroup, lazy={
    "chat": "loadtest.chat:chat_command", "baseline-server": "loadtest.baseline:baseline_command",
    "media": "loadtest.media:media_command", "call": "loadtest.media:call_command",
    "scenes": "loadtest.scenes:scenes_command", "joins": "loadtest.joins:joins_command",
    "season": "loadtest.season:season_command"})
def loadtest() -> None:
    """Load tests against a running server."""



def _show_envvars(command: click.Command) -> None:
    """`--help` names each flag's environment variable (LIVE_RELAY_<COMMAND>_<FLAG>), as the README says."""
    for param in command.params:
        if isinstance(param, click.Option):
            param.show_envvar = True
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _show_envvars(sub)


_show_envvars(main)

if __name__ == "__main__":
    sys.exit(main())
