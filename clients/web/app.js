// live-relay browser client: viewer, host and 1v1 call views over one WebSocket protocol (docs/protocol.md).
// Plain ES module, no build step. Text from users is only ever set with textContent, never as HTML.

import { LANGUAGES, pickLanguage, translatePage, translator } from "./i18n.js";
import { loopbackOnly, refusesLoopback } from "./ice.js";

const $ = (sel) => document.querySelector(sel);
// The page's language (clients/web/i18n.js): the person's pick, remembered, else the browser's.
const i18n = translator(pickLanguage(localStorage.getItem("live-relay:lang"), navigator.languages));
const { t } = i18n;
const params = new URLSearchParams(location.search);
const view = params.get("view");
const roomName = params.get("room") || "demo";
// The token leaves the address bar (and so the history, bookmarks and screenshots) at once; the tab keeps it
// for reloads. The server also sends Referrer-Policy: no-referrer.
const tokenKey = `live-relay:${view}:${params.get("room") || "demo"}`;
const token = params.get("token") || sessionStorage.getItem(tokenKey) || null;
if (params.has("token")) {
  sessionStorage.setItem(tokenKey, params.get("token"));
  params.delete("token");
  history.replaceState(null, "", `${location.pathname}?${params}${location.hash}`);
}
// This server first; other nodes sharing the room come from this server only (`joined.nodes`, which the
// operator sets with --failover-node), never from the page's address: a crafted link must not send a viewer,
// and its token, elsewhere. A reconnect that fails on one node moves on to the next and resumes there.
const wsUrls = [`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`];
const learnNodes = (nodes) => {
  for (const u of Array.isArray(nodes) ? nodes : []) if (/^wss?:\/\/[^\s]+$/.test(u) && !wsUrls.includes(u)) wsUrls.push(u);
};
const safeUrl = (u) => (typeof u === "string" && /^https?:\/\//i.test(u) ? u : null);
// A product image: a web address, or a file of this server's (/static/...), fetched from the address this
// page reached the server at, whatever address the host used.
const safeImage = (u) => safeUrl(u) || (typeof u === "string" && /^\/static\/[\w.\/-]+$/.test(u) && !u.includes("..") ? u : null);

// Analytics: where this viewer came from (?src= / ?utm_source=, else the referring site), and a random id
// kept by this browser so an anonymous viewer who comes back counts once. Nothing else leaves the page.
const entrySource = (() => {
  const given = params.get("src") || params.get("utm_source");
  if (given) return given.slice(0, 64);
  try { const ref = document.referrer && new URL(document.referrer); if (ref && ref.host !== location.host) return ref.host.slice(0, 64); } catch (e) { /* no referrer */ }
  return null;
})();
const deviceId = (() => {
  try {
    let id = localStorage.getItem("live-relay-device");
    if (!id) { id = Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join(""); localStorage.setItem("live-relay-device", id); }
    return id;
  } catch (e) { return null; }
})();

// ---------------------------------------------------------------------------------------------------
// The message channel: join, requests with ids, events, clock offset (min-RTT ping), reconnect + resume.

// The watchdog's decision at one tick: "dead" once a ping has gone unanswered for 2 s (anything heard since
// counts as an answer), "ping" after 1 s of silence with no ping outstanding, else "wait".
function watchdogStep(now, lastHeard, pinged) {
  const outstanding = pinged > 0 && lastHeard < pinged;
  if (outstanding) return now - pinged > 2000 ? "dead" : "wait";
  return now - lastHeard > 1000 ? "ping" : "wait";
}

class Channel {
  constructor(room, tok) {
    this.room = room; this.token = tok; this.handlers = {}; this.pending = new Map(); this.nextId = 1;
    this.offset = 0; this.bestRtt = Infinity; this.epoch = null; this.seq = 0; this.joined = null;
    this.closed = false; this.backoff = 250; this.node = 0; this.history = 0; this.lastHeard = 0;
  }
  on(type, fn) { (this.handlers[type] ||= []).push(fn); return this; }
  emit(type, msg) { for (const fn of this.handlers[type] || []) fn(msg); for (const fn of this.handlers["*"] || []) fn(msg); }
  serverNow() { return Date.now() + this.offset; }
  connect() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(wsUrls[this.node % wsUrls.length]);
      this.ws = ws;
      ws.onopen = () => {
        const join = { type: "join", room: this.room, id: "join" };
        if (this.token) join.token = this.token;
        if (this.epoch) join.resume = { epoch: this.epoch, seq: this.seq };
        else if (this.history) join.history = this.history; // a late joiner sees the recent comments
        if (entrySource) join.source = entrySource;
        if (deviceId) join.device = deviceId;
        ws.send(JSON.stringify(join));
      };
      ws.onmessage = (e) => {
        this.lastHeard = Date.now();
        const msg = JSON.parse(e.data);
        if (msg.type === "joined") {
          this.joined = msg; this.epoch = msg.epoch; if (!msg.recovered) this.seq = msg.seq; learnNodes(msg.nodes);
          this.backoff = 250; this.measureClock(); this.watch(ws); this.emit("joined", msg); resolve(msg); return;
        }
        if (msg.type === "error" && msg.id === "join") { reject(new Error(`${msg.code}: ${msg.message}`)); return; }
        this.dispatch(msg);
      };
      ws.onclose = (e) => { this.lost(ws, e.code); reject(new Error(`closed (${e.code})`)); };
    });
  }
  // A dead link (Wi-Fi gone, a NAT that forgot us) closes nothing by itself for a long time. After a second
  // with nothing heard, ping (a busy room's own traffic makes pings unnecessary); a ping unanswered for two
  // seconds gives up on the socket. Silence alone never does: a hidden tab's timers fire a second or more
  // apart (a phone in the background, a host's tab behind OBS), so a quiet room could look dead between two
  // ticks that never pinged.
  watch(ws) {
    clearInterval(this.watchdog);
    let pinged = 0;
    this.watchdog = setInterval(() => {
      if (ws !== this.ws || ws.readyState !== WebSocket.OPEN) { clearInterval(this.watchdog); return; }
      const now = Date.now();
      const step = watchdogStep(now, this.lastHeard, pinged);
      if (step === "dead") { clearInterval(this.watchdog); this.lost(ws, 4999); ws.close(); }
      else if (step === "ping") { pinged = now; this.send({ type: "ping" }); }
    }, 250);
  }
  lost(ws, code) {
    if (ws.lostHandled) return;
    ws.lostHandled = true; ws.onmessage = null; ws.onclose = null;
    for (const [, p] of this.pending) p.reject(new Error(`closed (${code})`));
    this.pending.clear();
    this.emit("closed", { code });
    // Once joined, keep coming back: 4004 on a rejoin means the room is not open *yet* (a restarted server, a
    // host reconnecting); only a refused token (4001) or a private room (4003) is final.
    if (!this.closed && ![1000, 1002, 4001, 4003, 4011].includes(code) && this.joined) {
      if (code !== 4004) this.node += 1; // unreachable or going away: try the next node
      setTimeout(() => this.connect().catch(() => {}), this.backoff * (0.5 + Math.random()));
      this.backoff = Math.min(code === 4004 ? 10000 : 5000, this.backoff * 2);
    }
  }
  dispatch(msg) {
    if (["ack", "ok", "answer", "error", "pong", "closed_media"].includes(msg.type) && this.pending.has(msg.id)) {
      const p = this.pending.get(msg.id); this.pending.delete(msg.id);
      if (msg.type === "error") {
        p.reject(Object.assign(new Error(`${msg.code}: ${msg.message}`), { code: msg.code, retryAfterMs: msg.retry_after_ms }));
      }
      else p.resolve(msg);
      return;
    }
    if (typeof msg.seq === "number" && msg.epoch) { this.seq = Math.max(this.seq, msg.seq); this.epoch = msg.epoch; }
    if (typeof msg.ts === "number") msg.latency_ms = this.serverNow() - msg.ts;
    this.emit(msg.type, msg);
  }
  send(msg) {
    if (this.ws?.readyState !== WebSocket.OPEN) return;
    msg.ts ??= this.serverNow();
    this.ws.send(JSON.stringify(msg));
  }
  request(msg, timeout = 15000) {
    const id = this.nextId++; msg.id = id;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      setTimeout(() => { if (this.pending.delete(id)) reject(new Error("timeout")); }, timeout);
      this.send(msg);
    });
  }
  async measureClock() {
    for (let i = 0; i < 3; i++) {
      const t0 = Date.now();
      try {
        const pong = await this.request({ type: "ping" });
        const rtt = Date.now() - t0;
        if (rtt < this.bestRtt) { this.bestRtt = rtt; this.offset = pong.server_ts - (t0 + rtt / 2); }
      } catch { return; }
    }
  }
  close() { this.closed = true; this.ws?.close(1000); }
}

// ---------------------------------------------------------------------------------------------------
// Media: the browser offers, the server answers; our ICE candidates trickle after the answer names the
// media session.

async function negotiate(ch, pc, message) {
  const early = []; let mediaId = null;
  pc.onicecandidate = (e) => {
    const candidate = e.candidate ? e.candidate.toJSON() : { candidate: "" };
    if (mediaId) ch.send({ type: "candidate", media: mediaId, candidate }); else early.push(candidate);
  };
  await pc.setLocalDescription(await pc.createOffer());
  message.sdp = pc.localDescription.sdp;
  const answer = await ch.request(message);
  mediaId = answer.media;
  // Known now, not after a timeout: this browser will not use the only addresses the server offers.
  if (refusesLoopback(navigator.userAgent) && loopbackOnly(answer.sdp)) pc.liveRelayHint = t("media.loopback");
  await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
  for (const candidate of early) ch.send({ type: "candidate", media: mediaId, candidate });
  return mediaId;
}

