"""``python -m evit_export``: the same program as ``evit-export``."""
from evit_export.cli import main

if __name__ == "__main__":
    main()
