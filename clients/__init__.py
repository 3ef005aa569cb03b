"""The client library (layer 3, beside the media plane): ``LiveClient`` (connect, join, resume, clock
estimate), ``MediaSession`` (publish/subscribe over a joined client) and synthetic media ``sources``; and
the browser page (``web/``, static files the server serves). Built on ``protocol`` and ``rtc`` only."""
