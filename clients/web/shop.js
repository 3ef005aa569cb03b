// Product cards: the card over the stage, its countdown and Buy link, the assistant's product chips.

import { app } from "./state.js";
import { $, i18n, safeImage, safeUrl, t } from "./context.js";

// The offer's end on the server's clock (fixed when the card was pushed: late joiners count the same).
export function offerEnd(msg) {
  const p = msg.product;
  return typeof p.countdown_s === "number" ? (msg.server_ts || app.ch.serverNow()) + p.countdown_s * 1000 : null;
}

export function offerLeft(endsAt, countdown) {
  if (endsAt === null) return null;
  const left = Math.min(countdown, Math.ceil((endsAt - app.ch.serverNow()) / 1000)); // clock estimates wobble
  return left > 0 ? t("offer.ends", { time: `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}` })
    : t("offer.ended");
}

// Where tapping Buy goes: with analytics on (the server named this viewer) through the server's redirect,
// which counts the click and sends the browser on to the product's own URL.
export function buyHref(p) {
  const href = safeUrl(p.url); const viewer = app.ch.joined?.viewer;
  if (href && viewer) return `/go/${encodeURIComponent(app.ch.room)}/${encodeURIComponent(p.id)}?v=${encodeURIComponent(viewer)}`;
  return href;
}

// An assistant's answer about a card: its title, price and live countdown; a tap buys as the card's Buy does.
export function productChip(card) {
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
    if (!app.chipTimer) app.chipTimer = setInterval(tickChips, 1000);
  }
  return chip;
}

export function tickChips() {
  const counting = document.querySelectorAll("#comments .chip[data-ends-at]");
  for (const chip of counting) {
    chip.querySelector(".chip-extra").textContent = offerLeft(Number(chip.dataset.endsAt), Number(chip.dataset.countdown));
  }
  if (!counting.length) { clearInterval(app.chipTimer); app.chipTimer = null; }
}

// An answer's text without the product's link (and the word before it), once the chip carries it.
// ...and without the countdown as it stood when the answer was written (the chip's goes on).
export function withoutLink(text, url) {
  let out = text.replace(/(\s*[·,，]\s*)?(offer ends in|优惠还剩)\s*\d+:\d{2}/u, "");
  if (url && out.includes(url)) out = out.replace(url, "").replace(/(\s*[·,，]\s*)?(buy:|链接)?\s*$/u, "");
  return out.trim();
}

export function showProduct(msg) {
  const p = msg.product; const card = $("#product-card");
  app.cardsSeen.delete(p.id); app.cardsSeen.set(p.id, { product: p, endsAt: offerEnd(msg) }); // the newest push, last
  while (app.cardsSeen.size > 50) app.cardsSeen.delete(app.cardsSeen.keys().next().value);
  card.querySelector(".product-title").textContent = p.title;
  card.querySelector(".product-price").textContent = i18n.price(p.price, p.currency);
  const stock = typeof p.stock === "number" ? t("stock", { n: i18n.count(p.stock) }) : "";
  const endsAt = offerEnd(msg);
  const tick = () => {
    const parts = stock ? [stock] : [];
    if (endsAt !== null) {
      parts.push(offerLeft(endsAt, p.countdown_s));
      if (endsAt - app.ch.serverNow() <= -5000) { clearInterval(app.countdownTimer); card.hidden = true; }
    }
    card.querySelector(".product-extra").textContent = parts.join(" · ");
  };
  clearInterval(app.countdownTimer); tick();
  if (endsAt !== null) app.countdownTimer = setInterval(tick, 1000);
  const img = card.querySelector("img"); const src = safeImage(p.image); if (src) img.src = src; else img.removeAttribute("src");
  const buy = card.querySelector(".buy"); const href = buyHref(p);
  if (href) buy.href = href; else buy.removeAttribute("href");
  const viewer = app.ch.joined?.viewer;
  card.dataset.productId = p.id;
  if (endsAt !== null && endsAt - app.ch.serverNow() < -5000) { card.hidden = true; return; } // long over
  card.hidden = false;
  if (viewer && !app.seenProducts.has(p.id)) { app.seenProducts.add(p.id); app.ch.send({ type: "product_seen", product: p.id }); }
  clearTimeout(app.cardTimer);
  if (endsAt === null) app.cardTimer = setTimeout(() => { card.hidden = true; }, 20000); // else: until it ends
}
