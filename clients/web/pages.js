// The pages without a message channel or with a fixed purpose: WHIP/WHEP, the replay, the dashboard.

import { addComment, showAnnouncement } from "./chat.js";
import { $, i18n, params, safeImage, safeUrl, t } from "./context.js";
import { playWithSound, setStatus } from "./stage.js";

// ---------------------------------------------------------------------------------------------------
// WHIP (publish) and WHEP (play): media with nothing but HTTP, as OBS and players speak it. The offer is
// POSTed with a bearer token; the answer comes back with the session's URL, to which our ICE candidates
// are PATCHed (trickle-ice-sdpfrag) and which DELETE ends.

export async function httpMedia(kind, room, tok, pc) {
  const queued = []; let location = null;
  const patch = (lines) => fetch(location, { method: "PATCH", body: lines.join("\r\n") + "\r\n",
    headers: { "Content-Type": "application/trickle-ice-sdpfrag", ...(tok ? { Authorization: `Bearer ${tok}` } : {}) } });
  pc.onicecandidate = (e) => {
    const c = e.candidate; if (!c || !c.candidate) return;
    const lines = [`a=mid:${c.sdpMid}`, `a=${c.candidate}`];
    if (location) patch(lines); else queued.push(...lines);
  };
  await pc.setLocalDescription(await pc.createOffer());
  const res = await fetch(`/${kind}/${encodeURIComponent(room)}`, { method: "POST", body: pc.localDescription.sdp,
    headers: { "Content-Type": "application/sdp", ...(tok ? { Authorization: `Bearer ${tok}` } : {}) } });
  if (res.status !== 201) throw new Error(`${kind.toUpperCase()} ${res.status}: ${(await res.text()).trim()}`);
  location = new URL(res.headers.get("Location"), location || window.location.href).href;
  await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
  if (queued.length) await patch(queued);
  // Stop: DELETE first (closing the peer connection first would end the session under the request).
  // The session's URL is used with the token that created it (RFC 9725), or alone for an anonymous player.
  return { pc, location, stop: async () => {
    const r = await fetch(location, { method: "DELETE", headers: tok ? { Authorization: `Bearer ${tok}` } : {} });
    pc.close(); return r.status;
  } };
}

export async function runWhip(room, tok) {
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: true });
  $("#stage").replaceChildren();
  const preview = document.createElement("video"); preview.autoplay = true; preview.muted = true; preview.playsInline = true;
  preview.srcObject = stream; $("#stage").append(preview);
  const pc = new RTCPeerConnection({ iceServers: [] });
  for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
  const session = await httpMedia("whip", room, tok, pc);
  window.liveRelay.whip = session;
  setStatus(t("whip.on_air"));
}

// A WHEP player that waits for the stream and follows the publisher's restarts (OBS reconnects with DELETE
// then POST, and the server ends the players' sessions with it): while nothing is published it asks again
// every 2 s; when its session ends it starts another. window.liveRelay.whep is the current session.
export async function runWhep(room, tok) {
  $("#stage").replaceChildren();
  const video = document.createElement("video"); video.autoplay = true; video.playsInline = true; video.id = "whep-video";
  $("#stage").append(video);
  const player = { stopped: false, sessions: 0 };
  const pause = (ms) => new Promise((resume) => setTimeout(resume, ms));
  window.liveRelay.whepPlayer = player;
  while (!player.stopped) {
    const pc = new RTCPeerConnection({ iceServers: [] });
    pc.addTransceiver("video", { direction: "recvonly" }); pc.addTransceiver("audio", { direction: "recvonly" });
    const stream = new MediaStream(); pc.ontrack = (e) => { stream.addTrack(e.track); video.srcObject = stream; playWithSound(video); };
    // Ended: the connection fails, or nothing has come for 3 s (a publisher's end reaches a browser as
    // silence: it notices the closed connection only when consent runs out, ~15 s later).
    const ended = new Promise((done) => {
      pc.onconnectionstatechange = () => { if (["failed", "closed"].includes(pc.connectionState)) done(); };
      let last = -1, still = 0;
      const watch = setInterval(async () => {
        if (pc.connectionState === "closed") { clearInterval(watch); return done(); }
        let bytes = 0;
        (await pc.getStats()).forEach((x) => { if (x.type === "inbound-rtp") bytes += x.bytesReceived || 0; });
        still = bytes > 0 && bytes === last ? still + 1 : 0; last = bytes;
        if (still >= 3) { clearInterval(watch); done(); }
      }, 1000);
    });
    let session;
    try {
      session = await httpMedia("whep", room, tok, pc);
    } catch (err) {
      pc.close();
      if (!/ 404: /.test(err.message)) throw err; // not "nothing published yet": say it and stop
      setStatus(t("whep.waiting"));
      await pause(2000);
      continue;
    }
    const stop = session.stop;
    session.stop = () => { player.stopped = true; return stop(); };
    window.liveRelay.whep = session; player.sessions += 1;
    setStatus(t("whep.playing"));
    await ended;
    pc.close();
    if (!player.stopped) setStatus(t("whep.stopped"));
    await pause(1000);
  }
}

