"""Power awareness: profiles, sensors, the energy meter and the governor that picks a profile."""
