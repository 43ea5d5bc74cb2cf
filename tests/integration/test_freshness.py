"""The freshness check on the published recommendations: fine after a publish, a warning two hours on."""

from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.test_utils import freeze_time

from rec_orchestration.assets.publish import recommendations_freshness_checks, recommendations_freshness_sensor
from rec_orchestration.definitions import defs

RECOMMENDATIONS = dg.AssetKey(["recs", "user_recommendations"])


def evaluate_freshness(instance: dg.DagsterInstance) -> dg.AssetCheckEvaluation:
    job = dg.define_asset_job("freshness", selection=dg.AssetSelection.checks(*recommendations_freshness_checks))
    result = (dg.Definitions(asset_checks=recommendations_freshness_checks, jobs=[job])
              .resolve_job_def("freshness").execute_in_process(instance=instance))
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def test_recommendations_older_than_two_hours_raise_a_warning():
    published_at = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    with dg.DagsterInstance.ephemeral() as instance:
        with freeze_time(published_at):
            instance.report_runless_asset_event(dg.AssetMaterialization(RECOMMENDATIONS))
        with freeze_time(published_at + timedelta(minutes=90)):
            assert evaluate_freshness(instance).passed
        with freeze_time(published_at + timedelta(hours=2, minutes=5)):
            stale = evaluate_freshness(instance)
    assert not stale.passed
    assert stale.severity == dg.AssetCheckSeverity.WARN  # a warning, not a failure of the pipeline


def test_the_freshness_sensor_is_on_and_covers_the_published_table():
    sensor = defs.resolve_sensor_def(recommendations_freshness_sensor.name)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    check_keys = {key for checks in recommendations_freshness_checks for key in checks.check_keys}
    assert {key.asset_key for key in check_keys} == {RECOMMENDATIONS}
