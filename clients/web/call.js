// A 1v1 call: the call screen and its controls, and a private call started from a show.

import { app } from "./state.js";
import { Channel } from "./connection.js";
import { $, t } from "./context.js";
import { roleStatus } from "./live.js";
import { firstFrame, publish, subscribe } from "./media.js";
import { playWithSound, setStatus } from "./stage.js";

export async function startPrivateCall(grant) {
  const panel = $("#invites"); panel.hidden = false;
  const holder = document.createElement("div"); holder.className = "call-box"; panel.append(holder);
  const screen = callScreen(holder, t("call.private", { who: grant.with }));
  screen.box.scrollIntoView({ block: "start" });
  screen.hangUp.onclick = async () => { await app.ch.request({ type: "call_end" }).catch(() => {}); };
  setStatus(t("call.in_call"));
  // Listened for before the call connects: the other side may hang up while it does (camera, publishing,
  // the first frame), and the page said "in call" for good (CI saw it once).
  let session = null; let ended = false;
  app.ch.on("call_ended", () => {
    ended = true; session?.stop(); setTimeout(() => holder.remove(), 3000);
    setStatus(app.myRole ? roleStatus(app.myRole) : ""); // no longer "call invitation sent" or "in call"
  });
  session = await runCall(new Channel(grant.call_room, grant.token), screen);
  if (ended) session.stop();
}

// What this page is now, in a shopper's or seller's words: a host is "live" only while it publishes.
// ---------------------------------------------------------------------------------------------------
// 1v1 call: the other side filling the screen, oneself in a corner, and what a phone call has: mute,
// camera off, switch camera, hang up, how long the call has lasted and how long it took to connect.

export const callClock = (ms) => {
  const s = Math.max(0, Math.floor(ms / 1000));
  return `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
};

export function callScreen(container, title) {
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
export function toggleTracks(button, tracks, onText, offText) {
  button.onclick = () => {
    const on = !tracks()[0]?.enabled;
    for (const t of tracks()) t.enabled = on;
    button.textContent = on ? onText : offText; button.setAttribute("aria-pressed", String(!on));
  };
}

export async function offerCameraSwitch(screen, stream, pc) {
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

export async function runCall(call, screen) {
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
