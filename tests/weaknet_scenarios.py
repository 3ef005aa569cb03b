"""Weak-network scenarios, run inside the server namespace of a ``tests.netlab.NetLab``:

    ip netns exec SERVER_NS python -m tests.weaknet_scenarios SCENARIO OUT_DIR SERVER_NS WEAK_NS SERVER_IF [--window S]

A live-relay server (on loopback and on the lab's private address), a host page and a control viewer page
in one headless Chromium on loopback, and the weak viewer's page in a second Chromium started inside the
weak namespace. Impairments go on the weak viewer's link only. Writes OUT_DIR/SCENARIO.json with what each
page's getStats said over each phase (the test and ``benchmarks/weaknet.py`` read it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from playwright.async_api import Page, async_playwright

from clients.client import LiveClient
from clients.media import MediaSession
from protocol import Role
from signaling.config import ServerConfig
from tests.browser_scenarios import CHROMIUM_ARGS, SECRET, WEB_ROOT, host_on_air, running, token, wait_for
from tests.netlab import SERVER_ADDRESS, NetLab


async def stats(page: Page) -> dict[str, Any]:
    return dict(await page.evaluate("window.liveRelay.mediaStats()"))


def delta(before: dict[str, Any], after: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What a page received over a phase: freezes, frozen share, audio concealed share, frame size at the end."""
    v0, v1, a0, a1 = before["video"], after["video"], before["audio"], after["audio"]
    samples = a1["totalSamplesReceived"] - a0["totalSamplesReceived"]
    video_packets = (v1["packetsReceived"] - v0["packetsReceived"]) + (v1["packetsLost"] - v0["packetsLost"])
    return {
        "seconds": round(seconds, 2),
        "frames": v1["framesDecoded"] - v0["framesDecoded"],
        "fps": round((v1["framesDecoded"] - v0["framesDecoded"]) / seconds, 1),
        "freezes": v1["freezeCount"] - v0["freezeCount"],
        "frozen_share": round((v1["totalFreezesDuration"] - v0["totalFreezesDuration"]) / seconds, 4),
        "audio_concealed": round((a1["concealedSamples"] - a0["concealedSamples"]) / samples, 4) if samples else None,
        "audio_samples": samples,
        "video_loss": round((v1["packetsLost"] - v0["packetsLost"]) / video_packets, 4) if video_packets else None,
        "nacks": v1["nackCount"] - v0["nackCount"],
        "frame_height": v1["frameHeight"],
    }


async def measure(pages: dict[str, Page], seconds: float) -> dict[str, Any]:
    before = {name: await stats(page) for name, page in pages.items()}
    started = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    return {name: delta(before[name], await stats(page), elapsed) for name, page in pages.items()}


def quality_of(relay: Any, user: str) -> dict[str, Any]:
    """The server's own view of one viewer's link (its /api/rooms/ROOM/quality entry)."""
    for entry in relay.media.router.quality("show"):
        if entry["user"] == user:
            return {t["kind"]: t for t in entry["tracks"]}
    return {}


async def loss(base: str, weak_base: str, browsers: dict[str, Any], relay: Any, lab: NetLab,
               window: float) -> dict[str, Any]:
    """Random loss towards the weak viewer, phase by phase: 0%, 10%, 25%."""
    host = await host_on_air(base, "show", browsers["local"])
    control = await viewer(base, browsers["local"], "control")
    weak = await viewer(weak_base, browsers["weak"], "weak")
    await asyncio.sleep(2)  # past the first keyframe and the first receiver reports
    result: dict[str, Any] = {"phases": {}}
    for percent in (0, 10, 25):
        lab.loss(percent) if percent else lab.clear_loss()
        await asyncio.sleep(2)  # the link's reports catch up with the new loss
        phase = await measure({"weak": weak, "control": control}, window)
        phase["server_view"] = quality_of(relay, "weak")
        result["phases"][str(percent)] = phase
    lab.clear_loss()
    await host.close()
    return result


