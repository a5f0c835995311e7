"""Reporting: what a report says and shows: provenance, the test-set block and the end of every report
(``report``), the ``metrics.json`` layout, its one writer and reader (``metrics_file``) and fingerprint
(``fingerprint``), the observations drawn from the numbers (``observations``), figures (``plots``), HTML/PDF export
(``export``) and the class summary of a batch (``summary``).

May import: ``engine``, ``models``, ``data`` and the top-level modules; never ``sections`` or ``cli``.
"""
