"""TRL integration for dora-plugins (filled in by the TRL issue)."""