async def capped_then_freed(weak: Page, relay: Any, lab: NetLab, users: tuple[str, ...], window: float,
                            samples: list[dict[str, Any]]) -> None:
    """3 s as it is, ``window`` s with the weak viewer's link capped at 400 kbit/s, ``window`` s freed; every
    0.25 s a row in ``samples``: each of ``users``' video as the server sees it, the published layers' rates,
    and the weak viewer's getStats."""
    started = time.monotonic()

    async def sample(phase: str, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            row = {"t": round(time.monotonic() - started, 2), "phase": phase,
                   "weak_stats": (await stats(weak))["video"]}
            for user in users:
                video = quality_of(relay, user).get("video", {})
                row[user] = {k: video.get(k) for k in ("layer", "target_layer", "estimate_bps", "loss", "probe_bps")}
            row["rates"] = [round(r or 0) for r in video_track(relay).layer_rates()]
            samples.append(row)
            await asyncio.sleep(0.25)

    await sample("before", 3)
    lab.cap(400)
    await sample("capped", window)
    lab.uncap()
    await sample("freed", window)


async def cap(base: str, weak_base: str, browsers: dict[str, Any], relay: Any, lab: NetLab,
              window: float, query: str = "") -> dict[str, Any]:
    """A simulcast host (about 1.5 Mbit/s on its top layer); the weak viewer's link capped at 400 kbit/s
    for ``window`` seconds, then freed for ``window`` seconds; two control viewers on loopback throughout.
    Sampled every 0.25 s: each viewer's layer (the server's view) and the weak viewer's getStats."""
    host = await host_on_air(base, "show", browsers["local"], query)
    controls = [await viewer(base, browsers["local"], f"control{n}") for n in (1, 2)]
    weak = await viewer(weak_base, browsers["weak"], "weak")
    top = None
    for _ in range(60):  # until every viewer forwards the top layer (the host's encoder ramps up first)
        layers = {u: quality_of(relay, u).get("video", {}) for u in ("weak", "control1", "control2")}
        top = next(iter(layers.values())).get("layers")
        if top and all(v.get("layer") == top - 1 for v in layers.values()):
            break
        await asyncio.sleep(0.5)
    result: dict[str, Any] = {"layers": top, "samples": []}
    # Freezes from here on: the start (the host's encoder adding its layers as its estimate grows) is not
    # what is measured.
    control_freezes_before = [(await stats(c))["video"]["freezeCount"] for c in controls]
    await capped_then_freed(weak, relay, lab, ("weak", "control1", "control2"), window, result["samples"])
    result["control_freezes"] = [(await stats(c))["video"]["freezeCount"] - before
                                 for c, before in zip(controls, control_freezes_before, strict=True)]
    coming = [i for i, rate in enumerate(video_track(relay).layer_rates()) if rate is not None]
    result["preferences"] = await preferences(base, relay, coming[-1] + 1 if coming else top)
    result["codec"] = video_track(relay).codec_name
    await host.close()
    return result


async def h264_cap(base: str, weak_base: str, browsers: dict[str, Any], relay: Any, lab: NetLab,
                   window: float) -> dict[str, Any]:
    """``cap`` with the host's simulcast layers in H.264 (the page's ``video=h264``, as OBS sends them)."""
    return await cap(base, weak_base, browsers, relay, lab, window, "&video=h264")


async def svc_cap(base: str, weak_base: str, browsers: dict[str, Any], relay: Any, lab: NetLab,
                  window: float) -> dict[str, Any]:
    """A host sending one VP9 stream of three spatial layers (the page's ``video=svc``); the weak viewer's
    link capped at 400 kbit/s for ``window`` seconds, then freed; a control viewer on loopback throughout.
    Sampled every 0.25 s: each viewer's spatial layer (the server's view) and the weak viewer's getStats."""
    host = await host_on_air(base, "show", browsers["local"], "&video=svc")
    control = await viewer(base, browsers["local"], "control1")
    weak = await viewer(weak_base, browsers["weak"], "weak")
    track = video_track(relay)
    for _ in range(60):  # until both forward the top spatial layer (the host's encoder ramps up first)
        layers = {u: quality_of(relay, u).get("video", {}) for u in ("weak", "control1")}
        if track.svc and all(v.get("layer") == track.layer_count - 1 for v in layers.values()):
            break
        await asyncio.sleep(0.5)
    sent = await host.evaluate("""(async () => {
        let out = null; const s = await window.liveRelay.publisher.pc.getStats();
        s.forEach(x => { if (x.type === 'outbound-rtp' && x.kind === 'video') out = [x.codecId, x.scalabilityMode];
        }); if (out) { s.forEach(x => { if (x.id === out[0]) out[0] = x.mimeType; }); } return out; })()""")
    result: dict[str, Any] = {"host_sends": sent, "svc": track.svc, "layers": track.layer_count,
                              "codec": track.codec_name, "samples": []}
    control_freezes_before = (await stats(control))["video"]["freezeCount"]
    await capped_then_freed(weak, relay, lab, ("weak", "control1"), window, result["samples"])
    result["control_freezes"] = (await stats(control))["video"]["freezeCount"] - control_freezes_before
    ws = base.replace("http", "ws") + "/ws"
    async with LiveClient(ws, "show", token("show", "py", Role.VIEWER, "Py")) as client:
        try:  # aiortc cannot decode VP9: its offer has none, and it is told so
            await MediaSession.subscribe(client)
            result["python_viewer"] = "accepted"
        except Exception as exc:
            result["python_viewer"] = str(exc)
    await host.close()
    return result


async def thin(base: str, weak_base: str, browsers: dict[str, Any], relay: Any, lab: NetLab,
               window: float) -> dict[str, Any]:
    """A simulcast host and the weak viewer on ever thinner links: 150 kbit/s (under the lowest layer with
    its sound), 96 kbit/s (room for the sound alone), then free again. Sampled every 0.25 s: the server's
    view of the weak viewer (layer, temporal layer, paused) and the page's video frames and audio samples."""
    host = await host_on_air(base, "show", browsers["local"])
    weak = await viewer(weak_base, browsers["weak"], "weak")
    await asyncio.sleep(3)
    result: dict[str, Any] = {"samples": []}
    started = time.monotonic()

    async def sample(phase: str, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            page = await stats(weak)
            video = quality_of(relay, "weak").get("video", {})
            result["samples"].append({
                "t": round(time.monotonic() - started, 2), "phase": phase,
                "frames": page["video"]["framesDecoded"], "audio_samples": page["audio"]["totalSamplesReceived"],
                "concealed": page["audio"]["concealedSamples"], "height": page["video"]["frameHeight"],
                **{k: video.get(k) for k in ("layer", "target_layer", "temporal", "estimate_bps", "loss")}})
            await asyncio.sleep(0.25)

    await sample("before", 2)
    lab.cap(150)
    await sample("thin", window)
    lab.cap(96)
    await sample("thinner", window)
    lab.uncap()
    await sample("freed", window)
    await host.close()
    return result


async def three_tiles(base: str, weak_base: str, browsers: dict[str, Any], relay: Any, lab: NetLab,
                      window: float) -> dict[str, Any]:
    """The host and two co-hosts, each a page sending three simulcast layers; the weak viewer watches all three
    tiles on its one connection, its link capped at 600 kbit/s for ``window`` seconds, then freed. Sampled
    every 0.5 s: each of its videos as the server sees it (layer, paused, share) and each tile's getStats."""
    host = await host_on_air(base, "show", browsers["local"])
    cohosts = []
    for user in ("co1", "co2"):  # each raises its hand, the host accepts, its page goes live on the grant
        page = await browsers["local"].new_page()
        await page.goto(f"{base}/?view=viewer&room=show&token={token('show', user, Role.VIEWER, user.title())}")
        await wait_for(page, "window.liveRelay.channel && window.liveRelay.channel.joined")
        await page.click("#raise-hand")
        await host.wait_for_selector("#requests li button", timeout=20000)
        await host.click("#requests li button >> text=Accept")
        await wait_for(page, "window.liveRelay.publisher && window.liveRelay.publisher.mediaId")
        cohosts.append(page)
    weak = await viewer(weak_base, browsers["weak"], "weak")
    await wait_for(weak, "window.liveRelay.tileStats().then(t => Object.values(t)"
                         ".filter(v => v.framesDecoded > 0).length === 3)", timeout=30)
    publishers = {p.id: p.user for p in relay.media.router.sources.values()}
    result: dict[str, Any] = {"samples": [], "users": publishers,
                              "connections": await weak.evaluate("window.liveRelay.mediaConnections()")}
    await asyncio.sleep(3)
    started = time.monotonic()

    async def sample(phase: str, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            tiles = await weak.evaluate("window.liveRelay.tileStats()")
            server = {}
            for entry in relay.media.router.quality("show"):
                if entry["user"] == "weak":
                    for t in entry["tracks"]:
                        if t["kind"] == "video":
                            keys = ("layer", "target_layer", "layers", "share_bps", "estimate_bps", "chooser")
                            server[publishers.get(t["publisher"], t["publisher"])] = {k: t.get(k) for k in keys}
            result["samples"].append({"t": round(time.monotonic() - started, 2), "phase": phase, "server": server,
                                      "tiles": {publishers.get(p, p): v for p, v in tiles.items()}})
            await asyncio.sleep(0.5)

    async def trace(seconds: float, every: float = 0.1) -> None:
        """Each video as the server sends it, its tile's frames, and the link's budget (estimate, audio,
        loss, redundancy), every ``every`` s (the first seconds of the cap at 0.1 s, the rest at 0.5 s)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            tiles = await weak.evaluate("window.liveRelay.tileStats()")
            videos = {}
            downs = [d for sub in relay.media.router.rooms["show"].subscribers.values() if sub.user == "weak"
                     for d in sub.down_tracks if d.kind == "video"]
            for down in downs:
                user = publishers.get(down.source.publisher_id, down.source.publisher_id)
                videos[user] = {"layer": down.layer, "target": down.target_layer, "temporal": down.temporal_cap,
                                "bridging": down.forwarder.bridging, "sent": down.packets_sent,
                                "share": None if down.chooser.share is None else round(down.chooser.share),
                                "estimate": down.link.estimate_bps, "congested": down.link.congested(),
                                "option": down.chooser.current, "state": str(down.chooser.state),
                                "rates": [None if r is None else round(r) for _, _, r in down.source.rungs()]}
            link = downs[0].link if downs else None
            side = link.send_side if link is not None else None
            wire = None
            if side is not None:  # what left towards the viewer in the last 200 ms, every packet counted
                now_ms = time.monotonic() * 1000
                wire = round(sum(size for at, size in zip(side.sent._sent_ms, side.sent._size, strict=True)
                                 if now_ms - at < 200) * 8 / 0.2)
            result["trace"].append({"t": round(time.monotonic() - started, 2), "videos": videos, "wire_bps": wire,
                                    "queue_ms": side and round(side.queue_ms), "loss": side and round(side.loss, 3),
                                    "refused": link and link.repairs_refused,
                                    "link_loss": link and round(link.loss, 3), "red": link and link.red_level,
                                    "audio_bps": link and round(link.audio_bps),
                                    "sending_bps": link and round(link.sending_bps),
                                    "draining": link and link.draining(),
                                    "frames": {publishers.get(p, p): v["framesDecoded"] for p, v in tiles.items()}})
            await asyncio.sleep(every)

    result["trace"] = []
    await sample("before", 3)
    lab.cap(600)
    await trace(2.5)
    await asyncio.gather(sample("capped", window - 2.5), trace(window - 2.5, every=0.5))
    weak_links = [d.link for sub in relay.media.router.rooms["show"].subscribers.values() if sub.user == "weak"
                  for d in sub.down_tracks if d.kind == "video" and d.link.send_side is not None]
    if weak_links:  # the estimator's over-use judgements (the last 32), on the trace's clock
        offset = time.monotonic() - started
        result["cuts"] = [(round(at / 1000 - time.monotonic() + offset, 2), why, round(queue), before, after)
                          for at, why, queue, before, after in weak_links[0].send_side.cuts]
    lab.uncap()
    await sample("freed", window)
    for page in (*cohosts, host):
        await page.close()
    return result


async def preferences(base: str, relay: Any, layers: int) -> dict[str, Any]:
    """A Python viewer on loopback asks for a small layer, then for no video (a hidden tab), then for the best:
    the layer the server forwards it each time (until it settles, at most 5 s), and whether audio went on.
    ``layers``: how many the host sends now (its encoder may hold its top layer back on a busy machine)."""
    out: dict[str, Any] = {"layers_coming": layers}
    ws = base.replace("http", "ws") + "/ws"
    async with LiveClient(ws, "show", token("show", "py", Role.VIEWER, "Py")) as client:
        session = await MediaSession.subscribe(client)
        try:
            async def settle(wanted: Any) -> Any:
                for _ in range(50):
                    video = quality_of(relay, "py").get("video", {})
                    if video.get("layer") == wanted and video.get("target_layer") == wanted:
                        break
                    await asyncio.sleep(0.1)
                return quality_of(relay, "py").get("video", {}).get("layer")

            out["start"] = await settle(layers - 1)
            await session.set_video_quality("low")
            out["low"] = await settle(0)
            audio_before = quality_of(relay, "py")["audio"]["packets_sent"]
            await session.set_video_quality("off")
            out["off"] = await settle(None)
            out["link_while_off"] = await next_link(client, lambda m: m.get("paused"))
            video_paused = quality_of(relay, "py")["video"]["packets_sent"]
            await asyncio.sleep(1.0)
            out["video_packets_while_off"] = quality_of(relay, "py")["video"]["packets_sent"] - video_paused
            out["audio_packets_while_off"] = quality_of(relay, "py")["audio"]["packets_sent"] - audio_before
            await session.set_video_quality("high")
            out["high"] = await settle(layers - 1)
            out["link_after_high"] = await next_link(client, lambda m: m.get("layer") == layers - 1)
        finally:
            await session.close()
    return out


async def next_link(client: LiveClient, wanted: Any) -> dict[str, Any] | None:
    """The first ``link`` message (older ones queued included) that ``wanted`` accepts, within 6 s."""
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        try:
            message = await client.next_event("link", timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            return None
        if wanted(message):
            return message
    return None


def video_track(relay: Any) -> Any:
    return next(t for p in relay.media.router.sources.values() for k, t in p.tracks.items() if k == "video")


async def viewer(base: str, browser: Any, user: str) -> Page:
    page = await browser.new_page()
    await page.goto(f"{base}/?view=viewer&room=show&token={token('show', user, Role.VIEWER, user.title())}")
    await wait_for(page, "window.liveRelay.framesDecoded > 0", timeout=30)
    await page.click("#unmute")  # the audio is played, as by a viewer who tapped for sound
    return page


SCENARIOS = {"loss": loss, "cap": cap, "h264_cap": h264_cap, "svc_cap": svc_cap, "thin": thin,
             "three_tiles": three_tiles}


async def main(args: argparse.Namespace) -> None:
    from tests.conftest import free_port

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before anything runs
    lab = NetLab.attach(args.server_ns, args.weak_ns, args.server_if)
    wrapper = out / "chromium-in-weak-namespace.sh"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {args.weak_ns} /usr/bin/chromium "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    config = ServerConfig(secret=SECRET, host="0.0.0.0", port=free_port(), rooms=("show",),
                          web_root=WEB_ROOT, ice_addresses=("127.0.0.1", SERVER_ADDRESS),
                          send_side_estimation=not args.remb)
    base, weak_base = f"http://127.0.0.1:{config.port}", f"http://{SERVER_ADDRESS}:{config.port}"
    result: dict[str, Any]
    try:
        async with running(config) as relay, async_playwright() as pw:
            local = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            weak = await pw.chromium.launch(executable_path=str(wrapper), args=[
                *CHROMIUM_ARGS[:-3], "--allow-loopback-in-peer-connection",
                f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {SERVER_ADDRESS}",
                f"--unsafely-treat-insecure-origin-as-secure={weak_base}",
                "--autoplay-policy=no-user-gesture-required"])
            browsers = {"local": local, "weak": weak}
            try:
                result = await asyncio.wait_for(
                    SCENARIOS[args.scenario](base, weak_base, browsers, relay, lab, args.window),
                    args.window * 12 + 90)
                result["ok"] = True
            except Exception as exc:
                result = {"ok": False, "error": repr(exc)}
            finally:
                await weak.close()
                await local.close()
    finally:
        lab.clear()
    result["load"] = os.getloadavg()
    (out / f"{args.scenario}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("out")
    parser.add_argument("server_ns")
    parser.add_argument("weak_ns")
    parser.add_argument("server_if")
    parser.add_argument("--window", type=float, default=30.0, help="seconds measured per phase")
    parser.add_argument("--remb", action="store_true", help="estimate viewers' links from REMB (the baseline)")
    asyncio.run(main(parser.parse_args()))
