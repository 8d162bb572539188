"""``python -m agent --user alice``: one person's agent (what ``dexorder agent`` runs)."""

from agent.cli import main

if __name__ == "__main__":
    main()
