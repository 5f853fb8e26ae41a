"""Asset checks: data quality of the clean tables and the quality bar of generated content."""

import json
from types import ModuleType

import dagster as dg
from pydantic import Field
from dagster_duckdb import DuckDBResource

from gen_assets.defs.assets.clean import clean_images, clean_texts
from gen_assets.defs.handles import CleanTable, ModelRef, inference_device
from gen_assets.defs.assets.evaluated import image_metrics, text_metrics
from gen_assets.defs.assets.human_feedback import feedback
from gen_assets.defs.assets.trained import load_image_split
from gen_assets.defs.assets.tuned import tuned_image_generator, tuned_text_generator
from gen_assets.cleaning import images as image_cleaning
from gen_assets.cleaning import texts as text_cleaning
from gen_assets.feedback.ingest import quarantine_share_by_file, unknown_sample_count
from gen_assets.models.checkpoint import load_model
from gen_assets.training.image_data import images_to_tensor
from gen_assets.training.text_data import encode_documents
from gen_assets.models.tokenizers import tokenizer_from_dict
from gen_assets.rules import promotion
from gen_assets.store import registry


class SplitRatiosConfig(dg.Config):
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    tolerance: float = Field(default=0.03, description="allowed absolute deviation of each split's share")


class QuarantineRateConfig(dg.Config):
    max_rate: float = Field(default=0.05, description="largest share of input rows that may be quarantined")


def built_from(con, table: str) -> str:
    """The snapshot version a clean table was built from (written with it, in the same transaction)."""
    row = con.execute(
        "SELECT comment FROM duckdb_tables() WHERE table_name = ? AND schema_name = current_schema()", [table]
    ).fetchone()
    return json.loads(row[0] or "{}").get("snapshot_version", "") if row else ""


def clean_table_checks(asset: dg.AssetsDefinition, queries: ModuleType) -> list[dg.AssetChecksDefinition]:
    """The four checks every clean table gets; `queries` is its pure cleaning module."""
    name = asset.key.to_user_string()

    @dg.asset_check(asset=asset, name=f"{name}_no_duplicates", description="no duplicate rows left")
    def no_duplicates(context, warehouse: DuckDBResource) -> dg.AssetCheckResult:
        with warehouse.get_connection() as con:
            n = queries.duplicate_count(con, name)
        return dg.AssetCheckResult(passed=n == 0, metadata={"duplicates": n})

    @dg.asset_check(asset=asset, name=f"{name}_no_nulls", description="no nulls in required columns")
    def no_nulls(context, warehouse: DuckDBResource) -> dg.AssetCheckResult:
        with warehouse.get_connection() as con:
            n = queries.null_count(con, name)
        return dg.AssetCheckResult(passed=n == 0, metadata={"rows_with_nulls": n})

    @dg.asset_check(asset=asset, name=f"{name}_split_ratios", description="train/val/test shares within tolerance")
    def split_ratios(context, config: SplitRatiosConfig, warehouse: DuckDBResource) -> dg.AssetCheckResult:
        with warehouse.get_connection() as con:
            shares = queries.split_fractions(con, name)
        expected = {"train": 1 - config.val_fraction - config.test_fraction, "val": config.val_fraction,
                    "test": config.test_fraction}
        worst = max(abs(shares.get(k, 0.0) - v) for k, v in expected.items())
        return dg.AssetCheckResult(
            passed=worst <= config.tolerance,
            metadata={**{f"{k}_share": round(v, 4) for k, v in shares.items()}, "worst_deviation": round(worst, 4)},
        )

    @dg.asset_check(asset=asset, name=f"{name}_quarantine_rate", description="share of quarantined input rows below a bound")
    def quarantine_rate(context, config: QuarantineRateConfig, warehouse: DuckDBResource) -> dg.AssetCheckResult:
        with warehouse.get_connection() as con:
            snapshot_version = built_from(con, name)
            rate = queries.quarantine_rate(con, name, snapshot_version)
        return dg.AssetCheckResult(
            passed=rate <= config.max_rate,
            metadata={"quarantine_rate": round(rate, 4), "max_rate": config.max_rate, "snapshot_version": snapshot_version},
        )

    return [no_duplicates, no_nulls, split_ratios, quarantine_rate]


class ImageQualityConfig(dg.Config):
    max_fid_ratio: float = Field(default=3.0, description="largest allowed fid / fid_real_floor")
    min_class_accuracy: float = 0.9


