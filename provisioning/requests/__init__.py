"""Access requests: a person asks for a connector, approvers decide, approval grants for a time."""