// ---------------------------------------------------------------------------------------------------
// Replay: a recorded show with its comments flying and its product cards appearing when they did, and every
// publisher recorded in it (the host, co-hosts) as a tile of its own while it was on. The events
// log says, for each event, its time since the recording started (media_ms); each media file starts at its
// own `recording_first_frame` line (`recording_started` in older logs) and ends at its `recording_stopped`.
// The first file's picture is the clock (its controls seek and pause the replay); the others follow it.
// Seeking replays the state up to the new position.

export function replayTile(room, file, q, main) {
  const el = document.createElement("div"); el.className = "tile replay-tile";
  const video = document.createElement("video"); video.playsInline = true; video.preload = "auto";
  if (main) { video.id = "replay-video"; video.controls = true; }
  video.src = `/recordings/${encodeURIComponent(room)}/${file}?${q}`;
  const label = document.createElement("span"); label.className = "label";
  el.append(video, label);
  return { el, video, label };
}

// Where a following tile should be at the replay's time `now` (ms): its own time in seconds, or null while
// its publisher was not on.
export function replayPosition(tile, now) {
  if (now < tile.start || now > tile.end) return null;
  return (now - tile.start) / 1000;
}

export async function runReplay(room, tok) {
  const q = `token=${encodeURIComponent(tok || "")}`;
  const res = await fetch(`/recordings/${encodeURIComponent(room)}?${q}`);
  if (!res.ok) throw new Error(`recordings: ${res.status} ${(await res.text()).trim()}`);
  const files = await res.json();
  const wanted = params.get("rec") || files.find((f) => f.kind === "media")?.recording;
  const medias = files.filter((f) => f.kind === "media" && f.recording === wanted);
  const log = files.find((f) => f.kind === "events" && f.recording === wanted);
  if (!medias.length) throw new Error("no recording of this room yet");
  // The room's recordings, newest first: each a link to its replay.
  const list = document.createElement("ul"); list.id = "recordings"; list.className = "requests";
  for (const rec of [...new Set(files.filter((f) => f.kind === "media").map((f) => f.recording))]) {
    const li = document.createElement("li"); const a = document.createElement("a");
    a.textContent = rec + (rec === wanted ? " (playing)" : ""); a.href = `?view=replay&room=${encodeURIComponent(room)}&rec=${rec}`;
    li.append(a); list.append(li);
  }
  $("#comments").before(list);
  const logged = log ? (await (await fetch(`/recordings/${encodeURIComponent(room)}/${log.file}?${q}`)).text())
    .split("\n").filter(Boolean).map((line) => JSON.parse(line)) : [];
  // A comment a moderator deleted is gone from the replay too, from its first moment.
  const deleted = new Set(logged.filter((e) => e.type === "comment_deleted").map((e) => e.target));
  const events = logged.filter((e) => !(e.type === "comment" && deleted.has(e.seq)));
  // Each file's place on the log's clock: from its first frame (a keyframe that may come a GOP after its
  // recording started) to its end.
  const mark = (type, f) => events.find((e) => e.type === type && (e.file ? e.file === f.file : f.file.includes(e.publisher)));
  const tiles = medias.map((f) => {
    const started = mark("recording_started", f);
    return { file: f, user: started?.user || "", start: (mark("recording_first_frame", f) ?? started)?.media_ms ?? 0,
             end: mark("recording_stopped", f)?.media_ms ?? Infinity };
  }).sort((a, b) => a.start - b.start);
  const stage = $("#stage");
  stage.querySelectorAll("video, .tile").forEach((v) => v.remove());
  tiles.forEach((t, n) => {
    Object.assign(t, replayTile(room, t.file.file, q, n === 0));
    t.label.textContent = t.user;
    t.el.hidden = n > 0; // the others appear at their moment
    stage.append(t.el);
  });
  const [main, ...following] = tiles;
  const video = main.video;
  const start = main.start;
  let shown = -1; // media_ms up to which events are on screen
  const at = () => start + video.currentTime * 1000;
  const show = (e, fly) => {
    if (e.type === "comment") addComment(e, fly);
    else if (e.type === "product") showProductAt(e, room);
    else if (e.type === "announce" && e.pinned) showAnnouncement(e);
  };
  const follow = (now) => { // the other tiles to the replay's time: shown while on, within a quarter second
    for (const t of following) {
      const position = replayPosition(t, now);
      const on = position !== null && position <= (t.video.duration || Infinity);
      if (t.el.hidden === on) { t.el.hidden = !on; stage.style.setProperty("--cols", String(Math.ceil(Math.sqrt(1 + following.filter((x) => !x.el.hidden).length)))); }
      if (!on) { t.video.pause(); continue; }
      if (Math.abs(t.video.currentTime - position) > 0.25) t.video.currentTime = position;
      if (video.paused) t.video.pause(); else if (t.video.paused) playWithSound(t.video);
    }
  };
  const replayTo = (now) => { // after a seek: the state at `now`, without flying old comments
    $("#comments").replaceChildren(); $("#danmaku").replaceChildren(); $("#product-card").hidden = true;
    showAnnouncement(null);
    for (const e of events) if (e.media_ms <= now) show(e, false);
    shown = now;
    follow(now);
  };
  const tick = () => {
    const now = at();
    for (const e of events) if (e.media_ms > shown && e.media_ms <= now) show(e, true);
    shown = Math.max(shown, now);
    follow(now);
    window.liveRelay.replayMs = now;
  };
  video.addEventListener("timeupdate", tick);
  video.addEventListener("seeked", () => replayTo(at()));
  video.addEventListener("pause", () => follow(at()));
  video.addEventListener("play", () => follow(at()));
  window.liveRelay.replay = { video, events, start, tiles: tiles.map((t) => ({ user: t.user, start: t.start, end: t.end, video: t.video, el: t.el })) };
  setStatus(t("replay.of", { show: wanted }));
  // ?at=MS (a time on the server's clock, as a follow-up message links to the moment a product was shown):
  // the replay starts there. Logged events carry both clocks.
  const wall = Number(params.get("at"));
  const both = events.find((e) => typeof e.server_ts === "number" && typeof e.media_ms === "number");
  if (wall && both) {
    const seek = () => { video.currentTime = Math.max(0, (wall - (both.server_ts - both.media_ms) - start) / 1000); };
    if (video.readyState >= 1) seek(); else video.addEventListener("loadedmetadata", seek, { once: true });
  }
  if (tok) offerSharing(room, wanted, tok);
  playWithSound(video);
}

