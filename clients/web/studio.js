// The host studio: going live, recording, ending the show, the shelf, live numbers, PK from the live rooms,
// the assistant's catalog and suggestions, stage requests and seats.

import { app } from "./state.js";
import { $, i18n, roomName, t, token } from "./context.js";
import { publish } from "./media.js";
import { setStatus, showSelf, stopSelf } from "./stage.js";
import { endScheduledShow, wireSchedule } from "./schedule.js";

export function showRecording(state) {
  const active = Boolean(state && state.active);
  $("#rec").hidden = !active;
  const button = $("#record");
  if (button) { button.textContent = t(active ? "host.record_stop" : "host.record"); button.setAttribute("aria-pressed", String(active)); }
}

// The host ends the show: recording stops, a PK ends, the camera goes off; the host is offered the replay
// and the numbers.
export async function endShow() {
  if (!$("#rec").hidden) await app.ch.request({ type: "record_stop" }).catch(() => {});
  if ($("#pk-bar").hidden === false) await app.ch.request({ type: "pk_end" }).catch(() => {});
  const pub = window.liveRelay.publisher;
  if (pub) {
    if (pub.mediaId) app.ch.send({ type: "unpublish", media: pub.mediaId });
    pub.pc.close(); window.liveRelay.publisher = null; app.myPublisher = null;
  }
  stopSelf(); $("#preview").srcObject = null;
  setStatus(t("show.ended"));
  const room = encodeURIComponent(app.ch.room); const ended = $("#show-ended");
  ended.querySelector(".replay").href = `/?view=replay&room=${room}`;
  ended.querySelector(".numbers").href = `/?view=dashboard&room=${room}`;
  ended.hidden = false;
  await endScheduledShow(app.ch.room, token).catch(() => null); // the room's scheduled show, if one is live
}

export function watchPublishing(pub, live) {
  const say = () => {
    if (pub !== window.liveRelay.publisher) return; // a connection replaced since
    const state = pub.pc.connectionState;
    if (state === "connected") setStatus(live);
    else if (state === "failed") setStatus(pub.pc.liveRelayHint || t("media.blocked"));
  };
  pub.pc.addEventListener("connectionstatechange", say);
  setStatus(pub.pc.liveRelayHint || t("media.connecting")); say();
}

export async function republish() {
  if (!app.liveStream) return;
  const pub = await publish(app.ch, app.liveStream, true);
  app.myPublisher = pub.mediaId; window.liveRelay.publisher = pub;
  watchPublishing(pub, t("on_air.again"));
}

export async function goLive() {
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720 }, audio: true });
  app.liveStream = stream;
  $("#preview").srcObject = stream;
  showSelf(stream);
  const pub = await publish(app.ch, stream, true);
  app.myPublisher = pub.mediaId;
  window.liveRelay.publisher = pub;
  watchPublishing(pub, t("on_air"));
}

export const SHELF = [
  // Images from this server (they load wherever the page does); Buy links to a placeholder shop.
  { id: "sku-jade", title: "Jade bracelet", price: "19.90", currency: "EUR", url: "https://shop.example/p/jade", image: "/static/demo/jade.svg", stock: 20, countdown_s: 300 },
  { id: "sku-tea", title: "Oolong tea, 250 g", price: "12.50", currency: "EUR", url: "https://shop.example/p/tea", image: "/static/demo/tea.svg", stock: 50 },
  { id: "sku-silk", title: "Silk scarf", price: "39.00", currency: "EUR", url: "https://shop.example/p/silk", image: "/static/demo/scarf.svg", stock: 5 },
];

