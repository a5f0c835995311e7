"""Grading a class's hand-ins (``fashion-report check``): each hand-in read as data (:mod:`.handins`), checked
against its student's assignment and for numbers that hold together (:mod:`.checks`, :mod:`.arithmetic`), rerun when
asked (:mod:`.rerun`, :mod:`.machines`), compared with the others (:mod:`.similarity`), scored by a rubric given as
data (:mod:`.rubric`), and written as ``grades.csv``, a class page and one feedback page per student
(:mod:`.sheet`, :mod:`.pages`); :mod:`.grade` checks the class, :mod:`.classcheck` runs the whole command.

Layer: beside :mod:`helpers.course`, above sections, reporting and engine, below cli. It may import everything but
:mod:`helpers.cli`: what it needs of ``verify`` (the page reader, the fingerprint check, the rerun) is handed in by
:mod:`helpers.cli.check_command` as a :class:`helpers.grading.grade.Tools`. Nothing in a hand-in is executed.
"""
