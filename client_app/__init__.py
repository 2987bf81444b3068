"""Tenant-side client of the multi-tenant MQTT inference service (see client_app/README.md)."""
