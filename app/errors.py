"""Errors shared across packages, in a leaf that imports nothing from ``app``.

Any package may raise them without depending on the one that defines the rules
(the settings, the cache policy, the rate-limit file all raise ``ConfigError``);
the composition root catches them once (start-up errors exit 2 with one line).
"""


class ConfigError(Exception):
    """Configuration that cannot be used; the message is meant for the operator."""
