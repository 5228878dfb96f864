"""The evidence database: SQLAlchemy tables, the hash chain, migrations and the unit of work."""
