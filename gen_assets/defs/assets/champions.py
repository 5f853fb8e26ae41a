"""The champion of each modality: the model generation uses, decided here and nowhere else.

`<modality>_champion` takes the newest candidate (`tuned_<modality>_generator`) and what measuring needs,
measures candidate and current champion the same way (gen_assets.rules.promotion), records the decision
in `promotions` and outputs the champion's model reference (data version: its checkpoint hash). A
refused candidate is a normal outcome: the run succeeds, the champion stays, and the decision and its
reason are in the metadata and the run log. A person's decision (`gen-assets promote` / `rollback`) is a
run of this asset with `promote` / `rollback` set, so generation shows as stale after it.
"""


import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from gen_assets.cleaning import texts as text_cleaning
from gen_assets.defs.assets.experiments import ExperimentsRef
from gen_assets.defs.assets.trained import load_image_split
from gen_assets.defs.assets.tuned import predicts
from gen_assets.defs.handles import CleanTable, ModelRef, inference_device, lane, uri_metadata
from gen_assets.models.checkpoint import load_model
from gen_assets.rules import promotion
from gen_assets.store import registry
from gen_assets.training.fingerprint import code_fingerprint
from gen_assets.training.image_data import images_to_tensor
from gen_assets.metrics.texts import guard_stats, length_bounds
from gen_assets.models.reward import writer_features
from gen_assets.models.text_generators import load_writer, writer_of


# the decision depends on the rule and on how it measures (sampling, metrics), not on this module's wiring
IMAGE_CHAMPION_CODE = ("gen_assets.rules.promotion", "gen_assets.models.dcgan", "gen_assets.models.vae",
                       "gen_assets.models.evaluator", "gen_assets.training.image_data")
TEXT_CHAMPION_CODE = ("gen_assets.rules.promotion", "gen_assets.models.text_generators", "gen_assets.metrics.texts",
                      "gen_assets.models.reward")


PROJECT_GATE = "project"  # the gate_profile of a champion decided by a run that names no profile


class PersonDecision(dg.Config):
    """Set by `gen-assets promote` / `rollback` / `experiment stop` (or in the launchpad): a person decides
    instead of the rule. And whether a candidate that passes the offline gate is promoted at once or first
    serves a share of the traffic as the challenger of an experiment (experiments.py decides it then)."""

    promote: str | None = Field(default=None, description="make this model version the champion, whatever the "
                                "rule says (gen-assets promote VERSION)")
    rollback: bool = Field(default=False, description="give the championship back to the previous champion "
                           "(gen-assets rollback)")
    by: str | None = Field(default=None, description="who decides (recorded in promotions)")
    reason: str | None = Field(default=None, description="why (recorded in promotions)")
    stop_experiment: bool = Field(default=False, description="end the running experiment now and keep the champion "
                                  "(gen-assets experiment stop)")
    challenger_share: float = Field(
        default=0.0, description="0: a candidate that passes the gate is promoted at once. Above 0: it becomes the "
        "challenger of an experiment on live traffic (/api/content) with this starting share, and the `experiments` "
        "asset's decision on customers' clicks promotes or retires it")
    allocation: str = Field(default="bandit", description="the experiment's traffic split: 'bandit' (Thompson "
                            "sampling over the two models' click rates, each keeping 10%) or 'fixed' (challenger_share "
                            "throughout, a classic A/B test)")


class ImageChampionConfig(PersonDecision):
    tolerance: float = Field(
        default=0.3,
        description="a candidate whose FID is at most this share above the champion's is still promoted. Tuning "
        "towards people's ratings moves samples away from the data's average, which FID counts as worse; the "
        "anchored tuning (tuned_image_generator) stops within its max_fid_increase, below this bar",
    )
    max_ratio_to_floor: float | None = Field(
        default=3.0, description="and FID at most this multiple of the real-data floor (None: no absolute bar)"
    )
    per_class: int = Field(default=100, description="samples per category in the FID against the val split")
    seed: int = 0


class TextChampionConfig(PersonDecision):
    tolerance: float = Field(default=0.03, description="a candidate whose bits per byte on the val texts is at "
                             "most this share above the champion's is still promoted")
    max_bits_per_byte: float | None = Field(default=3.0, description="and its bits per byte at most this (None: "
                                            "no absolute bar), also when no champion is comparable")
    max_degenerate_share: float | None = Field(
        default=0.5, description="the guard: at most this share of its samples on held-out briefs empty, repetitive "
        "or unfinished (None: not checked)")
    max_out_of_length_share: float | None = Field(
        default=0.5, description="the guard: at most this share of those samples outside the length of the "
        "company's own copy (metrics.texts.length_bounds; None: not checked)")
    reward_tolerance: float | None = Field(
        default=0.05, description="the guard, once a reward model exists: their mean predicted rating at most this "
        "below the champion's (None: not checked)")
    guard_briefs: int = Field(default=8, description="held-out briefs (val split) the guard samples")
    guard_samples_per_brief: int = 2
    max_new_tokens: int = Field(default=48, description="the guard's samples' token budget (as generated_texts')")
    seed: int = 0


