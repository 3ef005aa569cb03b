// The message channel: join, requests with ids, events, the clock offset (min-RTT ping), a watchdog that
// tells a dead link from a quiet one, reconnect and resume (docs/protocol.md).

// WebSocket close codes, as the server names them (protocol/codes.py CloseCode; tests/test_page_protocol.py
// checks the two agree).
export const CLOSE = Object.freeze({
  NORMAL: 1000, GOING_AWAY: 1001, PROTOCOL_ERROR: 1002, MESSAGE_TOO_BIG: 1009, TOO_MANY_ERRORS: 4000,
  UNAUTHORIZED: 4001, FORBIDDEN: 4003, UNKNOWN_ROOM: 4004, SLOW_CONSUMER: 4008, TOO_MANY_CONNECTIONS: 4009,
  JOIN_TIMEOUT: 4010, REMOVED: 4011,
});
const WATCHDOG_GAVE_UP = 4999; // (never sent by a server: the page closed a link that stopped answering)
// Final: do not come back (closed on purpose, a refused token, a private room, removed by a moderator).
const FINAL = new Set([CLOSE.NORMAL, CLOSE.PROTOCOL_ERROR, CLOSE.UNAUTHORIZED, CLOSE.FORBIDDEN, CLOSE.REMOVED]);

import { deviceId, entrySource } from "./context.js";

// ---------------------------------------------------------------------------------------------------
// The message channel: join, requests with ids, events, clock offset (min-RTT ping), reconnect + resume.

// The watchdog's decision at one tick: "dead" once a ping has gone unanswered for 2 s (anything heard since
// counts as an answer), "ping" after 1 s of silence with no ping outstanding, else "wait".
export function watchdogStep(now, lastHeard, pinged) {
  const outstanding = pinged > 0 && lastHeard < pinged;
  if (outstanding) return now - pinged > 2000 ? "dead" : "wait";
  return now - lastHeard > 1000 ? "ping" : "wait";
}

