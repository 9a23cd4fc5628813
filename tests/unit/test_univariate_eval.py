"""The univariate evaluation table on a small simulated corpus (the full table is a program)."""

from __future__ import annotations

from boltwatch.evaluation.univariate_eval import (
    MachineCase,
    default_scorers,
    evaluate,
    machine_corpora,
    markdown_table,
)
from detection.univariate import UnivariateParams


def test_flow_loss_is_found_and_the_table_has_every_column() -> None:
    corpora = machine_corpora(
        (1, 2), cases=(MachineCase("laser_cutter", "flow_loss", "flow_lpm"),), hours=3.0
    )
    assert len(corpora) == 1
    assert len(corpora[0].series) == 2
    params = UnivariateParams()
    (result,) = evaluate(
        corpora, default_scorers(params), thresholds={"univariate": params.threshold}
    )
    assert result.n_windows == 2
    assert result.swept["null"].normalised == 0.0
    assert result.swept["univariate"].normalised > 80.0  # a flow that drops to 0 is obvious
    assert result.swept["univariate"].tp_windows == 2
    assert result.at_threshold["univariate"].tp_windows == 2
    table = markdown_table([result])
    assert table.splitlines()[0] == (
        "| corpus | series | univariate | windowed Gaussian | chance (uniform) | null "
        "| univariate @ own threshold |"
    )
    assert "laser_cutter.flow_lpm / flow_loss | 2 |" in table
