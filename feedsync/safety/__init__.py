"""Values that never reach CyberTrace: built-in exclusions and MISP warninglists."""