// A host's camera goes out in simulcast layers (lowest first, as the server ranks them) so each viewer gets
// the best one its link carries; a camera too small for layers is sent as it is.
function simulcastLayers(track) {
  const width = track.getSettings().width || 0;
  if (width >= 960) {
    return [{ rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150_000 },
            { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500_000 },
            { rid: "f", maxBitrate: 1_500_000 }];
  }
  if (width >= 480) return [{ rid: "h", scaleResolutionDownBy: 2, maxBitrate: 200_000 }, { rid: "f", maxBitrate: 900_000 }];
  return null;
}

// The ICE servers this server gave us (TURN with time-limited credentials, for networks that block UDP).
const iceServersOf = (ch) => (ch && Array.isArray(ch.joined?.ice_servers) ? ch.joined.ice_servers : []);

// With ?video=svc a host sends one VP9 stream of three spatial layers (L3T3_KEY) instead of three simulcast
// streams: one encoder and a third less upload; the server gives each viewer the spatial layers its link
// carries. Null where the browser cannot (no VP9 or no scalabilityMode): the host sends simulcast.
function svcSetup(track) {
  if (params.get("video") !== "svc" || track.getSettings().width < 960) return null;
  const codecs = RTCRtpSender.getCapabilities("video")?.codecs || [];
  const vp9 = codecs.filter((c) => c.mimeType === "video/VP9" && !/profile-id=[123]/.test(c.sdpFmtpLine || ""));
  if (!vp9.length) return null;
  const rest = codecs.filter((c) => !vp9.includes(c));
  return { encodings: [{ scalabilityMode: "L3T3_KEY", maxBitrate: 2_000_000 }], codecs: [...vp9, ...rest] };
}

// With ?video=h264 a host sends its simulcast layers in H.264 (as OBS and hardware encoders do) instead of
// VP8; null where the browser has no H.264 encoder.
function h264First() {
  if (params.get("video") !== "h264") return null;
  const codecs = RTCRtpSender.getCapabilities("video")?.codecs || [];
  const h264 = codecs.filter((c) => c.mimeType === "video/H264" && /packetization-mode=1/.test(c.sdpFmtpLine || ""));
  return h264.length ? [...h264, ...codecs.filter((c) => !h264.includes(c))] : null;
}

async function publish(ch, stream, simulcast = false) {
  const pc = new RTCPeerConnection({ iceServers: iceServersOf(ch) });
  for (const track of stream.getTracks()) {
    const svc = simulcast && track.kind === "video" ? svcSetup(track) : null;
    const layers = svc ? svc.encodings : simulcast && track.kind === "video" ? simulcastLayers(track) : null;
    const t = pc.addTransceiver(track, { direction: "sendonly", streams: [stream], ...(layers ? { sendEncodings: layers } : {}) });
    const preferred = svc ? svc.codecs : track.kind === "video" ? h264First() : null;
    if (preferred) t.setCodecPreferences(preferred);
  }
  const mediaId = await negotiate(ch, pc, { type: "publish" });
  return { pc, mediaId };
}

async function subscribe(ch, publisher) {
  const pc = new RTCPeerConnection({ iceServers: iceServersOf(ch) });
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.ontrack = (e) => stream.addTrack(e.track);
  const started = performance.now();
  const mediaId = await negotiate(ch, pc, { type: "subscribe", publisher });
  return { pc, mediaId, stream, started };
}

// One media connection per viewer: the first tile opens it (`keep`: it outlives its publishers), each later
// one is added to it by renegotiation (one offer and answer over the WebSocket: no new ICE or DTLS handshake,
// one bandwidth estimate the server shares among the tiles, the stage host first). One renegotiation at a
// time; a connection that failed is replaced, and one that is full (too_many_media) keeps its tiles while
// new ones go on a new connection.
class Viewing {
  constructor(channel) { this.ch = channel; this.pc = null; this.mediaId = null; this.queue = Promise.resolve(); }
  add(publisher) {
    const run = this.queue.then(() => this.addNow(publisher));
    this.queue = run.catch(() => {});
    return run;
  }
  usable() { return this.pc && this.mediaId && !["failed", "closed"].includes(this.pc.connectionState); }
  async addNow(publisher) {
    if (this.usable()) {
      try { return await this.renegotiate(publisher); } catch (err) {
        // Full: its tiles stay on it, new ones go on a new connection. Gone (the server closed it): replaced.
        if (err.code === "too_many_media") { this.pc = null; this.mediaId = null; }
        else if (err.code !== "unknown_media") throw err;
      }
    }
    this.close();
    const pc = this.pc = new RTCPeerConnection({ iceServers: iceServersOf(this.ch) });
    // No video at all (a network that blocks the server's media port): said, beside the comments that work.
    pc.addEventListener("connectionstatechange", () => {
      if (pc === this.pc && pc.connectionState === "failed") setStatus(pc.liveRelayHint || t("media.blocked_view"));
    });
    const [video, audio] = ["video", "audio"].map((kind) => this.pc.addTransceiver(kind, { direction: "recvonly" }));
    const started = performance.now();
    this.mediaId = await negotiate(this.ch, this.pc, { type: "subscribe", publisher, keep: true });
    return this.subscription(video, audio, started);
  }
  async renegotiate(publisher) {
    const pc = this.pc;
    const [video, audio] = ["video", "audio"].map((kind) => pc.addTransceiver(kind, { direction: "recvonly" }));
    const started = performance.now();
    await pc.setLocalDescription(await pc.createOffer());
    let answer;
    try {
      answer = await this.ch.request({ type: "subscribe", media: this.mediaId, publisher, sdp: pc.localDescription.sdp });
    } catch (err) { // refused: back to the last agreed state, the new sections unused
      await pc.setLocalDescription({ type: "rollback" }).catch(() => {});
      video.direction = "inactive"; audio.direction = "inactive";
      throw err;
    }
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    return this.subscription(video, audio, started);
  }
  subscription(video, audio, started) {
    const stream = new MediaStream([video.receiver.track, audio.receiver.track]);
    return { pc: this.pc, mediaId: this.mediaId, stream, started };
  }
  remove(publisher) {
    if (this.usable()) this.ch.send({ type: "unsubscribe", media: this.mediaId, publisher });
  }
  close() { this.pc?.close(); this.pc = null; this.mediaId = null; }
}

// Time from `started` to the first decoded frame of a <video>.
function firstFrame(video, started) {
  return new Promise((resolve) => {
    const done = () => resolve(performance.now() - started);
    if ("requestVideoFrameCallback" in video) video.requestVideoFrameCallback(done);
    else video.addEventListener("playing", done, { once: true });
  });
}

// ---------------------------------------------------------------------------------------------------
// The live page (viewer and host): stage tiles, danmaku, products, likes, scenes.

const tiles = new Map(); // publisher id -> { sub, el }
let ch; let myPublisher = null; let statsTimer = null; let viewing = null; // (one Viewing per channel)
let myRole = null; // host | cohost | viewer, as the server last said (joined, grant)
const moderating = () => myRole === "host" || myRole === "cohost";

function setStatus(text) { $("#status").textContent = text; }

function addComment(msg, fly = true) {
  const li = document.createElement("li");
  const who = document.createElement("span"); who.className = "who"; who.textContent = msg.name || msg.user;
  const text = document.createElement("span"); text.textContent = msg.text;
  li.dataset.seq = msg.seq;
  if (msg.role === "assistant") { // the server's own assistant: a badge no viewer or host can have
    li.classList.add("assistant");
    const badge = document.createElement("span"); badge.className = "badge"; badge.textContent = t("assistant");
    who.replaceChildren(badge); // (its name, "Assistant", would say it twice)
    const asked = document.querySelector(`#comments li[data-seq="${msg.reply_to}"] > span:nth-of-type(2)`);
    if (asked) { const quote = document.createElement("q"); quote.textContent = asked.textContent; li.append(quote); }
  }
  li.prepend(who); li.append(text);
  const card = msg.role === "assistant" && cardsSeen.get(msg.product);
  if (card) { // the product it is about, as a chip to tap (the link it carried, now the chip, leaves the text)
    text.textContent = withoutLink(msg.text, card.product.url);
    li.append(productChip(card));
  }
  $("#comments").prepend(li);
  if (moderating() && ch && msg.role !== "assistant" && msg.user !== ch.joined?.user && typeof msg.seq === "number") {
    li.append(moderationButtons(msg));
  }
  while ($("#comments").children.length > 100) $("#comments").lastChild.remove();
  // From history: listed, not flown across the video. Nor are the assistant's answers: they are replies in
  // the list, under the question, not shouts over the picture.
  if (!fly || msg.role === "assistant") return;
  const bullet = document.createElement("div"); bullet.className = "bullet"; bullet.textContent = msg.text;
  bullet.dataset.seq = msg.seq;
  bullet.style.top = `${5 + Math.floor(Math.random() * 10) * 8}%`;
  bullet.addEventListener("animationend", () => bullet.remove());
  $("#danmaku").append(bullet);
}

