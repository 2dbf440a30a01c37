"""The benchmark harness: ``python -m bench`` (or ``make bench``).

One embedded broker, one preloaded input topic, and each scenario in its own process
(``bench.worker``) with a fresh consumer group and fresh output topics, so rates come from
the same broker in the same run and peak RSS is per scenario. ``bench.harness`` runs them,
``bench.measure`` turns progress samples into rates, ``bench.report`` prints and plots.
"""
