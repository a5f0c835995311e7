"""Models: layers, network builders, initialisation and summaries, and architectures written as data (specs).

May import: ``data`` and the top-level modules; never ``engine``, ``sections``, ``reporting`` or ``cli``.
"""
