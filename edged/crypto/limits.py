"""Sizes of the e2e-v1 byte layouts (spec sections 1-4), apart from wire.py so that the config can
bound requests without importing the cryptography library (start-up pays for every import)."""

from __future__ import annotations

from typing import Final

HEADER_LEN: Final = 36
ENC_LEN: Final = 32
TAG_LEN: Final = 16
KEY_LEN: Final = 32
SIG_LEN: Final = 64
REQ_ID_LEN: Final = 16
PREKEY_ID_LEN: Final = 8
RESP_SECRET_LEN: Final = 32
MAX_RESP_TOPIC_BYTES: Final = 512
# client_pub + resp_secret + lp16 length + body_len + sig, with an empty topic and an empty body.
MIN_INNER_LEN: Final = KEY_LEN + RESP_SECRET_LEN + 2 + 4 + SIG_LEN
MIN_REQUEST_LEN: Final = HEADER_LEN + ENC_LEN + MIN_INNER_LEN + TAG_LEN
DEFAULT_MAX_REQUEST_BYTES: Final = 256 * 1024
