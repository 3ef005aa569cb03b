// The page's entry point: loads its code (app.js and what it imports). A browser does not fetch again, in the
// same document, a module that failed to arrive (a request lost on a weak network, a server restarting), and
// the page stayed at "connecting…" for good (the weak-network lab saw it now and then). So a page whose code
// did not load reloads once; if that fails too, it says so.
const RELOADED = "live-relay:reloaded";

function remember(value) {
  try { if (value) sessionStorage.setItem(RELOADED, value); else sessionStorage.removeItem(RELOADED); return true; } catch { return false; }
}

import("./app.js").then(() => remember(null)).catch((err) => {
  let reloaded = null;
  try { reloaded = sessionStorage.getItem(RELOADED); } catch { /* storage off: no reload loop either */ }
  if (!reloaded && remember(String(Date.now()))) { location.reload(); return; }
  remember(null);
  const status = document.querySelector("#status");
  if (status) status.textContent = `The page did not load (${err && err.message}): reload it. 页面未能加载，请刷新。`;
});
