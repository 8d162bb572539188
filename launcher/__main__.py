"""``python -m launcher`` is the ``dexorder`` command."""

from launcher.cli import main

main()
