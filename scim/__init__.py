"""The SCIM 2.0 service provider: scim2-server over the identity tables, at /scim/v2."""
