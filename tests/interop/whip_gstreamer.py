"""A WHIP publisher on GStreamer's webrtcbin (Debian's gstreamer1.0-plugins-bad, through the system's python3-gi:
Debian 12 has no whipclientsink, so this does the HTTP exchange webrtcbin leaves to its application).

    python3 whip_gstreamer.py URL TOKEN SESSIONS SECONDS

Each session: a live test picture, VP8 (vp8enc, realtime) and Opus, one bundled offer with every candidate
gathered before the POST, the answer applied, SECONDS of media once connected, DELETE. Sessions run one after
another. Prints one JSON line: each session's outcome ("connected", or the state or HTTP error it ended in).
Runs under the system's python3 (Debian's GObject bindings), not the project's virtualenv.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

PIPELINE = (
    "webrtcbin name=peer bundle-policy=max-bundle "
    "videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 ! videoconvert ! "
    "vp8enc deadline=1 target-bitrate=800000 keyframe-max-dist=60 ! rtpvp8pay pt=96 ! "
    "application/x-rtp,media=video,encoding-name=VP8,payload=96 ! peer. "
    "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! opusenc ! rtpopuspay pt=111 ! "
    "application/x-rtp,media=audio,encoding-name=OPUS,payload=111 ! peer."
)


def _http(method: str, url: str, token: str, body: bytes | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, data=body, method=method, headers={
        "Authorization": f"Bearer {token}", **({"Content-Type": "application/sdp"} if body else {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def one_session(url: str, token: str, seconds: float) -> dict[str, object]:
    pipeline = Gst.parse_launch(PIPELINE)
    peer = pipeline.get_by_name("peer")
    loop = GLib.MainLoop()
    result: dict[str, object] = {"outcome": "timeout"}
    location: list[str] = []

    def finish(outcome: str) -> None:
        if result["outcome"] == "timeout":
            result["outcome"] = outcome
        if outcome == "connected":
            GLib.timeout_add(int(seconds * 1000), loop.quit)
        else:
            loop.quit()

    def on_state(element: Gst.Element, _spec: object) -> None:
        state = element.get_property("connection-state")
        if state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED:
            finish("connected")
        elif state in (GstWebRTC.WebRTCPeerConnectionState.FAILED, GstWebRTC.WebRTCPeerConnectionState.CLOSED):
            finish(f"state {state.value_nick}")

    def post_offer() -> bool:
        offer = peer.get_property("local-description").sdp.as_text()
        status, headers, body = _http("POST", url, token, offer.encode())
        if status != 201:
            finish(f"http {status}: {body.strip()[:160]}")
            return False
        location.append(urllib.request.urljoin(url, headers.get("Location", "")))
        _, sdp = GstSdp.SDPMessage.new_from_text(body)
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        peer.emit("set-remote-description", answer, Gst.Promise.new())
        return False

    def on_gathering(element: Gst.Element, _spec: object) -> None:
        if element.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE \
                and not location:
            GLib.idle_add(post_offer)

    def on_offer(promise: Gst.Promise) -> None:
        reply = promise.get_reply()
        if reply is None or not reply.has_field("offer"):
            finish(f"no offer: {reply.to_string() if reply is not None else 'none'}")
            return
        peer.emit("set-local-description", reply.get_value("offer"), Gst.Promise.new())

    def on_negotiation_needed(element: Gst.Element) -> None:
        element.emit("create-offer", None, Gst.Promise.new_with_change_func(on_offer))

    peer.connect("on-negotiation-needed", on_negotiation_needed)
    peer.connect("notify::ice-gathering-state", on_gathering)
    peer.connect("notify::connection-state", on_state)
    pipeline.set_state(Gst.State.PLAYING)
    GLib.timeout_add(20000, lambda: (finish("timeout"), False)[1])
    loop.run()
    if location:
        _http("DELETE", location[0], token)
    pipeline.set_state(Gst.State.NULL)
    return result


def main() -> None:
    Gst.init(None)
    url, token, sessions, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    results = [one_session(url, token, seconds) for _ in range(sessions)]
    print(json.dumps({"results": results}), flush=True)


if __name__ == "__main__":
    main()
