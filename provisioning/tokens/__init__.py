"""API tokens: hashed static credentials with scopes."""
