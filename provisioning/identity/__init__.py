"""Identity as the IdP tells it: users, groups and who belongs to which."""
