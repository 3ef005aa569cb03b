"""`live-relay loadtest media`: the generator's subscribers in worker processes, the counting ones reading
packets from their clear RTP headers, against a real server."""

from __future__ import annotations

from loadtest.media import run_media_load


async def test_counting_and_decoding_subscribers_receive_what_the_publisher_sends(server):
    result = await run_media_load([server.ws_url], "show", server.config.secret, subscribers=4, duration=3.0,
                                  decoders=1, processes=2, width=320, height=240, fps=30)
    assert result["subscribers_receiving"] == 4
    # 3 s at 30 fps: every subscriber, counting or decoding, saw most frames, and none it was not sent.
    assert result["frames_received_min"] >= 0.5 * result["frames_sent"]
    assert result["frames_received_median"] <= result["frames_sent"] + 3
    assert result["latency_samples"] > 0  # the decoding one read the send time from its pictures
    assert result["errors"] == []
