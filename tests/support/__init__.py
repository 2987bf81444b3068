"""What the test suites share. Import from the module, e.g. ``from tests.support.probe import MqttProbe``.

- ``ports``: ``free_port`` (the one free-port helper), ``port_is_open``, ``wait_port_open``.
- ``mosquitto``: ``MosquittoBroker``, a real mosquitto process; ``mosquitto_conf``: a production
  mosquitto.conf made runnable here, password files.
- ``brokers``: building blocks of the broker fixtures: ``BrokerHandle`` (Mosquitto or the
  embedded amqtt), ``secured_mosquitto`` (generated dynamic-security auth), ``ServingSetup``
  (broker + worker processes + tenants of one test).
- ``probe``: ``MqttProbe``, the one MQTT test client (observer and tenant); ``probe_records``
  and ``messages``: what it records and receives.
- ``workers``: the one way to run the server: ``running_worker`` (in this process),
  ``ServerProcess`` / ``run_server`` (``python -m server_app``); status, metrics, RSS.
- ``configs``: private copies of the shipped models, server configs.
- ``payloads``: requests (``oip_request``, ``windows_from_sample``), pacing, counting answers.
- ``byo_models``: TFLite files like the ones users bring, built with TensorFlow.

The fixtures themselves are in tests/conftest.py (brokers, probes, ``repository``,
``serving``) and tests/security/conftest.py (``secured``).
"""