// A host's or co-host's tools on each comment: delete it for everyone, mute its author, remove its author;
// the host may also call its author (a private 1v1) with one tap, instead of typing a user id.
function moderationButtons(msg) {
  const tools = document.createElement("span"); tools.className = "mod";
  const who = msg.name || msg.user;
  const act = (label, title, request, done) => {
    const b = document.createElement("button"); b.type = "button"; b.textContent = label; b.title = title;
    b.setAttribute("aria-label", title);
    b.onclick = () => ch.request(request).then(() => setStatus(done || t("mod.done", { what: title })))
      .catch((err) => setStatus(err.message));
    tools.append(b);
  };
  act(t("mod.delete"), t("mod.delete_title"), { type: "delete_comment", seq: msg.seq });
  act(t("mod.mute"), t("mod.mute_title", { who }), { type: "mute_user", user: msg.user, duration_s: 600 });
  act(t("mod.remove"), t("mod.remove_title", { who }), { type: "remove_user", user: msg.user, duration_s: 3600 });
  if (myRole === "host" && !msg.user.startsWith("anon-")) { // (an anonymous viewer cannot be called)
    act(t("mod.call"), t("mod.call_title", { who }), { type: "call_invite", user: msg.user, keep_video: true },
      t("call.invited", { who }));
  }
  return tools;
}

// Recording, as everyone sees it: a REC mark on the stage (viewers are told), and the host's button.
function showRecording(state) {
  const active = Boolean(state && state.active);
  $("#rec").hidden = !active;
  const button = $("#record");
  if (button) { button.textContent = t(active ? "host.record_stop" : "host.record"); button.setAttribute("aria-pressed", String(active)); }
}

// The host ends the show: recording stops, a PK ends, the camera goes off; the host is offered the replay
// and the numbers.
async function endShow() {
  if (!$("#rec").hidden) await ch.request({ type: "record_stop" }).catch(() => {});
  if ($("#pk-bar").hidden === false) await ch.request({ type: "pk_end" }).catch(() => {});
  const pub = window.liveRelay.publisher;
  if (pub) {
    if (pub.mediaId) ch.send({ type: "unpublish", media: pub.mediaId });
    pub.pc.close(); window.liveRelay.publisher = null; myPublisher = null;
  }
  stopSelf(); $("#preview").srcObject = null;
  setStatus(t("show.ended"));
  const room = encodeURIComponent(ch.room); const ended = $("#show-ended");
  ended.querySelector(".replay").href = `/?view=replay&room=${room}`;
  ended.querySelector(".numbers").href = `/?view=dashboard&room=${room}`;
  ended.hidden = false;
}

function removeComment(seq) {
  for (const el of document.querySelectorAll(`#comments li[data-seq="${seq}"], #danmaku .bullet[data-seq="${seq}"]`)) el.remove();
}

// What moderation says to this page: its own mute, slow mode for everyone, and to moderators what was done.
function showModeration(m) {
  const mine = ch && m.user === ch.joined?.user;
  if (m.action === "slow_mode") {
    setNotice(m.seconds ? t("slow_mode", { s: m.seconds }) : "");
  } else if (mine && m.action === "muted") {
    setStatus(t("muted_you", { min: Math.max(1, Math.round((m.until_ms - ch.serverNow()) / 60000)) }));
  } else if (mine && m.action === "unmuted") {
    setStatus(t("may_comment"));
  } else if (moderating()) {
    setStatus(`${m.by}: ${m.action}${m.user ? ` ${m.user}` : ""}${m.seq ? ` #${m.seq}` : ""}`);
  }
}

function setNotice(text) { const n = $("#slow-mode"); n.textContent = text; n.hidden = !text; }

let cardTimer = null; let countdownTimer = null; const seenProducts = new Set();
const cardsSeen = new Map(); // product id -> { product, endsAt } of every card pushed while here (the last 50)
let chipTimer = null; // ticks the countdowns of the assistant's product chips while any is counting

// The offer's end on the server's clock (fixed when the card was pushed: late joiners count the same).
function offerEnd(msg) {
  const p = msg.product;
  return typeof p.countdown_s === "number" ? (msg.server_ts || ch.serverNow()) + p.countdown_s * 1000 : null;
}

function offerLeft(endsAt, countdown) {
  if (endsAt === null) return null;
  const left = Math.min(countdown, Math.ceil((endsAt - ch.serverNow()) / 1000)); // clock estimates wobble
  return left > 0 ? t("offer.ends", { time: `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}` })
    : t("offer.ended");
}

// Where tapping Buy goes: with analytics on (the server named this viewer) through the server's redirect,
// which counts the click and sends the browser on to the product's own URL.
function buyHref(p) {
  const href = safeUrl(p.url); const viewer = ch.joined?.viewer;
  if (href && viewer) return `/go/${encodeURIComponent(ch.room)}/${encodeURIComponent(p.id)}?v=${encodeURIComponent(viewer)}`;
  return href;
}

// An assistant's answer about a card: its title, price and live countdown; a tap buys as the card's Buy does.
function productChip(card) {
  const p = card.product;
  const chip = document.createElement("a"); chip.className = "chip"; chip.target = "_blank"; chip.rel = "noopener noreferrer";
  const href = buyHref(p); if (href) chip.href = href;
  const title = document.createElement("b"); title.textContent = p.title;
  const price = document.createElement("span"); price.className = "chip-price"; price.textContent = i18n.price(p.price, p.currency);
  const extra = document.createElement("span"); extra.className = "chip-extra";
  const buy = document.createElement("span"); buy.className = "chip-buy"; buy.textContent = t("buy");
  chip.append(title, price, extra, buy);
  if (card.endsAt !== null) {
    chip.dataset.endsAt = card.endsAt; chip.dataset.countdown = p.countdown_s;
    extra.textContent = offerLeft(card.endsAt, p.countdown_s);
    if (!chipTimer) chipTimer = setInterval(tickChips, 1000);
  }
  return chip;
}

function tickChips() {
  const counting = document.querySelectorAll("#comments .chip[data-ends-at]");
  for (const chip of counting) {
    chip.querySelector(".chip-extra").textContent = offerLeft(Number(chip.dataset.endsAt), Number(chip.dataset.countdown));
  }
  if (!counting.length) { clearInterval(chipTimer); chipTimer = null; }
}

// An answer's text without the product's link (and the word before it), once the chip carries it.
// ...and without the countdown as it stood when the answer was written (the chip's goes on).
function withoutLink(text, url) {
  let out = text.replace(/(\s*[·,，]\s*)?(offer ends in|优惠还剩)\s*\d+:\d{2}/u, "");
  if (url && out.includes(url)) out = out.replace(url, "").replace(/(\s*[·,，]\s*)?(buy:|链接)?\s*$/u, "");
  return out.trim();
}

function showProduct(msg) {
  const p = msg.product; const card = $("#product-card");
  cardsSeen.delete(p.id); cardsSeen.set(p.id, { product: p, endsAt: offerEnd(msg) }); // the newest push, last
  while (cardsSeen.size > 50) cardsSeen.delete(cardsSeen.keys().next().value);
  card.querySelector(".product-title").textContent = p.title;
  card.querySelector(".product-price").textContent = i18n.price(p.price, p.currency);
  const stock = typeof p.stock === "number" ? t("stock", { n: i18n.count(p.stock) }) : "";
  const endsAt = offerEnd(msg);
  const tick = () => {
    const parts = stock ? [stock] : [];
    if (endsAt !== null) {
      parts.push(offerLeft(endsAt, p.countdown_s));
      if (endsAt - ch.serverNow() <= -5000) { clearInterval(countdownTimer); card.hidden = true; }
    }
    card.querySelector(".product-extra").textContent = parts.join(" · ");
  };
  clearInterval(countdownTimer); tick();
  if (endsAt !== null) countdownTimer = setInterval(tick, 1000);
  const img = card.querySelector("img"); const src = safeImage(p.image); if (src) img.src = src; else img.removeAttribute("src");
  const buy = card.querySelector(".buy"); const href = buyHref(p);
  if (href) buy.href = href; else buy.removeAttribute("href");
  const viewer = ch.joined?.viewer;
  card.dataset.productId = p.id;
  if (endsAt !== null && endsAt - ch.serverNow() < -5000) { card.hidden = true; return; } // long over
  card.hidden = false;
  if (viewer && !seenProducts.has(p.id)) { seenProducts.add(p.id); ch.send({ type: "product_seen", product: p.id }); }
  clearTimeout(cardTimer);
  if (endsAt === null) cardTimer = setTimeout(() => { card.hidden = true; }, 20000); // else: until it ends
}

function showAnnouncement(msg) {
  const el = $("#announcement");
  if (msg && msg.text) { el.textContent = msg.text; el.hidden = false; } else el.hidden = true;
}

let lastE2E = null;
function noteLatency(msg) {
  // Clock estimation is good to about a millisecond: never show a message arriving before it was sent.
  if (typeof msg.latency_ms === "number") { lastE2E = Math.max(0, msg.latency_ms); $("#stat-e2e").textContent = lastE2E.toFixed(1); }
}

function layout() {
  const n = Math.max(1, tiles.size + ($("#self-tile") ? 1 : 0));
  $("#stage").style.setProperty("--cols", String(Math.ceil(Math.sqrt(n))));
  $("#stage").dataset.tiles = String(n); // (a phone lays one video full screen, two or more split: style.css)
}

// A line over the stage for a few seconds ("link copied").
function toast(text) {
  const el = $("#toast"); el.textContent = text; el.hidden = false;
  clearTimeout(Number(el.dataset.timer));
  el.dataset.timer = String(setTimeout(() => { el.hidden = true; }, 3000));
}

// Share: the phone's share sheet where there is one, else the link copied (else shown to copy by hand). The
// link is the room's, never this viewer's token, and says it came from a share (the dashboard's sources).
async function shareShow() {
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
function setFit(whole) {
  localStorage.setItem("live-relay:fit", whole ? "whole" : "fill");
  $("#stage").classList.toggle("whole", whole);
  const button = $("#fit");
  button.setAttribute("aria-pressed", String(whole));
  button.setAttribute("aria-label", t(whole ? "fit.fill" : "fit.whole"));
}

// Sound: browsers let a page autoplay video with sound only after the person interacted with it. Start muted
// unless sound was turned on before (remembered); one tap turns it on for the whole stage.
let soundOn = localStorage.getItem("live-relay:sound") === "on";
function offerSound() { $("#unmute").hidden = soundOn; }
function setSound(on) {
  soundOn = on; localStorage.setItem("live-relay:sound", on ? "on" : "off");
  for (const v of document.querySelectorAll("#stage .tile:not(.self) video, #call-remote")) { v.muted = !on; v.play().catch(() => {}); }
  offerSound();
}
function playWithSound(video) {
  video.muted = !soundOn;
  video.play().catch(() => { video.muted = true; soundOn = false; offerSound(); video.play().catch(() => {}); });
}

async function showPublisher(publisher, user, attempt = 0) {
  if (tiles.has(publisher) || publisher === myPublisher) return;
  tiles.set(publisher, { pending: true });
  try {
    viewing ??= new Viewing(ch);
    const sub = await viewing.add(publisher);
    if (!tiles.has(publisher)) { viewing.remove(publisher); return; } // it left while being added
    const el = document.createElement("div"); el.className = "tile";
    const video = document.createElement("video"); video.autoplay = true; video.playsInline = true; video.muted = !soundOn;
    video.srcObject = sub.stream; video.dataset.publisher = publisher;
    const label = document.createElement("span"); label.className = "label"; label.textContent = user || "";
    el.append(video, label); $("#stage").prepend(el);
    tiles.set(publisher, { sub, el, publisher });
    orderPkTiles(roomState.pk);
    layout();
    askVideoQuality();
    firstFrame(video, sub.started).then((ms) => {
      $("#stat-setup").textContent = ms.toFixed(0);
      ch.send({ type: "client_stats", first_frame_ms: ms });
    });
    playWithSound(video);
    if (attempt) setStatus("");
  } catch (err) {
    tiles.delete(publisher);
    if (err.code === "overloaded" && attempt < 10) {
      // The server is full for a moment and said when to come back: comments and cards go on meanwhile.
      setStatus(t("crowd"));
      window.liveRelay.busyRetries = attempt + 1;
      setTimeout(() => showPublisher(publisher, user, attempt + 1), err.retryAfterMs || 2000);
      return;
    }
    console.warn("subscribe failed", publisher, err.message);
  }
}

// Each subscription tells the server the most video it wants: none while the tab is hidden (audio goes on),
// a small layer for a small tile; the server still gives no more than the viewer's link carries.
const askedQuality = new Map();
function qualityFor(el) {
  if (document.hidden) return "off";
  const pixels = (el.clientWidth || 0) * (window.devicePixelRatio || 1);
  return pixels < 400 ? "low" : pixels < 800 ? "medium" : "high";
}
function askVideoQuality() {
  for (const t of tiles.values()) {
    if (!t.sub || !t.sub.mediaId) continue;
    const quality = qualityFor(t.el);
    const key = `${t.sub.mediaId}/${t.publisher}`;
    if (askedQuality.get(key) === quality) continue;
    askedQuality.set(key, quality);
    ch.send({ type: "video_quality", media: t.sub.mediaId, publisher: t.publisher, quality });
  }
}
document.addEventListener("visibilitychange", askVideoQuality);
let resizeTimer = null;
window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(askVideoQuality, 300); });

