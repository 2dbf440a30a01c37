"""Test-suite wide settings: the pure unit tests need nothing; integration tests a broker."""
