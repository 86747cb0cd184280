"""A setting's type, range and meaning, declared once: the rule types and shared ranges
(`rules`), read from a method's `__init__` signature (`signature`), checked before any data
loads (anomaly.config_schema)."""
