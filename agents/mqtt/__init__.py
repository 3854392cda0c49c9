"""The MQTT and Sparkplug B agent (type ``mqtt``).

Modules, one job each: ``config`` (parameters and their validation), ``link`` (the
paho-mqtt connection, its network thread, acknowledgements), ``pending`` (publications
the broker has not acknowledged), ``payloads`` (plain JSON envelopes, received payloads),
``sparkplug`` (Sparkplug B payloads, births and deaths, from ``sparkplug_b.proto`` and its
generated ``sparkplug_b_pb2``), ``topics`` (received topics to ports) and ``agent``.
"""
