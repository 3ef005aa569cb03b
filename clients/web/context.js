// What the page is (its view, room, token, language) and small helpers every part uses: read once from
// the address and the browser, never changed.

import { pickLanguage, translator } from "./i18n.js";

export const $ = (sel) => document.querySelector(sel);
// The page's language (clients/web/i18n.js): the person's pick, remembered, else the browser's.
export const i18n = translator(pickLanguage(localStorage.getItem("live-relay:lang"), navigator.languages));
export const { t } = i18n;
export const params = new URLSearchParams(location.search);
export const view = params.get("view");
export const roomName = params.get("room") || "demo";
// The token leaves the address bar (and so the history, bookmarks and screenshots) at once; the tab keeps it
// for reloads. The server also sends Referrer-Policy: no-referrer.
// The replay and the dashboard the studio links to at the show's end open with the studio's token of the same
// room (kept by this tab: the links carry no token).
export const tokenKey = `live-relay:${view}:${roomName}`;
const studioToken = ["replay", "dashboard"].includes(view) ? sessionStorage.getItem(`live-relay:host:${roomName}`) : null;
export const token = params.get("token") || sessionStorage.getItem(tokenKey) || studioToken || null;
if (params.has("token")) {
  sessionStorage.setItem(tokenKey, params.get("token"));
  params.delete("token");
  history.replaceState(null, "", `${location.pathname}?${params}${location.hash}`);
}
export const safeUrl = (u) => (typeof u === "string" && /^https?:\/\//i.test(u) ? u : null);
// A product image: a web address, or a file of this server's (/static/...), fetched from the address this
// page reached the server at, whatever address the host used.
export const safeImage = (u) => safeUrl(u) || (typeof u === "string" && /^\/static\/[\w.\/-]+$/.test(u) && !u.includes("..") ? u : null);

// Analytics: where this viewer came from (?src= / ?utm_source=, else the referring site), and a random id
// kept by this browser so an anonymous viewer who comes back counts once. Nothing else leaves the page.
export const entrySource = (() => {
  const given = params.get("src") || params.get("utm_source");
  if (given) return given.slice(0, 64);
  try { const ref = document.referrer && new URL(document.referrer); if (ref && ref.host !== location.host) return ref.host.slice(0, 64); } catch (e) { /* no referrer */ }
  return null;
})();
export const deviceId = (() => {
  try {
    let id = localStorage.getItem("live-relay-device");
    if (!id) { id = Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join(""); localStorage.setItem("live-relay-device", id); }
    return id;
  } catch (e) { return null; }
})();