// The host (the studio's token) shares the replay with viewers: anyone with its link may watch it and buy from
// its cards; or stops sharing it.
async function offerSharing(room, rec, tok) {
  const button = document.createElement("button"); button.type = "button"; button.id = "share-replay";
  const link = document.createElement("input"); link.readOnly = true; link.id = "share-link"; link.hidden = true;
  link.value = `${location.origin}/?view=replay&room=${encodeURIComponent(room)}&rec=${encodeURIComponent(rec)}`;
  let shared = false;
  const say = () => { button.textContent = t(shared ? "replay.unshare" : "replay.share"); link.hidden = !shared; };
  button.onclick = async () => {
    const resp = await fetch(`/recordings/${encodeURIComponent(room)}/${encodeURIComponent(rec)}/share`,
      { method: "PUT", headers: { Authorization: `Bearer ${tok}`, "Content-Type": "application/json" }, body: JSON.stringify({ public: !shared }) });
    if (resp.ok) { shared = !shared; say(); } else setStatus((await resp.text()).trim());
  };
  say();
  $("#recordings").after(button, link);
}

// A product card as it was at its moment: a replay has no server clock to count its offer down against. Its Buy
// goes through the server's /go as a replay click (counted for the show it was pushed in, attributed as a
// live click is), to the URL the host pushed.
export function showProductAt(e, room) {
  const p = e.product; const card = $("#product-card");
  card.querySelector(".product-title").textContent = p.title;
  card.querySelector(".product-price").textContent = `${p.price} ${p.currency}`;
  card.querySelector(".product-extra").textContent = typeof p.stock === "number" ? `${p.stock} left` : "";
  const img = card.querySelector("img"); const src = safeImage(p.image); if (src) img.src = src; else img.removeAttribute("src");
  const buy = card.querySelector(".buy");
  if (safeUrl(p.url)) buy.href = `/go/${encodeURIComponent(room)}/${encodeURIComponent(p.id)}?src=replay`; else buy.removeAttribute("href");
  card.hidden = false;
}

