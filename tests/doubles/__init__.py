"""Test doubles of third-party engines that cannot be installed here (tests only)."""
