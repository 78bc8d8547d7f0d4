"""Typed experiment settings: one frozen dataclass per config section, checked at load time.

``Settings.from_dict(plain_config)`` checks every section, key and value (unknown names fail
with the closest known one; wrong types and out-of-range values fail naming the key and what is
allowed) and returns typed sections that the stages read. Defaults live in ``configs/_base_/``
only; the classes hold types, allowed values and ranges. See docs/DESIGN.md ("Configs").
"""
from .checks import ConfigError
from .section import KEYS_ADDED_LATER, Section
from .settings import SECTIONS, Settings, apply_overrides, flatten_overrides

__all__ = ["ConfigError", "Section", "Settings", "SECTIONS", "KEYS_ADDED_LATER",
           "apply_overrides", "flatten_overrides"]
