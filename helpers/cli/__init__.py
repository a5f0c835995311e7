"""Command line: ``fashion-report`` / ``python -m helpers`` (``main``), running notebooks in kernels (``runner``,
``kernels``), batches of students locally or on Dask (``batch``, ``batchfile``, ``rows``, ``executors``, ``dask_security``),
and checking a hand-in (``verify`` and its ``verify_*`` parts).

May import every other room; nothing imports it.
"""
