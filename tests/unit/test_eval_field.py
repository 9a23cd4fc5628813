"""The field fleet (full DOMAIN ranges) and the held-out evaluation of the bolt detector."""

from __future__ import annotations

import math

import numpy as np
from typer.testing import CliRunner

from boltwatch.cli import app
from boltwatch.evaluation.field import (
    HELDOUT_SEEDS,
    TUNING_SEEDS,
    FieldOutcome,
    evaluate_field,
    field_table,
    summarise_field,
)
from boltwatch.evaluation.scenarios import grafana_rule
from firmware_sim.field import FIELD_SCENARIOS, FieldRanges, simulate_field


def test_seeds_are_disjoint_and_heldout_is_large_enough() -> None:
    assert not set(TUNING_SEEDS) & set(HELDOUT_SEEDS)
    assert len(HELDOUT_SEEDS) >= 20


def test_field_fleet_draws_across_the_full_ranges_and_is_reproducible() -> None:
    r = FieldRanges()
    fleet = simulate_field(7, 44)
    again = simulate_field(7, 44)
    assert [b.truth.drawn for b in fleet] == [b.truth.drawn for b in again]
    assert {b.truth.scenario for b in fleet} == set(FIELD_SCENARIOS)
    emb = [b.truth.drawn["embedding_pct"] for b in fleet]
    tau = [b.truth.drawn["embedding_tau_h"] for b in fleet]
    interval = [b.truth.drawn["interval_min"] for b in fleet]
    assert all(r.embedding_pct[0] <= e <= r.embedding_pct[1] for e in emb)
    assert all(r.embedding_tau_h[0] <= t <= r.embedding_tau_h[1] for t in tau)
    assert min(interval) < 5
    assert max(interval) > 10
    late = [b for b in fleet if b.truth.drawn["monitoring_starts_h_after_install"] > 0]
    assert late
    assert all(
        not np.isfinite(b.torque_nm).any() for b in late if "retight" not in b.truth.scenario
    )
    for b in fleet:
        assert np.all(np.diff(b.ts_s) > 0)
        if b.truth.loosening and b.truth.scenario != "creep":
            assert math.isfinite(b.truth.onset_s)


def test_detector_on_a_tuning_fleet_beats_never_firing_and_stays_quiet_on_healthy_bolts() -> None:
    out = evaluate_field(seeds=(1,), bolts=33)
    healthy = [o for o in out if o.scenario.startswith("healthy")]
    assert healthy
    assert not any(o.false_alert for o in healthy)
    loose = [o for o in out if o.loosening]
    caught = [o for o in loose if math.isfinite(o.first_loosening) and not o.false_alert]
    assert len(caught) >= len(loose) - 1
    # Nothing that is not loosening still carries a loosening alert at the end.
    assert not any(o.active_at_end for o in out if not o.loosening)
    rows = summarise_field(out)
    assert rows[-1]["scenario"] == "all"
    table = field_table(rows, "t")
    assert table.row_count == len(rows)
    assert [c.header for c in table.columns] == list(rows[0])


def test_a_silent_retightening_never_lowers_the_preload() -> None:
    """A torque wrench stops before the nut turns when the bolt already holds more than the
    torque gives: whatever nut factor is drawn, the true preload does not step down."""
    fleet = [b for s in (1, 2, 3) for b in simulate_field(s, 60)]
    retightened = [b for b in fleet if b.truth.scenario.startswith("retightened")]
    assert len(retightened) >= 10
    for b in retightened:
        j = int(np.searchsorted(b.ts_s, b.truth.onset_s))
        if 0 < j < len(b.ts_s):
            assert b.true_kn[j] >= b.true_kn[j - 1] * 0.99, b.truth  # minutes of temperature


def test_evaluate_field_rejects_an_unknown_set_with_one_line() -> None:
    result = CliRunner().invoke(app, ["evaluate", "--field", "nope"])
    assert result.exit_code == 2
    assert "--field" in result.output
    assert "heldout" in result.output


def _outcome(first: float, grafana: float, since_onset: float) -> FieldOutcome:
    return FieldOutcome(
        device_id="b",
        scenario="creep",
        seed=0,
        onset=100.0,
        cross70=900.0,
        first_loosening=first,
        first_low=math.nan,
        grafana=grafana,
        grafana_since_onset=since_onset,
        active_at_end=True,
    )


def test_the_rule_fires_again_after_the_onset_and_before_rule_compares_with_that() -> None:
    """A rule that fired on a cold snap before the loosening began has not detected it: "before
    rule" compares with its first firing at or after the onset, and the early one is a false
    alert of the rule."""
    ts = np.arange(0.0, 10 * 86400.0, 3600.0)
    y = np.full(ts.shape, 100.0)
    y[48:52] = 70.0  # a cold snap, day 2: four readings under 80
    y[150:] = 60.0  # the loss, from hour 150
    assert grafana_rule(ts, y) == ts[50]
    assert grafana_rule(ts, y, since=ts[100]) == ts[152]
    assert grafana_rule(ts, y, since=ts[151]) == ts[152]
    assert grafana_rule(ts, y, since=ts[160]) == ts[160]  # still firing: from `since` itself
    assert math.isnan(grafana_rule(ts, np.full(ts.shape, 100.0), since=ts[10]))

    ours_between = _outcome(first=500.0, grafana=50.0, since_onset=600.0)
    ours_after = _outcome(first=700.0, grafana=50.0, since_onset=600.0)
    row = summarise_field([ours_between, ours_after])[-1]
    assert row["before rule"] == "1/2"
    assert row["rule false"] == "2"
