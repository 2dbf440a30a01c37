"""Test-suite wide settings: the pure unit tests need nothing; integration tests a broker.

Hypothesis explores new examples on every local run, where a failure is a finding to keep (as
an ``@example``). With ``HYPOTHESIS_PROFILE=ci`` (``.ci/run`` sets it) each property test
draws the same examples on every machine, so CI's verdict on a commit is the one its author
saw."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
