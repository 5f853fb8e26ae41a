"""The commented gen_assets.yaml that `gen-assets init` writes."""

from __future__ import annotations

import json
import os

TEMPLATE = """\
# gen_assets project file: what this project is. `gen-assets run`, `retrain`, `promote`, `rollback`,
# `make run`, the nightly schedule, the feedback sensor and the UI's launchpad all read it.
# `gen-assets config` shows every effective setting and where it came from. Unknown keys are errors.
# Relative paths are relative to this file's folder.

images:                        # raw_images and clean_images (any field of their Config classes)
  source: {images}
  # labels: null               # an IDX labels file; inferred from the images file name when null
  # image_size: null           # one side of the square images; null: the shorter side of the most common size
  # channels: null             # 1: grayscale, 3: RGB; null: 3 when any image has colour, else 1
  # resize: crop               # other sizes: crop (scale the short side, cut the middle), fit (stretch),
                               # pad (scale the long side, black borders) or none (quarantine them)

texts:                         # raw_texts and clean_texts
  source: {texts}
  # text_column: text          # for CSV / JSONL / Parquet sources
  # category_column: category
  # prompt_column: prompt      # optional: each record's brief (absent: no prompts)

gate:                          # when a tuned candidate replaces the champion
  image:                       # image_champion
    # tolerance: 0.3           # FID at most this share above the champion's
    # max_ratio_to_floor: 3.0  # and at most this multiple of the real-data floor (null: no bar)
  text:                        # text_champion
    # tolerance: 0.03          # bits per byte of the val texts at most this share above the champion's
    # max_bits_per_byte: 3.0   # and at most this (null: no bar)
    # max_degenerate_share: 0.5     # samples on held-out briefs: at most this share empty, repetitive or unfinished
    # max_out_of_length_share: 0.5  # and at most this share outside the references' length
    # reward_tolerance: 0.05   # and, with a reward model, a mean predicted rating at most this below the champion's
# A profile (`--profile smoke|demo|full`) lays its settings over this file, but never loosens the gate
# of a modality that has a champion: there the stricter of this file's value and the profile's applies.

feedback:                      # when waiting ratings call for a retrain (feedback_sensor)
  # min_new_ratings: {min_new_ratings}
  # max_age_seconds: {max_age_seconds}
  # min_new_events: {min_new_events}    # impressions, clicks, conversions of served content (events_sensor)

schedules:                     # on (true) or off (false) without a visit to the UI
  # nightly: false             # the whole graph at 02:00
  # prune: false               # old checkpoints and batches at 04:00
  # feedback_sensor: true      # retrain when ratings (and events) land

assets:                        # any asset's Config fields, by asset name; e.g.
  # image_generator: {{max_epochs: 120, arch: dcgan}}
  # text_generator: {{base_model: HuggingFaceTB/SmolLM2-135M-Instruct, lora_r: 16, max_iters: 24}}
  # text_generator: {{arch: gpt, n_layer: 6, max_iters: 5000}}   # a GPT trained from scratch instead
  # text_reward_model: {{min_rank_correlation: 0.1}}  # used only when it orders held-out ratings at least this well
  # curated_texts: {{k_per_category: 5, explore_share: 0.2}}     # beside the top k: samples to rate, to learn from
  # tuned_image_generator: {{image_method: anchored, max_fid_increase: 0.25}}
  # tuned_text_generator: {{method: weighted}}                   # or dpo, kto
"""


def render(images: str | None = None, texts: str | None = None) -> str:
    """The template with the given sources (paths made absolute) or the builtin ones."""
    from gen_assets.feedback.pending import DEFAULT_MAX_AGE_SECONDS, DEFAULT_MIN_NEW_EVENTS, DEFAULT_MIN_NEW_RATINGS

    def source(value: str | None, builtin: str) -> str:
        if value is None:
            return builtin
        if ":" not in value.split("/", 1)[0]:  # a path given on the command line: relative to where it was given
            value = os.path.abspath(os.path.expanduser(value))
        return json.dumps(value)  # quoted: any path is valid YAML

    return TEMPLATE.format(images=source(images, "builtin:digits"), texts=source(texts, "builtin:product_briefs"),
                           min_new_ratings=DEFAULT_MIN_NEW_RATINGS, max_age_seconds=DEFAULT_MAX_AGE_SECONDS,
                           min_new_events=DEFAULT_MIN_NEW_EVENTS)
