"""The SRT door's listener process: GStreamer's ``srtsrc`` listening for one encoder, whose streamid the bridge
judges before SRT's handshake completes, and whose MPEG-TS it then copies, untouched, to standard output.

Run by the system's python3 (Debian's GObject bindings and GStreamer: neither is on PyPI), not the bridge's:
    python3 srt_gate.py 'srt://HOST:PORT?mode=listener[&passphrase=...][&latency=MS]'
It speaks JSON lines on standard error (libsrt's own log lines go there too; the bridge reads only lines
that start with ``{``): ``{"listening": ...}``, then ``{"caller": STREAMID, "address": ...}`` for each
encoder knocking, answered by a line ``yes`` or ``no`` on standard input, ``{"added": true}`` once one let in
has completed SRT's handshake (a wrong passphrase fails it after the streamid was judged); ``{"error": ...}``
when it cannot go on. It exits when its admitted encoder leaves: one process per encoder session.

libsrt's own listener callback (which ``caller-connecting`` is) is the only place a streamid can be refused
at the handshake; FFmpeg's SRT listener has none, hence GStreamer here.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def say(message: dict[str, Any]) -> None:
    sys.stderr.write(json.dumps(message) + "\n")
    sys.stderr.flush()


def main(uri: str) -> int:
    try:
        import gi

        gi.require_version("Gst", "1.0")
        from gi.repository import Gio, GLib, Gst  # noqa: F401  (Gio: socket addresses' methods)
    except (ImportError, ValueError) as exc:
        say({"error": f"GStreamer's Python bindings are missing ({exc})"})
        return 2
    Gst.init(None)
    if Gst.ElementFactory.find("srtsrc") is None:
        say({"error": "GStreamer's SRT plugin is missing"})
        return 2
    pipeline = Gst.parse_launch("srtsrc name=door authentication=true ! fdsink fd=1 sync=false")
    door = pipeline.get_by_name("door")
    door.set_property("uri", uri)
    loop = GLib.MainLoop()
    connected: list[bool] = []

    def knocking(_element: Any, address: Any, streamid: str | None) -> bool:
        if connected:  # one encoder per process; the next one knocks at the next process
            return False
        say({"caller": streamid or "", "address": f"{address.get_address().to_string()}:{address.get_port()}"})
        return sys.stdin.readline().strip() == "yes"

    def added(*_: Any) -> None:
        # The handshake completed: a caller let in by its streamid can still fail SRT's encryption after.
        connected.append(True)
        say({"added": True})

    def removed(*_: Any) -> None:
        if connected:
            loop.quit()

    def message(_bus: Any, msg: Any) -> None:
        if msg.type == Gst.MessageType.ERROR:
            say({"error": msg.parse_error()[0].message})
            loop.quit()
        elif msg.type == Gst.MessageType.EOS:
            loop.quit()

    door.connect("caller-connecting", knocking)
    door.connect("caller-added", added)
    door.connect("caller-removed", removed)
    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", message)
    if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
        say({"error": f"cannot listen at {uri}"})
        return 1
    say({"listening": uri})
    try:
        loop.run()
    finally:
        pipeline.set_state(Gst.State.NULL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
