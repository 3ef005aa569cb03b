"""The doors encoders push at, each a real server the bridge runs and listens to, never a protocol written here:

- ``RtmpDoor``: nginx with its RTMP module (Debian's libnginx-mod-rtmp; the module SRS's and MediaMTX's users
  know from before them). Encoders publish to ``rtmp://HOST:PORT/APP/KEY``; nginx asks the bridge over HTTP
  (``on_publish``) whether KEY may, and refuses the encoder unless the bridge says 200. An admitted stream is
  read back from nginx on loopback (playback from anywhere else is denied), and nginx's control endpoint
  drops an encoder whose stream the bridge cannot relay or whose token the server took back.
- ``SrtDoor``: GStreamer's SRT listener in a process of its own (``clients/srt_gate.py``, run by the system's
  python3), which asks the bridge about each caller's streamid during SRT's handshake and then hands the
  MPEG-TS over a pipe. One encoder at a time per SRT port (a port per room that goes live at once).

Both refuse at the door, before any media flows, an encoder whose key the server does not take as a host or
co-host token of its room; what was refused and why is said in the bridge's log, never the key.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
from aiohttp import web

from clients.ingest import IngestBridge, IngestError, IngestSession

NGINX_RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")  # Debian's libnginx-mod-rtmp
START_TIMEOUT = 10.0  # seconds a door's server has to start listening
HANDSHAKE_TIMEOUT = 5.0  # seconds an SRT caller let in by its streamid has to finish the handshake
_APP_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _die_with_parent() -> None:
    """In a door's child, before it runs: end it when the bridge ends, however it ends (Linux's
    PR_SET_PDEATHSIG), so no nginx or listener outlives the bridge holding its port."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rtmp_door_address(listen: str) -> tuple[str, int, str]:
    """``rtmp://HOST[:PORT]/APP`` as (host, port, app). Raises IngestError, in a line saying what is wrong."""
    parts = urlsplit(listen)
    try:
        port = parts.port or 1935
    except ValueError:
        port = None
    app = parts.path.strip("/")
    if parts.scheme != "rtmp" or not parts.hostname or port is None:
        raise IngestError(f"{listen!r} is not an rtmp://HOST:PORT/APP address to listen at")
    if "/" in app:
        raise IngestError(f"{listen!r}: listen at rtmp://HOST:PORT/{app.split('/')[0]} (no stream key: each "
                          "encoder's stream key is its own host token)")
    if not _APP_RE.fullmatch(app):
        raise IngestError(f"{listen!r}: name the application, as in rtmp://HOST:PORT/live")
    return parts.hostname, port, app


def srt_listener_url(listen: str) -> str:
    """``srt://HOST:PORT?opts`` as GStreamer's SRT listener: ``mode=listener`` added, the operator's own
    options (``passphrase``, ``latency`` in milliseconds) kept. Raises IngestError for what is wrong."""
    parts = urlsplit(listen)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "srt" or not parts.hostname or port is None:
        raise IngestError(f"{listen!r} is not an srt://HOST:PORT address to listen at")
    options = dict(parse_qsl(parts.query))
    if "passphrase" in options and not 10 <= len(options["passphrase"]) <= 79:  # libsrt refuses others
        raise IngestError("an SRT passphrase is 10 to 79 characters long")
    if "streamid" in options:
        raise IngestError("the streamid is each encoder's own (its host token): leave it out of --listen")
    options["mode"] = "listener"
    return f"srt://{parts.hostname}:{port}?{urlencode(options)}"


class _LastLines:
    """A child's log read as it comes by a thread (a flood of lines never fills the pipe and stalls it),
    keeping the last few; ``on_line`` sees each."""

    def __init__(self, stream: Any, on_line: Any = None) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=6)
        self._on_line = on_line
        threading.Thread(target=self._read, args=(stream,), name="door-log", daemon=True).start()

    def _read(self, stream: Any) -> None:
        with stream:
            for raw in stream:
                line = raw.decode(errors="replace").strip()
                self.lines.append(line)
                if self._on_line is not None:
                    self._on_line(line)

    def last(self, default: str, rather: str = "") -> str:
        """The last line (one containing ``rather``, if any does), or ``default`` when there is none."""
        lines = [line for line in self.lines if line]
        return next((line for line in reversed(lines) if rather and rather in line), lines[-1] if lines else default)


