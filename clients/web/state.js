// The page's one mutable state, shared by its modules (nothing else at module level changes). Each field
// says who writes it.

export const app = {
  ch: null, // the room's message channel (app.js; live.js and call.js use it)
  myRole: null, // host | cohost | viewer, as the server last said (joined, grant)
  myPublisher: null, // this page's own publication's media id, never a tile
  viewing: null, // one Viewing per channel: every video this page watches on one connection (stage.js)
  tiles: new Map(), // publisher id -> { sub, el, publisher } (stage.js)
  hls: null, // { video, hls, el, reason } while the show plays over LL-HLS instead (fallback.js)
  roomState: { publishers: [], pk: null }, // what the room says of its publishers and PK (live.js)
  soundOn: localStorage.getItem("live-relay:sound") === "on", // one tap for sound, remembered (stage.js)
  askedQuality: new Map(), // the video quality each subscription last asked for (stage.js)
  resizeTimer: null,
  rejoinMedia: false, liveStream: null, // a host's camera, republished after a reconnect (studio.js)
  restreamTimer: null, // the restream list's refresh, while it has destinations (studio.js)
  cardTimer: null, countdownTimer: null, chipTimer: null, // the product card's and chips' clocks (shop.js)
  seenProducts: new Set(), // products whose card this viewer saw (one impression each)
  cardsSeen: new Map(), // product id -> { product, endsAt } of every card pushed while here (the last 50)
  lastE2E: null, // the last live message's latency (chat.js)
  statsTimer: null, reportedQuality: "", lastQualityReport: 0, // the stats line and what was reported (live.js)
};
