"""Workflows: LangGraph state machines with validation loops (write → validate → fix)."""
