"""Case coordination: who did what, when, across agencies; the SOP as code; monitored statistics.

A layer between the bus and the runtime (docs/COORDINATION.md): the runtime feeds it the events its gateway
publishes and accepts when the configuration has a ``[coordination]`` table.

* :mod:`.projection`: events -> timeline entries (identifiers only); :mod:`.store`: SQLite or PostgreSQL;
* :mod:`.sop`: the SOP document (load, validate); :mod:`.engine`: deadlines, overdue and resolved alerts;
* :mod:`.suppression`, :mod:`.statistics`: suppressed tables per period, CSV/JSON/HTML, the statistics alert;
* :mod:`.service`: :class:`Coordinator`, the component the runtime wires in; :mod:`.clock`: injected time;
* :mod:`.metrics`: its Prometheus metrics (step ids only), on the gateway's registry.
"""
