"""The ``dexorder`` command: runs the platform's parts as local processes."""
