// The show over LL-HLS when live video (WebRTC) cannot reach this viewer: its connection failed (a network
// that lets the page through but not the media, after TURN and TCP were tried) or the server is full for live
// video. Plain HTTP, a second or so behind; comments, likes and the shop stay on the WebSocket. hls.js (npm,
// served by the server at /static/vendor/hls.js) plays it; a browser without MSE plays HLS itself. Only a show
// whose video is H.264 has HLS: otherwise the server says so (409) and the page keeps what it said before.
import { app } from "./state.js";
import { $, roomName, t, token } from "./context.js";

const HLS_SCRIPT = "/static/vendor/hls.js";
// A message held for its picture is shown anyway this long after it came (its cue never appeared: a player
// without date-range cues, a playlist that moved on): the viewer never loses a card, only its timing.
const HOLD_MAX_MS = 8000;
const HOLD_MAX_COUNT = 200; // messages held at once; past it the oldest is shown at once
const SHOWN_KEPT = 20; // the last releases, with the picture they waited for (window.liveRelay.hls.shown)

function hlsUrl() {
  const url = `/hls/${encodeURIComponent(roomName)}/index.m3u8`;
  return token ? `${url}?token=${encodeURIComponent(token)}` : url;
}

function loadHlsJs() {
  if (window.Hls) return Promise.resolve(true);
  return new Promise((resolve) => {
    const script = document.createElement("script");
    script.src = HLS_SCRIPT;
    script.onload = () => resolve(Boolean(window.Hls));
    script.onerror = () => resolve(false); // not installed on this server (npm ci --prefix clients/web)
    document.head.append(script);
  });
}

// Plays the room's show over HLS on the stage, saying `reason`; resolves to whether it could.
export async function fallBackToHls(reason) {
  if (app.hls) return true;
  const url = hlsUrl();
  const probe = await fetch(url).catch(() => null); // answered once the stream has started (a keyframe)
  if (!probe || !probe.ok || app.hls) return Boolean(app.hls);
  const video = document.createElement("video");
  video.autoplay = true; video.playsInline = true; video.muted = !app.soundOn;
  const el = document.createElement("div"); el.className = "tile hls";
  const label = document.createElement("span"); label.className = "label"; label.textContent = t("hls.label");
  el.append(video, label);
  let hls = null;
  // hls.js wherever it runs (Media Source Extensions: low-latency parts, the cards' cues); the browser's own
  // player otherwise (an iPhone without MSE). Chromium answers "maybe" for HLS it does not play low-latency.
  if (!((await loadHlsJs()) && window.Hls.isSupported())) {
    if (!video.canPlayType("application/vnd.apple.mpegurl")) return false;
    video.src = url;
  } else {
    // (the page's CSP allows no blob: workers; the header: this viewer is counted by its WebSocket already, not
    // again as an HLS session)
    hls = new window.Hls({ lowLatencyMode: true, enableWorker: false, maxLiveSyncPlaybackRate: 1.5,
      xhrSetup: (xhr) => xhr.setRequestHeader("X-Live-Relay-Viewer", "page") });
    hls.on(window.Hls.Events.ERROR, (_, data) => { if (app.hls) app.hls.errors.push(`${data.details}${data.fatal ? " (fatal)" : ""}`); });
    hls.loadSource(url);
    hls.attachMedia(video);
  }
  if (app.hls) { hls?.destroy(); return true; }
  $("#stage").prepend(el);
  app.hls = { video, hls, el, reason, errors: [], waiting: new Map(), shown: [], watching: false };
  window.liveRelay.hls = app.hls;
  $("#status").textContent = reason;
  video.play().catch(() => { video.muted = true; video.play().catch(() => {}); });
  return true;
}

// Live video reached this viewer after all: the HLS tile goes.
export function stopHls() {
  if (!app.hls) return;
  const held = [...app.hls.waiting.values()];
  app.hls.waiting.clear();
  for (const w of held) w.show(w.msg); // back to live video: what waited for its picture is due now
  app.hls.hls?.destroy();
  app.hls.el.remove();
  if ($("#status").textContent === app.hls.reason) $("#status").textContent = "";
  app.hls = null;
  window.liveRelay.hls = null;
}

// While the show plays over HLS the picture is a second or more behind what comes over the WebSocket, so a
// live message waits for its picture: a product card or a pinned announcement until the frame on screen
// reaches its EXT-X-DATERANGE (`${type}-${seq}`, a metadata cue at that picture's media time, which the player
// makes from the playlist), a comment until the picture on screen was made at its `server_ts` (the player's
// program date). `show(msg)` shows it; at once when nothing plays over HLS.
export function atPicture(msg, show, cue = true) {
  const h = app.hls;
  if (!h || typeof msg.seq !== "number") { show(msg); return; }
  const key = `${msg.type}-${msg.seq}`;
  h.waiting.set(key, { msg, show, cueId: cue ? key : null, ts: typeof msg.server_ts === "number" ? msg.server_ts : null,
    came: performance.now(), until: performance.now() + HOLD_MAX_MS });
  while (h.waiting.size > HOLD_MAX_COUNT) {
    const [oldest, w] = h.waiting.entries().next().value; h.waiting.delete(oldest); w.show(w.msg);
  }
  setTimeout(() => { if (app.hls === h) release(h, h.video.currentTime); }, HOLD_MAX_MS + 20);
  watchFrames(h);
}

function cueStart(video, id) {
  for (const track of video.textTracks) {
    for (const c of track.cues || []) if (c.id === id) return c.startTime;
  }
  return null;
}

// The picture on screen: its media time (and, from hls.js, the wall-clock date it was made at).
function release(h, mediaTime) {
  const now = performance.now();
  const playing = h.hls && h.hls.playingDate ? h.hls.playingDate.getTime() : null;
  for (const [key, w] of h.waiting) {
    const start = w.cueId ? cueStart(h.video, w.cueId) : null;
    const due = w.cueId ? start !== null && mediaTime >= start : w.ts !== null && playing !== null && playing >= w.ts;
    if (!due && now < w.until) continue;
    h.waiting.delete(key);
    h.shown.push({ key, mediaTime, cueStart: start, late: !due, ts: w.ts, heldMs: Math.round(now - w.came) });
    if (h.shown.length > SHOWN_KEPT) h.shown.shift();
    w.show(w.msg);
  }
}

// Checked at every frame the video presents (requestVideoFrameCallback: the frame's own media time), or every
// 50 ms where a browser lacks it, while anything waits.
function watchFrames(h) {
  if (h.watching) return;
  h.watching = true;
  const v = h.video;
  if (v.requestVideoFrameCallback) {
    const onFrame = (_, meta) => {
      if (app.hls !== h) return;
      release(h, meta.mediaTime);
      if (h.waiting.size) v.requestVideoFrameCallback(onFrame); else h.watching = false;
    };
    v.requestVideoFrameCallback(onFrame);
    return;
  }
  const timer = setInterval(() => {
    if (app.hls === h) release(h, v.currentTime);
    if (app.hls !== h || !h.waiting.size) { clearInterval(timer); h.watching = false; }
  }, 50);
}
