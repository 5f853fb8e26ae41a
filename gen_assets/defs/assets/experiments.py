"""Experiments between models: a challenger that passed the offline gate serves a share of the traffic
against the champion, and what customers do decides.

`experiments` reads the ingested events of each running experiment (`events`), summarises each arm
(click rate with its credible interval, the probability the challenger beats the champion, the
expected loss of each choice: gen_assets.rules.bandit) and records the figures in the registry for the
dashboard. It decides nothing by itself: its decision ("promote", "retire", "continue") is an input of
`<modality>_champion`, which acts on it, so the champion is still decided in one place.
"""


import hashlib
import json
import time
from dataclasses import dataclass, field

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from gen_assets.defs.assets.events import EventsRef
from gen_assets.defs.handles import lane
from gen_assets.feedback.events import arm_counts
from gen_assets.rules.bandit import ExperimentRule, summarise_experiment
from gen_assets.store import registry


@dataclass(frozen=True)
class ExperimentsRef:
    """The running experiments' figures and decisions, by modality."""

    version: str
    by_modality: dict = field(default_factory=dict)  # modality -> {experiment_id, decision, reason, figures}

    def decision(self, modality: str, experiment_id: str) -> dict | None:
        entry = self.by_modality.get(modality)
        return entry if entry and entry["experiment_id"] == experiment_id else None


class ExperimentsConfig(dg.Config):
    """When an experiment decides (set them in the project file: `assets: experiments: ...`)."""

    min_impressions: int = Field(default=500, description="impressions per arm before any decision")
    promote_probability: float = Field(default=0.95, description="promote the challenger when it beats the "
                                       "champion with at least this probability ...")
    max_expected_loss: float = Field(default=0.002, description="... and choosing it risks at most this much click "
                                     "rate (absolute); the same bound holds for keeping the champion")
    retire_probability: float = Field(default=0.05, description="retire the challenger when it beats the champion "
                                      "with at most this probability")
    max_impressions: int | None = Field(default=20000, description="impressions per arm after which an undecided "
                                        "experiment ends and the champion stays (None: never)")
    credible: float = Field(default=0.9, description="the credible interval shown for each arm's click rate")
    seed: int = 0

    def rule(self) -> ExperimentRule:
        return ExperimentRule(min_impressions=self.min_impressions, promote_probability=self.promote_probability,
                              retire_probability=self.retire_probability, max_expected_loss=self.max_expected_loss,
                              max_impressions=self.max_impressions, credible=self.credible)


@dg.asset(**lane("shared", "feedback"), kinds={"duckdb"}, code_version="1")
def experiments(context: dg.AssetExecutionContext, config: ExperimentsConfig, events: EventsRef,
                warehouse: DuckDBResource) -> dg.Output[ExperimentsRef]:
    """Each running experiment's arms (impressions, clicks, click rate and its interval, probability to be
    best, expected loss) and its decision under the configured thresholds."""
    t0 = time.perf_counter()
    try:
        rule = config.rule()
    except ValueError as e:
        raise dg.Failure(f"experiments: {e}") from None
    out: dict[str, dict] = {}
    with warehouse.get_connection() as con:
        for modality, exp in sorted(registry.running_experiments(con).items()):
            counts = arm_counts(con, exp["experiment_id"])
            summary = summarise_experiment(counts.get("champion", (0, 0)), counts.get("challenger", (0, 0)), rule,
                                           seed=config.seed)
            figures = {**summary.to_dict(), "champion": exp["champion"], "challenger": exp["challenger"],
                       "allocation": exp["allocation"], "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}
            registry.record_experiment_figures(con, exp["experiment_id"], figures)
            out[modality] = {"experiment_id": exp["experiment_id"], "decision": summary.decision,
                             "reason": summary.reason, "figures": figures}
            context.log.info(f"{modality} experiment {exp['experiment_id']}: {summary.decision}: {summary.reason}")
    stable = {m: {k: v for k, v in e.items() if k != "figures"} | {"arms": e["figures"].get("arms")}
              for m, e in out.items()}
    version = hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:16]
    metadata: dict = {"running": len(out), "seconds": round(time.perf_counter() - t0, 3)}
    for modality, e in out.items():
        metadata[f"{modality}_decision"] = e["decision"]
        metadata[f"{modality}_reason"] = e["reason"]
        metadata[f"{modality}_p_challenger_beats"] = dg.MetadataValue.float(
            round(float(e["figures"]["p_challenger_beats"]), 4))
    return dg.Output(ExperimentsRef(version, out), data_version=dg.DataVersion(version), metadata=metadata)
