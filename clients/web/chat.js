// Comments (flying and listed), moderation buttons, the pinned note, notices and message latency.

import { app } from "./state.js";
import { $, t } from "./context.js";
import { productChip, withoutLink } from "./shop.js";
import { moderating, setStatus } from "./stage.js";

export function addComment(msg, fly = true) {
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
  const card = msg.role === "assistant" && app.cardsSeen.get(msg.product);
  if (card) { // the product it is about, as a chip to tap (the link it carried, now the chip, leaves the text)
    text.textContent = withoutLink(msg.text, card.product.url);
    li.append(productChip(card));
  }
  $("#comments").prepend(li);
  if (moderating() && app.ch && msg.role !== "assistant" && msg.user !== app.ch.joined?.user && typeof msg.seq === "number") {
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

// A host's or co-host's tools on each comment: reply to its author, pin it, delete it for everyone, mute its
// author, remove its author; the host may also call its author (a private 1v1) with one tap, instead of
// typing a user id.
export function moderationButtons(msg) {
  const tools = document.createElement("span"); tools.className = "mod";
  const who = msg.name || msg.user;
  const act = (label, title, request, done) => {
    const b = document.createElement("button"); b.type = "button"; b.textContent = label; b.title = title;
    b.setAttribute("aria-label", title);
    b.onclick = () => app.ch.request(request).then(() => setStatus(done || t("mod.done", { what: title })))
      .catch((err) => setStatus(err.message));
    tools.append(b);
  };
  // Reply: the comment box addressed to its author; pin: its words as the room's pinned note.
  const local = (label, title, run) => {
    const b = document.createElement("button"); b.type = "button"; b.textContent = label; b.title = title;
    b.setAttribute("aria-label", title); b.onclick = run; tools.append(b);
  };
  local(t("mod.reply"), t("mod.reply_title", { who }), () => {
    const input = $("#comment-input"); input.value = `@${who} `; input.focus();
  });
  act(t("mod.pin"), t("mod.pin_title"), { type: "announce", text: `${who}: ${msg.text}`.slice(0, 500), pinned: true });
  act(t("mod.delete"), t("mod.delete_title"), { type: "delete_comment", seq: msg.seq });
  act(t("mod.mute"), t("mod.mute_title", { who }), { type: "mute_user", user: msg.user, duration_s: 600 });
  act(t("mod.remove"), t("mod.remove_title", { who }), { type: "remove_user", user: msg.user, duration_s: 3600 });
  if (app.myRole === "host" && !msg.user.startsWith("anon-")) { // (an anonymous viewer cannot be called)
    act(t("mod.call"), t("mod.call_title", { who }), { type: "call_invite", user: msg.user, keep_video: true },
      t("call.invited", { who }));
  }
  return tools;
}

// Recording, as everyone sees it: a REC mark on the stage (viewers are told), and the host's button.
export function removeComment(seq) {
  for (const el of document.querySelectorAll(`#comments li[data-seq="${seq}"], #danmaku .bullet[data-seq="${seq}"]`)) el.remove();
}

// What moderation says to this page: its own mute, slow mode for everyone, and to moderators what was done.
export function showModeration(m) {
  const mine = app.ch && m.user === app.ch.joined?.user;
  if (m.action === "slow_mode") {
    setNotice(m.seconds ? t("slow_mode", { s: m.seconds }) : "");
  } else if (mine && m.action === "muted") {
    setStatus(t("muted_you", { min: Math.max(1, Math.round((m.until_ms - app.ch.serverNow()) / 60000)) }));
  } else if (mine && m.action === "unmuted") {
    setStatus(t("may_comment"));
  } else if (moderating()) {
    const said = t(`mod.${m.action}`, { by: m.by, user: m.user || "", seq: m.seq ?? "" });
    setStatus(said === `mod.${m.action}` ? `${m.by}: ${m.action}` : said); // (an action this page has no words for)
  }
}

export function setNotice(text) { const n = $("#slow-mode"); n.textContent = text; n.hidden = !text; }

export function showAnnouncement(msg) {
  const el = $("#announcement");
  if (msg && msg.text) { el.textContent = msg.text; el.hidden = false; } else el.hidden = true;
}

export function noteLatency(msg) {
  // Clock estimation is good to about a millisecond: never show a message arriving before it was sent.
  if (typeof msg.latency_ms === "number") { app.lastE2E = Math.max(0, msg.latency_ms); $("#stat-e2e").textContent = app.lastE2E.toFixed(1); }
}
