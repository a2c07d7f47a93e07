"""trackd's link signer, importable without trackd's server package (`app`): senders whose own
code has a package named `app` mint links in process with it.

    from trackd_links import KeyRing
    ring = KeyRing.from_specs(["k1:the-secret-from-TRACKD_SIGNING_KEYS"])
    url = f"https://t.example.com/c/{ring.sign_click('spring-sale', 'r-42', 0, 'https://shop.example/sale')}"

It needs only `cryptography`, `ada-url` and `idna`, and never imports `app`. docs/tokens.md
specifies the tokens byte for byte, for senders in other languages.
"""

from trackd_links.tokens import KIND_CLICK, KIND_OPEN, KeyRing, LinkClaims, SigningError, SigningKey
from trackd_links.urls import InvalidURL, to_location

__all__ = [
    "KIND_CLICK", "KIND_OPEN", "InvalidURL", "KeyRing", "LinkClaims", "SigningError", "SigningKey", "to_location",
]  # fmt: skip
