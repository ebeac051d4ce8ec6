"""Access reviews: campaigns over live grants, decisions, and their outcome through the engine."""
