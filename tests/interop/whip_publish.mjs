// A WHIP publisher on libdatachannel (npm node-datachannel), sending H.264 as OBS's WHIP output does: one
// bundled offer (H.264 constrained baseline and Opus), the encoder's NAL units packetized by libdatachannel's
// own H264RtpPacketizer, sender reports and NACK answers from its RTCP handlers, keyframe requests ignored.
//   node whip_publish.mjs URL TOKEN FILE.h264 all|none|patch SECONDS
// FILE.h264: Annex B with an access unit delimiter before each picture (x264 aud=1), sent in a loop at 30 fps.
// Candidates as the OBS versions send them: "all" gathered before the POST (OBS <= 30.1), "none" in an offer
// without any (30.2-31: the server learns the address from the checks), "patch" trickled after the POST by
// PATCH with the ETag (newer). Prints one JSON line: the state reached, pictures sent, the PATCH statuses.
import nodeDataChannel from "node-datachannel";
import { readFileSync } from "node:fs";

const [url, token, file, candidates, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg || 5);

function accessUnits(data) {
  const units = [];
  let start = -1;
  for (let i = 0; i + 4 < data.length; i++) {
    const aud = data[i] === 0 && data[i + 1] === 0 && data[i + 2] === 0 && data[i + 3] === 1 && (data[i + 4] & 0x1f) === 9;
    if (aud) {
      if (start >= 0) units.push(data.subarray(start, i));
      start = i;
    }
  }
  if (start >= 0) units.push(data.subarray(start));
  return units;
}

const units = accessUnits(readFileSync(file));
const pc = new nodeDataChannel.PeerConnection("obs", { iceServers: [] });
const video = new nodeDataChannel.Video("0", "SendOnly");
video.addH264Codec(96, "profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1");
video.addSSRC(4242, "video", "obs", "video");
const track = pc.addTrack(video);
const audio = new nodeDataChannel.Audio("1", "SendOnly");
audio.addOpusCodec(111);
audio.addSSRC(5252, "audio", "obs", "audio");
pc.addTrack(audio);
const config = new nodeDataChannel.RtpPacketizationConfig(4242, "video", 96, 90000);
const packetizer = new nodeDataChannel.H264RtpPacketizer("StartSequence", config);
packetizer.addToChain(new nodeDataChannel.RtcpSrReporter(config));
packetizer.addToChain(new nodeDataChannel.RtcpNackResponder());
track.setMediaHandler(packetizer);

const gathered = [];
const gatheringDone = new Promise((resolve) => {
  pc.onGatheringStateChange((state) => state === "complete" && resolve());
  setTimeout(resolve, 3000);
});
pc.onLocalCandidate((candidate, mid) => gathered.push({ candidate, mid }));
const outcome = new Promise((resolve) => {
  pc.onStateChange((state) => { if (["connected", "failed", "closed"].includes(state)) resolve(state); });
  setTimeout(() => resolve("timeout"), 15000);
});
const opened = new Promise((resolve) => track.onOpen(resolve));

pc.setLocalDescription();
if (candidates === "all") await gatheringDone;
let offer = pc.localDescription().sdp;
if (candidates !== "all") offer = offer.split(/\r?\n/).filter((l) => !/^a=(candidate|end-of-candidates)/.test(l)).join("\r\n");
const response = await fetch(url, { method: "POST", body: offer,
  headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${token}` } });
if (response.status !== 201) {
  console.log(JSON.stringify({ outcome: `http ${response.status}`, body: (await response.text()).slice(0, 200) }));
  process.exit(0);
}
const location = new URL(response.headers.get("location"), url).href;
const etag = response.headers.get("etag");
pc.setRemoteDescription(await response.text(), "answer");
const patches = [];
if (candidates === "patch") {
  await gatheringDone;
  const ufrag = /a=ice-ufrag:(\S+)/.exec(offer)[1];
  const pwd = /a=ice-pwd:(\S+)/.exec(offer)[1];
  const lines = [`a=ice-ufrag:${ufrag}`, `a=ice-pwd:${pwd}`, "m=video 9 UDP/TLS/RTP/SAVPF 96", "a=mid:0",
    ...gathered.map((c) => (c.candidate.startsWith("a=") ? c.candidate : `a=${c.candidate}`)), "a=end-of-candidates"];
  const patch = await fetch(location, { method: "PATCH", body: lines.join("\r\n") + "\r\n",
    headers: { "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": etag, Authorization: `Bearer ${token}` } });
  patches.push(patch.status);
}
const state = await outcome;
let sent = 0;
if (state === "connected") {
  await Promise.race([opened, new Promise((r) => setTimeout(r, 5000))]);
  const start = Date.now();
  const base = config.timestamp;
  for (let n = 0; n < seconds * 30; n++) {
    const due = start + (n * 1000) / 30 - Date.now();
    if (due > 0) await new Promise((r) => setTimeout(r, due));
    config.timestamp = (base + n * 3000) >>> 0;
    if (track.sendMessageBinary(Buffer.from(units[n % units.length]))) sent++;
  }
}
await fetch(location, { method: "DELETE", headers: { Authorization: `Bearer ${token}` } });
pc.close();
console.log(JSON.stringify({ outcome: state, sent, units: units.length, patches }));
process.exit(0);
