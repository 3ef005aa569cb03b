// A WHIP publisher or WHEP player on libdatachannel (npm node-datachannel), the library OBS's WHIP output
// is built on: one bundled offer with H.264 (and Opus), every candidate gathered before the POST (OBS <= 30.1).
//   node whip_datachannel.mjs whip|whep URL TOKEN SESSIONS
// Prints one JSON line: each session's outcome ("connected", or the state/error it ended in) and libdatachannel's
// error lines. Sessions run one after another; each is closed (DELETE) before the next.
import nodeDataChannel from "node-datachannel";

const [mode, url, token, sessionsArg] = process.argv.slice(2);
const sessions = Number(sessionsArg || 1);
const errors = [];
nodeDataChannel.initLogger("Warning", (level, message) => {
  if (/certificate|CA|DTLS|handshake/i.test(message)) errors.push(message.slice(0, 200));
});

async function once(index) {
  const pc = new nodeDataChannel.PeerConnection(`s${index}`, { iceServers: [] });
  const video = new nodeDataChannel.Video("0", mode === "whip" ? "SendOnly" : "RecvOnly");
  video.addH264Codec(96, "profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1");
  if (mode === "whip") video.addSSRC(4242 + index, "video");
  else video.addVP8Codec(97); // a player takes either
  const track = pc.addTrack(video);
  const audio = new nodeDataChannel.Audio("1", mode === "whip" ? "SendOnly" : "RecvOnly");
  audio.addOpusCodec(111);
  if (mode === "whip") audio.addSSRC(5252 + index, "audio");
  pc.addTrack(audio);
  const outcome = new Promise((resolve) => {
    pc.onStateChange((state) => { if (state === "connected" || state === "failed" || state === "closed") resolve(state); });
    setTimeout(() => resolve("timeout"), 10000);
  });
  const gathered = new Promise((resolve) => {
    pc.onGatheringStateChange((state) => state === "complete" && resolve());
    setTimeout(resolve, 3000);
  });
  pc.setLocalDescription();
  await gathered;
  const response = await fetch(url, { method: "POST", body: pc.localDescription().sdp,
    headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${token}` } });
  if (response.status !== 201) {
    pc.close();
    return { outcome: `http ${response.status}`, body: (await response.text()).slice(0, 200) };
  }
  const location = new URL(response.headers.get("location"), url).href;
  const answer = await response.text();
  let state;
  try {
    pc.setRemoteDescription(answer, "answer");
    state = await outcome;
  } catch (err) {
    state = `error: ${err.message}`;
  }
  void track;
  const pair = pc.getSelectedCandidatePair();
  const port = pair ? pair.local.port : null;
  pc.close();
  await fetch(location, { method: "DELETE", headers: { Authorization: `Bearer ${token}` } });
  return { outcome: state, port };
}

const results = [];
for (let i = 0; i < sessions; i++) { results.push(await once(i)); await new Promise((r) => setTimeout(r, Number(process.env.PAUSE_MS || 0))); }
console.log(JSON.stringify({ results, errors: errors.slice(0, 10) }));
process.exit(0);
