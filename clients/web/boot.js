// Loaded beside the page's code (app.js): if that code did not run by the time the page has loaded, reload the
// page once. A browser does not fetch again, in the same document, a module that failed to arrive (a request
// lost on a weak network, a server restarting), and the page stayed at "connecting…" for good (the
// weak-network lab saw it now and then). If the reload does not help either, it says so.
const RELOADED = "live-relay:reloaded";

function remember(value) {
  try { if (value) sessionStorage.setItem(RELOADED, value); else sessionStorage.removeItem(RELOADED); return true; } catch { return false; }
}

window.addEventListener("load", () => {
  if (window.liveRelay) { remember(null); return; }
  let reloaded = null;
  try { reloaded = sessionStorage.getItem(RELOADED); } catch { /* storage off: no reload loop either */ }
  if (!reloaded && remember(String(Date.now()))) { location.reload(); return; }
  remember(null);
  const status = document.querySelector("#status");
  if (status) status.textContent = "The page did not load: reload it. 页面未能加载，请刷新。";
});
