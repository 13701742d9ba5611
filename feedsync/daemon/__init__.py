"""The daemon: ``feedsync run`` (service.py) and the pieces it runs.

This package imports nothing itself: ``feedsync sync`` and ``status`` reach its
control channel (control.py) without loading the scheduler, the HTTP server and
the rest of the service, which they never use.
"""
