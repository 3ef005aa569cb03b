// What a browser can make of the server's ICE candidates. Firefox, as shipped, never pairs with loopback
// candidates (media.peerconnection.ice.loopback is off): a server that offers only 127.0.0.1 (the demo's
// default) gives a Firefox page on the same machine no video, and it would only learn it from a timeout.

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1)$/;

// Whether every candidate in `sdp` (one at least) is a loopback address.
export function loopbackOnly(sdp) {
  const addresses = (sdp || "").split(/\r?\n/).filter((line) => line.startsWith("a=candidate:"))
    .map((line) => line.split(" ")[4]);
  return addresses.length > 0 && addresses.every((address) => LOOPBACK.test(address));
}

// Whether this browser (by its user agent) refuses loopback candidates.
export function refusesLoopback(userAgent) {
  return /Firefox\//.test(userAgent || "") && !/Seamonkey\//.test(userAgent || "");
}
