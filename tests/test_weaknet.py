"""The weak-network lab as tests: a Chromium viewer in its own network namespace behind real loss (nft) and a
real bandwidth cap (tbf), control viewers on loopback (tests/netlab.py, tests/weaknet_scenarios.py).

These assert behaviour, with bounds loose enough for a shared machine; the figures themselves (30 s
windows, medians of three runs) are printed by ``benchmarks/weaknet.py`` into docs/benchmarks.md.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_dependency
from tests.netlab import NetLab, lab_missing

ROOT = Path(__file__).resolve().parent.parent
# Each scenario is two Chromiums, a host page and a server on 2 cores shared with the rest of the suite: its
# strict "the control viewers saw nothing" assertions failed now and then on a busy machine (CI runs of stop 20)
# and passed run alone. One rerun, reported in the summary as such; a real regression fails both.
pytestmark = pytest.mark.flaky(reruns=1)
ARTIFACTS = ROOT / "artifacts" / "weaknet"


@pytest.fixture(autouse=True, scope="module")
def _needs_lab() -> None:
    from tests.test_browser import _missing

    require_dependency(lab_missing() or _missing())


def run_lab(scenario: str, window: float) -> dict:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with NetLab() as lab:
        proc = subprocess.run(lab.in_server([sys.executable, "-m", "tests.weaknet_scenarios", scenario, str(ARTIFACTS),
                                             lab.server, lab.weak, lab.server_interface, "--window", str(window)]),
                              cwd=ROOT, capture_output=True, text=True, timeout=window * 12 + 150)
    path = ARTIFACTS / f"{scenario}.json"
    assert path.exists(), f"scenario {scenario} wrote no result:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(path.read_text())
    assert result["ok"], f"{result.get('error')}\n{proc.stderr[-3000:]}"
    return result


def test_a_viewer_behind_heavy_loss_keeps_hearing_and_watching_and_nobody_else_pays():
    phases = run_lab("loss", window=8)["phases"]
    clean, ten, heavy = phases["0"], phases["10"], phases["25"]
    # The loss was real: the weak viewer's own stats saw it (before repair) and it asked for repairs.
    assert heavy["weak"]["video_loss"] > 0.08 and heavy["weak"]["nacks"] > 20
    # Audio in RED with more redundancy as the link reports loss: without it, concealment equals the loss.
    assert heavy["server_view"]["audio"]["red"] == 3 and clean["server_view"]["audio"]["red"] == 1
    assert heavy["weak"]["audio_concealed"] < 0.08 and ten["weak"]["audio_concealed"] < 0.03
    # Video repaired by retransmissions (in several copies at this loss): it keeps playing.
    assert heavy["weak"]["fps"] > 10 and heavy["weak"]["frozen_share"] < 0.15
    assert heavy["server_view"]["video"]["retransmitted"] > 0
    # The control viewer on loopback saw none of it.
    for phase in (clean, ten, heavy):
        assert phase["control"]["freezes"] == 0 and phase["control"]["audio_concealed"] == 0
        assert phase["control"]["fps"] > 10


def test_a_capped_viewer_moves_to_a_lower_layer_and_back_and_the_others_stay_on_top():
    result = run_lab("cap", window=12)
    assert result["layers"] == 3  # the host page offers three layers from its 720p camera
    samples = result["samples"]
    # The best layer coming before the cap (Chromium's encoder holds its top layer back while it is short of
    # CPU or bandwidth: on a busy machine that may be the middle one).
    top = max(i for i, rate in enumerate(samples[0]["rates"]) if rate)
    assert top >= 1
    capped = [s for s in samples if s["phase"] == "capped"]
    freed = [s for s in samples if s["phase"] == "freed"]
    # Before the cap every viewer gets the top layer.
    assert all(s[u]["layer"] == top for s in samples if s["phase"] == "before" for u in ("weak", "control1"))
    # Capped at 400 kbit/s (the top layer alone is more): the weak viewer goes down and keeps decoding there.
    switched = next(s for s in capped if s["weak"]["layer"] is not None and s["weak"]["layer"] < top)
    assert capped[-1]["weak"]["layer"] == 0
    assert capped[-1]["weak_stats"]["framesDecoded"] > switched["weak_stats"]["framesDecoded"] + 50
    assert capped[-1]["weak_stats"]["frameHeight"] < 720
    # Freed: back on the top layer (probed up), decoding the bigger picture again.
    assert freed[-1]["weak"]["layer"] >= top
    assert freed[-1]["weak_stats"]["frameHeight"] > capped[-1]["weak_stats"]["frameHeight"]
    # The control viewers on loopback never left the top layer.
    assert all(s[u]["layer"] >= top for s in samples for u in ("control1", "control2"))
    # A subscriber's own wish: a small layer, then no video (audio goes on), then the best again.
    prefs = result["preferences"]
    best = prefs["layers_coming"] - 1
    assert (prefs["start"], prefs["low"], prefs["off"], prefs["high"]) == (best, 0, None, best)
    assert prefs["video_packets_while_off"] == 0 and prefs["audio_packets_while_off"] > 20
    # The subscriber is told: a link message saying its video is paused, then one with the top layer.
    assert prefs["link_while_off"] is not None and prefs["link_while_off"]["layer"] is None
    after = prefs["link_after_high"]
    assert after is not None and after["layers"] == 3 and after["paused"] is False and after["red"] == 0


def test_an_h264_simulcast_host_s_capped_viewer_goes_down_and_back_as_with_vp8():
    """Issue 25: layers in H.264 (as OBS and hardware encoders send them), forwarded without decoding."""
    # 15 s a phase: under the whole suite's load on 2 cores the relay's delay-based estimate of the freed link
    # climbs more slowly (CI at b1aa4e5 failed twice with 12 s: back on layer 1 of 2, the estimate ~480 kbit/s).
    result = run_lab("h264_cap", window=15)
    assert "h264" in (result["codec"] or "").lower() and result["layers"] == 3
    samples = result["samples"]
    top = max(i for i, rate in enumerate(samples[0]["rates"]) if rate)
    assert top >= 1
    capped = [s for s in samples if s["phase"] == "capped"]
    freed = [s for s in samples if s["phase"] == "freed"]
    switched = next(s for s in capped if s["weak"]["layer"] is not None and s["weak"]["layer"] < top)
    assert capped[-1]["weak"]["layer"] is not None and capped[-1]["weak"]["layer"] < top
    assert capped[-1]["weak_stats"]["framesDecoded"] > switched["weak_stats"]["framesDecoded"] + 50
    assert capped[-1]["weak_stats"]["frameHeight"] < samples[0]["weak_stats"]["frameHeight"]
    assert freed[-1]["weak"]["layer"] >= top
    assert freed[-1]["weak_stats"]["frameHeight"] > capped[-1]["weak_stats"]["frameHeight"]
    # The control viewer stays on the best layer coming (this sample's or the one before: a switch waits for
    # its keyframe). The page's H.264 encoder held its 720p layer back for the first 5-6 s of the lab in two
    # runs of this stop (one CI run twice), and the control followed it the moment it came back.
    coming = [max((i for i, rate in enumerate(s["rates"]) if rate), default=0) for s in samples]
    assert all(s["control1"]["layer"] >= min(coming[max(0, k - 1):k + 1]) for k, s in enumerate(samples))


def test_a_link_too_thin_for_video_gets_fewer_frames_then_sound_alone_then_video_again():
    samples = run_lab("thin", window=15)["samples"]
    phase = {name: [s for s in samples if s["phase"] == name] for name in ("before", "thin", "thinner", "freed")}
    thin, thinner, freed = phase["thin"], phase["thinner"], phase["freed"]
    # 150 kbit/s: the lowest layer at a lower frame rate (fewer temporal layers), still playing.
    # (How long it holds there depends on the receiver's estimate under the cap; it may pause and probe back.)
    assert any(s["target_layer"] == 0 and s["temporal"] in (0, 1) for s in thin)
    assert thin[-1]["frames"] > thin[0]["frames"]
    # 96 kbit/s: no video for a while, the sound goes on and is mostly whole.
    assert any(s["target_layer"] is None for s in thinner)
    # Summed sample to sample: a page that reconnects on so thin a link subscribes afresh (counters restart).
    heard = sum(max(0, b["audio_samples"] - a["audio_samples"]) for a, b in itertools.pairwise(thinner))
    concealed = sum(max(0, b["concealed"] - a["concealed"]) for a, b in itertools.pairwise(thinner))
    assert heard > 48_000 * 15 * 0.8
    assert concealed / heard < 0.25
    # Freed: video comes back by itself.
    assert freed[-1]["target_layer"] is not None and freed[-1]["frames"] > freed[len(freed) // 2]["frames"]


def test_an_svc_host_s_capped_viewer_gets_fewer_spatial_layers_and_keeps_decoding():
    # The page's ?video=svc: one VP9 stream, three spatial layers (L3T3_KEY), forwarded without decoding.
    result = run_lab("svc_cap", window=15)
    assert result["host_sends"] == ["video/VP9", "L3T3_KEY"] and result["codec"].upper() == "VP9"
    assert result["svc"] and result["layers"] == 3
    samples = result["samples"]
    before = [s for s in samples if s["phase"] == "before"]
    capped = [s for s in samples if s["phase"] == "capped"]
    freed = [s for s in samples if s["phase"] == "freed"]
    assert all(s[u]["layer"] == 2 for s in before for u in ("weak", "control1"))
    # Capped at 400 kbit/s: the weak viewer is given fewer spatial layers, and its decoder goes on.
    switched = next(s for s in capped if s["weak"]["layer"] is not None and s["weak"]["layer"] < 2)
    assert capped[-1]["weak"]["layer"] is not None and capped[-1]["weak"]["layer"] < 2
    assert capped[-1]["weak_stats"]["framesDecoded"] > switched["weak_stats"]["framesDecoded"] + 50
    top_height = before[-1]["weak_stats"]["frameHeight"]  # 720, or less where the host's encoder is short of CPU
    assert capped[-1]["weak_stats"]["frameHeight"] < top_height
    # Freed: it climbs back (probing, a spatial layer at a time) to a bigger picture.
    assert freed[-1]["weak"]["layer"] > capped[-1]["weak"]["layer"]
    assert freed[-1]["weak_stats"]["frameHeight"] > capped[-1]["weak_stats"]["frameHeight"]
    # The control viewer kept all three layers and never froze.
    assert all(s["control1"]["layer"] == 2 for s in samples) and result["control_freezes"] == 0
    # A viewer that cannot decode VP9 (aiortc) is told so in one line.
    assert "cannot receive video/VP9" in result["python_viewer"]


def test_three_tiles_behind_600k_the_host_keeps_the_best_layer_that_fits_and_the_largest_share():
    """Issue 25: one connection, one estimate shared among the host and two co-hosts, the host first.
    Not asserted: no freeze at all (counted in the lab's JSON). None in 8 alternated runs of the lab after
    this stop's changes (docs/benchmarks.md), but the cap's first queue can still reach the tbf's 200 ms
    before the first cut takes effect, and a CI machine running the whole suite is no place to require it."""
    result = run_lab("three_tiles", window=15)
    assert result["connections"] == 1  # the host and both co-hosts on one peer connection
    samples = result["samples"]
    before = [s for s in samples if s["phase"] == "before"]
    capped = [s for s in samples if s["phase"] == "capped"]
    settled = [s for s in capped if s["t"] >= capped[0]["t"] + 3]  # past the switch down
    freed = [s for s in samples if s["phase"] == "freed"]
    top = before[-1]["server"]["host"]["layer"]
    # Shared by priority: the estimate is divided (each video has a share), the host's video never pauses and
    # is never on a lower layer than a co-host's.
    for s in settled:
        server = s["server"]
        assert all(server[u]["share_bps"] is not None for u in ("host", "co1", "co2"))
        assert server["host"]["layer"] is not None
        assert all(server[u]["layer"] is None or server[u]["layer"] <= server["host"]["layer"] for u in ("co1", "co2"))
    # The host's whole lowest layer comes before a co-host gets anything: its share is never below a
    # co-host's (it once got 28 kbit/s, a quarter of its frames, beside a co-host's 164 with a keyframe in
    # its rate window). Its tile keeps playing (the frame rate it gets depends on what the machine's
    # encoders make of its lowest layer: 15-20 fps at rest, 6 in one CI run under the suite's load).
    for s in settled:
        server = s["server"]
        assert all(server["host"]["share_bps"] >= server[u]["share_bps"] for u in ("co1", "co2"))
    host_frames = [s["tiles"]["host"]["framesDecoded"] for s in settled]
    assert host_frames[-1] - host_frames[0] >= 2 * (settled[-1]["t"] - settled[0]["t"])
    # Freed: the host is back on the layer it had before, first.
    back = [s["t"] for s in freed if s["server"]["host"]["layer"] == top]
    assert back
    for cohost in ("co1", "co2"):
        theirs = [s["t"] for s in freed if s["server"][cohost]["layer"] == top]
        assert not theirs or theirs[0] >= back[0]
