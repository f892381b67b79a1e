"""One party's gateway as a process: configuration, lifecycle, sources and sinks, operations surface.

:mod:`.config` (the TOML file), :mod:`.gateway` (the ordered lifecycle), :mod:`.plugins` (sources and sinks
by kind, adapters by entry point), :mod:`.sources` (drop folders), :mod:`.webhook` (HTTP sink),
:mod:`.ops` (``/healthz``, ``/readyz``, ``/metrics``, the status page of :mod:`.status` in the words of
:mod:`.catalogue`), :mod:`.http_intake` (``POST /v1/events``), :mod:`.filesink` (one JSON file per event),
:mod:`.quarantine` (what quarantine reports say to clerks), :mod:`.logs` (redacting JSON logs),
:mod:`.signals`.
"""
