"""How soon a browser host's full-size simulcast layer is sent: transport-cc feedback against REMB alone.

    ip netns add lrbench && ip netns exec lrbench ip link set lo up
    ip netns exec lrbench .venv/bin/python -m benchmarks.publisher_ramp --runs 3 --seconds 15

A live-relay server in this process and headless Chromium (loopback only, in the namespace, as the browser
tests run it). Chromium publishes its fake 1280x720 camera over WHIP in three simulcast layers (the page's
own: 320, 640 and 1280 wide, at most 150 k, 500 k and 1.5 Mbit/s); every 250 ms the script reads the
publisher's getStats: its estimate of its uplink (availableOutgoingBitrate) and whether the full-size layer
is being sent. Two modes alternate in each run: "transport-cc" (the offer as Chromium writes it: the relay
answers with transport-cc and feeds back every packet) and "remb" (the offer with transport-cc taken out:
the relay answers as it did before rtc/twcc.py, and aiortc's REMB is all Chromium hears). Prints each
session, then per mode the medians over the runs and their spread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

from playwright.async_api import async_playwright

from protocol import Role
from signaling.config import ServerConfig
from tests.browser_scenarios import CHROMIUM_ARGS, SECRET, WEB_ROOT, running, token
from tests.conftest import free_port

PUBLISH = """async ([url, token, remb]) => {
  const stream = await navigator.mediaDevices.getUserMedia({video: {width: 1280, height: 720}});
  const pc = new RTCPeerConnection();
  pc.addTransceiver(stream.getVideoTracks()[0], {direction: "sendonly", sendEncodings: [
    {rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150000}, {rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500000},
    {rid: "f", maxBitrate: 1500000}]});
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(done => { if (pc.iceGatheringState === "complete") done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done(); setTimeout(done, 2000); });
  let sdp = pc.localDescription.sdp;
  if (remb) sdp = sdp.split("\\r\\n").filter(l => !/transport-cc|transport-wide-cc/.test(l)).join("\\r\\n");
  const answer = await fetch(url, {method: "POST", body: sdp,
    headers: {"Content-Type": "application/sdp", "Authorization": "Bearer " + token}});
  const location = answer.headers.get("location");
  await pc.setRemoteDescription({type: "answer", sdp: await answer.text()});
  window.ramp = {pc, location};
}"""

SAMPLE = """async () => { let estimate = null, full = 0;
  (await window.ramp.pc.getStats()).forEach(x => {
    if (x.type === 'candidate-pair' && x.nominated) estimate = x.availableOutgoingBitrate;
    if (x.type === 'outbound-rtp' && x.rid === 'f') full = x.framesEncoded || 0; });
  return [estimate, full]; }"""


async def session(browser: Any, base: str, mode: str, seconds: float, index: int) -> dict[str, Any]:
    page = await browser.new_page()
    await page.goto(f"{base}/?view=whep&room=none")
    url, grant = f"{base}/whip/show", token("show", f"host{index}", Role.HOST)
    started = time.monotonic()
    await page.evaluate(PUBLISH, [url, grant, mode == "remb"])
    samples = []
    while (elapsed := time.monotonic() - started) < seconds:
        estimate, full_frames = await page.evaluate(SAMPLE)
        samples.append((round(elapsed, 2), estimate, full_frames))
        await asyncio.sleep(0.25)
    await page.evaluate("""async ([base, grant]) => { window.ramp.pc.close();
        await fetch(base + window.ramp.location, {method: "DELETE", headers: {Authorization: "Bearer " + grant}}); }""",
                        [base, grant])
    await page.close()

    def estimate_at(t: float) -> float | None:
        return next((e for when, e, _ in samples if when >= t and e), None)

    return {"mode": mode, "full_layer_after_s": next((when for when, _, frames in samples if frames), None),
            "estimate_5s": estimate_at(5), "estimate_10s": estimate_at(10), "estimate_end": samples[-1][1]}


def summary(rows: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in rows]
    if any(v is None for v in values):
        return f"{key}: {values} (None: not within the window)"
    med = statistics.median(values)
    return f"{key}: median {med:.4g} (spread {min(values):.4g}-{max(values):.4g})"


async def main(runs: int, seconds: float) -> None:
    config = ServerConfig(secret=SECRET, port=free_port(), rooms=("show",), web_root=WEB_ROOT)
    base = f"http://127.0.0.1:{config.port}"
    rows: list[dict[str, Any]] = []
    async with running(config), async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            for run in range(runs):
                for mode in ("remb", "transport-cc") if run % 2 == 0 else ("transport-cc", "remb"):
                    row = await session(browser, base, mode, seconds, len(rows))
                    row["run"], row["load"] = run, round(os.getloadavg()[0], 2)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            await browser.close()
    for mode in ("remb", "transport-cc"):
        mine = [r for r in rows if r["mode"] == mode]
        print(mode, "|", " | ".join(summary(mine, k) for k in ("full_layer_after_s", "estimate_5s", "estimate_10s")))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.seconds))
