// A live room's page (viewer, co-host, host): the channel's events wired to the stage, chat, shop and studio,
// and the figures behind the stats toggle.

import { app } from "./state.js";
import { startPrivateCall } from "./call.js";
import { CLOSE } from "./connection.js";
import { addComment, noteLatency, removeComment, setNotice, showAnnouncement, showModeration } from "./chat.js";
import { $, i18n, t, token } from "./context.js";
import { atPicture } from "./fallback.js";
import { showProduct } from "./shop.js";
import { dropPublisher, invitePanel, offerSound, reconcile, renderCall, renderPk, setFit, setSound, setStatus, shareShow, showLink, stopSelf } from "./stage.js";
import { goLive, renderSeats, republish, showRecording, wireHost } from "./studio.js";

export function roleStatus(role) {
  return role === "host" && !window.liveRelay.publisher ? t("role.host_ready") : t(`role.${role}`);
}

export function wireLive(isHost) {
  app.ch.on("joined", (msg) => {
    const role = roleStatus(msg.role);
    setStatus(msg.recovered ? t("status.resumed", { role }) : role);
    window.liveRelay.joins = (window.liveRelay.joins || 0) + 1;
    if (app.rejoinMedia && ["host", "cohost"].includes(msg.role)) {
      app.rejoinMedia = false;
      republish().catch((e) => setStatus(t("error.republish", { reason: e.message })));
    }
    $("#like-count").textContent = msg.state.likes;
    $("#viewers").textContent = t("watching", { n: i18n.count(msg.state.viewers) });
    if (msg.state.product) showProduct(msg.state.product);
    showRecording(msg.state.recording);
    showAnnouncement(msg.state.pinned);
    Object.assign(app.roomState, { publishers: msg.state.publishers, pk: msg.state.pk });
    renderPk(msg.state.pk); reconcile(app.roomState); renderCall(msg.state.call); renderSeats(msg.state.stage);
    for (const el of document.querySelectorAll(".host-only")) el.hidden = msg.role !== "host";
    for (const el of document.querySelectorAll(".viewer-only")) el.hidden = msg.role !== "viewer";
    $("#leave-stage").hidden = msg.role !== "cohost";
    app.myRole = msg.role;
    setNotice(msg.state.slow_mode_s ? t("slow_mode", { s: msg.state.slow_mode_s }) : "");
  });
  // Events up to joined.seq that follow `joined` are the room's recent history (join.history): list them.
  // Only live events are a measure of latency: the history and a resume's catch-up were sent long ago.
  const live = (m) => !(app.ch.joined && typeof m.seq === "number" && m.seq <= app.ch.joined.seq);
  // Over HLS (fallback.js) a live card, pinned announcement or someone else's comment waits for its picture;
  // this viewer's own comments and the assistant's replies to it do not.
  const mine = (m) => m.user === app.ch.joined?.user || m.role === "assistant";
  app.ch.on("comment", (m) => {
    if (live(m) && !mine(m)) atPicture(m, (x) => addComment(x, true), false); else addComment(m, live(m));
    if (live(m)) noteLatency(m);
  });
  app.ch.on("product", (m) => { if (live(m)) atPicture(m, showProduct); else showProduct(m); if (live(m)) noteLatency(m); });
  app.ch.on("announce", (m) => {
    if (m.pinned) { if (live(m)) atPicture(m, showAnnouncement); else showAnnouncement(m); }
    if (live(m)) noteLatency(m);
  });
  app.ch.on("likes", (m) => { $("#like-count").textContent = m.total; });
  app.ch.on("link", showLink);
  app.ch.on("comment_deleted", (m) => removeComment(m.target));
  app.ch.on("moderation", showModeration);
  app.ch.on("presence", (m) => { $("#viewers").textContent = t("watching", { n: i18n.count(m.viewers) }); });
  app.ch.on("media", (m) => {
    if (m.event === "publisher_joined") app.roomState.publishers.push({ publisher: m.publisher, user: m.user, name: m.name, kinds: m.kinds });
    else app.roomState.publishers = app.roomState.publishers.filter((p) => p.publisher !== m.publisher);
    reconcile(app.roomState);
  });
  app.ch.on("pk", (m) => { app.roomState.pk = m.state; renderPk(m.state); reconcile(app.roomState); });
  app.ch.on("pk_score", (m) => renderPk(app.roomState.pk, m.scores, m.remaining_s));
  app.ch.on("call", (m) => renderCall(m.state));
  app.ch.on("recording", (m) => showRecording(m.state));
  app.ch.on("stage", (m) => renderSeats(m.state));
  app.ch.on("pk_ended", () => { app.roomState.pk = null; renderPk(null); reconcile(app.roomState); });
  app.ch.on("grant", (m) => {
    // A co-host is told it is live, and why it no longer is when the host took it off the stage.
    setStatus(m.role === "viewer" && m.reason === "removed" ? t("stage.removed") : t(`role.${m.role}`)); app.myRole = m.role;
    $("#raise-hand").hidden = m.role !== "viewer";
    $("#leave-stage").hidden = m.role !== "cohost";
    if (m.role === "viewer" && window.liveRelay.publisher) { // off the stage: the camera goes off too
      window.liveRelay.publisher.pc.close(); window.liveRelay.publisher = null; app.myPublisher = null; stopSelf();
    }
    if (m.role === "cohost") goLive().catch((e) => setStatus(t("error.camera", { reason: e.message })));
  });
  app.ch.on("stage_invited", (m) => invitePanel(t("invite.stage", { from: m.from }),
    () => app.ch.request({ type: "stage_invite_answer", accept: true }),
    () => app.ch.request({ type: "stage_invite_answer", accept: false })));
  app.ch.on("call_invited", (m) => invitePanel(t("invite.call", { from: m.from }),
    () => app.ch.request({ type: "call_answer", accept: true }),
    () => app.ch.request({ type: "call_answer", accept: false })));
  app.ch.on("call_grant", (m) => startPrivateCall(m));
  // A host's invitations answered no (or not at all): said, not left at "invitation sent".
  app.ch.on("call_declined", (m) => setStatus(t(m.reason === "expired" ? "call.unanswered" : "call.declined", { who: m.user })));
  app.ch.on("pk_declined", (m) => setStatus(t(m.reason === "expired" ? "pk.unanswered" : "pk.declined", { room: m.by_room })));
  app.ch.on("closed", (m) => {
    setStatus(m.code === CLOSE.UNKNOWN_ROOM ? t("closed.waiting")
      : m.code === CLOSE.REMOVED ? t("closed.removed")
        : m.code === CLOSE.UNAUTHORIZED ? t("closed.invalid") : t("closed.other", { code: m.code }));
    // The server closes a connection's media sessions with it: drop ours, and redo them on re-join.
    for (const id of [...app.tiles.keys()]) dropPublisher(id);
    app.viewing?.close(); app.viewing = null;
    app.rejoinMedia = Boolean(window.liveRelay.publisher);
    window.liveRelay.publisher?.pc.close();
    window.liveRelay.publisher = null; app.myPublisher = null;
  });

  if (!token) { // anonymous viewers watch and like; say how to comment instead of answering "forbidden"
    $("#comment-input").disabled = true; $("#comment-send").hidden = true;
    $("#comment-input").placeholder = t("comment.guest");
  }
  $("#unmute").onclick = () => setSound(true);
  offerSound();
  $("#leave-stage").onclick = () => app.ch.request({ type: "stage_leave" }).catch((err) => setStatus(err.message));
  $("#comment-form").onsubmit = (e) => {
    e.preventDefault();
    const text = $("#comment-input").value.trim(); if (!text) return;
    app.ch.request({ type: "comment", text }).catch((err) => setStatus(err.message));
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
  setInterval(() => { if (taps) { app.ch.send({ type: "like", count: Math.min(taps, 50) }); taps = 0; } }, 200);
  $("#raise-hand").onclick = () => app.ch.request({ type: "stage_request" }).then(() => setStatus(t("stage.hand_raised")))
    .catch((err) => setStatus(err.message));
  $("#product-card .close").onclick = () => { $("#product-card").hidden = true; };

  if (isHost) wireHost();
  app.statsTimer = setInterval(updateStats, 1000);
}

export function reportQuality(freezes) {
  const now = Date.now();
  if (!app.ch || !app.ch.joined || now - app.lastQualityReport < 10000) return;
  const stats = {};
  if (freezes !== null) stats.freezes = freezes;
  if (app.lastE2E !== null) stats.message_latency_ms = Math.round(app.lastE2E);
  const key = JSON.stringify(stats);
  if (key === "{}" || key === app.reportedQuality) return;
  app.lastQualityReport = now; app.reportedQuality = key;
  app.ch.send({ type: "client_stats", ...stats });
}

// The peer connections the app.tiles arrive on (one, unless a connection had to be replaced), each once.
export const subscribedConnections = () => new Set([...[...app.tiles.values()].filter((t) => t.sub).map((t) => t.sub.pc),
  ...(window.liveRelay.callPc && window.liveRelay.callPc.connectionState !== "closed" ? [window.liveRelay.callPc] : [])]);

// What this page receives, summed over its subscriptions (inbound-rtp of getStats): the stats line shows
// it, and the weak-network lab reads it (window.liveRelay.mediaStats).
export async function mediaStats() {
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
  return { video, audio, rtt, subscriptions: [...app.tiles.values()].filter((t) => t.sub).length };
}

// Each tile's video as getStats tells it (by the receiver's track), for the weak-network lab.
export async function tileStats() {
  const out = {};
  for (const [publisher, t] of app.tiles) {
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
export function pathOf(local) {
  if (local.candidateType === "relay") return `TURN/${(local.relayProtocol || "udp").toUpperCase()}`;
  return `${(local.protocol || "udp").toUpperCase()} ${local.candidateType === "host" ? "direct" : "via NAT"}`;
}

export async function updateStats() {
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
