"""``python -m craft_pl fit|validate|test|export ...``: the command line of ``craft_pl.cli.main``."""

from craft_pl.cli import main

main()
