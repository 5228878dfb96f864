"""The store's `engine` fixture (a migrated evidence database, on SQLite and on PostgreSQL) for the access tests;
a module that defines its own keeps it."""

from tests.store.conftest import engine  # noqa: F401 - a fixture, found by its name
