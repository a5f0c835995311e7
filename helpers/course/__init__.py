"""A course's assignments and a student's hand-in: the assignment file (questions, personal variants, rubric), the
roster and the variant each student gets (``assign``), the student's working folder (``start``), the answers written
there and the archive handed in. Modules here may import the sections, reporting, engine, models and data rooms and
the top-level modules, never :mod:`helpers.cli` (which wires these into commands and hands in what only it knows,
such as the notebook of each section and the parameter check ``run --check`` makes).
"""
