"""The message contracts as code: input bytes to columns, outputs and dead letters to
bytes, W3C trace context in headers. Imports only msgspec, numpy and :mod:`processor.errors`.
"""