def decide_by_hand(con, config: PersonDecision, modality: str, who: str, why: str | None) -> tuple[dict, str]:
    """A person's promote or rollback, recorded in `promotions`; returns (the champion, what was done)."""
    if config.promote:
        model = registry.get_model(con, config.promote)
        if model["modality"] != modality:
            raise ValueError(f"{config.promote} is a {model['modality']} model, not {modality}")
        previous = registry.promote(con, config.promote, actor=who, reason=why or "promoted by hand")
        action = f"promoted {config.promote} by hand" + (f" (was {previous})" if previous else "")
    else:
        restored, demoted = registry.rollback(con, modality, actor=who, reason=why or "rolled back by hand")
        action = f"rolled back from {demoted} to {restored}"
    return registry.champion(con, modality), action


def settle(context: dg.AssetExecutionContext, config: PersonDecision, warehouse: DuckDBResource, modality: str,
           candidate: ModelRef, measure, comparable, ceiling: tuple[float, str] | None, guard=None,
           experiments: ExperimentsRef | None = None) -> dg.Output[ModelRef]:
    """Apply a person's decision, a finished experiment's, or the rule to `candidate`; output the champion
    (and the running experiment's challenger, which generation serves beside it) with the decision."""
    run_actor = f"dagster:{context.run.run_id}"
    load = lambda path: load_model(path, inference_device())  # noqa: E731
    if config.allocation not in ("bandit", "fixed"):
        raise dg.Failure(f"allocation must be 'bandit' or 'fixed', got {config.allocation!r}")
    if not 0.0 <= config.challenger_share < 1.0:
        raise dg.Failure(f"challenger_share must be in [0, 1), got {config.challenger_share}")
    with warehouse.get_connection() as con:
        running = registry.running_experiments(con).get(modality)
        earlier = registry.experiment_of(con, candidate.version)
    verdict = experiments.decision(modality, running["experiment_id"]) if running and experiments else None
    if sum(map(bool, (config.promote, config.rollback, config.stop_experiment))) > 1:
        raise dg.Failure("set one of promote, rollback and stop_experiment")
    if config.promote or config.rollback or config.stop_experiment:
        who, why = config.by or run_actor, config.reason
        try:
            with warehouse.get_connection() as con:
                if config.stop_experiment:
                    if running is None:
                        raise ValueError(f"no {modality} experiment is running")
                    registry.end_experiment(con, running["experiment_id"], outcome="stop", actor=who,
                                            reason=why or "stopped by hand", figures=verdict["figures"] if verdict else {})
                    champion, action = registry.champion(con, modality), f"stopped experiment {running['experiment_id']}"
                else:
                    champion, action = decide_by_hand(con, config, modality, who, why)
        except (KeyError, ValueError) as e:  # an unknown or pruned version, nothing to roll back to
            raise dg.Failure(str(e.args[0])) from None
        value = measure(load(champion["checkpoint_path"]))
        with warehouse.get_connection() as con:
            registry.record_key_metric(con, champion["model_version"], promotion.KEY_METRICS[modality], value)
        outcome = promotion.Review(champion, candidate.version, False, f"{action}, by {who}",
                                   promotion.KEY_METRICS[modality], None, value)
        decision = "by hand"
    elif verdict and verdict["decision"] in ("promote", "retire"):
        reason = f"experiment {running['experiment_id']}: {verdict['reason']}"
        try:
            with warehouse.get_connection() as con:
                registry.end_experiment(con, running["experiment_id"], outcome=verdict["decision"], actor=run_actor,
                                        reason=reason, figures=verdict["figures"])
                champion = registry.champion(con, modality)
        except registry.ChampionChanged as e:
            raise dg.Failure(f"{e}; the experiment was not ended") from None
        outcome = promotion.Review(champion, candidate.version, verdict["decision"] == "promote", reason,
                                   promotion.KEY_METRICS[modality], None, champion["key_value"])
        decision = "promoted" if verdict["decision"] == "promote" else "retired by experiment"
    elif running and running["challenger"] == candidate.version:
        with warehouse.get_connection() as con:
            champion = registry.champion(con, modality)
        why = verdict["reason"] if verdict else "no figures yet"
        outcome = promotion.Review(champion, candidate.version, False,
                                   f"experiment {running['experiment_id']} is running: {why}",
                                   promotion.KEY_METRICS[modality], None, champion["key_value"])
        decision = "experiment running"
    elif earlier is not None and earlier["status"] in ("retired", "stopped", "replaced"):
        reason = (f"{candidate.version} lost experiment {earlier['experiment_id']} ({earlier['status']}: "
                  f"{earlier['reason']}); only a person brings it back (gen-assets promote {candidate.version})")
        with warehouse.get_connection() as con:
            champion = registry.champion(con, modality)
        outcome = promotion.Review(champion, candidate.version, False, reason, promotion.KEY_METRICS[modality], None,
                                   champion["key_value"] if champion else None)
        decision = "refused"
    else:
        experiment = (config.allocation, config.challenger_share) if config.challenger_share > 0 else None
        outcome = promotion.review(warehouse.get_connection, candidate.version, load=load, measure=measure,
                                   comparable=comparable, tolerance=config.tolerance, actor=run_actor, ceiling=ceiling,
                                   guard=guard, experiment=experiment)
        if outcome.champion is None:
            raise dg.Failure(
                f"no {modality} champion: the first candidate {candidate.version} was refused: {outcome.reason}. "
                f"Train a better model (more data, a longer profile) or promote it by hand: "
                f"gen-assets promote {candidate.version}")
        decision = ("promoted" if outcome.promoted else "challenger" if outcome.experiment_id else
                    "kept" if outcome.champion["model_version"] == candidate.version else "refused")
    champion = outcome.champion
    if decision in ("promoted", "by hand"):
        # a run without a profile (a schedule, the sensor, the UI) is decided under the project's own gate
        with warehouse.get_connection() as con:
            registry.record_gate_profile(con, champion["model_version"],
                                         context.run.tags.get("gen_assets/profile", PROJECT_GATE))
    verb = {"promoted": "promoted", "kept": "is the champion already", "refused": "refused, the champion stays",
            "by hand": "decided by a person", "challenger": "passed the gate and is now the challenger",
            "experiment running": "is the challenger of a running experiment",
            "retired by experiment": "retired by its experiment, the champion stays"}[decision]
    context.log.info(f"{modality} champion {champion['model_version']}; candidate {candidate.version} {verb}: "
                     f"{outcome.reason}")
    key = outcome.key_metric
    with warehouse.get_connection() as con:
        live = registry.running_experiments(con).get(modality)
        challenger = registry.get_model(con, live["challenger"]) if live else None
    details = {**champion["details"], "key_metric": key, "key_value": outcome.champion_value,
               "bar": ceiling[0] if ceiling else None, "bar_label": ceiling[1] if ceiling else ""}
    version_key = champion["checkpoint_sha"][:16]
    if challenger is not None:
        # generation serves the challenger's content beside the champion's while the experiment runs
        details["challenger"] = {"version": challenger["model_version"], "path": challenger["checkpoint_path"],
                                 "sha": challenger["checkpoint_sha"], "experiment_id": live["experiment_id"],
                                 "allocation": live["allocation"], "challenger_share": live["challenger_share"]}
        version_key += "+" + challenger["checkpoint_sha"][:16]
    ref = ModelRef(modality, champion["arch"], champion["model_version"], champion["checkpoint_path"],
                   champion["checkpoint_sha"], details)
    meta = {"champion": champion["model_version"], "candidate": candidate.version, "decision": decision,
            "promoted": outcome.promoted, "reason": outcome.reason, "key_metric": key,
            "path": dg.MetadataValue.path(champion["checkpoint_path"]), **uri_metadata(champion["checkpoint_path"])}
    if live:
        meta["experiment"] = live["experiment_id"]
        meta["challenger"] = live["challenger"]
    for who, value in (("candidate", outcome.candidate_value), ("champion", outcome.champion_value)):
        if value is not None:
            meta[f"{who}_{key}"] = dg.MetadataValue.float(round(float(value), 4))
    if ceiling:
        meta["bar"] = dg.MetadataValue.float(round(float(ceiling[0]), 4))
    return dg.Output(ref, data_version=dg.DataVersion(version_key), metadata=meta)


