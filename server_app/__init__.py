"""Multi-tenant streaming inference worker over MQTT."""
