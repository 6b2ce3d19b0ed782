"""The outbox wing: where a finished result is staged, published in one rename, and listed in the
gallery, and the gate that pauses the queue while the outbox cannot take results.

Kept free of imports, so a light front end can import one module of the wing without the rest.
"""
