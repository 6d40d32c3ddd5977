"""MQTT link of edged: a disciplined paho-mqtt 2.x client (link.py), its settings and its asyncio bridge.

Nothing is imported here: ``edged.config`` needs only ``edged.mqtt.settings``, and importing paho for
it would cost every daemon start (and every ``edged`` command) the MQTT client it may never use.
"""
