"""The live demo (``processor demo``): a synthetic sensor network with a smoke burst, the
live view, the plot and the summary in words. Nothing in the service imports it.
"""
