// WebRTC: publishing (simulcast, SVC, codec order) and one connection per viewer carrying every video it
// watches (renegotiated as publishers come and go).

import { params, t } from "./context.js";
import { loopbackOnly, refusesLoopback } from "./ice.js";
import { fallBackToHls } from "./fallback.js";
import { setStatus } from "./stage.js";

// ---------------------------------------------------------------------------------------------------
// Media: the browser offers, the server answers; our ICE candidates trickle after the answer names the
// media session.

export async function negotiate(ch, pc, message) {
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
export function simulcastLayers(track) {
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
export const iceServersOf = (ch) => (ch && Array.isArray(ch.joined?.ice_servers) ? ch.joined.ice_servers : []);

// With ?video=svc a host sends one VP9 stream of three spatial layers (L3T3_KEY) instead of three simulcast
// streams: one encoder and a third less upload; the server gives each viewer the spatial layers its link
// carries. Null where the browser cannot (no VP9 or no scalabilityMode): the host sends simulcast.
export function svcSetup(track) {
  if (params.get("video") !== "svc" || track.getSettings().width < 960) return null;
  const codecs = RTCRtpSender.getCapabilities("video")?.codecs || [];
  const vp9 = codecs.filter((c) => c.mimeType === "video/VP9" && !/profile-id=[123]/.test(c.sdpFmtpLine || ""));
  if (!vp9.length) return null;
  const rest = codecs.filter((c) => !vp9.includes(c));
  return { encodings: [{ scalabilityMode: "L3T3_KEY", maxBitrate: 2_000_000 }], codecs: [...vp9, ...rest] };
}

// With ?video=h264 a host sends its simulcast layers in H.264 (as OBS and hardware encoders do) instead of
// VP8; null where the browser has no H.264 encoder.
export function h264First() {
  if (params.get("video") !== "h264") return null;
  const codecs = RTCRtpSender.getCapabilities("video")?.codecs || [];
  const h264 = codecs.filter((c) => c.mimeType === "video/H264" && /packetization-mode=1/.test(c.sdpFmtpLine || ""));
  return h264.length ? [...h264, ...codecs.filter((c) => !h264.includes(c))] : null;
}

export async function publish(ch, stream, simulcast = false) {
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

export async function subscribe(ch, publisher) {
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
export class Viewing {
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
      if (pc === this.pc && pc.connectionState === "failed") {
        setStatus(pc.liveRelayHint || t("media.blocked_view"));
        fallBackToHls(t("hls.blocked")); // the show over plain HTTP instead, where it has HLS
      }
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
export function firstFrame(video, started) {
  return new Promise((resolve) => {
    const done = () => resolve(performance.now() - started);
    if ("requestVideoFrameCallback" in video) video.requestVideoFrameCallback(done);
    else video.addEventListener("playing", done, { once: true });
  });
}
