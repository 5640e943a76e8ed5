"""predictq's benchmark: predictq vs a naive Celery app vs in-process predict(), in one run.

Run it as ``python -m bench [--quick] [--out PATH]`` (or ``make bench``).
"""
