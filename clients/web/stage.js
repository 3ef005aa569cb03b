// The stage: the tiles of the host, co-hosts and a PK opponent, their layout, sound, the video quality each
// asks for, the PK bar, sharing and the picture's fit, a private call's notice, invitations.

import { app } from "./state.js";
import { $, roomName, t } from "./context.js";
import { fallBackToHls, stopHls } from "./fallback.js";
import { Viewing, firstFrame } from "./media.js";

// ---------------------------------------------------------------------------------------------------
// The live page (viewer and host): stage app.tiles, danmaku, products, likes, scenes.

export const moderating = () => app.myRole === "host" || app.myRole === "cohost";

export function setStatus(text) { $("#status").textContent = text; }

export function layout() {
  const n = Math.max(1, app.tiles.size + ($("#self-tile") ? 1 : 0));
  $("#stage").style.setProperty("--cols", String(Math.ceil(Math.sqrt(n))));
  $("#stage").dataset.tiles = String(n); // (a phone lays one video full screen, two or more split: style.css)
}

// A line over the stage for a few seconds ("link copied").
export function toast(text) {
  const el = $("#toast"); el.textContent = text; el.hidden = false;
  clearTimeout(Number(el.dataset.timer));
  el.dataset.timer = String(setTimeout(() => { el.hidden = true; }, 3000));
}

// Share: the phone's share sheet where there is one, else the link copied (else shown to copy by hand). The
// link is the room's, never this viewer's token, and says it came from a share (the dashboard's sources).
export async function shareShow() {
  const url = `${location.origin}/?${new URLSearchParams({ view: "viewer", room: roomName, src: "share" })}`;
  if (navigator.share) {
    try { await navigator.share({ title: t("share.title", { room: roomName }), url }); return; }
    catch (err) { if (err.name === "AbortError") return; } // (closed by the person: nothing to say)
  }
  try { await navigator.clipboard.writeText(url); toast(t("share.copied")); }
  catch { toast(t("share.manual", { url })); }
}

// The picture fills a phone's screen (cropping a landscape camera's sides: the person stays in the middle);
// one tap shows the whole picture instead, remembered for the next show.
export function setFit(whole) {
  localStorage.setItem("live-relay:fit", whole ? "whole" : "fill");
  $("#stage").classList.toggle("whole", whole);
  const button = $("#fit");
  button.setAttribute("aria-pressed", String(whole));
  button.setAttribute("aria-label", t(whole ? "fit.fill" : "fit.whole"));
}

// Sound: browsers let a page autoplay video with sound only after the person interacted with it. Start muted
// unless sound was turned on before (remembered); one tap turns it on for the whole stage.
export function offerSound() { $("#unmute").hidden = app.soundOn; }
export function setSound(on) {
  app.soundOn = on; localStorage.setItem("live-relay:sound", on ? "on" : "off");
  for (const v of document.querySelectorAll("#stage .tile:not(.self) video, #call-remote")) { v.muted = !on; v.play().catch(() => {}); }
  offerSound();
}
export function playWithSound(video) {
  video.muted = !app.soundOn;
  video.play().catch(() => { video.muted = true; app.soundOn = false; offerSound(); video.play().catch(() => {}); });
}

export async function showPublisher(publisher, user, attempt = 0) {
  if (app.tiles.has(publisher) || publisher === app.myPublisher) return;
  app.tiles.set(publisher, { pending: true });
  try {
    app.viewing ??= new Viewing(app.ch);
    const sub = await app.viewing.add(publisher);
    if (!app.tiles.has(publisher)) { app.viewing.remove(publisher); return; } // it left while being added
    const el = document.createElement("div"); el.className = "tile";
    const video = document.createElement("video"); video.autoplay = true; video.playsInline = true; video.muted = !app.soundOn;
    video.srcObject = sub.stream; video.dataset.publisher = publisher;
    const label = document.createElement("span"); label.className = "label"; label.textContent = user || "";
    el.append(video, label); $("#stage").prepend(el);
    app.tiles.set(publisher, { sub, el, publisher });
    orderPkTiles(app.roomState.pk);
    layout();
    askVideoQuality();
    firstFrame(video, sub.started).then((ms) => {
      $("#stat-setup").textContent = ms.toFixed(0);
      app.ch.send({ type: "client_stats", first_frame_ms: ms });
    });
    playWithSound(video);
    stopHls(); // live video after all: the HLS stand-in goes
    if (attempt) setStatus("");
  } catch (err) {
    app.tiles.delete(publisher);
    if (err.code === "overloaded" && attempt < 10) {
      // The server is full for a moment and said when to come back: comments and cards go on meanwhile, and
      // the show plays over HLS until live video has room (where the show has HLS).
      setStatus(app.hls ? app.hls.reason : t("crowd"));
      fallBackToHls(t("hls.full"));
      window.liveRelay.busyRetries = attempt + 1;
      setTimeout(() => showPublisher(publisher, user, attempt + 1), err.retryAfterMs || 2000);
      return;
    }
    console.warn("subscribe failed", publisher, err.message);
  }
}

// Each subscription tells the server the most video it wants: none while the tab is hidden (audio goes on),
// a small layer for a small tile; the server still gives no more than the viewer's link carries.
export function qualityFor(el) {
  if (document.hidden) return "off";
  const pixels = (el.clientWidth || 0) * (window.devicePixelRatio || 1);
  return pixels < 400 ? "low" : pixels < 800 ? "medium" : "high";
}
export function askVideoQuality() {
  for (const t of app.tiles.values()) {
    if (!t.sub || !t.sub.mediaId) continue;
    const quality = qualityFor(t.el);
    const key = `${t.sub.mediaId}/${t.publisher}`;
    if (app.askedQuality.get(key) === quality) continue;
    app.askedQuality.set(key, quality);
    app.ch.send({ type: "video_quality", media: t.sub.mediaId, publisher: t.publisher, quality });
  }
}
document.addEventListener("visibilitychange", askVideoQuality);
window.addEventListener("resize", () => { clearTimeout(app.resizeTimer); app.resizeTimer = setTimeout(askVideoQuality, 300); });

