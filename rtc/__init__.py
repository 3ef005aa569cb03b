"""The aiortc/aioice adapter (layer 2): every private name of aiortc and aioice the code base relies on
(``adapter``), the jitter buffer that replaces aiortc's in a tapped receiver (``jitter``), and the codec
payload facts forwarding needs without decoding (``codecs``). Used by the media plane and the client
library alike; imports nothing of ours but ``rtc`` itself."""
