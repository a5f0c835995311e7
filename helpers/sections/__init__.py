"""Sections: one module per report section (``mlp``, ``cnn``, ``transfer`` with its ``backbones``, ``autoencoder``),
each holding only what is particular to it: its parameters, profiles, checks and the facts the engine and the
reports need about it.

May import: ``engine``, ``models``, ``data`` and the top-level modules; never ``reporting`` or ``cli``.
"""
