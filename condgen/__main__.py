"""``python -m condgen``: the ``condgen`` command, as torchrun starts it (``torchrun ... -m condgen train ...``)."""

import sys

from condgen.cli import main

if __name__ == "__main__":
    sys.exit(main())
