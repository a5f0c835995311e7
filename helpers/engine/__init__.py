"""Engine: everything a section trains and measures with: the training loop (``training``), CPU threads and precision
(``speed``), evaluation as data (``metrics``), parameter validation and profiles (``config``), the grid engine and
its runs (``experiment``, ``parallel``), and progress events (``progress``).

May import: ``models``, ``data`` and the top-level modules; never ``sections``, ``reporting`` or ``cli``.
"""