class RtmpDoor:
    """nginx's RTMP module at ``rtmp://HOST:PORT/APP``: one nginx process, as many encoders as the bridge
    admits. ``open`` starts it (IngestError when it cannot listen), ``wait`` returns when it stops, ``close``
    stops it."""

    def __init__(self, listen: str, bridge: IngestBridge) -> None:
        self.listen = listen
        self.host, self.port, self.app = rtmp_door_address(listen)
        self._bridge = bridge
        self._dir = tempfile.TemporaryDirectory(prefix="live-relay-rtmp-")
        self._pull_port = self._control_port = 0
        self._nginx: subprocess.Popen[bytes] | None = None
        self._log: _LastLines | None = None
        self._hooks: web.AppRunner | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self._reading: dict[str, asyncio.Event] = {}  # admitted keys whose stream the bridge plays back

    async def open(self) -> None:
        hooks = web.Application(client_max_size=64 * 1024)
        hooks.router.add_post("/publish", self._on_publish)
        hooks.router.add_post("/publish_done", self._on_publish_done)
        hooks.router.add_post("/play", self._on_play)
        self._hooks = web.AppRunner(hooks, access_log=None)
        await self._hooks.setup()
        site = web.TCPSite(self._hooks, "127.0.0.1", 0)
        await site.start()
        hook_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._pull_port, self._control_port = _free_loopback_port(), _free_loopback_port()
        self._start_nginx(hook_port)
        await self._until_listening()

    def _start_nginx(self, hook_port: int) -> None:
        nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
        if nginx is None or not NGINX_RTMP_MODULE.exists():
            raise IngestError("RTMP ingest needs nginx with its RTMP module "
                              "(Debian: apt install nginx-light libnginx-mod-rtmp)")
        conf = Path(self._dir.name) / "nginx.conf"
        conf.write_text(self._config(hook_port))
        self._nginx = subprocess.Popen([nginx, "-p", self._dir.name, "-c", str(conf), "-e", "stderr"],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                       preexec_fn=_die_with_parent)
        self._log = _LastLines(self._nginx.stderr)

    @property
    def _pid_file(self) -> Path:
        return Path(self._dir.name) / "nginx.pid"

    def _config(self, hook_port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        temp = Path(self._dir.name)
        # One process (no master): the bridge is its supervisor. Playback only from loopback, where the
        # bridge reads admitted streams back; publishers idle 10 s are dropped; no access log (it would hold
        # the stream keys, which are tokens).
        return f"""load_module {NGINX_RTMP_MODULE};
daemon off;
master_process off;
worker_processes 1;
pid {self._pid_file};
error_log stderr warn;
events {{ worker_connections 512; }}
rtmp {{
    access_log off;
    server {{
        listen {host}:{self.port};
        listen 127.0.0.1:{self._pull_port};
        application {self.app} {{
            live on;
            record off;
            drop_idle_publisher 10s;
            on_publish http://127.0.0.1:{hook_port}/publish;
            on_publish_done http://127.0.0.1:{hook_port}/publish_done;
            on_play http://127.0.0.1:{hook_port}/play;
            allow play 127.0.0.1;
            deny play all;
        }}
    }}
}}
http {{
    access_log off;
    client_body_temp_path {temp / "body"};
    proxy_temp_path {temp / "proxy"};
    server {{
        listen 127.0.0.1:{self._control_port};
        location /control {{ rtmp_control all; }}
    }}
}}
"""

    async def _until_listening(self) -> None:
        assert self._nginx is not None and self._log is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while loop.time() < deadline:
            if self._nginx.poll() is not None:
                await asyncio.sleep(0.1)  # its last line read
                raise IngestError(f"nginx could not listen at {self.listen}: "
                                  f"{self._log.last(f'exited with {self._nginx.returncode}', rather='failed')}")
            # nginx writes its pid file once every listening socket is bound (it retries a busy port for a
            # few seconds first, holding the others meanwhile: one of them answering proves nothing).
            if self._pid_file.exists():
                return
            await asyncio.sleep(0.05)
        raise IngestError(f"nginx did not start listening at {self.listen} in {START_TIMEOUT:g} s")

    async def _on_publish(self, request: web.Request) -> web.Response:
        form = await request.post()
        key, address = str(form.get("name", "")), str(form.get("addr", ""))
        if str(form.get("app", "")) != self.app:
            return web.Response(status=403)
        refused = await self._bridge.admit(key, address)
        if refused is not None:
            self._bridge.say(f"refused an encoder from {address} at {self.listen}: {refused}")
            return web.Response(status=403)
        # The encoder is let in once the bridge plays its stream back: it then gets the stream from its
        # first packet (codec headers, first keyframe), which nginx keeps for nobody joining later.
        reading = self._reading[key] = asyncio.Event()
        relay = asyncio.create_task(self._relay(key))
        self._relays.add(relay)
        relay.add_done_callback(self._relays.discard)
        playing = asyncio.ensure_future(reading.wait())
        await asyncio.wait({playing, relay}, timeout=START_TIMEOUT / 2, return_when=asyncio.FIRST_COMPLETED)
        playing.cancel()
        return web.Response(status=403 if relay.done() else 200)  # done already: it could not read the stream

    async def _on_play(self, request: web.Request) -> web.Response:
        form = await request.post()
        reading = self._reading.pop(str(form.get("name", "")), None)
        if reading is not None:
            reading.set()
        return web.Response(status=200)

    async def _on_publish_done(self, request: web.Request) -> web.Response:
        form = await request.post()
        self._bridge.end(str(form.get("name", "")))
        return web.Response(status=200)

    async def _relay(self, key: str) -> None:
        source = f"rtmp://127.0.0.1:{self._pull_port}/{self.app}/{key}"
        session = IngestSession(source, asyncio.get_running_loop(), options={"rtmp_live": "live"})
        try:
            await self._bridge.relay(key, session)
        finally:
            self._reading.pop(key, None)
        await self._drop(key)

    async def _drop(self, key: str) -> None:
        """Let the encoder go (nginx's control endpoint): one that stopped is gone already."""
        url = f"http://127.0.0.1:{self._control_port}/control/drop/publisher"
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with aiohttp.ClientSession() as http, http.get(
                    url, params={"app": self.app, "name": key}, timeout=aiohttp.ClientTimeout(total=3)):
                pass

    async def wait(self) -> None:
        """Until nginx stops (IngestError saying why)."""
        assert self._nginx is not None and self._log is not None
        await asyncio.to_thread(self._nginx.wait)
        raise IngestError(f"nginx stopped: {self._log.last(f'exited with {self._nginx.returncode}')}")

    async def close(self) -> None:
        for relay in list(self._relays):
            relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._relays, return_exceptions=True)
        if self._nginx is not None and self._nginx.poll() is None:
            self._nginx.terminate()
            try:
                await asyncio.to_thread(self._nginx.wait, 5)
            except subprocess.TimeoutExpired:
                self._nginx.kill()
        if self._hooks is not None:
            await self._hooks.cleanup()
        self._dir.cleanup()