// What the server says of this viewer's link every 2 s: the layer it gets, its bandwidth estimate.
function showLink(m) {
  window.liveRelay.link = m;
  const layer = m.paused ? "audio only" : m.layers > 1 ? `${m.layer === null ? "–" : m.layer + 1}/${m.layers}` : "one";
  $("#stat-layer").textContent = layer;
  $("#stat-bw").textContent = m.estimate_bps ? `${(m.estimate_bps / 1e6).toFixed(2)} Mb/s` : "–";
}

function dropPublisher(publisher) {
  const t = tiles.get(publisher); if (!t) return;
  tiles.delete(publisher);
  if (t.pending) return; // (showPublisher sees it gone and takes it out of the connection)
  viewing?.remove(publisher); t.el.remove(); layout();
}

function reconcile(state) {
  // Everyone publishing in this room, plus the PK opponent's publishers.
  const wanted = new Map();
  // Our own stream is never a tile (publisher_joined can arrive before `publish` has answered us).
  const me = ch.joined?.user;
  // Each tile labelled with its publisher's name, as its comments are (the user id when it has none).
  for (const p of state.publishers || []) if (p.user !== me) wanted.set(p.publisher, p.name || p.user);
  for (const side of state.pk?.sides || []) for (const id of side.publishers) wanted.set(id, side.host);
  for (const [id, user] of wanted) showPublisher(id, user);
  for (const id of [...tiles.keys()]) if (!wanted.has(id)) dropPublisher(id);
}

const roomState = { publishers: [], pk: null };

// During a PK each side's tiles stand under its half of the bar (side a's on the left), whichever tile
// arrived first: the stage puts the newest first, so the other room's host was left of the bar's own.
function orderPkTiles(pk) {
  for (const t of tiles.values()) if (t.el) t.el.style.order = "";
  pk?.sides.forEach((side, i) => {
    for (const id of side.publishers || []) { const t = tiles.get(id); if (t?.el) t.el.style.order = String(i); }
  });
}

function renderPk(pk, scores, remaining) {
  const bar = $("#pk-bar");
  orderPkTiles(pk);
  if (!pk) { bar.hidden = true; return; }
  const [a, b] = pk.sides; const sa = scores?.[a.room] ?? a.score; const sb = scores?.[b.room] ?? b.score;
  const secs = Math.max(0, Math.round(remaining ?? (pk.ends_at_ms - ch.serverNow()) / 1000));
  bar.replaceChildren();
  // Each host by the name its tile shows (this room's publishers carry names; the other room's, its user id).
  const nameOf = (user) => roomState.publishers.find((p) => p.user === user)?.name || user;
  const left = document.createElement("span"); left.className = "a"; left.textContent = `${nameOf(a.host)} ${sa}`;
  const time = document.createElement("span"); time.className = "time";
  time.textContent = `${Math.floor(secs / 60)}:${String(secs % 60).padStart(2, "0")}`;
  const right = document.createElement("span"); right.className = "b"; right.textContent = `${sb} ${nameOf(b.host)}`;
  left.style.flexGrow = String(1 + sa); right.style.flexGrow = String(1 + sb);
  bar.append(left, time, right); bar.hidden = false;
}

// While the host is in a private 1v1 and the show does not get their video, say so over the frozen frame.
function renderCall(call) {
  const notice = $("#notice");
  const away = call && !call.keep_video && ch.joined?.user !== call.host && ch.joined?.user !== call.guest;
  notice.textContent = away ? t("away", { host: call.host }) : "";
  notice.hidden = !away;
}

function invitePanel(text, onAccept, onDecline) {
  const panel = $("#invites"); panel.hidden = false;
  const row = document.createElement("div"); row.className = "row";
  const label = document.createElement("span"); label.textContent = text;
  const yes = document.createElement("button"); yes.textContent = t("accept");
  const no = document.createElement("button"); no.textContent = t("decline");
  yes.onclick = () => { row.remove(); onAccept(); }; no.onclick = () => { row.remove(); onDecline(); };
  row.append(label, yes, no); panel.append(row);
}

let rejoinMedia = false; let liveStream = null;

// One's own camera on the stage while live, as the audience sees it (a host saw itself only in a 160 px
// preview, its stage black): a local tile, mirrored and silent, never a subscription to one's own stream.
function showSelf(stream) {
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
function stopSelf() {
  for (const track of liveStream?.getTracks() || []) track.stop();
  liveStream = null; $("#self-tile")?.remove(); layout();
}

// "On air" only once the media connection is up; one that fails (a network that blocks the server's media
// port, UDP and TCP) is said to have failed, not left at "on air" over video nobody gets.
function watchPublishing(pub, live) {
  const say = () => {
    if (pub !== window.liveRelay.publisher) return; // a connection replaced since
    const state = pub.pc.connectionState;
    if (state === "connected") setStatus(live);
    else if (state === "failed") setStatus(pub.pc.liveRelayHint || t("media.blocked"));
  };
  pub.pc.addEventListener("connectionstatechange", say);
  setStatus(pub.pc.liveRelayHint || t("media.connecting")); say();
}

async function republish() {
  if (!liveStream) return;
  const pub = await publish(ch, liveStream, true);
  myPublisher = pub.mediaId; window.liveRelay.publisher = pub;
  watchPublishing(pub, t("on_air.again"));
}

async function goLive() {
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720 }, audio: true });
  liveStream = stream;
  $("#preview").srcObject = stream;
  showSelf(stream);
  const pub = await publish(ch, stream, true);
  myPublisher = pub.mediaId;
  window.liveRelay.publisher = pub;
  watchPublishing(pub, t("on_air"));
}

