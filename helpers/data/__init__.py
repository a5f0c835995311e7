"""Data: Fashion-MNIST (finding, checking, reading and splitting the IDX files), image folders, and augmentation of
whole batches on tensors.

May import: the top-level modules ``paths``, ``cache``, ``atomic``, ``escape``, ``textfiles``; nothing of the other
rooms.
"""
