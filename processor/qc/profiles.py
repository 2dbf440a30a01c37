"""Default QC thresholds per sensor profile, as ``[qc.<field>]`` tables.

The QARTOD manuals define the tests but leave their numbers to the operator (site, season,
instrument): sensor limits come from instrument specifications, user limits and the other
thresholds are starting points chosen here and marked so. Each number says where it comes
from; a config file overrides any of them key by key (docs/qc.md).

No profile of sensors that report more than once a second (air_quality at 1-4 Hz, wildfire up
to 50 Hz, temperature_array up to 10 Hz) presets the rate of change: its Δt is in whole
seconds, as ``ioos_qc``'s, so readings under a second apart compare |Δx| alone with a
per-second threshold and most would be suspect. Their spike test catches the jumps; set a rate
for sensors that report a second or more apart.
"""

from __future__ import annotations

from processor.qc.thresholds import Tables

#: Plantower PMS5003 (the optical sensor of PurpleAir and most low-cost PM monitors),
#: datasheet: "maximum range >= 1000 µg/m³", "effective range 0-500 µg/m³".
_PMS5003_MAX = [0.0, 1000.0]

_PARTICLES: Tables = {
    "pm25": {
        "gross_range_fail": _PMS5003_MAX,
        # The PMS5003's effective range (datasheet: 0-500 µg/m³): above it the sensor's own
        # maker does not vouch for the reading.
        "gross_range_suspect": [0.0, 500.0],
        # Chosen: a reading 35 µg/m³ off its neighbour is the width of an AQI category
        # (EPA 2024: Moderate is 9.1-35.4); 100 µg/m³ is beyond a plume's edge in one step.
        "spike_suspect": 35.0,
        "spike_fail": 100.0,
        # Chosen: the PMS5003 reports to 0.1 µg/m³ (PurpleAir's 2-minute averages); the
        # same value (±0.01) 10 and 30 readings in a row is a stuck sensor (QARTOD's flat
        # line counts repeats: REP_CNT_SUSPECT < REP_CNT_FAIL). Counts, not minutes: for a
        # sensor read every second they are 10 and 30 s, too short (docs/qc.md).
        "flat_line_suspect": 10,
        "flat_line_fail": 30,
        "flat_line_tolerance": 0.01,
    },
    "pm10": {
        "gross_range_fail": _PMS5003_MAX,
        # Top of the AQI's highest PM10 breakpoint (604 µg/m³, EPA AQI technical assistance
        # document, 2024).
        "gross_range_suspect": [0.0, 604.0],
        "spike_suspect": 50.0,  # chosen: PM10 varies more than PM2.5 (dust)
        "spike_fail": 150.0,
        "flat_line_suspect": 10,  # chosen, as pm25's
        "flat_line_fail": 30,
        "flat_line_tolerance": 0.01,
    },
}

#: Smoke: the same sensor limits but no user limits (readings above 500 µg/m³ near a fire
#: are real, and are what the wildfire profile is for), wider jumps (chosen), and no flat
#: line: at an event's 10-50 Hz even the longest window a history keeps (MAX_FLAT_LINE,
#: 1,000 readings) is 20-100 s, in which whole-µg/m³ readings repeat with nothing stuck,
#: and flagged they would be left out of the windows' means. A state saved with the flat
#: line restores without it (its history shortened).
_SMOKE: Tables = {
    field: {
        **{
            key: value
            for key, value in table.items()
            if key != "gross_range_suspect" and not key.startswith("flat_line")
        },
        "spike_suspect": 3 * table["spike_suspect"],
        "spike_fail": 3 * table["spike_fail"],
    }
    for field, table in _PARTICLES.items()
}

_WATER_TEMPERATURE = {
    # Sea-Bird SBE 37 MicroCAT, specification: temperature measurement range -5 to +45 °C.
    "gross_range_fail": [-5.0, 45.0],
    # Chosen: sea water freezes near -2 °C; above 35 °C is rare outside shallow tropics
    # (the QARTOD temperature and salinity manual, v2.1 2020, asks for local limits).
    "gross_range_suspect": [-2.0, 35.0],
    "spike_suspect": 2.0,  # chosen, °C
    "spike_fail": 5.0,
    # Chosen: a thermistor resolves 0.001 °C; its last digit stays put 5 / 10 readings.
    "flat_line_suspect": 5,
    "flat_line_fail": 10,
    "flat_line_tolerance": 0.001,
}

PROFILE_QC: dict[str, Tables] = {
    "air_quality": _PARTICLES,
    "wildfire": _SMOKE,
    "hydrology": {
        "water_level": {  # metres; the QARTOD water level manual (v2.1, 2021) tests
            "gross_range_fail": [-5.0, 30.0],  # chosen: a 0-35 m vented pressure sensor
            "gross_range_suspect": [-2.0, 20.0],  # chosen: set the site's own record limits
            "spike_suspect": 0.3,  # chosen: m
            "spike_fail": 1.0,
            "rate_of_change_suspect": 0.01,  # chosen: 0.6 m a minute
            "rate_of_change_fail": 0.05,
            "flat_line_suspect": 5,  # chosen: a stuck float or a frozen well
            "flat_line_fail": 10,
            "flat_line_tolerance": 0.001,
        },
        "discharge": {  # m³/s
            # Chosen: discharge is never negative; the Amazon's mean is ~2e5 m³/s.
            "gross_range_fail": [0.0, 300_000.0],
            "flat_line_suspect": 5,
            "flat_line_fail": 10,
            "flat_line_tolerance": 0.001,
        },
    },
    "temperature_array": {"temperature": _WATER_TEMPERATURE},
    "dissolved_oxygen": {
        "dissolved_oxygen": {  # mg/L; the QARTOD dissolved oxygen manual (v2.0, 2018) tests
            "gross_range_fail": [0.0, 50.0],  # YSI EXO optical DO sensor: range 0-50 mg/L
            # Chosen: ~200 % saturation at 10 °C is 22 mg/L; above 20 is rare.
            "gross_range_suspect": [0.0, 20.0],
            "spike_suspect": 2.0,  # chosen, mg/L
            "spike_fail": 5.0,
            "rate_of_change_suspect": 0.01,  # chosen: 0.6 mg/L a minute
            "rate_of_change_fail": 0.05,
            "flat_line_suspect": 5,  # chosen, as temperature's
            "flat_line_fail": 10,
            "flat_line_tolerance": 0.001,
        },
        "temperature": {
            **_WATER_TEMPERATURE,
            "rate_of_change_suspect": 0.01,  # chosen: 0.6 °C a minute
            "rate_of_change_fail": 0.05,
        },
    },
}
