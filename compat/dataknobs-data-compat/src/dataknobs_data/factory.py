"""``dataknobs_data.factory``: the store factories (dk_vector_plugins's)."""

from __future__ import annotations

from dk_vector_plugins import AsyncDatabaseFactory, DatabaseFactory
from dk_vector_plugins.registry import async_database_factory, database_factory

__all__ = ["AsyncDatabaseFactory", "DatabaseFactory", "async_database_factory", "database_factory"]
