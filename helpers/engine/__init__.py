"""Engine: everything a section trains and measures with: the training loop (``training``), its optimizers and
schedules (``optim``) and checkpoints (``checkpoints``), CPU threads and precision (``speed``), evaluation as data
(``metrics``), parameter validation and profiles (``config``), a grid's configurations (``grid``), the grid engine
and its runs (``experiment``; ``runcache``: one run, checkpointed and cached; ``parallel``), and progress events
(``progress``).

May import: ``models``, ``data`` and the top-level modules; never ``sections``, ``reporting`` or ``cli``.
"""
