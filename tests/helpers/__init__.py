"""Helpers shared by Frugal's tests: real processes and sample resources, no mocks."""
