"""Refuse, at start, a shared secret too weak to be 32 random bytes.

The cluster token authenticates agents and schedulers to each other and keys
the session tokens' HMAC: whoever guesses it owns the cluster. Randomness
cannot be measured from one string, so this refuses what is surely not 32
random bytes: fewer than 43 characters (32 bytes in unpadded base64; hex
takes 64), whitespace (a sentence, like the old examples' "change-me: ..."),
or so few distinct characters that a person typed a pattern.
"""

from __future__ import annotations

MIN_CHARS = 43
MIN_DISTINCT = 10
HOW_TO_GENERATE = "generate one with `openssl rand -hex 32`"


def check_strong_secret(name: str, value: str) -> None:
    """Raise ``ValueError`` naming the setting and how to generate a good value."""
    if len(value) < MIN_CHARS:
        raise ValueError(f"{name} has {len(value)} characters, 32 random bytes take {MIN_CHARS}: {HOW_TO_GENERATE}")
    if any(c.isspace() for c in value):
        raise ValueError(f"{name} holds whitespace, so it is words, not random bytes: {HOW_TO_GENERATE}")
    if len(set(value)) < MIN_DISTINCT:
        raise ValueError(f"{name} repeats too few characters to be random: {HOW_TO_GENERATE}")
