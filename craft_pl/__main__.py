"""``python -m craft_pl fit|validate|test|export ...``: the command line of ``craft_pl.cli.main``."""

import sys

from craft_pl.cli import PROGRAM, main

# every parser, the class-help ones jsonargparse builds on demand included, names the program from argv[0]
sys.argv[0] = PROGRAM
main()
