// Shows that exist before they start: the public show page (?view=show&show=ID: countdown, products, remind
// me, follow, add to calendar) and the studio's part (schedule a show, the room's upcoming shows, and at the
// show's end the follow-up list). HTTP only (docs/protocol.md, "Scheduled shows"); text from users is set with
// textContent.

import { $, i18n, safeImage, t } from "./context.js";

const authorized = (token) => (token ? { Authorization: `Bearer ${token}` } : {});

function when(ms) {
  return new Intl.DateTimeFormat(i18n.locale, { dateStyle: "full", timeStyle: "short" }).format(new Date(ms));
}

// "starts in 2 d 03:04:05" (or h:m:s within a day): what the countdown says `left` ms before the start.
export function countdownText(left) {
  const s = Math.max(0, Math.floor(left / 1000));
  const pad = (n) => String(n).padStart(2, "0");
  const clock = `${pad(Math.floor(s / 3600) % 24)}:${pad(Math.floor(s / 60) % 60)}:${pad(s % 60)}`;
  const days = Math.floor(s / 86400);
  return t("showpage.starts_in", { time: days ? t("showpage.days", { n: days, clock }) : clock });
}

function productItem(p) {
  const li = document.createElement("li");
  const img = safeImage(p.image);
  if (img) { const pic = document.createElement("img"); pic.src = img; pic.alt = ""; pic.loading = "lazy"; li.append(pic); }
  const name = document.createElement("span"); name.textContent = p.title; li.append(name);
  if (p.price && p.currency) { const price = document.createElement("b"); price.textContent = i18n.price(p.price, p.currency); li.append(price); }
  return li;
}

// The show page: what anyone with the link sees, and the buttons a signed-in viewer uses.
export async function runShowPage(showId, token) {
  const page = $("#show-page"); page.hidden = false;
  const result = $("#show-result");
  const load = async () => {
    const resp = await fetch(`/api/shows/${encodeURIComponent(showId)}`, { headers: authorized(token) });
    if (resp.status === 404) throw new Error(t("showpage.missing"));
    if (!resp.ok) throw new Error((await resp.text()).trim());
    return resp.json();
  };
  let show = await load();
  $("#show-title").textContent = show.title;
  $("#room-name").textContent = show.room;
  document.title = show.title;
  const cover = safeImage(show.cover);
  if (cover) { $("#show-cover").src = cover; $("#show-cover").hidden = false; }
  $("#show-when").textContent = when(show.starts_ms);
  $("#show-products").replaceChildren(...show.products.map(productItem));
  $("#show-calendar").href = `/api/shows/${encodeURIComponent(showId)}/calendar.ics`;
  const watch = $("#show-watch");
  watch.href = `/?view=viewer&room=${encodeURIComponent(show.room)}`;
  watch.onclick = () => { if (token) sessionStorage.setItem(`live-relay:viewer:${show.room}`, token); };
  const render = () => {
    const status = show.status;
    $("#show-countdown").textContent = status === "scheduled" ? countdownText(show.starts_ms - Date.now())
      : t(`showpage.${status}`);
    watch.hidden = status !== "live";
    $("#show-reservations").textContent = t("showpage.reserved_count", { n: i18n.count(show.reservations) });
    const remind = $("#show-remind");
    remind.hidden = status === "ended" || status === "cancelled";
    remind.textContent = t(show.reserved ? "showpage.reminding" : "showpage.remind");
    remind.setAttribute("aria-pressed", String(Boolean(show.reserved)));
    const follow = $("#show-follow");
    follow.textContent = t(show.following ? "showpage.following" : "showpage.follow");
    follow.setAttribute("aria-pressed", String(Boolean(show.following)));
  };
  const toggle = async (path, on) => {
    if (!token) { result.textContent = t("showpage.sign_in"); return; }
    const resp = await fetch(`/api/shows/${encodeURIComponent(showId)}/${path}`,
      { method: on ? "DELETE" : "POST", headers: authorized(token) });
    if (!resp.ok) { result.textContent = (await resp.text()).trim(); return; }
    show = await load(); render();
    result.textContent = path === "reservation" ? t(show.reserved ? "showpage.will_remind" : "showpage.no_remind") : "";
  };
  $("#show-ask").onsubmit = async (e) => {
    e.preventDefault();
    const question = e.target.question.value.trim(); if (!question) return;
    const resp = await fetch(`/api/shows/${encodeURIComponent(showId)}/ask`,
      { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ question }) }).catch(() => null);
    const said = $("#show-answer");
    if (resp && resp.status === 429) { said.textContent = t("showpage.ask_later"); return; }
    if (!resp || !resp.ok) { said.textContent = resp ? (await resp.text()).trim() : ""; return; }
    const { answer } = await resp.json();
    said.textContent = answer || t("showpage.unanswered");
    e.target.question.value = "";
  };
  $("#show-remind").onclick = () => toggle("reservation", show.reserved);
  $("#show-follow").onclick = () => toggle("follow", show.following);
  render();
  // The countdown ticks each second; the show's status is asked again every 15 s (it goes live when the
  // host does), and at once when the countdown ends.
  let polled = Date.now();
  setInterval(async () => {
    if (Date.now() - polled > 15000 || (show.status === "scheduled" && show.starts_ms <= Date.now() && Date.now() - polled > 3000)) {
      polled = Date.now();
      try { show = await load(); } catch (err) { /* keep the last */ }
    }
    render();
  }, 1000);
  window.liveRelay.show = () => show;
}