@dg.asset(**lane("image", "promotion"), kinds={"pytorch"},
          code_version=code_fingerprint(*IMAGE_CHAMPION_CODE))
def image_champion(
    context: dg.AssetExecutionContext,
    config: ImageChampionConfig,
    tuned_image_generator: ModelRef,
    image_evaluator: ModelRef,
    clean_images: CleanTable,
    experiments: ExperimentsRef,
    warehouse: DuckDBResource,
) -> dg.Output[ModelRef]:
    """The image generator in use: the candidate when its FID on the val split is not worse than the
    champion's beyond the tolerance (and within a multiple of the real-data floor), else the champion."""
    evaluator = load_model(image_evaluator.path, inference_device())
    with warehouse.get_connection() as con:
        val_x, _ = load_image_split(con, clean_images, "val")
        train_x, _ = load_image_split(con, clean_images, "train")
    reference = images_to_tensor(val_x)
    ceiling = None
    if config.max_ratio_to_floor is not None:
        n = config.per_class * len(clean_images.categories)
        floor = promotion.image_floor(evaluator, images_to_tensor(train_x), reference, n=n, seed=config.seed)
        ceiling = (config.max_ratio_to_floor * floor, f"{config.max_ratio_to_floor:g}x the real-data floor {floor:.4g}")

    def measure(model) -> float:
        return promotion.image_key_metric(model, evaluator, reference, per_class=config.per_class, seed=config.seed)

    def comparable(candidate, champion) -> str | None:
        return promotion.image_models_comparable(candidate.config, champion.config)

    return settle(context, config, warehouse, "image", tuned_image_generator, measure, comparable, ceiling,
                  experiments=experiments)


