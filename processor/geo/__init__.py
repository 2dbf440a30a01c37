"""Geometry: validation and reprojection of a batch of readings as columns, geofences.
Vectorized (numpy, pyproj, shapely 2). Imports :mod:`processor.messages` and
:mod:`processor.errors`; knows nothing of Kafka, telemetry or the event loop.
"""
