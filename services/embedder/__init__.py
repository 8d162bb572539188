"""The embedding service: sentence embeddings (all-MiniLM-L6-v2) for every agent and the gateway.

One process holds the model (about 0.7 GB with torch), so a person's agent
stays small and many agents share it. ``POST /embed`` with a platform token.
"""