@dg.asset_check(
    asset=image_metrics,
    description="generated images are close to real ones (FID within a multiple of the real-data floor) and "
    "recognisably of their category",
)
def image_quality(config: ImageQualityConfig, image_metrics: dict) -> dg.AssetCheckResult:
    ratio = image_metrics["fid"] / max(image_metrics["fid_real_floor"], 1e-9)
    passed = ratio <= config.max_fid_ratio and image_metrics["class_accuracy"] >= config.min_class_accuracy
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"FID {ratio:.2f}x the real-data floor (at most {config.max_fid_ratio:g}x), class accuracy "
        f"{image_metrics['class_accuracy']:.1%} (at least {config.min_class_accuracy:.0%})",
        metadata={
            "fid_ratio_to_floor": round(ratio, 3),
            "class_accuracy": round(image_metrics["class_accuracy"], 4),
            "max_fid_ratio": config.max_fid_ratio,
            "min_class_accuracy": config.min_class_accuracy,
        },
    )


class TextQualityConfig(dg.Config):
    max_val_loss: float = Field(default=2.0, description="largest allowed validation loss (nats per token)")
    min_novelty: float = Field(default=0.8, description="smallest share of generated 8-grams not in the training split")


@dg.asset_check(asset=text_metrics, description="the model fits real text and its samples are not copies of it")
def text_quality(config: TextQualityConfig, text_metrics: dict) -> dg.AssetCheckResult:
    passed = text_metrics["val_loss"] <= config.max_val_loss and text_metrics["novelty"] >= config.min_novelty
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"val loss {text_metrics['val_loss']:.3f} (at most {config.max_val_loss:g}), novelty "
        f"{text_metrics['novelty']:.1%} (at least {config.min_novelty:.0%})",
        metadata={
            "val_loss": round(text_metrics["val_loss"], 4),
            "novelty": round(text_metrics["novelty"], 4),
            "max_val_loss": config.max_val_loss,
            "min_novelty": config.min_novelty,
        },
    )


class FeedbackQuarantineConfig(dg.Config):
    max_share: float = Field(default=0.2, description="largest share of a file's rows that may be quarantined")


@dg.asset_check(asset=feedback, description="no rating file has more than a bounded share of invalid rows")
def feedback_quarantine_share(config: FeedbackQuarantineConfig, warehouse: DuckDBResource) -> dg.AssetCheckResult:
    with warehouse.get_connection() as con:
        shares = quarantine_share_by_file(con)
    bad = {name: round(share, 4) for name, share in shares.items() if share > config.max_share}
    return dg.AssetCheckResult(
        passed=not bad,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"files": len(shares), "files_over_bound": dg.MetadataValue.json(bad), "max_share": config.max_share},
    )


@dg.asset_check(asset=feedback, description="every stored rating references a sample of the generated view")
def feedback_known_samples(warehouse: DuckDBResource) -> dg.AssetCheckResult:
    with warehouse.get_connection() as con:
        unknown = unknown_sample_count(con)
    return dg.AssetCheckResult(passed=unknown == 0, metadata={"unknown_samples": unknown})


class ImagePromotionConfig(dg.Config):
    tolerance: float = Field(
        default=1.0,
        description="a candidate whose FID is at most this share above the champion's is still promoted. Tuning "
        "towards people's ratings moves samples away from the data's average, which FID counts as worse (the demo's "
        "feedback rounds: FID on val +21% and +71% for ratings +66% and +76%), so the default lets FID double and no more",
    )
    max_ratio_to_floor: float | None = Field(
        default=3.0, description="and FID at most this multiple of the real-data floor (None: no absolute bar)"
    )
    per_class: int = Field(default=100, description="samples per category in the FID against the val split")
    seed: int = 0


class TextPromotionConfig(dg.Config):
    tolerance: float = Field(default=0.02, description="a candidate whose val loss is at most this share above "
                             "the champion's is still promoted")
    max_val_loss: float | None = Field(default=2.5, description="and its val loss at most this (nats per token; "
                                       "None: no absolute bar), also when no champion is comparable")
    val_batches: int = Field(default=50, description="random val windows (of 32) in the loss")
    seed: int = 0


