"""Dissolved-gas analysis: what the gases in a transformer's oil say about a fault.

Pure functions over gas concentrations in ppm (µl/l), tested on textbook values:

- the IEC 60599 ratio method: three ratios (C2H2/C2H4, CH4/H2, C2H4/C2H6) matched against the
  standard's table of fault types: PD (partial discharges), D1 and D2 (discharges of low and
  high energy), T1, T2 and T3 (thermal faults below 300 °C, 300 to 700 °C, above 700 °C);
  ratios outside every row are ``undetermined``, as the standard says (then use the triangle);
- the Duval triangle (IEC 60599 Annex B): the relative shares of CH4, C2H4 and C2H2 placed in
  the zones PD, T1, T2, T3, D1, D2, and DT (mixtures of thermal and electrical faults);
- alarms against typical values and typical rates of increase: concentrations and yearly
  increases above which a transformer deserves attention. IEC 60599 gives them as ranges
  observed on networks; ``TYPICAL_PPM`` and ``TYPICAL_PPM_PER_YEAR`` take values within those
  ranges, and an operator sets their own from their fleet.
"""

from __future__ import annotations

from dataclasses import dataclass

GASES = ("H2", "CH4", "C2H6", "C2H4", "C2H2", "CO", "CO2")
# Typical concentrations (ppm) of transformers without a communicating tap changer, within
# the ranges of IEC 60599's typical 90 % values; above them the gas deserves attention.
TYPICAL_PPM = {
    "H2": 150.0,
    "CH4": 130.0,
    "C2H6": 90.0,
    "C2H4": 280.0,
    "C2H2": 20.0,
    "CO": 600.0,
    "CO2": 14_000.0,
}
# Typical rates of increase (ppm a year), within IEC 60599's typical ranges.
TYPICAL_PPM_PER_YEAR = {
    "H2": 132.0,
    "CH4": 120.0,
    "C2H6": 90.0,
    "C2H4": 146.0,
    "C2H2": 4.0,
    "CO": 1_060.0,
    "CO2": 10_000.0,
}
NOT_SIGNIFICANT = 0.1  # ppm: below this a gas in a ratio's denominator makes no ratio


@dataclass(frozen=True, slots=True)
class Ratios:
    """The three IEC 60599 ratios (None where the denominator is not significant)."""

    c2h2_c2h4: float | None
    ch4_h2: float | None
    c2h4_c2h6: float | None


def ratios(ppm: dict[str, float]) -> Ratios:
    """C2H2/C2H4, CH4/H2 and C2H4/C2H6 of one sample."""

    def ratio(top: str, bottom: str) -> float | None:
        return ppm[top] / ppm[bottom] if ppm[bottom] >= NOT_SIGNIFICANT else None

    return Ratios(ratio("C2H2", "C2H4"), ratio("CH4", "H2"), ratio("C2H4", "C2H6"))


def iec_ratio_fault(ppm: dict[str, float]) -> str:
    """The IEC 60599 table's fault type for the sample, or ``undetermined``.

    Rows, in the standard's order (NS: not significant, whatever its value):

    ====  ===========  ========  ===========
    type  C2H2/C2H4    CH4/H2    C2H4/C2H6
    ====  ===========  ========  ===========
    PD    NS           < 0.1     < 0.2
    D1    > 1          0.1-0.5   > 1
    D2    0.6-2.5      0.1-1     > 2
    T1    NS           > 1 (NS)  < 1
    T2    < 0.1        > 1       1-4
    T3    < 0.2        > 1       > 4
    ====  ===========  ========  ===========
    """
    r = ratios(ppm)
    r1 = r.c2h2_c2h4 if r.c2h2_c2h4 is not None else 0.0  # no C2H4: no acetylene ratio to speak of
    r2, r3 = r.ch4_h2, r.c2h4_c2h6
    if r2 is None or r3 is None:
        return "undetermined"
    rows = (  # the table above; where two rows overlap, the first one printed
        ("PD", r2 < 0.1 and r3 < 0.2),  # noqa: PLR2004 - the standard's table
        ("T1", r3 < 1),
        ("D1", r1 > 1 and 0.1 <= r2 <= 0.5 and r3 > 1),  # noqa: PLR2004
        ("D2", 0.6 <= r1 <= 2.5 and 0.1 <= r2 <= 1 and r3 > 2),  # noqa: PLR2004
        ("T2", r1 < 0.1 and r2 > 1 and 1 <= r3 <= 4),  # noqa: PLR2004
        ("T3", r1 < 0.2 and r2 > 1 and r3 > 4),  # noqa: PLR2004
    )
    return next((fault for fault, matches in rows if matches), "undetermined")


def duval_zone(ppm: dict[str, float]) -> str | None:
    """The Duval triangle 1 zone of the sample's CH4, C2H4 and C2H2 (None: none of them)."""
    total = ppm["CH4"] + ppm["C2H4"] + ppm["C2H2"]
    if total <= 0:
        return None
    ch4, c2h4, c2h2 = (100 * ppm[gas] / total for gas in ("CH4", "C2H4", "C2H2"))
    zones = (  # (zone, whether the shares fall in it), boundaries of IEC 60599 Annex B
        ("PD", ch4 >= 98),  # noqa: PLR2004
        ("T1", c2h2 < 4 and c2h4 < 20),  # noqa: PLR2004
        ("T2", c2h2 < 4 and 20 <= c2h4 < 50),  # noqa: PLR2004
        ("T3", c2h2 < 15 and c2h4 >= 50),  # noqa: PLR2004
        ("D1", c2h2 >= 13 and c2h4 < 23),  # noqa: PLR2004
        ("D2", (c2h2 >= 29 and c2h4 >= 23) or (13 <= c2h2 < 29 and 23 <= c2h4 < 40)),  # noqa: PLR2004
    )
    return next((zone for zone, inside in zones if inside), "DT")


@dataclass(frozen=True, slots=True)
class GasAlarm:
    """One gas above its typical value, or rising faster than its typical rate."""

    gas: str
    kind: str  # "concentration" or "rate"
    value: float  # ppm, or ppm a year
    typical: float


def gas_alarms(
    ppm: dict[str, float],
    ppm_per_year: dict[str, float] | None = None,
    *,
    typical: dict[str, float] = TYPICAL_PPM,
    typical_rate: dict[str, float] = TYPICAL_PPM_PER_YEAR,
) -> list[GasAlarm]:
    """Every gas above its typical concentration, and every one rising faster than typical."""
    found = [
        GasAlarm(gas, "concentration", ppm[gas], typical[gas])
        for gas in GASES
        if gas in ppm and ppm[gas] > typical[gas]
    ]
    found += [
        GasAlarm(gas, "rate", rate, typical_rate[gas])
        for gas, rate in (ppm_per_year or {}).items()
        if rate > typical_rate[gas]
    ]
    return found
