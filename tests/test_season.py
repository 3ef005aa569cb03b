"""Issue "before and after the show": a simulated season (loadtest/season.py: three scheduled shows,
reservations, viewers who come or not, clicks, orders, returning viewers) played against a real server, and
each show's follow-up list and funnel as the server reports them, compared with what the season did."""

from __future__ import annotations

import dataclasses

from loadtest.season import SeasonConfig, compare, reported, run_season
from protocol import Role, issue_token
from tests.conftest import SECRET
from tests.test_analytics import ORDER_SECRET


async def test_a_season_of_three_shows_is_reported_exactly(start_server, tmp_path):
    server = await start_server(analytics=str(tmp_path / "a.sqlite3"), order_secret=ORDER_SECRET)
    base = server.base
    truths = await run_season(base, server.ws_url, SECRET, ORDER_SECRET, "season",
                              SeasonConfig(shows=3, audience=18, seed=7))
    host_auth = {"Authorization": f"Bearer {issue_token(SECRET, 'season', 'season-host', Role.HOST, 600)}"}
    for truth in truths:
        report = await reported(base, truth.show, host_auth)
        assert compare(truth, report) == [], truth.show
        print(truth.show, report["funnel"], len(report["followups"]))
    # (The comparison can tell: a season whose buyers did not buy differs from the report.)
    last = truths[-1]
    assert compare(dataclasses.replace(last, buyers=set()), await reported(base, last.show, host_auth)) != []
    # The season did what a season does: reservations, people who came without one, buyers, followers-up,
    # and viewers who came back for a later show.
    assert all(t.reserved for t in truths) and any(t.attended - t.reserved for t in truths)
    assert any(t.buyers for t in truths) and any(t.missed for t in truths)
    assert not truths[0].returning and any(t.returning for t in truths[1:])
