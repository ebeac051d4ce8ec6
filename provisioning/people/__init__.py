"""People and groups over time: what each change to them entails (:mod:`.lifecycle`)."""
