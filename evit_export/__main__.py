from evit_export.cli import main

main()
