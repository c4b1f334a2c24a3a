"""Police connector: the one-stop minors' case system's exports -> case-related psychological support."""