@dg.asset(**lane("text", "promotion"), kinds={"pytorch"}, code_version=code_fingerprint(*TEXT_CHAMPION_CODE))
def text_champion(
    context: dg.AssetExecutionContext,
    config: TextChampionConfig,
    tuned_text_generator: ModelRef,
    text_generator: ModelRef,
    text_reward_model: ModelRef,
    clean_texts: CleanTable,
    experiments: ExperimentsRef,
    warehouse: DuckDBResource,
) -> dg.Output[ModelRef]:
    """The text generator in use: the candidate when its bits per byte on the val texts is not worse than the
    champion's beyond the tolerance (and below max_bits_per_byte), and its samples on held-out briefs pass
    the guard (not degenerate, of the company's length, not rated lower by the reward model); else the
    champion."""
    with warehouse.get_connection() as con:
        val = text_cleaning.load_briefs(con, split="val", table=clean_texts.table)
        train = text_cleaning.load_briefs(con, split="train", table=clean_texts.table)
    references = [(b.category, b.prompt, b.text) for b in val if b.text]
    if not references:
        raise dg.Failure(f"text_champion: the val split of {clean_texts.table} holds no text to measure models on; "
                         "add reference texts (or raise clean_texts' val_fraction)")
    briefs = text_cleaning.distinct_briefs(val)
    if all(p is None for _, p in briefs):
        briefs = [(c, None) for c in clean_texts.categories]
    briefs = briefs[: config.guard_briefs]
    bounds = length_bounds([b.text for b in train if b.text] or [t for _, _, t in references])
    scorer = None
    if predicts(text_reward_model) and config.reward_tolerance is not None:
        reward, features_from = load_model(text_reward_model.path), load_writer(text_generator.path, inference_device())

        def scorer(b, t):
            feats = writer_features(features_from, b, t)
            # a model file of an earlier version of the features cannot score: the guard then skips the reward
            return reward.predict(feats) if feats.shape[1] == reward.config.in_features else None
    measured: dict[str, dict] = {}

    def measure(model) -> float:
        return promotion.text_key_metric(writer_of(model), [(c, p) for c, p, _ in references],
                                         [t for _, _, t in references])

    def samples(model) -> dict[str, float]:
        wanted = [b for b in briefs for _ in range(config.guard_samples_per_brief)]
        texts = writer_of(model).write(wanted, max_new_tokens=config.max_new_tokens, seed=config.seed)
        stats = guard_stats(texts, bounds)
        scores = scorer(wanted, texts) if scorer is not None else None
        if scores is not None:
            stats["reward"] = float(scores.mean())
        return stats

    def guard(candidate, champion) -> str | None:
        cand = measured.setdefault("candidate", samples(candidate))
        champ = measured.setdefault("champion", samples(champion)) if champion is not None and scorer else None
        return promotion.text_guard(
            cand, champ, max_degenerate_share=1.0 if config.max_degenerate_share is None else config.max_degenerate_share,
            min_in_length_share=0.0 if config.max_out_of_length_share is None else 1.0 - config.max_out_of_length_share,
            reward_tolerance=config.reward_tolerance if config.reward_tolerance is not None else float("inf"))

    ceiling = None if config.max_bits_per_byte is None else (config.max_bits_per_byte, "the configured max_bits_per_byte")
    out = settle(context, config, warehouse, "text", tuned_text_generator, measure, lambda a, b: None, ceiling,
                 guard=guard, experiments=experiments)
    for who, stats in measured.items():
        for key, value in stats.items():
            out.metadata[f"{who}_{key}"] = dg.MetadataValue.float(round(float(value), 4))
    out.metadata["length_bounds"] = f"{bounds[0]}-{bounds[1]} characters"
    return out