// What the server says of this viewer's link every 2 s: the layer it gets, its bandwidth estimate.
export function showLink(m) {
  window.liveRelay.link = m;
  const layer = m.paused ? t("layer.audio_only") : m.layers > 1 ? `${m.layer === null ? "–" : m.layer + 1}/${m.layers}` : t("layer.one");
  $("#stat-layer").textContent = layer;
  $("#stat-bw").textContent = m.estimate_bps ? `${(m.estimate_bps / 1e6).toFixed(2)} Mb/s` : "–";
}

export function dropPublisher(publisher) {
  const t = app.tiles.get(publisher); if (!t) return;
  app.tiles.delete(publisher);
  if (t.pending) return; // (showPublisher sees it gone and takes it out of the connection)
  app.viewing?.remove(publisher); t.el.remove(); layout();
}

export function reconcile(state) {
  // Everyone publishing in this room, plus the PK opponent's publishers.
  const wanted = new Map();
  // Our own stream is never a tile (publisher_joined can arrive before `publish` has answered us).
  const me = app.ch.joined?.user;
  // Each tile labelled with its publisher's name, as its comments are (the user id when it has none).
  for (const p of state.publishers || []) if (p.user !== me) wanted.set(p.publisher, p.name || p.user);
  for (const side of state.pk?.sides || []) for (const id of side.publishers) wanted.set(id, side.name || side.host);
  for (const [id, user] of wanted) showPublisher(id, user);
  for (const id of [...app.tiles.keys()]) if (!wanted.has(id)) dropPublisher(id);
}


// During a PK each side's app.tiles stand under its half of the bar (side a's on the left), whichever tile
// arrived first: the stage puts the newest first, so the other room's host was left of the bar's own.
export function orderPkTiles(pk) {
  for (const t of app.tiles.values()) if (t.el) t.el.style.order = "";
  pk?.sides.forEach((side, i) => {
    for (const id of side.publishers || []) { const t = app.tiles.get(id); if (t?.el) t.el.style.order = String(i); }
  });
}

export function renderPk(pk, scores, remaining) {
  const bar = $("#pk-bar");
  orderPkTiles(pk);
  if (!pk) { bar.hidden = true; return; }
  const [a, b] = pk.sides; const sa = scores?.[a.room] ?? a.score; const sb = scores?.[b.room] ?? b.score;
  const secs = Math.max(0, Math.round(remaining ?? (pk.ends_at_ms - app.ch.serverNow()) / 1000));
  bar.replaceChildren();
  // Each host by the name its tile shows (this room's publishers carry names; the other room's, its user id).
  const nameOf = (side) => side.name || app.roomState.publishers.find((p) => p.user === side.host)?.name || side.host;
  const left = document.createElement("span"); left.className = "a"; left.textContent = `${nameOf(a)} ${sa}`;
  const time = document.createElement("span"); time.className = "time";
  time.textContent = `${Math.floor(secs / 60)}:${String(secs % 60).padStart(2, "0")}`;
  const right = document.createElement("span"); right.className = "b"; right.textContent = `${sb} ${nameOf(b)}`;
  left.style.flexGrow = String(1 + sa); right.style.flexGrow = String(1 + sb);
  bar.append(left, time, right); bar.hidden = false;
}

// While the host is in a private 1v1 and the show does not get their video, say so over the frozen frame.
export function renderCall(call) {
  const notice = $("#notice");
  const away = call && !call.keep_video && app.ch.joined?.user !== call.host && app.ch.joined?.user !== call.guest;
  notice.textContent = away ? t("away", { host: call.host }) : "";
  notice.hidden = !away;
}

export function invitePanel(text, onAccept, onDecline) {
  const panel = $("#invites"); panel.hidden = false;
  const row = document.createElement("div"); row.className = "row";
  const label = document.createElement("span"); label.textContent = text;
  const yes = document.createElement("button"); yes.textContent = t("accept");
  const no = document.createElement("button"); no.textContent = t("decline");
  yes.onclick = () => { row.remove(); onAccept(); }; no.onclick = () => { row.remove(); onDecline(); };
  row.append(label, yes, no); panel.append(row);
}


// One's own camera on the stage while live, as the audience sees it (a host saw itself only in a 160 px
// preview, its stage black): a local tile, mirrored and silent, never a subscription to one's own stream.
export function showSelf(stream) {
  let tile = $("#self-tile");
  if (!tile) {
    tile = document.createElement("div"); tile.className = "tile self"; tile.id = "self-tile";
    const video = Object.assign(document.createElement("video"), { autoplay: true, muted: true, playsInline: true });
    const label = document.createElement("span"); label.className = "label"; label.textContent = t("you");
    tile.append(video, label); $("#stage").prepend(tile);
  }
  tile.querySelector("video").srcObject = stream;
  layout();
}

// Off the stage: the camera goes off (its light too) and so does the self tile.
export function stopSelf() {
  for (const track of app.liveStream?.getTracks() || []) track.stop();
  app.liveStream = null; $("#self-tile")?.remove(); layout();
}

// "On air" only once the media connection is up; one that fails (a network that blocks the server's media
// port, UDP and TCP) is said to have failed, not left at "on air" over video nobody gets.
