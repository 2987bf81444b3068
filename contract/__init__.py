"""The contracts every package agrees on: the wire format (topics, payload codecs, error codes).

Server, client, trainer, benchmarks and tests import this package; it imports none of them.
Nothing here knows MQTT client libraries or models: bytes and topic strings in, plain values out.
"""
