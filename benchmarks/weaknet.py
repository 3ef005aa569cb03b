"""Weak-network figures: a Chromium viewer behind loss and a bandwidth cap, control viewers on loopback.

    python -m benchmarks.weaknet --runs 3 --window 30
    python -m benchmarks.weaknet --runs 3 --scenarios cap thin --estimators send_side remb   # side by side

Each run makes its own two network namespaces (tests/netlab.py) and runs tests/weaknet_scenarios.py in them:
``loss`` (0%, 10%, 25% random loss towards the weak viewer, a window each), ``cap`` (a simulcast host,
the weak viewer capped at 400 kbit/s for a window, then freed for a window; ``h264_cap`` the same with
the host's layers in H.264), ``thin`` (150 kbit/s, 96 kbit/s, then freed) and ``three_tiles`` (a host and
two co-hosts on one viewer connection capped at 600 kbit/s, then freed; ``--window 15`` as its test).
``--estimators``: how the server estimates the weak (Chromium) viewer's link, the relay's own from
transport-cc (``send_side``, the default) or the viewer's REMB (``remb``, the baseline), alternating run
by run. Prints one row per run and the medians; raw results go to benchmarks/results/weaknet-DATE.jsonl.
Needs root, nft, tc and Chromium.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.netlab import NetLab

ROOT = Path(__file__).resolve().parent.parent


def run(scenario: str, window: float, out: Path, estimator: str = "send_side") -> dict[str, Any]:
    extra = ["--remb"] if estimator == "remb" else []
    with NetLab() as lab:
        subprocess.run(lab.in_server([sys.executable, "-m", "tests.weaknet_scenarios", scenario, str(out), lab.server,
                                      lab.weak, lab.server_interface, "--window", str(window), *extra]),
                       cwd=ROOT, capture_output=True, text=True, timeout=window * 12 + 150)
    result: dict[str, Any] = json.loads((out / f"{scenario}.json").read_text())
    if not result.get("ok"):
        raise SystemExit(f"{scenario}: {result.get('error')}")
    return result


def loss_figures(result: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for percent, phase in result["phases"].items():
        weak, control = phase["weak"], phase["control"]
        row[f"loss{percent}"] = {"audio_concealed": weak["audio_concealed"], "frozen_share": weak["frozen_share"],
                                 "freezes": weak["freezes"], "fps": weak["fps"], "measured_loss": weak["video_loss"],
                                 "control_freezes": control["freezes"], "control_concealed": control["audio_concealed"]}
    return row


def cap_figures(result: dict[str, Any]) -> dict[str, Any]:
    """Seconds from the cap to the weak viewer's first lower layer, its freezes after that switch while
    capped, seconds from lifting the cap back to the top layer, and whether the controls ever left the top."""
    top = result["layers"] - 1
    samples = result["samples"]
    capped = [s for s in samples if s["phase"] == "capped"]
    freed = [s for s in samples if s["phase"] == "freed"]
    cap_at, free_at = capped[0]["t"], freed[0]["t"]
    down = next((s for s in capped if s["weak"]["layer"] is not None and s["weak"]["layer"] < top), None)
    # After the switch: once the viewer decodes the smaller picture (the switch has reached its screen).
    full_height = samples[0]["weak_stats"]["frameHeight"]
    shown = next((s for s in capped if 0 < s["weak_stats"]["frameHeight"] < full_height), None)
    freezes_after = (capped[-1]["weak_stats"]["freezeCount"] - shown["weak_stats"]["freezeCount"]) if shown else None
    back = next((s for s in freed if s["weak"]["layer"] == top), None)
    controls_left_top = sum(1 for s in samples for c in ("control1", "control2") if s[c]["layer"] != top)
    return {"to_lower_layer_s": round(down["t"] - cap_at, 2) if down else None,
            "to_smaller_picture_s": round(shown["t"] - cap_at, 2) if shown else None,
            "freezes_while_switching": (shown["weak_stats"]["freezeCount"] - capped[0]["weak_stats"]["freezeCount"])
            if shown else None,
            "freezes_after_switch": freezes_after,
            "lowest_layer_while_capped": min((s["weak"]["layer"] for s in capped if s["weak"]["layer"] is not None),
                                             default=None),
            "back_to_top_s": round(back["t"] - free_at, 2) if back else None,
            "control_samples_off_top": controls_left_top, "control_freezes": result["control_freezes"],
            "top_layer_kbps": round(samples[-1]["rates"][top] / 1000)}


def thin_figures(result: dict[str, Any]) -> dict[str, Any]:
    """At 150 kbit/s: the frame rate the weak viewer still decodes and its temporal layer; at 96 kbit/s: how
    long video was off and how much of the sound was concealed; freed: seconds until frames come again."""
    samples = result["samples"]
    phase = {n: [s for s in samples if s["phase"] == n] for n in ("thin", "thinner", "freed")}
    thin, thinner, freed = phase["thin"], phase["thinner"], phase["freed"]
    late = thin[len(thin) // 2:]
    fps = (late[-1]["frames"] - late[0]["frames"]) / max(late[-1]["t"] - late[0]["t"], 1e-3)
    heard = thinner[-1]["audio_samples"] - thinner[0]["audio_samples"]
    resumed = next((s for s in freed if s["frames"] > freed[0]["frames"] + 2), None)
    return {"fps_at_150k": round(fps, 1), "temporal_at_150k": thin[-1]["temporal"],
            "video_off_share_at_96k": round(sum(s["target_layer"] is None for s in thinner) / len(thinner), 2),
            "audio_concealed_at_96k": round((thinner[-1]["concealed"] - thinner[0]["concealed"]) / heard, 4)
            if heard else None,
            "video_back_after_s": round(resumed["t"] - freed[0]["t"], 2) if resumed else None}


def three_tiles_figures(result: dict[str, Any]) -> dict[str, Any]:
    """The host and two co-hosts on one viewer connection capped at 600 kbit/s: the host tile's freezes at
    the switch down (the cap's first 3 s), later while capped, and after the cap is lifted; its frame rate
    while capped (past the first 3 s; on average, and over its slowest 2 s); the co-hosts' freezes and how
    often their video paused (a switch to no layer) while capped; seconds from the cap to the host's lower
    layer, and from lifting it to its top."""
    samples = result["samples"]
    phase = {n: [s for s in samples if s["phase"] == n] for n in ("before", "capped", "freed")}
    before, capped, freed = phase["before"], phase["capped"], phase["freed"]
    trace = result.get("trace") or []  # the cap's first seconds, every 0.1 s (before the capped samples)
    cap_at = trace[0]["t"] if trace else capped[0]["t"]
    early = [s for s in capped if s["t"] < cap_at + 3]
    late = [s for s in capped if s["t"] >= cap_at + 3]

    def freezes(user: str, first: dict[str, Any], last: dict[str, Any]) -> int:
        return int(last["tiles"][user]["freezeCount"] - first["tiles"][user]["freezeCount"])

    def pauses(user: str) -> int:
        layers = [before[-1]["server"][user]["layer"]] + [s["server"][user]["layer"] for s in capped]
        return sum(a is not None and b is None for a, b in itertools.pairwise(layers))

    top = before[-1]["server"]["host"]["layer"]
    down = next((e["t"] - cap_at for e in trace if (e["videos"]["host"]["layer"] or 0) < (top or 0)), None)
    if down is None:
        down = next((s["t"] - cap_at for s in capped if (s["server"]["host"]["layer"] or 0) < (top or 0)), None)
    back = next((s["t"] - freed[0]["t"] for s in freed if s["server"]["host"]["layer"] == top), None)
    host_frames = late[-1]["tiles"]["host"]["framesDecoded"] - late[0]["tiles"]["host"]["framesDecoded"]
    slowest = min(((b["tiles"]["host"]["framesDecoded"] - a["tiles"]["host"]["framesDecoded"]) / (b["t"] - a["t"])
                   for a, b in zip(late, late[4:], strict=False)), default=None)  # over ~2 s
    return {"host_freezes_at_switch": freezes("host", before[-1], early[-1]),
            "host_freezes_capped_after": freezes("host", early[-1], capped[-1]),
            "host_freezes_freed": freezes("host", capped[-1], freed[-1]),
            "host_fps_capped": round(host_frames / max(late[-1]["t"] - late[0]["t"], 1e-3), 1),
            "host_fps_capped_slowest_2s": round(slowest, 1) if slowest is not None else None,
            "cohost_freezes_capped": sum(freezes(u, before[-1], capped[-1]) for u in ("co1", "co2")),
            "cohost_pauses_capped": sum(pauses(u) for u in ("co1", "co2")),
            "host_down_s": round(down, 2) if down is not None else None,
            "host_back_s": round(back, 2) if back is not None else None}


def median(values: list[Any]) -> Any:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 4) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=float, default=30.0, help="seconds per phase")
    parser.add_argument("--scenarios", nargs="+", default=["loss", "cap", "thin"],
                        choices=["loss", "cap", "h264_cap", "thin", "three_tiles"])
    parser.add_argument("--estimators", nargs="+", default=["send_side"], choices=["send_side", "remb"])
    args = parser.parse_args()
    out = ROOT / "artifacts" / "weaknet-bench"
    out.mkdir(parents=True, exist_ok=True)
    results = ROOT / "benchmarks" / "results" / f"weaknet-{datetime.date.today()}.jsonl"
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {e: {s: [] for s in args.scenarios} for e in args.estimators}
    for n in range(args.runs):
        for estimator in args.estimators:  # alternating, so the machine's mood is shared
            for scenario in args.scenarios:
                load = os.getloadavg()[0]
                result = run(scenario, args.window, out, estimator)
                row = {"loss": loss_figures, "cap": cap_figures, "h264_cap": cap_figures,
                       "thin": thin_figures, "three_tiles": three_tiles_figures}[scenario](result)
                row["load_before"] = round(load, 2)
                rows[estimator][scenario].append(row)
                print(f"run {n + 1} {estimator} {scenario}: {json.dumps(row)}", flush=True)
                with results.open("a") as f:
                    f.write(json.dumps({"scenario": scenario, "estimator": estimator, "window": args.window,
                                        "run": n + 1, **row, "raw": result}) + "\n")
    for estimator in args.estimators:
        print(f"\n{estimator}: medians of {args.runs} runs, {args.window:.0f} s windows:")
        report(rows[estimator])


def report(rows: dict[str, list[dict[str, Any]]]) -> None:
    """Print the medians of one estimator's runs."""
    if rows.get("loss"):
        for percent in ("0", "10", "25"):
            phases = [r[f"loss{percent}"] for r in rows["loss"]]
            print(f"  loss {percent:>2}%: " + ", ".join(f"{k} {median([p[k] for p in phases])}" for k in phases[0]))
    for name in ("cap", "h264_cap"):
        if rows.get(name):
            keys = [k for k in rows[name][0] if k not in ("control_freezes", "load_before")]
            print(f"  {name} 400 kbit/s: " + ", ".join(f"{k} {median([r[k] for r in rows[name]])}" for k in keys))
            print(f"  control freezes per run: {[r['control_freezes'] for r in rows[name]]}")
    if rows.get("three_tiles"):
        keys = [k for k in rows["three_tiles"][0] if k != "load_before"]
        print("  three tiles behind 600 kbit/s: " + ", ".join(
            f"{k} {median([r[k] for r in rows['three_tiles']])} {[r[k] for r in rows['three_tiles']]}" for k in keys))
    if rows.get("thin"):
        keys = [k for k in rows["thin"][0] if k not in ("load_before", "temporal_at_150k")]
        print("  thin links: " + ", ".join(f"{k} {median([r[k] for r in rows['thin']])}" for k in keys)
              + f", temporal layer at 150 kbit/s per run {[r['temporal_at_150k'] for r in rows['thin']]}")


if __name__ == "__main__":
    main()
