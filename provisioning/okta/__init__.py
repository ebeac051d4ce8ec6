"""What Okta tells us (event hooks, later the System Log), applied to identity via the engine."""