// The studio's live numbers: watching and likes as the room says them, clicks and orders from the show's
// report every 10 s (none when the server keeps no analytics: they stay "–").
export function watchNumbers() {
  const show = (name, n) => { $(`#studio-numbers [data-number=${name}]`).textContent = i18n.count(n); };
  app.ch.on("joined", (m) => { show("watching", m.state.viewers); show("likes", m.state.likes); });
  app.ch.on("presence", (m) => show("watching", m.viewers));
  app.ch.on("likes", (m) => show("likes", m.total));
  const poll = async () => {
    if (!app.ch.joined || document.hidden || !timer) return;
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
  app.ch.on("joined", () => { poll(); });
}

// PK from a list: the shows whose host is on air now (on every node), each a tap to invite; asked when the
// studio opens, on Refresh and every 15 s while the tab is in front.
export function watchLiveRooms(invite) {
  const list = $("#pk-rooms");
  const refresh = async () => {
    if (!app.ch.joined || document.hidden) return;
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
  app.ch.on("joined", () => { refresh(); });
  setInterval(refresh, 15000);
}

// The assistant's catalog: pasted, or read from a file (its format from its name), given to the server over
// HTTP (catalogs up to 64 KiB); the server reads it and says what it holds, or why it is refused.
export function wireCatalog() {
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

// Restreaming: the same show pushed to other platforms (server URL + stream key). The server keeps the key and
// never shows it back; this list says each destination's state in the platform's words, every 2 s while any.
const RESTREAM_STATES = ["connecting", "live", "retrying", "failed"];
async function restreamsRequest(path, options = {}) {
  return fetch(`/api/rooms/${encodeURIComponent(roomName)}/restreams${path}`, {
    ...options, headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" } });
}
export async function refreshRestreams() {
  clearTimeout(app.restreamTimer);
  const resp = await restreamsRequest("").catch(() => null);
  if (!resp || !resp.ok) return;
  const { destinations } = await resp.json();
  const list = $("#restreams"); list.replaceChildren();
  for (const d of destinations) {
    const li = document.createElement("li"); li.dataset.state = d.state;
    const state = RESTREAM_STATES.includes(d.state) ? t(`host.restream_${d.state}`) : d.state;
    li.textContent = `${d.url} · ${state}${d.reason ? ` · ${d.reason}` : ""}`;
    const remove = document.createElement("button"); remove.type = "button"; remove.textContent = t("host.restream_remove");
    remove.onclick = async () => { await restreamsRequest(`/${encodeURIComponent(d.id)}`, { method: "DELETE" }); refreshRestreams(); };
    li.append(" ", remove); list.append(li);
  }
  if (destinations.length) app.restreamTimer = setTimeout(refreshRestreams, 2000);
}
export function wireRestreams() {
  const form = $("#restream-form"); const result = $("#restream-result");
  form.onsubmit = async (e) => {
    e.preventDefault();
    result.textContent = "";
    const resp = await restreamsRequest("", { method: "POST", body: JSON.stringify({ url: form.url.value.trim(), key: form.key.value.trim() }) })
      .catch((err) => ({ ok: false, text: async () => err.message }));
    if (!resp.ok) { result.textContent = t("host.restream_bad", { reason: (await resp.text()).trim().replace(/^bad_request: /, "") }); return; }
    form.key.value = ""; // the server has it; the page keeps no copy
    refreshRestreams();
  };
  refreshRestreams();
}

export function wireHost() {
  $("#host-panel").hidden = false;
  $("#go-live").onclick = () => { $("#show-ended").hidden = true; goLive().catch((e) => setStatus(t("error.camera", { reason: e.message }))); };
  $("#record").onclick = () => app.ch.request({ type: $("#rec").hidden ? "record_start" : "record_stop" })
    .catch((err) => setStatus(err.message));
  $("#end-show").onclick = () => endShow().catch((err) => setStatus(err.message));
  for (const product of SHELF) {
    const b = document.createElement("button"); b.textContent = t("host.push", { title: product.title });
    if (typeof product.stock === "number") { // what is left, as the card will say it
      const left = document.createElement("small"); left.className = "stock";
      left.textContent = ` · ${t("stock", { n: i18n.count(product.stock) })}`; b.append(left);
    }
    b.onclick = () => app.ch.request({ type: "product", product }).catch((err) => setStatus(err.message));
    $("#shelf").append(b);
  }
  wireSchedule(roomName, token, SHELF);
  $("#pin-form").onsubmit = (e) => {
    e.preventDefault();
    const text = e.target.text.value.trim(); if (!text) return;
    app.ch.request({ type: "announce", text, pinned: true }).then(() => { e.target.text.value = ""; })
      .catch((err) => setStatus(err.message));
  };
  $("#unpin").onclick = () => app.ch.request({ type: "announce", text: "", pinned: true }).catch((err) => setStatus(err.message));
  // Moderation: words this room does not allow (comma-separated, Chinese or English), and slow mode.
  $("#words-form").onsubmit = (e) => {
    e.preventDefault();
    const words = e.target.words.value.split(/[,，\n]/).map((w) => w.trim()).filter(Boolean);
    app.ch.request({ type: "block_words", words }).then(() => setStatus(t("host.words_blocked", { n: words.length })))
      .catch((err) => setStatus(err.message));
  };
  $("#slow-mode-select").onchange = (e) => app.ch.request({ type: "slow_mode", seconds: Number(e.target.value) })
    .catch((err) => setStatus(err.message));
  watchNumbers();
  wireCatalog();
  wireRestreams();
  // The assistant: off, answering by itself, or suggesting answers for the host to approve.
  const mode = $("#assistant-mode");
  mode.onchange = () => app.ch.request(mode.value === "off" ? { type: "assistant", on: false }
    : { type: "assistant", on: true, mode: mode.value }).catch((err) => setStatus(err.message));
  app.ch.on("joined", (m) => { const a = m.state.assistant; mode.value = a && a.on ? a.mode : "off"; });
  app.ch.on("assistant_suggestion", (m) => {
    const li = document.createElement("li"); const text = document.createElement("span");
    text.textContent = `${m.question} → ${m.text}`;
    const approve = document.createElement("button"); approve.textContent = t("host.assistant_post");
    approve.onclick = () => app.ch.request({ type: "assistant_approve", suggestion: m.id }).then(() => li.remove())
      .catch((err) => { setStatus(err.message); li.remove(); });
    li.append(text, approve); $("#assistant-suggestions").prepend(li);
  });
  app.ch.on("assistant_digest", (m) => {
    const list = $("#assistant-digest"); list.replaceChildren();
    for (const q of m.unanswered) { const li = document.createElement("li"); li.textContent = t("host.digest_asked", { n: q.count, question: q.question }); list.append(li); }
    for (const q of m.answered_again) { const li = document.createElement("li"); li.textContent = t("host.digest_again", { n: q.count, question: q.question }); list.append(li); }
  });
  const requests = $("#requests");
  app.ch.on("stage_requested", (m) => {
    const li = document.createElement("li"); li.dataset.user = m.user;
    const who = document.createElement("span"); who.textContent = m.name || m.user;
    const yes = document.createElement("button"); yes.textContent = t("accept");
    const no = document.createElement("button"); no.textContent = t("reject");
    yes.onclick = () => { li.remove(); app.ch.request({ type: "stage_accept", user: m.user }).catch((e) => setStatus(e.message)); };
    no.onclick = () => { li.remove(); app.ch.request({ type: "stage_reject", user: m.user }).catch(() => {}); };
    li.append(who, yes, no); requests.append(li);
  });
  app.ch.on("stage_request_cancelled", (m) => requests.querySelector(`li[data-user="${CSS.escape(m.user)}"]`)?.remove());
  const invitePk = (room) => app.ch.request({ type: "pk_invite", room, duration_s: Number($("#pk-form").duration.value) || 300 })
    .then(() => setStatus(t("pk.sent", { room })))
    .catch((err) => setStatus(err.message));
  $("#pk-form").onsubmit = (e) => { e.preventDefault(); invitePk(e.target.room.value); };
  watchLiveRooms(invitePk);
  $("#pk-end").onclick = () => app.ch.request({ type: "pk_end" }).catch((err) => setStatus(err.message));
  app.ch.on("pk_invited", (m) => {
    const li = document.createElement("li");
    const what = document.createElement("span"); what.textContent = t("pk.challenge", { from: m.from, room: m.from_room });
    const yes = document.createElement("button"); yes.textContent = t("accept");
    const no = document.createElement("button"); no.textContent = t("decline");
    yes.onclick = () => { li.remove(); app.ch.request({ type: "pk_answer", room: m.from_room, accept: true }).catch((e) => setStatus(e.message)); };
    no.onclick = () => { li.remove(); app.ch.request({ type: "pk_answer", room: m.from_room, accept: false }).catch(() => {}); };
    li.append(what, yes, no); $("#pk-invites").append(li);
  });
  $("#call-form").onsubmit = (e) => {
    e.preventDefault();
    app.ch.request({ type: "call_invite", user: e.target.user.value, keep_video: e.target.keep.checked })
      .then(() => setStatus(t("call.invited", { who: e.target.user.value }))).catch((err) => setStatus(err.message));
  };
}

// The host's view of the stage: each co-host with mute and remove.
export function renderSeats(stage) {
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
      b.onclick = () => app.ch.request({ type: "stage_mute", user: seat.user, kind, muted: !muted }).catch((e) => setStatus(e.message));
      li.append(b);
    }
    const remove = document.createElement("button"); remove.className = "remove"; remove.textContent = t("mod.remove");
    remove.onclick = () => app.ch.request({ type: "stage_remove", user: seat.user }).catch((e) => setStatus(e.message));
    li.append(remove); list.append(li);
  }
}

// Every 10 s a viewer tells the server the quality it got (freezes so far, how late messages come), for the
// host's report; only what changed is sent, and nothing while there is nothing to say.
