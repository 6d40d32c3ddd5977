"""Signed fleet documents (trust root, release manifests) and, later, model transfer and install."""
