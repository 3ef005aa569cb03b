// Debian's firefox-esr, headless, driven over WebDriver BiDi by puppeteer-core, for the browser tests
// (tests/firefox.py talks to it). One JSON command per line on stdin, one JSON answer per line on stdout:
//   {"id": 1, "op": "open", "url": "...", "viewport": {"width": 390, "height": 844}}  -> {"id": 1, "result": PAGE}
//   {"id": 2, "op": "eval", "page": PAGE, "expr": "document.title"}                  -> {"id": 2, "result": ...}
//   {"id": 3, "op": "click" | "type", "page": PAGE, "selector": "#x", "text": "..."} -> {"id": 3, "result": null}
//   {"id": 4, "op": "screenshot", "page": PAGE, "path": "/tmp/x.png"}
//   {"id": 5, "op": "errors", "page": PAGE}  (the page's uncaught errors so far)
//   {"id": 6, "op": "close"}
// A failed command answers {"id", "error"}. Preferences: a fake camera and microphone with no prompt, and
// autoplay allowed, as a person who said yes once would have; ICE as stock Firefox has it (no loopback).
import readline from "node:readline";
import puppeteer from "puppeteer-core";

const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath: process.env.FIREFOX || "/usr/bin/firefox-esr",
  headless: true,
  extraPrefsFirefox: {
    "media.navigator.streams.fake": true,
    "media.navigator.permission.disabled": true,
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
  },
});
const pages = new Map();
const errors = new Map();
let nextPage = 1;

async function run(command) {
  const page = pages.get(command.page);
  switch (command.op) {
    case "open": {
      const created = await browser.newPage();
      const id = nextPage++;
      pages.set(id, created);
      errors.set(id, []);
      created.on("pageerror", (err) => errors.get(id).push(String(err.message || err)));
      if (command.viewport) await created.setViewport(command.viewport);
      await created.goto(command.url, { waitUntil: "domcontentloaded" });
      return id;
    }
    case "eval": return await page.evaluate(command.expr);
    case "click": await page.click(command.selector); return null;
    case "type": await page.type(command.selector, command.text); return null;
    case "screenshot": await page.screenshot({ path: command.path }); return null;
    case "errors": return errors.get(command.page);
    case "close": await browser.close(); return null;
    default: throw new Error(`unknown op ${command.op}`);
  }
}

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  const command = JSON.parse(line);
  let answer;
  try {
    answer = { id: command.id, result: (await run(command)) ?? null };
  } catch (err) {
    answer = { id: command.id, error: String(err.message || err) };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
  if (command.op === "close") break;
}
process.exit(0);
