"""Signed model updates. Here, what both sides read and sign: DSSE envelopes, the trust root, release
manifests, the wire frames and the ``[updates]`` settings. ``fleet/device/`` runs on the board (the update
service, downloads, A/B slots, the journal); ``fleet/depot/`` runs for the operator (keys, releases, the
depot that serves chunks, rollout status)."""
