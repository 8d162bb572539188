"""Subagents: a model with deeper context of its own, run as a LangGraph subgraph."""