export class Channel {
  constructor(room, tok) {
    // This server first; other nodes sharing the room come from this server only (`joined.nodes`, which the
    // operator sets with --failover-node), never from the page's address: a crafted link must not send a
    // viewer, and its token, elsewhere. A reconnect that fails on one node moves on to the next.
    this.nodes = [`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`];
    this.room = room; this.token = tok; this.handlers = {}; this.pending = new Map(); this.nextId = 1;
    this.offset = 0; this.bestRtt = Infinity; this.epoch = null; this.seq = 0; this.joined = null;
    this.closed = false; this.backoff = 250; this.node = 0; this.history = 0; this.lastHeard = 0;
  }
  on(type, fn) { (this.handlers[type] ||= []).push(fn); return this; }
  emit(type, msg) { for (const fn of this.handlers[type] || []) fn(msg); for (const fn of this.handlers["*"] || []) fn(msg); }
  serverNow() { return Date.now() + this.offset; }
  learnNodes(nodes) {
    for (const u of Array.isArray(nodes) ? nodes : []) if (/^wss?:\/\/[^\s]+$/.test(u) && !this.nodes.includes(u)) this.nodes.push(u);
  }
  connect() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.nodes[this.node % this.nodes.length]);
      this.ws = ws;
      ws.onopen = () => {
        const join = { type: "join", room: this.room, id: "join" };
        if (this.token) join.token = this.token;
        if (this.epoch) join.resume = { epoch: this.epoch, seq: this.seq };
        else if (this.history) join.history = this.history; // a late joiner sees the recent comments
        if (entrySource) join.source = entrySource;
        if (deviceId) join.device = deviceId;
        ws.send(JSON.stringify(join));
      };
      ws.onmessage = (e) => {
        this.lastHeard = Date.now();
        const msg = JSON.parse(e.data);
        if (msg.type === "joined") {
          this.joined = msg; this.epoch = msg.epoch; if (!msg.recovered) this.seq = msg.seq; this.learnNodes(msg.nodes);
          this.backoff = 250; this.measureClock(); this.watch(ws); this.emit("joined", msg); resolve(msg); return;
        }
        if (msg.type === "error" && msg.id === "join") { reject(new Error(`${msg.code}: ${msg.message}`)); return; }
        this.dispatch(msg);
      };
      ws.onclose = (e) => { this.lost(ws, e.code); reject(new Error(`closed (${e.code})`)); };
    });
  }
  // A dead link (Wi-Fi gone, a NAT that forgot us) closes nothing by itself for a long time. After a second
  // with nothing heard, ping (a busy room's own traffic makes pings unnecessary); a ping unanswered for two
  // seconds gives up on the socket. Silence alone never does: a hidden tab's timers fire a second or more
  // apart (a phone in the background, a host's tab behind OBS), so a quiet room could look dead between two
  // ticks that never pinged.
  watch(ws) {
    clearInterval(this.watchdog);
    let pinged = 0;
    this.watchdog = setInterval(() => {
      if (ws !== this.ws || ws.readyState !== WebSocket.OPEN) { clearInterval(this.watchdog); return; }
      const now = Date.now();
      const step = watchdogStep(now, this.lastHeard, pinged);
      if (step === "dead") { clearInterval(this.watchdog); this.lost(ws, WATCHDOG_GAVE_UP); ws.close(); }
      else if (step === "ping") { pinged = now; this.send({ type: "ping" }); }
    }, 250);
  }
  lost(ws, code) {
    if (ws.lostHandled) return;
    ws.lostHandled = true; ws.onmessage = null; ws.onclose = null;
    // A channel this page closed itself (a call hung up, a page left): what waits on its requests has ended
    // with it, so they are dropped unsettled; rejecting them only surfaced as an "Error: closed (1000)" in the
    // console from fire-and-forget requests (a Firefox call scenario saw it in CI).
    if (!this.closed) for (const [, p] of this.pending) p.reject(new Error(`closed (${code})`));
    this.pending.clear();
    this.emit("closed", { code });
    // Once joined, keep coming back: UNKNOWN_ROOM on a rejoin means the room is not open *yet* (a restarted
    // server, a host reconnecting); only the FINAL codes end it.
    if (!this.closed && !FINAL.has(code) && this.joined) {
      if (code !== CLOSE.UNKNOWN_ROOM) this.node += 1; // unreachable or going away: try the next node
      setTimeout(() => this.connect().catch(() => {}), this.backoff * (0.5 + Math.random()));
      this.backoff = Math.min(code === CLOSE.UNKNOWN_ROOM ? 10000 : 5000, this.backoff * 2);
    }
  }
  dispatch(msg) {
    if (["ack", "ok", "answer", "error", "pong", "closed_media"].includes(msg.type) && this.pending.has(msg.id)) {
      const p = this.pending.get(msg.id); this.pending.delete(msg.id);
      if (msg.type === "error") {
        p.reject(Object.assign(new Error(`${msg.code}: ${msg.message}`), { code: msg.code, retryAfterMs: msg.retry_after_ms }));
      }
      else p.resolve(msg);
      return;
    }
    if (typeof msg.seq === "number" && msg.epoch) { this.seq = Math.max(this.seq, msg.seq); this.epoch = msg.epoch; }
    if (typeof msg.ts === "number") msg.latency_ms = this.serverNow() - msg.ts;
    this.emit(msg.type, msg);
  }
  send(msg) {
    if (this.ws?.readyState !== WebSocket.OPEN) return;
    msg.ts ??= this.serverNow();
    this.ws.send(JSON.stringify(msg));
  }
  request(msg, timeout = 15000) {
    const id = this.nextId++; msg.id = id;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      setTimeout(() => { if (this.pending.delete(id)) reject(new Error("timeout")); }, timeout);
      this.send(msg);
    });
  }
  async measureClock() {
    for (let i = 0; i < 3; i++) {
      const t0 = Date.now();
      try {
        const pong = await this.request({ type: "ping" });
        const rtt = Date.now() - t0;
        if (rtt < this.bestRtt) { this.bestRtt = rtt; this.offset = pong.server_ts - (t0 + rtt / 2); }
      } catch { return; }
    }
  }
  close() { this.closed = true; this.ws?.close(CLOSE.NORMAL); }
}
