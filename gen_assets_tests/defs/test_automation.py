"""Declarative automation: generation, curation and the metrics follow the champion.

Dagster's evaluate_automation_conditions evaluates the conditions the way the automation sensor does, against
an instance whose materializations are reported here (no asset body runs).
"""

import dagster as dg
import pytest

from gen_assets.definitions import build_definitions
from gen_assets.settings import Paths

FOLLOW_THE_IMAGE_CHAMPION = {"generated_images", "curated_images", "image_metrics"}
AUTOMATED = FOLLOW_THE_IMAGE_CHAMPION | {"generated_texts", "curated_texts", "text_metrics"}


@pytest.fixture
def defs(tmp_path):
    return build_definitions(Paths(tmp_path), timezone="UTC")


def materialize(instance, keys) -> None:
    for key in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(key))


def requested(result) -> set[str]:
    return {r.key.to_user_string() for r in result.results if result.get_num_requested(r.key)}


def test_only_generation_curation_and_metrics_are_automated(defs):
    graph = defs.resolve_asset_graph()
    automated = {key.to_user_string() for key in graph.get_all_asset_keys() if graph.get(key).automation_condition}
    assert automated == AUTOMATED
    sensor = defs.resolve_sensor_def("regeneration_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert {k.to_user_string() for k in sensor.asset_selection.resolve(graph)} >= AUTOMATED


def test_a_new_champion_alone_leads_to_regeneration_and_a_full_run_to_nothing(defs):
    graph = defs.resolve_asset_graph()
    order = [key.to_user_string() for key in graph.toposorted_asset_keys]
    with dg.instance_for_test() as instance:
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert requested(result) == set()  # nothing materialized yet: the inputs are missing

        materialize(instance, order)  # a full run
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
        assert requested(result) == set()

        materialize(instance, ["image_champion"])  # what `gen-assets promote` materializes
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
        assert requested(result) == FOLLOW_THE_IMAGE_CHAMPION  # the text lane is left alone

        materialize(instance, [key for key in order if key in FOLLOW_THE_IMAGE_CHAMPION])  # the requested run
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
        assert requested(result) == set()
