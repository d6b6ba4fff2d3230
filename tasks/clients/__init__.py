"""One module per external system (HTTP via requests, no Prefect imports)."""
