"""The folders recond works in, which are often on a network share: which it creates or waits for,
whether each is still the folder recond started with, and operations that never leave them.

Below both wings: the inbox and the outbox use it alike. Kept free of imports.
"""
