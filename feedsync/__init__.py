"""feedsync: mirror threat-intelligence feeds into Kaspersky CyberTrace suppliers."""

__version__ = "0.1.0"
