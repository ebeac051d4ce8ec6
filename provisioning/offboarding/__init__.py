"""Offboarding: removing all of a person's access at once, now or at an effective time."""
