"""Asset checks (read-only): data quality of the clean tables and the feedback, the quality bar of the
champions and of generated content."""

import json
from types import ModuleType

import math

import dagster as dg
from pydantic import Field
from dagster_duckdb import DuckDBResource

from gen_assets.cleaning.common import split_units
from gen_assets.defs.assets.clean import clean_images, clean_texts
from gen_assets.defs.assets.champions import image_champion, text_champion
from gen_assets.defs.handles import ModelRef
from gen_assets.defs.assets.evaluated import image_metrics, text_metrics
from gen_assets.defs.assets.human_feedback import feedback
from gen_assets.defs.assets.tuned import image_reward_model, text_reward_model
from gen_assets.cleaning import images as image_cleaning
from gen_assets.cleaning import texts as text_cleaning
from gen_assets.feedback.ingest import quarantine_share_by_file, unknown_sample_count


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

    @dg.asset_check(asset=asset, name=f"{name}_split_ratios", description="train/val/test shares within tolerance "
                    "(or within three standard errors of the hash split, for a small table)")
    def split_ratios(context, config: SplitRatiosConfig, warehouse: DuckDBResource) -> dg.AssetCheckResult:
        with warehouse.get_connection() as con:
            shares = queries.split_fractions(con, name)
            units = split_units(con, name)
        expected = {"train": 1 - config.val_fraction - config.test_fraction, "val": config.val_fraction,
                    "test": config.test_fraction}
        # the split is a hash of each unit: with few units the shares scatter by chance (binomial)
        allowed = {k: max(config.tolerance, 3 * math.sqrt(v * (1 - v) / max(units, 1))) for k, v in expected.items()}
        off = {k: abs(shares.get(k, 0.0) - v) - allowed[k] for k, v in expected.items()}
        return dg.AssetCheckResult(
            passed=max(off.values()) <= 0,
            metadata={**{f"{k}_share": round(v, 4) for k, v in shares.items()},
                      "worst_deviation": round(max(abs(shares.get(k, 0.0) - v) for k, v in expected.items()), 4),
                      "split_units": units, "allowed_deviation": round(max(allowed.values()), 4)},
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
    max_bits_per_byte: float = Field(default=3.0, description="largest allowed bits per byte of the test texts")
    max_degenerate_share: float = Field(default=0.5, description="largest share of empty, repetitive or unfinished samples")
    min_novelty: float = Field(default=0.8, description="smallest share of generated 8-grams not in the training split "
                               "(not checked when the samples are too short to have 8-grams)")


@dg.asset_check(asset=text_metrics, description="the model fits real text, and its samples are well formed and "
                "not copies of the training texts")
def text_quality(config: TextQualityConfig, text_metrics: dict) -> dg.AssetCheckResult:
    bpb = text_metrics.get("bits_per_byte", math.nan)
    novelty = text_metrics.get("novelty", math.nan)
    degenerate = text_metrics["degenerate_share"]
    problems = []
    if not bpb <= config.max_bits_per_byte:
        problems.append(f"bits per byte {bpb:.3f} (at most {config.max_bits_per_byte:g})")
    if degenerate > config.max_degenerate_share:
        problems.append(f"{degenerate:.0%} degenerate samples (at most {config.max_degenerate_share:.0%})")
    if not math.isnan(novelty) and novelty < config.min_novelty:
        problems.append(f"novelty {novelty:.1%} (at least {config.min_novelty:.0%})")
    shown = f"bits per byte {bpb:.3f}, degenerate {degenerate:.0%}, novelty " + (
        "n/a (samples shorter than 8 words)" if math.isnan(novelty) else f"{novelty:.1%}")
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.WARN,
        description=("; ".join(problems) if problems else shown),
        metadata={"bits_per_byte": round(bpb, 4), "degenerate_share": round(degenerate, 4),
                  "novelty": None if math.isnan(novelty) else round(novelty, 4),
                  "max_bits_per_byte": config.max_bits_per_byte, "max_degenerate_share": config.max_degenerate_share,
                  "min_novelty": config.min_novelty},
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


def quality_bar(champion: ModelRef) -> dg.AssetCheckResult:
    """Read-only: the model in use meets the absolute quality bar its champion asset applies to candidates
    (a person's promote or rollback can make a champion that does not)."""
    details = champion.details
    key, value, bar = details.get("key_metric"), details.get("key_value"), details.get("bar")
    meta = {"champion": champion.version, "key_metric": str(key)}
    if value is None:
        return dg.AssetCheckResult(passed=False, metadata=meta,
                                   description=f"{champion.version}'s {key} could not be measured (checkpoint pruned?)")
    meta[str(key)] = dg.MetadataValue.float(round(float(value), 4))
    if bar is None:
        return dg.AssetCheckResult(passed=True, description=f"{key} {value:.4g}; no absolute bar configured",
                                   metadata=meta)
    meta["bar"] = dg.MetadataValue.float(round(float(bar), 4))
    passed = value <= bar
    return dg.AssetCheckResult(passed=passed, metadata=meta,
                               description=f"{key} {value:.4g} {'within' if passed else 'above'} the bar of "
                               f"{bar:.4g} ({details.get('bar_label', '')})")


@dg.asset_check(asset=image_champion, name="quality_bar",
                description="the image champion's FID (measured when it was decided) is within the absolute bar")
def image_champion_quality_bar(image_champion: ModelRef) -> dg.AssetCheckResult:
    return quality_bar(image_champion)


@dg.asset_check(asset=text_champion, name="quality_bar",
                description="the text champion's val loss (measured when it was decided) is within the absolute bar")
def text_champion_quality_bar(text_champion: ModelRef) -> dg.AssetCheckResult:
    return quality_bar(text_champion)


def reward_model_predicts(reward: ModelRef) -> dg.AssetCheckResult:
    """Passes while there is no reward model (the ranking before any rating is used, as stated) or when the
    model predicts people's ratings; fails, with the verdict and the ratings it needs, when it does not."""
    details = reward.details
    if not details.get("fitted"):
        return dg.AssetCheckResult(passed=True, description=f"no reward model yet: {details.get('reason', '')}; the "
                                   "ranking before any rating is used", metadata={"fitted": False})
    meta = {"fitted": True, "reward_model": reward.version, "ratings": int(details.get("ratings", 0)),
            "ratings_needed": int(details.get("ratings_needed", 0)),
            "cv_spearman": dg.MetadataValue.float(float(details.get("cv_spearman", math.nan))),
            "cv_spearman_low": dg.MetadataValue.float(float(details.get("cv_spearman_low", math.nan))),
            "min_rank_correlation": dg.MetadataValue.float(float(details.get("min_rank_correlation", math.nan)))}
    verdict = details.get("verdict", "predicts" if details.get("predicts") else "does not predict")
    return dg.AssetCheckResult(passed=bool(details.get("predicts")), severity=dg.AssetCheckSeverity.ERROR,
                               description=f"{reward.version} {verdict}", metadata=meta)


PREDICTS_DESCRIPTION = ("the reward model orders held-out ratings as people do (the low end of its cross-validated "
                        "rank correlation's band at the bar); blocking: when it does not, nothing downstream of it "
                        "changes (curation, tuning, promotion) and the check says how many more ratings it needs")


@dg.asset_check(asset=image_reward_model, name="predicts", blocking=True, description=PREDICTS_DESCRIPTION)
def image_reward_model_predicts(image_reward_model: ModelRef) -> dg.AssetCheckResult:
    return reward_model_predicts(image_reward_model)


@dg.asset_check(asset=text_reward_model, name="predicts", blocking=True, description=PREDICTS_DESCRIPTION)
def text_reward_model_predicts(text_reward_model: ModelRef) -> dg.AssetCheckResult:
    return reward_model_predicts(text_reward_model)


checks = [
    *clean_table_checks(clean_images, image_cleaning),
    *clean_table_checks(clean_texts, text_cleaning),
    image_quality,
    text_quality,
    feedback_quarantine_share,
    feedback_known_samples,
    image_champion_quality_bar,
    text_champion_quality_bar,
    image_reward_model_predicts,
    text_reward_model_predicts,
]