// -- the studio -------------------------------------------------------------------------------------------------

async function scheduleRequest(path, room, token, options = {}) {
  return fetch(path.replace("{room}", encodeURIComponent(room)),
    { ...options, headers: { ...authorized(token), "Content-Type": "application/json" } });
}

async function refreshSchedule(room, token) {
  const resp = await fetch(`/api/rooms/${encodeURIComponent(room)}/schedule`).catch(() => null);
  if (!resp || !resp.ok) return [];
  const shows = await resp.json();
  const list = $("#schedule-list"); list.replaceChildren();
  for (const s of shows.filter((x) => x.status === "scheduled" || x.status === "live")) {
    const li = document.createElement("li"); li.dataset.show = s.id;
    const a = document.createElement("a"); a.href = `/?view=show&show=${encodeURIComponent(s.id)}`; a.target = "_blank";
    a.textContent = `${s.title} · ${when(s.starts_ms)} · ${t(`showpage.${s.status === "live" ? "live" : "scheduled_short"}`)}`;
    const brief = document.createElement("small"); brief.className = "brief";
    li.append(a, " ", brief); list.append(li);
    if (token) showBrief(s.id, token, brief);
  }
  return shows;
}

// The pre-show brief beside each upcoming show: how many reserved, how many asked, what about (the
// questions themselves on hover).
async function showBrief(id, token, el) {
  const resp = await fetch(`/api/shows/${encodeURIComponent(id)}/brief`, { headers: authorized(token) }).catch(() => null);
  if (!resp || !resp.ok) return;
  const b = await resp.json();
  const about = Object.keys(b.questions.by_product).slice(0, 3).join(", ");
  el.textContent = t("schedule.brief", { reserved: i18n.count(b.reservations), asked: i18n.count(b.questions.asked) })
    + (about ? ` (${about})` : "");
  el.title = b.questions.last.map((q) => q.text).join("\n");
}

// The schedule form: a title and a local date and time (sent with its zone), the shelf's products.
export function wireSchedule(room, token, shelf) {
  const form = $("#schedule-form"); const result = $("#schedule-result");
  form.onsubmit = async (e) => {
    e.preventDefault();
    const start = new Date(form.when.value);
    if (Number.isNaN(start.getTime())) { result.textContent = t("schedule.bad_time"); return; }
    const body = { title: form.title.value.trim(), starts_at: start.toISOString(), products: shelf };
    const resp = await scheduleRequest("/api/rooms/{room}/schedule", room, token, { method: "POST", body: JSON.stringify(body) })
      .catch(() => null);
    if (!resp || !resp.ok) { result.textContent = t("schedule.refused", { reason: resp ? (await resp.text()).trim().replace(/^bad_message: /, "") : "" }); return; }
    const show = await resp.json();
    result.textContent = t("schedule.done", { link: show.page });
    form.reset();
    refreshSchedule(room, token);
  };
  refreshSchedule(room, token);
}

// At the show's end: the room's live show ends too, and its follow-up list can be downloaded.
export async function endScheduledShow(room, token) {
  const shows = await refreshSchedule(room, token);
  const live = shows.find((s) => s.status === "live");
  if (!live) return null;
  const resp = await scheduleRequest(`/api/shows/${encodeURIComponent(live.id)}/end`, room, token, { method: "POST" }).catch(() => null);
  if (!resp || !resp.ok) return null;
  const button = $("#followups-download"); button.hidden = false;
  button.onclick = async () => {
    const list = await fetch(`/api/shows/${encodeURIComponent(live.id)}/followups?format=csv&lang=${i18n.lang}`,
      { headers: authorized(token) });
    if (!list.ok) return;
    const a = document.createElement("a"); a.href = URL.createObjectURL(await list.blob());
    a.download = `followups-${live.id}.csv`; a.click(); URL.revokeObjectURL(a.href);
  };
  refreshSchedule(room, token);
  return live;
}
