"""The Content-Disposition of every download (file content, checkpoint tar), built one way (RFC 6266).

A stored name may hold anything an older upload let through (non-Latin-1 letters, quotes, control
characters), and an HTTP header may not: Starlette encodes headers as Latin-1 (anything else is a 500),
a NUL or CR/LF makes the server drop the connection, and a `"` would end the quoted value early and let
the rest of the name add parameters of its own. So the name goes out twice, never raw:

- `filename="..."`: an ASCII fallback for old clients: printable ASCII, with `"`, `\\` and `%` (which
  some clients decode as an escape, RFC 6266 appendix D) and every other byte replaced by `_`;
- `filename*=UTF-8''...`: the exact name, percent-encoded (RFC 8187, formerly 5987), which every
  current browser and HTTP library prefers to the fallback.
"""

from __future__ import annotations

import re
from urllib.parse import quote

# Printable ASCII that may stand in a quoted-string as it is; everything else becomes "_".
_UNSAFE_IN_FALLBACK = re.compile(r'[^\x20-\x7e]|["\\%]')
# RFC 8187 attr-char, beyond the letters, digits and "-._~" that quote() always keeps.
_ATTR_CHAR_PUNCTUATION = "!#$&+^`|"


def content_disposition(filename: str) -> str:
    """`attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded name>`."""
    fallback = _UNSAFE_IN_FALLBACK.sub("_", filename) or "download"
    # "replace": a lone surrogate (not UTF-8-encodable) must not turn a download into a 500
    encoded = quote(filename.encode("utf-8", "replace"), safe=_ATTR_CHAR_PUNCTUATION)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
