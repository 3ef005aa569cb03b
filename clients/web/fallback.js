// The show over LL-HLS when live video (WebRTC) cannot reach this viewer: its connection failed (a network
// that lets the page through but not the media, after TURN and TCP were tried) or the server is full for live
// video. Plain HTTP, a second or so behind; comments, likes and the shop stay on the WebSocket. hls.js (npm,
// served by the server at /static/vendor/hls.js) plays it; a browser without MSE plays HLS itself. Only a show
// whose video is H.264 has HLS: otherwise the server says so (409) and the page keeps what it said before.
import { app } from "./state.js";
import { $, roomName, t, token } from "./context.js";

const HLS_SCRIPT = "/static/vendor/hls.js";

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
    hls = new window.Hls({ lowLatencyMode: true, enableWorker: false,
      xhrSetup: (xhr) => xhr.setRequestHeader("X-Live-Relay-Viewer", "page") });
    hls.on(window.Hls.Events.ERROR, (_, data) => { if (app.hls) app.hls.errors.push(`${data.details}${data.fatal ? " (fatal)" : ""}`); });
    hls.loadSource(url);
    hls.attachMedia(video);
  }
  if (app.hls) { hls?.destroy(); return true; }
  $("#stage").prepend(el);
  app.hls = { video, hls, el, reason, errors: [] };
  window.liveRelay.hls = app.hls;
  $("#status").textContent = reason;
  video.play().catch(() => { video.muted = true; video.play().catch(() => {}); });
  return true;
}

// Live video reached this viewer after all: the HLS tile goes.
export function stopHls() {
  if (!app.hls) return;
  app.hls.hls?.destroy();
  app.hls.el.remove();
  if ($("#status").textContent === app.hls.reason) $("#status").textContent = "";
  app.hls = null;
  window.liveRelay.hls = null;
}