class SrtDoor:
    """GStreamer's SRT listener at ``srt://HOST:PORT``, a process per encoder session (``srt_gate.py``):
    callers knock with their streamid, the bridge answers, the admitted one's MPEG-TS is relayed; then the
    next process listens."""

    def __init__(self, listen: str, bridge: IngestBridge) -> None:
        self.listen = listen
        self.uri = srt_listener_url(listen)
        self._bridge = bridge
        self._python = shutil.which("python3", path="/usr/bin:/usr/local/bin") or "python3"
        self._opened = asyncio.Event()
        self._serving: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Start listening: the first listener process up (IngestError when it cannot)."""
        serving = self._serving = asyncio.create_task(self._serve())
        opened = asyncio.ensure_future(self._opened.wait())
        await asyncio.wait({opened, serving}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        opened.cancel()
        if serving.done():
            serving.result()  # its IngestError
        if not self._opened.is_set():
            raise IngestError(f"GStreamer's SRT listener did not start at {self.listen} in {START_TIMEOUT:g} s")

    async def wait(self) -> None:
        assert self._serving is not None, "open() first"
        await self._serving

    async def close(self) -> None:
        """Stop listening (a door never opened, because another failed first, has nothing to stop)."""
        if self._serving is None:
            return
        self._serving.cancel()
        with contextlib.suppress(asyncio.CancelledError, IngestError):
            await self._serving

    async def _serve(self) -> None:
        while True:
            await self._one_session()

    def _start_gate(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([self._python, str(Path(__file__).with_name("srt_gate.py")), self.uri],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=_die_with_parent)

    async def _one_session(self) -> None:
        """One listener process: its callers judged until one is admitted, that one relayed to its end."""
        loop = asyncio.get_running_loop()
        said: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        def heard(line: str) -> None:
            if line.startswith("{"):
                with contextlib.suppress(ValueError, RuntimeError):
                    loop.call_soon_threadsafe(said.put_nowait, json.loads(line))

        gate = self._start_gate()
        assert gate.stdin is not None and gate.stdout is not None
        log = _LastLines(gate.stderr, heard)

        def watch_exit() -> None:
            gate.wait()
            heard('{"exited": true}')

        threading.Thread(target=watch_exit, name="srt-gate-exit", daemon=True).start()
        waiting: str | None = None  # a key admitted whose caller has not finished SRT's handshake yet
        try:
            while True:
                try:
                    message = await asyncio.wait_for(said.get(), HANDSHAKE_TIMEOUT if waiting else None)
                except TimeoutError:
                    await self._bridge.release(waiting or "")
                    waiting = None
                    continue
                if message is None or "exited" in message:
                    if not self._opened.is_set():
                        raise IngestError(f"GStreamer's SRT listener could not start at {self.listen}: "
                                          f"{log.last('it exited')} (Debian: apt install python3-gi "
                                          "gir1.2-gstreamer-1.0 gstreamer1.0-plugins-bad)")
                    return
                if "error" in message:
                    raise IngestError(f"SRT listener at {self.listen}: {message['error']}")
                if "listening" in message:
                    self._opened.set()
                    continue
                if "added" in message and waiting is not None:  # the admitted caller is through: relay it
                    # The pipe is closed by the thread reading it, once it is done with it.
                    session = IngestSession(f"pipe:{gate.stdout.fileno()}", loop, form="mpegts",
                                            on_release=gate.stdout.close)
                    key, waiting = waiting, None
                    await self._bridge.relay(key, session)
                    return
                if "caller" not in message:
                    continue
                if waiting is not None:  # the one let in before never finished its handshake
                    await self._bridge.release(waiting)
                    waiting = None
                key, address = str(message["caller"]), str(message.get("address", ""))
                refused = await self._bridge.admit(key, address)
                gate.stdin.write(b"no\n" if refused else b"yes\n")
                gate.stdin.flush()
                if refused is not None:
                    self._bridge.say(f"refused an encoder from {address} at {self.listen}: {refused}")
                else:
                    waiting = key
        finally:
            if waiting is not None:
                await self._bridge.release(waiting)
            if gate.poll() is None:
                gate.kill()
            await asyncio.to_thread(gate.wait)
            with contextlib.suppress(OSError):
                gate.stdin.close()


def open_door(listen: str, bridge: IngestBridge) -> RtmpDoor | SrtDoor:
    """The door for an ``rtmp://`` or ``srt://`` address (IngestError for anything else)."""
    if listen.startswith("rtmp://"):
        return RtmpDoor(listen, bridge)
    if listen.startswith("srt://"):
        return SrtDoor(listen, bridge)
    raise IngestError(f"{listen!r} is not an rtmp:// or srt:// address to listen at")