async function startPrivateCall(grant) {
  const panel = $("#invites"); panel.hidden = false;
  const holder = document.createElement("div"); holder.className = "call-box"; panel.append(holder);
  const screen = callScreen(holder, t("call.private", { who: grant.with }));
  screen.box.scrollIntoView({ block: "start" });
  screen.hangUp.onclick = async () => { await ch.request({ type: "call_end" }).catch(() => {}); };
  setStatus(t("call.in_call"));
  const session = await runCall(new Channel(grant.call_room, grant.token), screen);
  ch.on("call_ended", () => {
    session.stop(); setTimeout(() => holder.remove(), 3000);
    setStatus(myRole ? roleStatus(myRole) : ""); // no longer "call invitation sent" or "in call"
  });
}

// What this page is now, in a shopper's or seller's words: a host is "live" only while it publishes.
function roleStatus(role) {
  return role === "host" && !window.liveRelay.publisher ? t("role.host_ready") : t(`role.${role}`);
}

function wireLive(isHost) {
  ch.on("joined", (msg) => {
    const role = roleStatus(msg.role);
    setStatus(msg.recovered ? t("status.resumed", { role }) : role);
    window.liveRelay.joins = (window.liveRelay.joins || 0) + 1;
    if (rejoinMedia && ["host", "cohost"].includes(msg.role)) {
      rejoinMedia = false;
      republish().catch((e) => setStatus(`republish: ${e.message}`));
    }
    $("#like-count").textContent = msg.state.likes;
    $("#viewers").textContent = t("watching", { n: i18n.count(msg.state.viewers) });
    if (msg.state.product) showProduct(msg.state.product);
    showRecording(msg.state.recording);
    showAnnouncement(msg.state.pinned);
    Object.assign(roomState, { publishers: msg.state.publishers, pk: msg.state.pk });
    renderPk(msg.state.pk); reconcile(roomState); renderCall(msg.state.call); renderSeats(msg.state.stage);
    for (const el of document.querySelectorAll(".host-only")) el.hidden = msg.role !== "host";
    for (const el of document.querySelectorAll(".viewer-only")) el.hidden = msg.role !== "viewer";
    $("#leave-stage").hidden = msg.role !== "cohost";
    myRole = msg.role;
    setNotice(msg.state.slow_mode_s ? t("slow_mode", { s: msg.state.slow_mode_s }) : "");
  });
  // Events up to joined.seq that follow `joined` are the room's recent history (join.history): list them.
  // Only live events are a measure of latency: the history and a resume's catch-up were sent long ago.
  const live = (m) => !(ch.joined && typeof m.seq === "number" && m.seq <= ch.joined.seq);
  ch.on("comment", (m) => { addComment(m, live(m)); if (live(m)) noteLatency(m); });
  ch.on("product", (m) => { showProduct(m); if (live(m)) noteLatency(m); });
  ch.on("announce", (m) => { if (m.pinned) showAnnouncement(m); if (live(m)) noteLatency(m); });
  ch.on("likes", (m) => { $("#like-count").textContent = m.total; });
  ch.on("link", showLink);
  ch.on("comment_deleted", (m) => removeComment(m.target));
  ch.on("moderation", showModeration);
  ch.on("presence", (m) => { $("#viewers").textContent = t("watching", { n: i18n.count(m.viewers) }); });
  ch.on("media", (m) => {
    if (m.event === "publisher_joined") roomState.publishers.push({ publisher: m.publisher, user: m.user, name: m.name, kinds: m.kinds });
    else roomState.publishers = roomState.publishers.filter((p) => p.publisher !== m.publisher);
    reconcile(roomState);
  });
  ch.on("pk", (m) => { roomState.pk = m.state; renderPk(m.state); reconcile(roomState); });
  ch.on("pk_score", (m) => renderPk(roomState.pk, m.scores, m.remaining_s));
  ch.on("call", (m) => renderCall(m.state));
  ch.on("recording", (m) => showRecording(m.state));
  ch.on("stage", (m) => renderSeats(m.state));
  ch.on("pk_ended", () => { roomState.pk = null; renderPk(null); reconcile(roomState); });
  ch.on("grant", (m) => {
    // A co-host is told it is live, and why it no longer is when the host took it off the stage.
    setStatus(m.role === "viewer" && m.reason === "removed" ? t("stage.removed") : t(`role.${m.role}`)); myRole = m.role;
    $("#raise-hand").hidden = m.role !== "viewer";
    $("#leave-stage").hidden = m.role !== "cohost";
    if (m.role === "viewer" && window.liveRelay.publisher) { // off the stage: the camera goes off too
      window.liveRelay.publisher.pc.close(); window.liveRelay.publisher = null; myPublisher = null; stopSelf();
    }
    if (m.role === "cohost") goLive().catch((e) => setStatus(`camera: ${e.message}`));
  });
  ch.on("stage_invited", (m) => invitePanel(t("invite.stage", { from: m.from }),
    () => ch.request({ type: "stage_invite_answer", accept: true }),
    () => ch.request({ type: "stage_invite_answer", accept: false })));
  ch.on("call_invited", (m) => invitePanel(t("invite.call", { from: m.from }),
    () => ch.request({ type: "call_answer", accept: true }),
    () => ch.request({ type: "call_answer", accept: false })));
  ch.on("call_grant", (m) => startPrivateCall(m));
  // A host's invitations answered no (or not at all): said, not left at "invitation sent".
  ch.on("call_declined", (m) => setStatus(t(m.reason === "expired" ? "call.unanswered" : "call.declined", { who: m.user })));
  ch.on("pk_declined", (m) => setStatus(t(m.reason === "expired" ? "pk.unanswered" : "pk.declined", { room: m.by_room })));
  ch.on("closed", (m) => {
    setStatus(m.code === 4004 ? t("closed.waiting")
      : m.code === 4011 ? t("closed.removed")
        : m.code === 4001 ? t("closed.invalid") : t("closed.other", { code: m.code }));
    // The server closes a connection's media sessions with it: drop ours, and redo them on re-join.
    for (const id of [...tiles.keys()]) dropPublisher(id);
    viewing?.close(); viewing = null;
    rejoinMedia = Boolean(window.liveRelay.publisher);
    window.liveRelay.publisher?.pc.close();
    window.liveRelay.publisher = null; myPublisher = null;
  });

  if (!token) { // anonymous viewers watch and like; say how to comment instead of answering "forbidden"
    $("#comment-input").disabled = true; $("#comment-send").hidden = true;
    $("#comment-input").placeholder = t("comment.guest");
  }
  $("#unmute").onclick = () => setSound(true);
  offerSound();
  $("#leave-stage").onclick = () => ch.request({ type: "stage_leave" }).catch((err) => setStatus(err.message));
  $("#comment-form").onsubmit = (e) => {
    e.preventDefault();
    const text = $("#comment-input").value.trim(); if (!text) return;
    ch.request({ type: "comment", text }).catch((err) => setStatus(err.message));
    $("#comment-input").value = "";
  };
  let taps = 0;
  $("#like").onclick = () => { taps++; };
  // A double tap on the video likes too, as in the apps shoppers know (the heart button stays for one tap).
  $("#stage").addEventListener("dblclick", (e) => {
    if (e.target.closest("button, a, .product-card")) return;
    taps++; $("#like").classList.remove("pulse"); void $("#like").offsetWidth; $("#like").classList.add("pulse");
  });
  // The comments over a phone's video stay above the product card, however tall its title makes it.
  new ResizeObserver(([entry]) => {
    const h = entry.target.offsetHeight;
    document.body.style.setProperty("--card-h", h ? `${h + 8}px` : "0px");
  }).observe($("#product-card"));
  $("#share").onclick = () => { shareShow(); };
  $("#fit").onclick = () => setFit(!$("#stage").classList.contains("whole"));
  setFit(localStorage.getItem("live-relay:fit") === "whole");
  setInterval(() => { if (taps) { ch.send({ type: "like", count: Math.min(taps, 50) }); taps = 0; } }, 200);
  $("#raise-hand").onclick = () => ch.request({ type: "stage_request" }).then(() => setStatus(t("stage.hand_raised")))
    .catch((err) => setStatus(err.message));
  $("#product-card .close").onclick = () => { $("#product-card").hidden = true; };

  if (isHost) wireHost();
  statsTimer = setInterval(updateStats, 1000);
}

const SHELF = [
  // Images from this server (they load wherever the page does); Buy links to a placeholder shop.
  { id: "sku-jade", title: "Jade bracelet", price: "19.90", currency: "EUR", url: "https://shop.example/p/jade", image: "/static/demo/jade.svg", stock: 20, countdown_s: 300 },
  { id: "sku-tea", title: "Oolong tea, 250 g", price: "12.50", currency: "EUR", url: "https://shop.example/p/tea", image: "/static/demo/tea.svg", stock: 50 },
  { id: "sku-silk", title: "Silk scarf", price: "39.00", currency: "EUR", url: "https://shop.example/p/silk", image: "/static/demo/scarf.svg", stock: 5 },
];

