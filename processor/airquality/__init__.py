"""Air quality for the public: the EPA NowCast of PM2.5 and PM10 from each sensor's recent
hourly means, and the AQI with its category from a concentration (``docs/airquality.md``).

Pure and vectorized: every function takes the numbers of many sensors at once as numpy arrays
and returns arrays (or, in ``report``, the aggregate's small dicts), so the hourly windows can
score a whole partition in one call. The breakpoint tables are versioned constants with their
sources (``tables``). Imports numpy and the standard library only; never aiokafka,
OpenTelemetry or another subpackage of the processor (checked by ``.importlinter``).
"""

from processor.airquality.aqi import AqiArrays, aqi
from processor.airquality.nowcast import HOURS, nowcast
from processor.airquality.report import NowcastEntry, nowcast_entries
from processor.airquality.tables import (
    CATEGORIES,
    PM10,
    PM25,
    TABLES,
    TABLES_VERSION,
    BreakpointTable,
    Pollutant,
)

__all__ = [
    "CATEGORIES",
    "HOURS",
    "PM10",
    "PM25",
    "TABLES",
    "TABLES_VERSION",
    "AqiArrays",
    "BreakpointTable",
    "NowcastEntry",
    "Pollutant",
    "aqi",
    "nowcast",
    "nowcast_entries",
]
