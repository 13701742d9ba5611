"""Feed names as file names (spool bodies, the misp_feed cache).

The loader allows only plain names (``FEED_NAME``), but a name reaches a path
from other places too (tests, ``FeedConfig`` built by hand): a feed named
``..`` once made the misp_feed cache the state directory itself, and pruning
it deleted an unrelated file there. ``component`` is the one way a name
becomes part of a path.
"""

from __future__ import annotations

import hashlib
import re

# A letter, digit or _ first: no ".", "..", hidden file or "-option" look-alike.
FEED_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
FEED_NAME_RULE = "1-100 of A-Z a-z 0-9 _ . -, starting with a letter, digit or _"
_KEPT = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_LONGEST = 100


def component(name: str) -> str:
    """``name`` as one file-name component that no other name maps to: itself
    when plain; else percent-encoded (every byte but A-Z a-z 0-9 _), or ``%h``
    and a SHA-256 when that is long. A plain name has no ``%``; every other form
    has one, so the two never meet."""
    if FEED_NAME.fullmatch(name):
        return name
    raw = name.encode("utf-8", "surrogatepass")
    encoded = "".join(chr(b) if b in _KEPT else f"%{b:02X}" for b in raw)
    if len(encoded) > _LONGEST or "%" not in encoded:
        return "%h" + hashlib.sha256(raw).hexdigest()
    return encoded