// The studio's live numbers: watching and likes as the room says them, clicks and orders from the show's
// report every 10 s (none when the server keeps no analytics: they stay "–").
function watchNumbers() {
  const show = (name, n) => { $(`#studio-numbers [data-number=${name}]`).textContent = i18n.count(n); };
  ch.on("joined", (m) => { show("watching", m.state.viewers); show("likes", m.state.likes); });
  ch.on("presence", (m) => show("watching", m.viewers));
  ch.on("likes", (m) => show("likes", m.total));
  const poll = async () => {
    if (!ch.joined || document.hidden || !timer) return;
    try {
      const resp = await fetch(`/api/rooms/${encodeURIComponent(roomName)}/report`,
        { headers: { Authorization: `Bearer ${token}` } });
      if (resp.status === 404) { clearInterval(timer); timer = null; return; } // (no analytics on this server)
      if (!resp.ok) return;
      const r = await resp.json();
      if (!r.events) return;
      show("clicks", (r.products || []).reduce((sum, p) => sum + (p.clicks || 0), 0));
      show("orders", r.orders?.count ?? 0);
    } catch { /* the next round tries again */ }
  };
  let timer = setInterval(poll, 10000);
  ch.on("joined", () => { poll(); });
}

// PK from a list: the shows whose host is on air now (on every node), each a tap to invite; asked when the
// studio opens, on Refresh and every 15 s while the tab is in front.
function watchLiveRooms(invite) {
  const list = $("#pk-rooms");
  const refresh = async () => {
    if (!ch.joined || document.hidden) return;
    try {
      const resp = await fetch(`/api/rooms/${encodeURIComponent(roomName)}/live-rooms`,
        { headers: { Authorization: `Bearer ${token}` } });
      if (!resp.ok) return;
      const { live } = await resp.json();
      list.replaceChildren(...(live.length ? live.map((r) => {
        const li = document.createElement("li"); li.dataset.room = r.room;
        const b = document.createElement("button"); b.type = "button";
        b.textContent = t("host.pk_pick", { name: r.name || r.host, room: r.room });
        b.onclick = () => invite(r.room);
        li.append(b); return li;
      }) : [Object.assign(document.createElement("li"), { textContent: t("host.pk_none") })]));
    } catch { /* the next round tries again */ }
  };
  $("#pk-refresh").onclick = refresh;
  ch.on("joined", () => { refresh(); });
  setInterval(refresh, 15000);
}

// The assistant's catalog: pasted, or read from a file (its format from its name), given to the server over
// HTTP (catalogs up to 64 KiB); the server reads it and says what it holds, or why it is refused.
function wireCatalog() {
  const form = $("#catalog-form"); const result = $("#catalog-result");
  $("#catalog-file").onchange = async (e) => {
    const file = e.target.files[0]; if (!file) return;
    const ext = file.name.split(".").pop().toLowerCase();
    form.format.value = ext === "json" ? "json" : ["yaml", "yml"].includes(ext) ? "yaml" : "markdown";
    form.catalog.value = await file.text();
  };
  form.onsubmit = async (e) => {
    e.preventDefault();
    const catalog = form.catalog.value;
    if (!catalog.trim()) { result.textContent = t("host.catalog_empty"); return; }
    const mode = $("#assistant-mode").value;
    const body = { on: true, mode: mode === "off" ? "auto" : mode, catalog, format: form.format.value };
    try {
      const resp = await fetch(`/api/rooms/${encodeURIComponent(roomName)}/assistant`, {
        method: "PUT", headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        body: JSON.stringify(body) });
      const reason = (text) => text.trim().replace(/^bad_message: /, "");
      if (!resp.ok) { result.textContent = t("host.catalog_bad", { reason: reason(await resp.text()) }); return; }
      const r = await resp.json();
      $("#assistant-mode").value = body.mode;
      result.textContent = t("host.catalog_saved", { products: i18n.count(r.products), faq: i18n.count(r.faq) });
    } catch (err) { result.textContent = t("host.catalog_bad", { reason: err.message }); }
  };
}

function wireHost() {
  $("#host-panel").hidden = false;
  $("#go-live").onclick = () => { $("#show-ended").hidden = true; goLive().catch((e) => setStatus(`camera: ${e.message}`)); };
  $("#record").onclick = () => ch.request({ type: $("#rec").hidden ? "record_start" : "record_stop" })
    .catch((err) => setStatus(err.message));
  $("#end-show").onclick = () => endShow().catch((err) => setStatus(err.message));
  for (const product of SHELF) {
    const b = document.createElement("button"); b.textContent = t("host.push", { title: product.title });
    b.onclick = () => ch.request({ type: "product", product }).catch((err) => setStatus(err.message));
    $("#shelf").append(b);
  }
  $("#pin-form").onsubmit = (e) => {
    e.preventDefault();
    const text = e.target.text.value.trim(); if (!text) return;
    ch.request({ type: "announce", text, pinned: true }).then(() => { e.target.text.value = ""; })
      .catch((err) => setStatus(err.message));
  };
  $("#unpin").onclick = () => ch.request({ type: "announce", text: "", pinned: true }).catch((err) => setStatus(err.message));
  // Moderation: words this room does not allow (comma-separated, Chinese or English), and slow mode.
  $("#words-form").onsubmit = (e) => {
    e.preventDefault();
    const words = e.target.words.value.split(/[,，\n]/).map((w) => w.trim()).filter(Boolean);
    ch.request({ type: "block_words", words }).then(() => setStatus(t("host.words_blocked", { n: words.length })))
      .catch((err) => setStatus(err.message));
  };
  $("#slow-mode-select").onchange = (e) => ch.request({ type: "slow_mode", seconds: Number(e.target.value) })
    .catch((err) => setStatus(err.message));
  watchNumbers();
  wireCatalog();
  // The assistant: off, answering by itself, or suggesting answers for the host to approve.
  const mode = $("#assistant-mode");
  mode.onchange = () => ch.request(mode.value === "off" ? { type: "assistant", on: false }
    : { type: "assistant", on: true, mode: mode.value }).catch((err) => setStatus(err.message));
  ch.on("joined", (m) => { const a = m.state.assistant; mode.value = a && a.on ? a.mode : "off"; });
  ch.on("assistant_suggestion", (m) => {
    const li = document.createElement("li"); const text = document.createElement("span");
    text.textContent = `${m.question} → ${m.text}`;
    const approve = document.createElement("button"); approve.textContent = t("host.assistant_post");
    approve.onclick = () => ch.request({ type: "assistant_approve", suggestion: m.id }).then(() => li.remove())
      .catch((err) => { setStatus(err.message); li.remove(); });
    li.append(text, approve); $("#assistant-suggestions").prepend(li);
  });
  ch.on("assistant_digest", (m) => {
    const list = $("#assistant-digest"); list.replaceChildren();
    for (const q of m.unanswered) { const li = document.createElement("li"); li.textContent = t("host.digest_asked", { n: q.count, question: q.question }); list.append(li); }
    for (const q of m.answered_again) { const li = document.createElement("li"); li.textContent = t("host.digest_again", { n: q.count, question: q.question }); list.append(li); }
  });
  const requests = $("#requests");
  ch.on("stage_requested", (m) => {
    const li = document.createElement("li"); li.dataset.user = m.user;
    const who = document.createElement("span"); who.textContent = m.name || m.user;
    const yes = document.createElement("button"); yes.textContent = t("accept");
    const no = document.createElement("button"); no.textContent = t("reject");
    yes.onclick = () => { li.remove(); ch.request({ type: "stage_accept", user: m.user }).catch((e) => setStatus(e.message)); };
    no.onclick = () => { li.remove(); ch.request({ type: "stage_reject", user: m.user }).catch(() => {}); };
    li.append(who, yes, no); requests.append(li);
  });
  ch.on("stage_request_cancelled", (m) => requests.querySelector(`li[data-user="${CSS.escape(m.user)}"]`)?.remove());
  const invitePk = (room) => ch.request({ type: "pk_invite", room, duration_s: Number($("#pk-form").duration.value) || 300 })
    .then(() => setStatus(t("pk.sent", { room })))
    .catch((err) => setStatus(err.message));
  $("#pk-form").onsubmit = (e) => { e.preventDefault(); invitePk(e.target.room.value); };
  watchLiveRooms(invitePk);
  $("#pk-end").onclick = () => ch.request({ type: "pk_end" }).catch((err) => setStatus(err.message));
  ch.on("pk_invited", (m) => {
    const li = document.createElement("li");
    const what = document.createElement("span"); what.textContent = t("pk.challenge", { from: m.from, room: m.from_room });
    const yes = document.createElement("button"); yes.textContent = t("accept");
    const no = document.createElement("button"); no.textContent = t("decline");
    yes.onclick = () => { li.remove(); ch.request({ type: "pk_answer", room: m.from_room, accept: true }).catch((e) => setStatus(e.message)); };
    no.onclick = () => { li.remove(); ch.request({ type: "pk_answer", room: m.from_room, accept: false }).catch(() => {}); };
    li.append(what, yes, no); $("#pk-invites").append(li);
  });
  $("#call-form").onsubmit = (e) => {
    e.preventDefault();
    ch.request({ type: "call_invite", user: e.target.user.value, keep_video: e.target.keep.checked })
      .then(() => setStatus(t("call.invited", { who: e.target.user.value }))).catch((err) => setStatus(err.message));
  };
}

