"""``python -m fedlearn``: the same as the ``fedlearn`` command."""

from fedlearn.cli import main

main()
