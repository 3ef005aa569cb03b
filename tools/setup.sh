#!/usr/bin/env bash
# Set up everything the test suite needs on a Debian machine, system packages included:
#   Debian: iproute2 (network namespaces for the browser tests), chromium (driven by Playwright; it never
#   downloads a browser), redis-server (the broker contract suite and the cluster tests start their own),
#   ffmpeg (ffprobe checks what the recorder wrote, independently of the PyAV that wrote it), postgresql
#   (the analytics tests create and start their own server on a free loopback port), espeak-ng (the voice
#   assistant speaks with it, and the voice test's caller asks with it).
#   coturn (TURN for viewers whose network blocks UDP: `serve --turn` starts one; the reach lab tests run it).
#   nodejs and npm (when missing), then tests/interop's npm packages (puppeteer-core, and node-datachannel, which is
#   libdatachannel, the library OBS's WHIP output is built on (tests/test_interop.py); GStreamer's
#   webrtcbin with the system python3's GObject bindings (gstreamer1.0-plugins-bad/-good, gstreamer1.0-nice,
#   gir1.2-gst-plugins-bad-1.0, python3-gi), the other WHIP publisher tests/test_interop.py runs, and the
#   SRT listener `live-relay ingest` runs (its srtsrc is in gstreamer1.0-plugins-bad).
#   nginx-light and libnginx-mod-rtmp: the RTMP server `live-relay ingest` runs in front of the bridge;
#   libnginx-mod-stream: the stand-in platform of the restreaming test takes RTMPS through it (TLS in front).
#   fonts-noto-cjk: the browser tests' screenshots of the page in Chinese show its glyphs, not boxes.
#   firefox-esr: the browser tests run the page in Firefox too, driven over WebDriver BiDi by tests/interop's
#   puppeteer-core (which never downloads a browser).
#   Python: a venv in .venv with the project and its test extras.
# Packages already installed are not fetched again. Without root it uses sudo when it can; when it
# cannot install something it says what is missing and fails, unless LIVE_RELAY_SKIP_MISSING=1 (then the
# tests that need it are skipped, and pytest's summary says so).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(iproute2 nftables chromium redis-server ffmpeg postgresql espeak-ng coturn
          gstreamer1.0-plugins-bad gstreamer1.0-plugins-good gstreamer1.0-nice gir1.2-gst-plugins-bad-1.0 python3-gi
          nginx-light libnginx-mod-rtmp libnginx-mod-stream fonts-noto-cjk firefox-esr)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# Node (18.20+) and npm for tests/interop's node-datachannel (libdatachannel, OBS's WHIP stack); a Node
# already installed from elsewhere (with its own npm) is kept.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        as_root=()
        [ "$(id -u)" -eq 0 ] || as_root=(sudo -n)
        echo "installing Debian packages: ${missing[*]}" >&2
        if ! { "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
               "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
            echo "could not install ${missing[*]} (needs root or passwordless sudo)" >&2
            [ "${LIVE_RELAY_SKIP_MISSING:-}" = 1 ] || exit 1
        fi
    else
        echo "not a Debian machine: install ${missing[*]} yourself, or set LIVE_RELAY_SKIP_MISSING=1" >&2
        [ "${LIVE_RELAY_SKIP_MISSING:-}" = 1 ] || exit 1
    fi
fi

if command -v npm >/dev/null 2>&1; then
    npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error >/dev/null
    npm ci --prefix clients/web --no-audit --no-fund --loglevel=error >/dev/null  # hls.js, the page's HLS player
fi

python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