// The host's view of the stage: each co-host with mute and remove.
function renderSeats(stage) {
  const list = $("#seats"); if (!list || !stage) return;
  list.replaceChildren();
  for (const seat of stage.seats || []) {
    const li = document.createElement("li"); li.dataset.user = seat.user;
    const who = document.createElement("span"); who.textContent = `${seat.seat}. ${seat.name || seat.user}`;
    li.append(who);
    for (const kind of ["audio", "video"]) {
      const muted = Boolean(seat.muted?.[kind]);
      const b = document.createElement("button"); b.className = `mute-${kind}`;
      b.textContent = t(`seat.${muted ? "unmute" : "mute"}_${kind}`);
      b.onclick = () => ch.request({ type: "stage_mute", user: seat.user, kind, muted: !muted }).catch((e) => setStatus(e.message));
      li.append(b);
    }
    const remove = document.createElement("button"); remove.className = "remove"; remove.textContent = t("mod.remove");
    remove.onclick = () => ch.request({ type: "stage_remove", user: seat.user }).catch((e) => setStatus(e.message));
    li.append(remove); list.append(li);
  }
}

// Every 10 s a viewer tells the server the quality it got (freezes so far, how late messages come), for the
// host's report; only what changed is sent, and nothing while there is nothing to say.
let reportedQuality = ""; let lastQualityReport = 0;
function reportQuality(freezes) {
  const now = Date.now();
  if (!ch || !ch.joined || now - lastQualityReport < 10000) return;
  const stats = {};
  if (freezes !== null) stats.freezes = freezes;
  if (lastE2E !== null) stats.message_latency_ms = Math.round(lastE2E);
  const key = JSON.stringify(stats);
  if (key === "{}" || key === reportedQuality) return;
  lastQualityReport = now; reportedQuality = key;
  ch.send({ type: "client_stats", ...stats });
}

// The peer connections the tiles arrive on (one, unless a connection had to be replaced), each once.
const subscribedConnections = () => new Set([...[...tiles.values()].filter((t) => t.sub).map((t) => t.sub.pc),
  ...(window.liveRelay.callPc && window.liveRelay.callPc.connectionState !== "closed" ? [window.liveRelay.callPc] : [])]);

// What this page receives, summed over its subscriptions (inbound-rtp of getStats): the stats line shows
// it, and the weak-network lab reads it (window.liveRelay.mediaStats).
async function mediaStats() {
  const video = { framesDecoded: 0, freezeCount: 0, totalFreezesDuration: 0, packetsLost: 0, packetsReceived: 0,
                  nackCount: 0, frameWidth: 0, frameHeight: 0, jitter: null, jitterBufferDelay: 0,
                  jitterBufferEmittedCount: 0 };
  const audio = { concealedSamples: 0, totalSamplesReceived: 0, packetsLost: 0, packetsReceived: 0 };
  let rtt = null;
  for (const pc of subscribedConnections()) {
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        for (const k of ["framesDecoded", "freezeCount", "totalFreezesDuration", "packetsLost", "packetsReceived",
                         "nackCount", "jitterBufferDelay", "jitterBufferEmittedCount"]) video[k] += s[k] || 0;
        video.frameWidth = Math.max(video.frameWidth, s.frameWidth || 0);
        video.frameHeight = Math.max(video.frameHeight, s.frameHeight || 0);
        if (typeof s.jitter === "number") video.jitter = s.jitter;
      }
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        for (const k of Object.keys(audio)) audio[k] += s[k] || 0;
      }
      if (s.type === "candidate-pair" && s.nominated && typeof s.currentRoundTripTime === "number") {
        rtt = s.currentRoundTripTime;
      }
    });
  }
  return { video, audio, rtt, subscriptions: [...tiles.values()].filter((t) => t.sub).length };
}

// Each tile's video as getStats tells it (by the receiver's track), for the weak-network lab.
async function tileStats() {
  const out = {};
  for (const [publisher, t] of tiles) {
    if (!t.sub) continue;
    const id = t.sub.stream.getVideoTracks()[0]?.id;
    (await t.sub.pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video" && s.trackIdentifier === id) {
        out[publisher] = { framesDecoded: s.framesDecoded || 0, freezeCount: s.freezeCount || 0,
                           totalFreezesDuration: s.totalFreezesDuration || 0, frameHeight: s.frameHeight || 0 };
      }
    });
  }
  return out;
}

// Which way media reaches this page: straight over UDP, or relayed by TURN (over UDP, TCP or TLS).
function pathOf(local) {
  if (local.candidateType === "relay") return `TURN/${(local.relayProtocol || "udp").toUpperCase()}`;
  return `${(local.protocol || "udp").toUpperCase()} ${local.candidateType === "host" ? "direct" : "via NAT"}`;
}

async function updateStats() {
  let frames = 0; let freezes = null; let lost = 0; let received = 0;
  for (const pc of subscribedConnections()) {
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        frames += s.framesDecoded || 0;
        if (typeof s.freezeCount === "number") freezes = (freezes || 0) + s.freezeCount;
        lost += s.packetsLost || 0; received += s.packetsReceived || 0;
        if (typeof s.jitter === "number") $("#stat-jitter").textContent = (s.jitter * 1000).toFixed(1);
      }
      if (s.type === "candidate-pair" && s.nominated && typeof s.currentRoundTripTime === "number") {
        $("#stat-rtt").textContent = (s.currentRoundTripTime * 1000).toFixed(1);
      }
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
        const local = report.get(s.localCandidateId);
        if (local) window.liveRelay.mediaPath = pathOf(local);
      }
    });
  }
  if (window.liveRelay.mediaPath) $("#stat-path").textContent = window.liveRelay.mediaPath;
  $("#stat-frames").textContent = frames;
  if (received + lost > 0) $("#stat-loss").textContent = `${(100 * lost / (received + lost)).toFixed(1)}%`;
  if (freezes !== null) $("#stat-freezes").textContent = freezes;
  window.liveRelay.framesDecoded = frames;
  reportQuality(freezes);
}

// ---------------------------------------------------------------------------------------------------
// 1v1 call: the other side filling the screen, oneself in a corner, and what a phone call has: mute,
// camera off, switch camera, hang up, how long the call has lasted and how long it took to connect.

