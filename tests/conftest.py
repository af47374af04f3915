from tests.azurite import azurite_connection, azurite_table_name

__all__ = ["azurite_connection", "azurite_table_name"]  # session fixtures for every test that needs Azure Storage