// The host's dashboard: the show's report, refreshed every few seconds while it runs (watching now, clicks
// per product in the last minute, top sources), with the funnel, products and sources tables and the
// server-drawn charts. Needs a host token of the room.
export const RATE_COLUMNS = new Set(["of_entered", "of_previous", "click_through", "click_rate", "order_rate"]);

export async function runDashboard(room, tok) {
  const panel = document.createElement("div"); panel.id = "dashboard"; panel.className = "dashboard";
  $("#live").replaceChildren(panel);
  // Columns and funnel steps in words a seller reads; rates as percentages.
  const words = (key, raw) => { const said = t(key); return said === key ? raw : said; };
  const percent = new Intl.NumberFormat(i18n.locale, { style: "percent", maximumFractionDigits: 1 });
  const cell = (c, v) => v === null || v === undefined ? "–"
    : RATE_COLUMNS.has(c) && typeof v === "number" ? percent.format(v)
      : c === "step" ? words(`dash.step.${v}`, v) : String(v);
  const table = (rows, cols) => {
    const el = document.createElement("table"); const head = el.createTHead().insertRow();
    for (const c of cols) { const th = document.createElement("th"); th.textContent = words(`dash.col.${c}`, c); head.append(th); }
    const body = el.createTBody();
    for (const r of rows) { const tr = body.insertRow(); for (const c of cols) tr.insertCell().textContent = cell(c, r[c]); }
    return el;
  };
  const section = (title, ...children) => { const h = document.createElement("h3"); h.textContent = title; return [h, ...children]; };
  const refresh = async () => {
    const resp = await fetch(`/api/rooms/${encodeURIComponent(room)}/report`, { headers: { Authorization: `Bearer ${tok}` } });
    if (!resp.ok) { setStatus(t("dash.error", { status: resp.status, reason: (await resp.text()).trim() })); return; }
    const r = await resp.json(); window.liveRelay.report = r;
    if (!r.events) { setStatus(t("dash.no_show")); panel.replaceChildren(); return; }
    setStatus(t("dash.show", { show: r.show }));
    const live = document.createElement("p"); live.id = "dash-live";
    const clicks = Object.entries(r.live.clicks_last_minute).map(([p, n]) => `${p} ${n}`).join(", ") || t("dash.none");
    const sources = r.live.top_sources.map((s) => `${s.source} ${s.viewers}`).join(", ") || t("dash.none");
    live.textContent = t("dash.live", { n: r.live.watching_now, clicks, sources });
    const charts = ["audience", "engagement"].map((name) => {
      const img = document.createElement("img"); img.alt = t("dash.chart", { name });
      img.src = `/api/rooms/${encodeURIComponent(room)}/report/${name}.png?token=${encodeURIComponent(tok)}&lang=${i18n.lang}&t=${Date.now()}`;
      return img;
    });
    panel.replaceChildren(live, ...charts,
      ...section(t("dash.funnel"), table(r.funnel, ["step", "viewers", "of_entered", "of_previous"])),
      ...section(t("dash.products"), table(r.products, ["title", "pushes", "impressions", "clicks", "click_through", "orders", "revenue", "median_push_to_click_s"])),
      ...section(t("dash.sources"), table(r.sources, ["source", "viewers", "median_dwell_s", "click_rate", "order_rate"])),
      ...section(t("dash.quality"), table(Object.entries(r.quality).map(([g, q]) => ({ group: g, ...q })), ["group", "viewers", "median_dwell_s"])));
  };
  await refresh();
  setInterval(() => refresh().catch((e) => setStatus(e.message)), 5000);
}