const callClock = (ms) => {
  const s = Math.max(0, Math.floor(ms / 1000));
  return `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
};

function callScreen(container, title) {
  const make = (tag, props) => Object.assign(document.createElement(tag), props);
  const remote = make("video", { autoplay: true, playsInline: true, id: "call-remote", className: "call-remote" });
  const self = make("video", { autoplay: true, playsInline: true, muted: true, id: "call-self", className: "call-self" });
  const head = make("div", { className: "call-head" });
  const clock = make("span", { id: "call-timer", textContent: t("call.connecting") });
  head.append(make("span", { className: "call-with", textContent: title }), clock);
  const button = (id, text, label) => {
    const b = make("button", { id, type: "button", textContent: text });
    b.setAttribute("aria-label", label); return b;
  };
  const mute = button("call-mute", t("call.mute"), t("call.mute_label"));
  const camera = button("call-camera", t("call.camera_off"), t("call.camera_label"));
  const flip = button("call-switch", t("call.switch"), t("call.switch_label")); flip.hidden = true;
  const hangUp = button("call-hangup", t("call.hang_up"), t("call.hang_up_label")); hangUp.classList.add("hang-up");
  const bar = make("div", { className: "call-bar" }); bar.append(mute, camera, flip, hangUp);
  const box = make("div", { className: "call" }); box.append(remote, self, head, bar);
  container.replaceChildren(box);
  return { box, remote, self, clock, bar, mute, camera, flip, hangUp };
}

// A control that turns this side's tracks of one kind on and off (the other side gets silence or black):
// its label says what a tap does next, aria-pressed what is on now.
function toggleTracks(button, tracks, onText, offText) {
  button.onclick = () => {
    const on = !tracks()[0]?.enabled;
    for (const t of tracks()) t.enabled = on;
    button.textContent = on ? onText : offText; button.setAttribute("aria-pressed", String(!on));
  };
}

async function offerCameraSwitch(screen, stream, pc) {
  const cameras = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput");
  screen.flip.hidden = cameras.length < 2;
  screen.flip.onclick = async () => {
    const current = stream.getVideoTracks()[0];
    const at = cameras.findIndex((c) => c.deviceId === current?.getSettings().deviceId);
    const next = cameras[(at + 1) % cameras.length];
    const fresh = (await navigator.mediaDevices.getUserMedia({ video: { deviceId: { exact: next.deviceId }, width: 640, height: 480 } }))
      .getVideoTracks()[0];
    fresh.enabled = current ? current.enabled : true;
    await pc.getSenders().find((s) => s.track?.kind === "video")?.replaceTrack(fresh);
    if (current) { stream.removeTrack(current); current.stop(); }
    stream.addTrack(fresh); screen.self.srcObject = stream;
  };
}

async function runCall(call, screen) {
  const started = performance.now();
  const publishers = [];
  let mine = null; let sub = null; let other = null; let connectedAt = null; let setupMs = null; let stream = null;
  const trySubscribe = async () => {
    const candidate = publishers.find((p) => p.publisher !== mine?.mediaId);
    if (!mine || !candidate || sub) return;
    other = candidate.publisher;
    sub = await subscribe(call, other);
    screen.remote.srcObject = sub.stream;
    // A page that captures camera and microphone may play sound without a tap (browsers' autoplay rules):
    // a call starts with sound; elsewhere the tap-for-sound button is the way.
    screen.remote.muted = false;
    screen.remote.play().catch((e) => { if (e.name === "NotAllowedError") playWithSound(screen.remote); });
    window.liveRelay.callPc = sub.pc;
    setupMs = (await firstFrame(screen.remote, sub.started)) + (sub.started - started);
    connectedAt = performance.now();
    $("#stat-setup").textContent = setupMs.toFixed(0);
    window.liveRelay.callSetupMs = setupMs;
    call.send({ type: "client_stats", call_setup_ms: setupMs });
  };
  const tick = setInterval(() => {
    if (connectedAt !== null) {
      screen.clock.textContent = t("call.timer", { time: callClock(performance.now() - connectedAt), s: (setupMs / 1000).toFixed(1) });
    }
  }, 500);
  // Listen before publishing: the other party may publish while we negotiate.
  call.on("media", (m) => {
    if (m.event === "publisher_joined") publishers.push(m);
    if (m.event === "publisher_left" && m.publisher === other) {
      screen.clock.textContent = t("call.other_left"); connectedAt = null;
    }
    trySubscribe();
  });
  await call.connect();
  publishers.push(...(call.joined.state.publishers || []));
  stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: true });
  screen.self.srcObject = stream;
  toggleTracks(screen.mute, () => stream.getAudioTracks(), t("call.mute"), t("call.unmute"));
  toggleTracks(screen.camera, () => stream.getVideoTracks(), t("call.camera_off"), t("call.camera_on"));
  mine = await publish(call, stream);
  offerCameraSwitch(screen, stream, mine.pc).catch(() => {});
  await trySubscribe();
  // The end of the call on this side: camera and microphone released, both connections closed.
  const stop = () => {
    clearInterval(tick);
    const lasted = connectedAt !== null ? callClock(performance.now() - connectedAt) : null;
    for (const t of stream.getTracks()) t.stop();
    mine.pc.close(); sub?.pc.close(); call.close();
    screen.bar.hidden = true; screen.self.hidden = true;
    screen.clock.textContent = lasted ? t("call.ended_after", { time: lasted }) : t("call.ended");
  };
  return { mine, stop };
}

// ---------------------------------------------------------------------------------------------------
// WHIP (publish) and WHEP (play): media with nothing but HTTP, as OBS and players speak it. The offer is
// POSTed with a bearer token; the answer comes back with the session's URL, to which our ICE candidates
// are PATCHed (trickle-ice-sdpfrag) and which DELETE ends.

async function httpMedia(kind, room, tok, pc) {
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

async function runWhip(room, tok) {
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: true });
  $("#stage").replaceChildren();
  const preview = document.createElement("video"); preview.autoplay = true; preview.muted = true; preview.playsInline = true;
  preview.srcObject = stream; $("#stage").append(preview);
  const pc = new RTCPeerConnection({ iceServers: [] });
  for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
  const session = await httpMedia("whip", room, tok, pc);
  window.liveRelay.whip = session;
  setStatus("on air over WHIP");
}

// A WHEP player that waits for the stream and follows the publisher's restarts (OBS reconnects with DELETE
// then POST, and the server ends the players' sessions with it): while nothing is published it asks again
// every 2 s; when its session ends it starts another. window.liveRelay.whep is the current session.
async function runWhep(room, tok) {
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
      setStatus("waiting for the stream to start…");
      await pause(2000);
      continue;
    }
    const stop = session.stop;
    session.stop = () => { player.stopped = true; return stop(); };
    window.liveRelay.whep = session; player.sessions += 1;
    setStatus("playing over WHEP");
    await ended;
    pc.close();
    if (!player.stopped) setStatus("the stream stopped; waiting for it to start again…");
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

function replayTile(room, file, q, main) {
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
function replayPosition(tile, now) {
  if (now < tile.start || now > tile.end) return null;
  return (now - tile.start) / 1000;
}

async function runReplay(room, tok) {
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
    else if (e.type === "product") showProductAt(e);
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
  setStatus(`replay of ${wanted}`);
  playWithSound(video);
}

// A product card as it was at its moment: a replay has no server clock to count its offer down against.
function showProductAt(e) {
  const p = e.product; const card = $("#product-card");
  card.querySelector(".product-title").textContent = p.title;
  card.querySelector(".product-price").textContent = `${p.price} ${p.currency}`;
  card.querySelector(".product-extra").textContent = typeof p.stock === "number" ? `${p.stock} left` : "";
  const img = card.querySelector("img"); const src = safeImage(p.image); if (src) img.src = src; else img.removeAttribute("src");
  const buy = card.querySelector(".buy"); const href = safeUrl(p.url); if (href) buy.href = href; else buy.removeAttribute("href");
  card.hidden = false;
}

// The host's dashboard: the show's report, refreshed every few seconds while it runs (watching now, clicks
// per product in the last minute, top sources), with the funnel, products and sources tables and the
// server-drawn charts. Needs a host token of the room.
const RATE_COLUMNS = new Set(["of_entered", "of_previous", "click_through", "click_rate", "order_rate"]);

async function runDashboard(room, tok) {
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
    if (!resp.ok) { setStatus(`dashboard: ${resp.status} ${(await resp.text()).trim()}`); return; }
    const r = await resp.json(); window.liveRelay.report = r;
    if (!r.events) { setStatus(t("dash.no_show")); panel.replaceChildren(); return; }
    setStatus(t("dash.show", { show: r.show }));
    const live = document.createElement("p"); live.id = "dash-live";
    const clicks = Object.entries(r.live.clicks_last_minute).map(([p, n]) => `${p} ${n}`).join(", ") || t("dash.none");
    const sources = r.live.top_sources.map((s) => `${s.source} ${s.viewers}`).join(", ") || t("dash.none");
    live.textContent = t("dash.live", { n: r.live.watching_now, clicks, sources });
    const charts = ["audience", "engagement"].map((name) => {
      const img = document.createElement("img"); img.alt = `${name} chart`;
      img.src = `/api/rooms/${encodeURIComponent(room)}/report/${name}.png?token=${encodeURIComponent(tok)}&t=${Date.now()}`;
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

window.liveRelay = { framesDecoded: 0, callSetupMs: null, mediaStats, tileStats, callClock, language: i18n.lang,
  mediaConnections: () => subscribedConnections().size };

// The header's language switch: the other language's own name; the pick is remembered and the page reloads
// in it (the tab keeps its token).
function offerLanguages() {
  document.documentElement.lang = i18n.locale;
  translatePage(document, t);
  const other = LANGUAGES.find((l) => l !== i18n.lang);
  const button = $("#language");
  button.textContent = t("other_language"); button.lang = translator(other).locale;
  button.onclick = () => { localStorage.setItem("live-relay:lang", other); location.reload(); };
}

// The figures engineers read (latency, jitter, layers) stay one tap away, not in a shopper's face: shown
// with ?stats=1 or the toggle (remembered).
function offerStats() {
  const shown = params.get("stats") === "1" || localStorage.getItem("live-relay:stats") === "on";
  const toggle = $("#stats-toggle");
  const show = (on) => { $("#stats").hidden = !on; toggle.setAttribute("aria-expanded", String(on)); };
  show(shown);
  toggle.onclick = () => {
    const on = $("#stats").hidden; show(on); localStorage.setItem("live-relay:stats", on ? "on" : "off");
  };
}

async function main() {
  offerLanguages();
  offerStats();
  $("#room-name").textContent = roomName;
  document.body.dataset.view = view || "start"; // (style.css lays a phone's viewer page full screen)
  if (!view) {
    $("#start").hidden = false; setStatus("");
    $("#start-form").onsubmit = (e) => {
      e.preventDefault();
      const q = new URLSearchParams({ view: e.submitter.value, room: e.target.room.value });
      if (e.target.token.value) q.set("token", e.target.token.value);
      location.search = q.toString();
    };
    return;
  }
  $("#live").hidden = false;
  if (view === "replay") {
    for (const el of document.querySelectorAll(".controls, #stats")) el.hidden = true;
    $("#product-card .close").onclick = () => { $("#product-card").hidden = true; };
    $("#unmute").onclick = () => setSound(true); offerSound();
    try { await runReplay(roomName, token); } catch (err) { setStatus(err.message); }
    return;
  }
  if (view === "dashboard") {
    try { await runDashboard(roomName, token); } catch (err) { setStatus(err.message); }
    return;
  }
  if (view === "whip" || view === "whep") { // plain HTTP media, no message channel
    for (const el of document.querySelectorAll(".controls, #comments, #stats")) el.hidden = true;
    $("#unmute").onclick = () => setSound(true); offerSound();
    try { await (view === "whip" ? runWhip(roomName, token) : runWhep(roomName, token)); } catch (err) { setStatus(err.message); }
    return;
  }
  ch = new Channel(roomName, token);
  ch.history = 30; // a late joiner sees the last comments, not an empty list
  window.liveRelay.channel = ch;
  if (view === "call") {
    const holder = document.createElement("div"); $("#stage").replaceWith(holder);
    for (const el of document.querySelectorAll(".controls, #comments, #unmute")) el.hidden = true;
    const screen = callScreen(holder, t("call.in", { room: roomName }));
    const session = await runCall(ch, screen);
    screen.hangUp.onclick = () => { session.stop(); setStatus(t("call.ended")); };
    statsTimer = setInterval(updateStats, 1000);
    setStatus(t("call.in_call"));
    return;
  }
  wireLive(view === "host");
  try { await ch.connect(); } catch (err) { setStatus(err.message); }
}

main();
