"""Readers for raw landing files. Each turns one file into a stream of canonical records or rejects."""
