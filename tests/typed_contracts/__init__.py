"""Contracts used by the tests, with their generated modules."""
