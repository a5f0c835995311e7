"""Reporting: what a report says and shows: provenance and the ``metrics.json`` layout (``report``), figures
(``plots``), HTML/PDF export (``export``) and the class summary of a batch (``summary``).

May import: ``engine``, ``models``, ``data`` and the top-level modules; never ``sections`` or ``cli``.
"""
