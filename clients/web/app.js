// live-relay browser client: viewer, host and 1v1 call views over one WebSocket protocol (docs/protocol.md).
// Plain ES modules, no build step; this one starts the page for its view. What each module owns:
//   context.js     the view, room, token and language, read once     state.js   the page's one mutable state
//   connection.js  the message channel and its close codes            media.js   WebRTC publish and subscribe
//   stage.js       tiles, layout, sound, PK bar, share, fit            chat.js    comments, moderation, notices
//   shop.js        product cards and chips                              studio.js  the host's tools
//   live.js        a live room's page wired together, and its stats    call.js    1v1 calls
//   pages.js       WHIP/WHEP, the replay, the dashboard                 i18n.js, ice.js
//   schedule.js    a scheduled show's page, the studio's schedule
// Text from users is only ever set with textContent, never as HTML.

import { runCall, callClock, callScreen } from "./call.js";
import { Channel } from "./connection.js";
import { $, i18n, params, roomName, t, token, view } from "./context.js";
import { LANGUAGES, translatePage, translator } from "./i18n.js";
import { mediaStats, subscribedConnections, tileStats, updateStats, wireLive } from "./live.js";
import { runDashboard, runReplay, runWhep, runWhip } from "./pages.js";
import { runShowPage } from "./schedule.js";
import { offerSound, setSound, setStatus } from "./stage.js";
import { app } from "./state.js";

// What the tests and a curious engineer read from the console (never state the page depends on).
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
  if (view === "show") { // a scheduled show's page: no stage, no message channel
    setStatus("");
    try { await runShowPage(params.get("show") || "", token); } catch (err) { setStatus(err.message); }
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
  const ch = app.ch = new Channel(roomName, token);
  ch.history = 30; // a late joiner sees the last comments, not an empty list
  window.liveRelay.channel = ch;
  if (view === "call") {
    const holder = document.createElement("div"); $("#stage").replaceWith(holder);
    for (const el of document.querySelectorAll(".controls, #comments, #unmute")) el.hidden = true;
    const screen = callScreen(holder, t("call.in", { room: roomName }));
    const session = await runCall(ch, screen);
    screen.hangUp.onclick = () => { session.stop(); setStatus(t("call.ended")); };
    app.statsTimer = setInterval(updateStats, 1000);
    setStatus(t("call.in_call"));
    return;
  }
  wireLive(view === "host");
  try { await ch.connect(); } catch (err) { setStatus(err.message); }
}

main();
