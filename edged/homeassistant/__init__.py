"""Home Assistant MQTT discovery: edged shows up as a device with its speed, energy, health and model."""
