from craft_pl.cli import main

main()
