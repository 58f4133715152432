"""``python -m zray`` is the same as the ``zray`` command."""

from zray.cli import main

main()
