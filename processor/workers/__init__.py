"""Where the spatial stage runs: lean worker processes (as many as the memory budget
holds) or a thread. Chains the geo stage with Kafka framing; imports geo, messages,
:mod:`processor.state` (the window state's sensor keys) and :mod:`processor.kafka.batches`,
nothing of the engine or telemetry.
"""
