"""`live-relay` with aiortc's decoder factory and every encoder's encode() counted, for the structural test
that the relay never decodes or encodes. The counts are written as JSON to $AUDIT_OUT at exit."""

from __future__ import annotations

import atexit
import json
import os
import sys

from aiortc import rtcrtpreceiver
from aiortc.codecs import h264, opus, vpx

counts = {"decoders": 0, "encodes": 0}
_get_decoder = rtcrtpreceiver.get_decoder


def _counting_get_decoder(codec):  # type: ignore[no-untyped-def]
    counts["decoders"] += 1
    return _get_decoder(codec)


rtcrtpreceiver.get_decoder = _counting_get_decoder
for encoder in (vpx.Vp8Encoder, opus.OpusEncoder, h264.H264Encoder):
    def _counting_encode(self, *args, _encode=encoder.encode, **kwargs):  # type: ignore[no-untyped-def]
        counts["encodes"] += 1
        return _encode(self, *args, **kwargs)

    encoder.encode = _counting_encode  # type: ignore[method-assign]


def _write() -> None:
    with open(os.environ["AUDIT_OUT"], "w") as f:
        json.dump(counts, f)


atexit.register(_write)

if __name__ == "__main__":
    from cli.main import main

    sys.exit(main())
