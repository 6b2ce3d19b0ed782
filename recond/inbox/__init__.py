"""The inbox wing: where a dropped picture is noticed, settles, is read once and becomes a job, or
is set aside in ``inbox/failed/`` with its reason.

Kept free of imports, so a light front end can import one module of the wing without the rest.
"""
