"""The agent harness: one chat turn, as DESIGN.md's chat turn describes it."""
