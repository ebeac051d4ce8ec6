"""Who gets which connector: mappings, exceptions, grants, the engine, effective policy."""
