"""Fixtures shared by every test package."""

pytest_plugins = ("tests.pg",)  # pg_server, pg_dsn: a real PostgreSQL server
