"""``python -m craft_pl fit|validate|test ...`` (LightningCLI) or ``python -m craft_pl export ...``."""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "export":
    from craft_pl.tools.export import main as export_main

    export_main(sys.argv[2:])
else:
    from craft_pl.cli import main

    main()
