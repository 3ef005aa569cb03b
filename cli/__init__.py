"""The top layer: the ``live-relay`` command line (``main``), the command-line apps a host, a viewer and a
call party use (``apps``), and the demo room's synthetic host (``demo``). Load tests live beside it in
``loadtest``. Nothing below imports from here."""
