import sys

from helpers.cli.main import command

# `python -m helpers` puts the current folder first on the import path: inside a student's hand-in, a helpers/
# folder there would have been imported instead of this package (and run as the grader). This copy is the real
# one, but the habit is unsafe where hand-ins are checked, so verify says how to run it safely.
if sys.argv[1:2] == ["verify"] and not sys.flags.safe_path:
    print("warning: run verify as `fashion-report verify ...` or `python -P -m helpers verify ...`: plain "
          "`python -m helpers` imports a helpers/ folder of the current folder first (a hand-in's, if you are in one)",
          file=sys.stderr)

command()
