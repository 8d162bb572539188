"""Trading for the person: the paper broker (default) and live trading behind limits."""
