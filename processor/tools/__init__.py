"""Operator tools beside the service: synthetic readings, ``processor sample`` and
``processor broker``. Nothing in the service imports them.
"""
