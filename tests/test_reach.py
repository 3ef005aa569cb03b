"""Reachable from any network, as tests: a server behind a cloud firewall (only HTTP, its one UDP port and
TURN open), a client network that blocks UDP (TURN over TCP from coturn), a client behind a masquerading NAT
with random source ports. Real Chromium and aiortc viewers in their own namespace, a real coturn, nft rules
(tests/netlab.py ReachLab, tests/reach_scenarios.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_dependency
from tests.netlab import ReachLab, lab_missing
from tests.reach_scenarios import HTTP_PORT, TURN_PORT, UDP_PORT

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts" / "reach"


@pytest.fixture(autouse=True, scope="module")
def _needs_lab() -> None:
    from tests.test_browser import _missing

    require_dependency(lab_missing() or _missing() or
                       (None if shutil.which("turnserver") else "coturn (apt-get install coturn)"))


def run_reach(scenario: str, tries: int = 2) -> dict:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with ReachLab(nat=scenario == "nat") as lab:
        if scenario == "firewall":
            lab.firewall(tcp=[HTTP_PORT, TURN_PORT], udp=[UDP_PORT, TURN_PORT])
        elif scenario == "udp_blocked":
            lab.block_udp()
        proc = subprocess.run(lab.in_server([sys.executable, "-m", "tests.reach_scenarios", scenario, str(ARTIFACTS),
                                             lab.client, "--tries", str(tries)]),
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        rules = lab.counters(lab.client if scenario == "udp_blocked" else lab.server)
    path = ARTIFACTS / f"{scenario}.json"
    assert path.exists(), f"scenario {scenario} wrote no result:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(path.read_text())
    assert result["ok"], f"{result.get('error')}\n{proc.stderr[-3000:]}"
    result["rules"] = rules
    return result


def _all_got_video(result: dict) -> None:
    for viewer in result["browser"]:
        assert viewer["ok"], viewer
    for viewer in result["python"]:
        assert viewer["ok"] and viewer["frames"] == 10, viewer


def test_behind_a_cloud_firewall_that_opens_only_http_the_udp_port_and_turn():
    r = run_reach("firewall")
    _all_got_video(r)
    assert all(v["path"] == "UDP direct" for v in r["browser"]), r["browser"]  # on the one UDP port
    # aioice (controlling, nominating aggressively) may settle on its TURN/UDP pair, which also ends on the one
    # UDP port behind the firewall; either way the media came through what the firewall lets in.
    assert all(v["path"] in ("host/udp", "relay/udp") for v in r["python"]), r["python"]
    assert r["python"][0]["whip_status"] == 201 and r["python"][0]["whip_connected"]
    assert r["python"][0]["whip_delete"] == 200 and r["whip_seen_by_room"]  # a WHIP publisher got through
    assert "counter packets" in r["rules"]  # the firewall was there (and dropped what it should)


def test_a_network_that_blocks_udp_gets_video_over_turn_tcp():
    r = run_reach("udp_blocked")
    _all_got_video(r)
    assert all(v["path"] == "TURN/TCP" and v["shown"] == "TURN/TCP" for v in r["browser"]), r["browser"]
    assert all(v["path"] == "relay/udp" for v in r["python"]), r["python"]  # aioice's relayed candidate
    dropped = [line for line in r["rules"].splitlines() if "udp counter packets" in line]
    assert dropped and " 0 bytes" not in dropped[0]  # the client's UDP really was dropped


def test_a_client_behind_a_masquerading_nat_gets_video():
    r = run_reach("nat")
    _all_got_video(r)
    assert all(v["path"] in ("UDP via NAT", "UDP direct") for v in r["browser"])


def test_a_node_behind_one_to_one_nat_announces_what_stun_sees_and_viewers_outside_get_video():
    """A cloud VM: the node binds its private address behind a 1:1 NAT and asks a STUN server (a real
    coturn, --stun-only, on the public side) what it looks like from outside; its candidates name that
    address, so an aiortc viewer on the public side gets video through the NAT (with the private address
    announced it could not: nothing routes it there)."""
    from tests.netlab import NATTED_ADDRESS, SERVER_ADDRESS, WEAK_ADDRESS

    with ReachLab(one_to_one=True) as lab:
        stun = subprocess.Popen(lab.in_server(["turnserver", "-n", "--stun-only", "--no-cli", "--no-tls", "--no-dtls",
                                               "--listening-ip", SERVER_ADDRESS, "--listening-port", "3478",
                                               "--log-file", "stdout"]),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        node = subprocess.Popen(lab.in_client([sys.executable, "-m", "cli.main", "serve", "--demo", "--host", "0.0.0.0",
                                               "--port", str(HTTP_PORT), "--ice-address", NATTED_ADDRESS,
                                               "--udp-port", str(UDP_PORT), "--stun-discover",
                                               f"{SERVER_ADDRESS}:3478", "--analytics", "off",
                                               "--secret", "reach-lab-secret-of-at-least-32-bytes!"]),
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            probe = ("import json, time, urllib.request\n"
                     "for _ in range(300):\n"
                     "    try:\n"
                     f"        print(urllib.request.urlopen('http://{WEAK_ADDRESS}:{HTTP_PORT}/healthz', timeout=2)"
                     ".read().decode()); break\n"
                     "    except OSError: time.sleep(0.1)\n")
            health = subprocess.run(lab.in_server([sys.executable, "-c", probe]), capture_output=True, text=True,
                                    timeout=60)
            if not health.stdout.strip():
                node.terminate()
                pytest.fail(f"the node never answered through the NAT: {health.stderr[-2000:]}\n"
                            f"{node.communicate(timeout=10)[1][-3000:]}")
            media = json.loads(health.stdout)["media"]
            assert media["addresses"] == [WEAK_ADDRESS], media  # what STUN saw, not the private address bound
            viewer = subprocess.run(lab.in_server([sys.executable, "-m", "tests.reach_client",
                                                   f"ws://{WEAK_ADDRESS}:{HTTP_PORT}/ws",
                                                   f"http://{WEAK_ADDRESS}:{HTTP_PORT}", "--room", "demo"]),
                                    cwd=ROOT, capture_output=True, text=True, timeout=120)
            result = json.loads(viewer.stdout.strip().splitlines()[-1])
            assert result["ok"] and result["frames"] == 10 and result["path"] == "host/udp", result
        finally:
            node.terminate()
            stun.terminate()
            node.wait(10)
            stun.wait(10)


async def test_a_stun_server_that_does_not_answer_leaves_the_bound_address_announced(start_server, caplog):
    """--stun-discover naming a server that never answers (a closed port): the node starts anyway, after
    the discovery's timeout, announces the address it bound, and says so in one warning line."""
    from tests.conftest import free_port

    with caplog.at_level("WARNING"):
        server = await start_server(ice_discover=("127.0.0.1", free_port()))
    mux = server.relay.media.router.mux
    assert mux is not None and list(mux.announced.values()) == ["127.0.0.1"]
    assert any("public address not discovered" in r.getMessage() for r in caplog.records)