def promotion_check(context, warehouse: DuckDBResource, candidate: ModelRef, tolerance: float, measure,
                    comparable, ceiling: tuple[float, str] | None = None) -> dg.AssetCheckResult:
    """Promote `candidate` to champion of its modality when its key metric is not worse than the
    champion's beyond `tolerance`; otherwise it stays a candidate and the check fails (it blocks the
    downstream assets of this run, which keep using the champion). Every decision is in `promotions`.

    measure(model) -> key metric of a loaded model; comparable(candidate, champion) -> None or why not."""
    modality, key = candidate.modality, promotion.KEY_METRICS[candidate.modality]
    actor = f"dagster:{context.run.run_id}"
    with warehouse.get_connection() as con:
        current = registry.champion(con, modality)
        demoted = registry.demoted_by_person(con, candidate.version)
    meta = {"candidate": candidate.version, "champion": current["model_version"] if current else "none"}
    if current and current["model_version"] == candidate.version:
        return dg.AssetCheckResult(passed=True, description=f"{candidate.version} is already the champion", metadata=meta)
    if demoted:
        reason = (f"{candidate.version} was rolled back by {demoted['actor']} at {demoted['at']}; "
                  f"only a person brings it back (gen-assets promote {candidate.version})")
        with warehouse.get_connection() as con:
            registry.refuse(con, candidate.version, actor=actor, reason=reason)
        return dg.AssetCheckResult(passed=False, description=reason, metadata=meta)

    cand_model = load_model(candidate.path, inference_device())
    cand_value = measure(cand_model)
    champ_value, note = None, None
    if current is not None:
        if current["pruned_at"] is not None:
            note = f"champion {current['model_version']}'s checkpoint was pruned"
        else:
            champ_model = load_model(current["checkpoint_path"], inference_device())
            note = comparable(cand_model, champ_model)
            if note is None:
                champ_value = measure(champ_model)
    decision = promotion.decide(key, cand_value, champ_value, tolerance,
                                champion_version=current["model_version"] if current else None,
                                ceiling=ceiling[0] if ceiling else None, ceiling_label=ceiling[1] if ceiling else "")
    reason = decision.reason + (f" ({note})" if note else "")
    with warehouse.get_connection() as con:
        registry.record_key_metric(con, candidate.version, key, cand_value)
        if champ_value is not None:
            registry.record_key_metric(con, current["model_version"], key, champ_value)
        passed = decision.passed
        if passed:
            try:
                registry.promote(con, candidate.version, actor=actor, reason=reason,
                                 expected_previous=current["model_version"] if current else None)
            except registry.ChampionChanged as e:
                passed, reason = False, f"{e}; run the check again to compare with the new champion"
        if not passed:
            registry.refuse(con, candidate.version, actor=actor, reason=reason)
    context.log.info(f"{modality}: {candidate.version} {'promoted' if passed else 'stays a candidate'}: {reason}")
    return dg.AssetCheckResult(
        passed=passed,
        description=reason,
        metadata={**meta, "key_metric": key, f"candidate_{key}": dg.MetadataValue.float(float(cand_value)),
                  **({f"champion_{key}": dg.MetadataValue.float(float(champ_value))} if champ_value is not None else {}),
                  "tolerance": tolerance, "promoted": passed, "reason": reason},
    )


@dg.asset_check(
    asset=tuned_image_generator,
    name="promotion",
    blocking=True,
    additional_ins={"image_evaluator": dg.AssetIn(), "clean_images": dg.AssetIn()},
    description="promotes the model to image champion unless its FID on the val split is worse than the "
    "champion's beyond the tolerance; a failure blocks this run's generation, which keeps the champion",
)
def image_promotion(context, config: ImagePromotionConfig, tuned_image_generator: ModelRef, image_evaluator: ModelRef,
                    clean_images: CleanTable, warehouse: DuckDBResource) -> dg.AssetCheckResult:
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

    return promotion_check(context, warehouse, tuned_image_generator, config.tolerance, measure, comparable,
                           ceiling)


@dg.asset_check(
    asset=tuned_text_generator,
    name="promotion",
    blocking=True,
    additional_ins={"clean_texts": dg.AssetIn()},
    description="promotes the model to text champion unless its validation loss is worse than the champion's "
    "beyond the tolerance; a failure blocks this run's generation, which keeps the champion",
)
def text_promotion(context, config: TextPromotionConfig, tuned_text_generator: ModelRef, clean_texts: CleanTable,
                   warehouse: DuckDBResource) -> dg.AssetCheckResult:
    with warehouse.get_connection() as con:
        val_docs = text_cleaning.load_texts(con, split="val", table=clean_texts.table)
    encoded: dict[str, object] = {}

    def measure(model) -> float:
        tokenizer = tokenizer_from_dict(model.extra["tokenizer"])
        ids = encoded.setdefault(str(sorted(model.extra["tokenizer"].items())),
                                 encode_documents(tokenizer, [t for _, t in val_docs], [c for c, _ in val_docs]))
        return promotion.text_key_metric(model, ids, batches=config.val_batches, seed=config.seed)

    def comparable(candidate, champion) -> str | None:
        return promotion.text_models_comparable(candidate.extra["tokenizer"], champion.extra["tokenizer"])

    ceiling = None if config.max_val_loss is None else (config.max_val_loss, "the configured max_val_loss")
    return promotion_check(context, warehouse, tuned_text_generator, config.tolerance, measure, comparable, ceiling)


checks = [
    *clean_table_checks(clean_images, image_cleaning),
    *clean_table_checks(clean_texts, text_cleaning),
    image_quality,
    text_quality,
    feedback_quarantine_share,
    feedback_known_samples,
    image_promotion,
    text_promotion,
]
