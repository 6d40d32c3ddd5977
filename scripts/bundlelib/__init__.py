"""scripts/bundle's parts: target wheels, the reproducible archive."""
