"""``python -m gdexp.compare``."""

from gdexp.compare.cli import main

main()
