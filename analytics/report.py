"""A show's report, computed from its events: what a seller looks at after (and during) a live show.

``build_report`` returns plain data (the JSON API and ``report.json`` are exactly it); ``write_report``
also writes CSV tables, PNG charts (matplotlib, drawn server-side) and one HTML page with both.

- funnel: entered -> stayed 30 s -> saw a product -> clicked -> ordered, with each step's rate;
- audience: viewers watching per interval, exits per interval, and where products were pushed;
- sources: viewers, median dwell, click and order rate per entry source;
- products: pushes, impressions, clicks, click-through, orders, revenue, median push-to-click time;
- quality against dwell: median dwell of viewers with and without freezes, with slow and fast first frames;
- engagement: comments and likes per minute.
"""

from __future__ import annotations

import csv
import html
import itertools
import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from analytics.events import Event

STAYED_S = 30.0
SLOW_FIRST_FRAME_MS = 1000.0


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def build_report(events: Iterable[Event], now_ms: int | None = None, bucket_s: int = 60) -> dict[str, Any]:
    events = sorted(events, key=lambda e: e.ts_ms)
    if not events:
        return {"show": None, "events": 0}
    start, end = events[0].ts_ms, max(events[-1].ts_ms, now_ms or 0)
    joined: dict[str, int] = {}
    sources: dict[str, str] = {}
    sessions: dict[str, list[tuple[int, int | None]]] = defaultdict(list)  # viewer -> [(join, leave)]
    pushes: list[Event] = []
    impressions: dict[str, set[str]] = defaultdict(set)  # product -> viewers
    clicks: dict[str, Event] = {}  # click ref -> click
    clickers: dict[str, set[str]] = defaultdict(set)  # product -> viewers
    orders: list[Event] = []
    quality: dict[str, dict[str, Any]] = {}
    comments: list[int] = []
    moments: list[Event] = []
    questions: list[Event] = []
    likes: list[tuple[int, float]] = []
    for e in events:
        if e.kind in ("join", "leave") and (e.data or {}).get("role", "viewer") != "viewer":
            continue  # the host and co-hosts are not the audience
        if e.kind == "join" and e.viewer:
            joined.setdefault(e.viewer, e.ts_ms)
            sources.setdefault(e.viewer, e.source or "direct")
            sessions[e.viewer].append((e.ts_ms, None))
        elif e.kind == "leave" and e.viewer and sessions.get(e.viewer):
            opened = sessions[e.viewer][-1]
            if opened[1] is None:
                sessions[e.viewer][-1] = (opened[0], e.ts_ms)
        elif e.kind == "push" and e.product:
            pushes.append(e)
        elif e.kind == "impression" and e.product and e.viewer:
            impressions[e.product].add(e.viewer)
        elif e.kind == "click" and e.product and e.viewer:
            clickers[e.product].add(e.viewer)
            if e.ref:
                clicks[e.ref] = e
        elif e.kind == "order":
            orders.append(e)
        elif e.kind == "quality" and e.viewer and e.data:
            quality.setdefault(e.viewer, {}).update(e.data)
        elif e.kind == "comment":
            comments.append(e.ts_ms)
        elif e.kind == "stage":
            moments.append(e)
        elif e.kind == "question":
            questions.append(e)
        elif e.kind == "like":
            likes.append((e.ts_ms, e.value or 1))

    dwell = {v: sum(((left or end) - entered) for entered, left in spans) / 1000 for v, spans in sessions.items()}
    viewers = set(joined)
    stayed = {v for v in viewers if dwell.get(v, 0) >= STAYED_S}
    saw = set().union(*impressions.values()) & viewers if impressions else set()
    clicked = set().union(*clickers.values()) & viewers if clickers else set()

    def attributed(order: Event) -> Event | None:
        ref = (order.data or {}).get("click")
        return clicks.get(ref) if isinstance(ref, str) else None

    ordered = {c.viewer for o in orders if (c := attributed(o)) is not None and c.viewer}
    funnel: list[dict[str, Any]] = [{"step": step, "viewers": len(group), "of_entered": _rate(len(group), len(viewers)),
                                     "of_previous": None}
              for step, group in (("entered", viewers), ("stayed_30s", stayed), ("saw_product", saw),
                                  ("clicked", clicked), ("ordered", ordered))]
    for previous, step in itertools.pairwise(funnel):
        step["of_previous"] = _rate(step["viewers"], previous["viewers"])

    by_source: dict[str, list[str]] = defaultdict(list)
    for v in viewers:
        by_source[sources[v]].append(v)
    source_rows = [{"source": s, "viewers": len(vs), "median_dwell_s": _median([dwell[v] for v in vs]),
                    "click_rate": _rate(sum(1 for v in vs if v in clicked), len(vs)),
                    "order_rate": _rate(sum(1 for v in vs if v in ordered), len(vs))}
                   for s, vs in sorted(by_source.items(), key=lambda kv: -len(kv[1]))]

    products: dict[str, dict[str, Any]] = {}
    for p in {e.product for e in pushes} | set(impressions) | set(clickers) | {o.product for o in orders if o.product}:
        if p is None:
            continue
        push_times = [e.ts_ms for e in pushes if e.product == p]
        to_click = []
        for c in clicks.values():
            if c.product == p:
                before = [t for t in push_times if t <= c.ts_ms]
                if before:
                    to_click.append((c.ts_ms - max(before)) / 1000)
        product_orders = [o for o in orders if o.product == p]
        # Its title as last pushed (a seller reads titles, not ids; the id when no push named one).
        title = next((str(e.data["title"]) for e in reversed(pushes)
                      if e.product == p and e.data and e.data.get("title")), p)
        products[p] = {
            "product": p, "title": title, "pushes": len(push_times), "impressions": len(impressions.get(p, ())),
            "clicks": len(clickers.get(p, ())),
            "click_through": _rate(len(clickers.get(p, ())), len(impressions.get(p, ()))),
            "orders": len(product_orders), "revenue": round(sum(o.value or 0 for o in product_orders), 2),
            "median_push_to_click_s": _median(to_click)}

    buckets = max(1, (end - start) // (bucket_s * 1000) + 1)
    watching, exits = [0] * buckets, [0] * buckets
    for spans in sessions.values():
        for entered, left in spans:
            first = (entered - start) // (bucket_s * 1000)
            last = ((left or end) - start) // (bucket_s * 1000)
            for b in range(first, min(last, buckets - 1) + 1):
                watching[b] += 1
            if left is not None:
                exits[min(last, buckets - 1)] += 1
    per_minute_comments, per_minute_likes = [0] * buckets, [0.0] * buckets
    for t in comments:
        per_minute_comments[(t - start) // (bucket_s * 1000)] += 1
    for t, n in likes:
        per_minute_likes[(t - start) // (bucket_s * 1000)] += n

    def quality_group(test: Any) -> dict[str, Any]:
        group = [v for v in viewers if v in quality and test(quality[v])]
        return {"viewers": len(group), "median_dwell_s": _median([dwell[v] for v in group])}

    now = now_ms or end
    minute_ago = now - 60_000
    recent_clicks: dict[str, int] = defaultdict(int)
    for c in clicks.values():
        if c.ts_ms >= minute_ago and c.product:
            recent_clicks[c.product] += 1
    live = {"watching_now": sum(1 for spans in sessions.values() if spans and spans[-1][1] is None),
            "clicks_last_minute": dict(sorted(recent_clicks.items(), key=lambda kv: -kv[1])),
            "top_sources": [{"source": r["source"], "viewers": r["viewers"]} for r in source_rows[:5]]}
    return {
        "show": events[0].show, "room": events[0].room, "start_ms": start, "end_ms": end, "events": len(events),
        "live": live,
        "funnel": funnel,
        "audience": {"bucket_s": bucket_s, "watching": watching, "exits": exits,
                     "pushes": [{"at_s": round((e.ts_ms - start) / 1000, 1), "product": e.product} for e in pushes],
                     # Stage and PK moments: co-hosts on or off the stage, a PK or a private call starting or ending.
                     "moments": [{"at_s": round((e.ts_ms - start) / 1000, 1), **(e.data or {})} for e in moments]},
        "sources": source_rows,
        "products": sorted(products.values(), key=lambda r: (-r["clicks"], r["product"])),
        "orders": {"count": len(orders), "attributed": sum(1 for o in orders if attributed(o) is not None),
                   "revenue": round(sum(o.value or 0 for o in orders), 2)},
        "quality": {
            "with_freezes": quality_group(lambda q: (q.get("freezes") or 0) > 0),
            "without_freezes": quality_group(lambda q: (q.get("freezes") or 0) == 0),
            "slow_first_frame": quality_group(lambda q: (q.get("first_frame_ms") or 0) > SLOW_FIRST_FRAME_MS),
            "fast_first_frame": quality_group(
                lambda q: 0 < (q.get("first_frame_ms") or 0) <= SLOW_FIRST_FRAME_MS)},
        # The room's assistant: viewers' questions by outcome, and the products they were about.
        "assistant": {"questions": len(questions),
                      "outcomes": dict(sorted(Counter(str((q.data or {}).get("outcome")) for q in questions).items())),
                      "by_product": dict(Counter(q.product for q in questions if q.product).most_common(10))},
        "engagement": {"bucket_s": bucket_s, "comments": per_minute_comments, "likes": per_minute_likes,
                       "comments_total": len(comments), "likes_total": sum(n for _, n in likes)},
    }


CHARTS = ("audience", "engagement")

# The charts' words per language (the dashboard asks in the page's language).
CHART_WORDS: dict[str, dict[str, str]] = {
    "en": {"watching": "watching", "left": "left", "viewers": "viewers", "comments": "comments", "likes": "likes",
           "audience": "Audience (dashed: product pushed; dotted: stage or PK moment)",
           "engagement": "Comments and likes per {s} s", "minutes": "minutes into the show"},
    "zh": {"watching": "在看", "left": "离开", "viewers": "观众", "comments": "评论", "likes": "点赞",
           "audience": "观众（虚线：推送商品；点线：连麦或 PK）",  # noqa: RUF001 (Chinese punctuation)
           "engagement": "每 {s} 秒的评论和点赞", "minutes": "开播后的分钟数"},
}


def chart_language(lang: str | None) -> tuple[str, str | None]:
    """The language the charts can be drawn in and the font file for it: Chinese needs a CJK font (Debian's
    fonts-noto-cjk; matplotlib does not list its .ttc collections itself, so fontconfig is asked); without
    one the charts stay in English rather than draw empty boxes."""
    if lang != "zh":
        return "en", None
    import shutil
    import subprocess

    if shutil.which("fc-match"):
        found = subprocess.run(["fc-match", "-f", "%{file}", "Noto Sans CJK SC:lang=zh-cn"], capture_output=True,
                               text=True, timeout=5).stdout.strip()
        if "CJK" in found and Path(found).exists():
            return "zh", found
    return "en", None


def chart_png(report: dict[str, Any], name: str, lang: str | None = None) -> bytes:
    """One of the report's charts as PNG bytes (matplotlib's object API: safe off the main thread), its words
    in ``lang`` ("en" or "zh") where a font for it is installed."""
    import io

    from matplotlib.figure import Figure

    lang, font = chart_language(lang)
    words = CHART_WORDS[lang]
    fig = Figure(figsize=(8, 3.2))
    ax = fig.subplots()
    if name == "audience":
        audience = report["audience"]
        minutes = [i * audience["bucket_s"] / 60 for i in range(len(audience["watching"]))]
        ax.plot(minutes, audience["watching"], label=words["watching"], color="#1f6feb", marker="o", markersize=3)
        ax.bar(minutes, audience["exits"], width=audience["bucket_s"] / 60 * 0.8, color="#d1242f", alpha=0.5,
               label=words["left"])
        for push in audience["pushes"]:
            ax.axvline(push["at_s"] / 60, color="#9a6700", linestyle="--", linewidth=0.8)
        for moment in audience.get("moments", []):
            ax.axvline(moment["at_s"] / 60, color="#8250df", linestyle=":", linewidth=1.0)
        ax.set_ylabel(words["viewers"])
        ax.set_title(words["audience"])
    elif name == "engagement":
        engagement = report["engagement"]
        minutes = [i * engagement["bucket_s"] / 60 for i in range(len(engagement["comments"]))]
        ax.plot(minutes, engagement["comments"], label=words["comments"], color="#8250df", marker="o", markersize=3)
        ax.plot(minutes, engagement["likes"], label=words["likes"], color="#bf3989", marker="o", markersize=3)
        ax.set_title(words["engagement"].format(s=engagement["bucket_s"]))
    else:
        raise ValueError(f"no chart {name!r}")
    ax.set_xlabel(words["minutes"])
    legend = ax.legend(loc="upper right")
    if font is not None:
        from matplotlib.font_manager import FontProperties

        for text in (ax.title, ax.xaxis.label, ax.yaxis.label, *legend.get_texts()):
            text.set_fontproperties(FontProperties(fname=font, size=text.get_fontsize()))
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=110)
    return out.getvalue()


def _charts(report: dict[str, Any], out: Path) -> list[str]:
    names = []
    for name in CHARTS:
        (out / f"{name}.png").write_bytes(chart_png(report, name))
        names.append(f"{name}.png")
    return names


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in r.values())
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    """report.json, funnel/sources/products .csv, audience.png, engagement.png and report.html in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.json"]
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    for name in ("funnel", "sources", "products"):
        rows = report.get(name) or []
        path = out / f"{name}.csv"
        with path.open("w", newline="") as f:
            if rows:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        written.append(path)
    charts = _charts(report, out) if report.get("events") else []
    written += [out / c for c in charts]
    title = f"Show {report.get('show')} in room {report.get('room')}"
    images = "".join(f'<img src="{c}" alt="{c}">' for c in charts)
    page = (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
            "<style>body{font:14px system-ui;margin:2em}table{border-collapse:collapse;margin:1em 0}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}img{max-width:100%}</style>"
            f"<h1>{html.escape(title)}</h1>{images}"
            f"<h2>Funnel</h2>{_table(report.get('funnel', []))}"
            f"<h2>Sources</h2>{_table(report.get('sources', []))}"
            f"<h2>Products</h2>{_table(report.get('products', []))}"
            f"<h2>Orders</h2>{_table([report['orders']] if 'orders' in report else [])}"
            f"<h2>Quality against dwell</h2>"
            f"{_table([{'group': k, **v} for k, v in report.get('quality', {}).items()])}")
    (out / "report.html").write_text(page)
    written.append(out / "report.html")
    return written
