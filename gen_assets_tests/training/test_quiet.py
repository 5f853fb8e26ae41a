"""fit() silences Lightning's adverts and the warnings about its own deliberate choices, and only those."""

import logging
import re
import warnings

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from gen_assets.training.fit import QUIET_WARNINGS, quiet_lightning
from gen_assets_tests.training.test_loggers import tiny_fit


def test_a_fit_and_its_resume_show_no_tips_and_no_irrelevant_warnings(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_fit(tmp_path / "run", max_epochs=1)
        tiny_fit(tmp_path / "run", max_epochs=2)  # the resume: the run folder is not empty
    shown = [str(w.message) for w in caught]
    assert not [m for m in shown if any(re.match(p, m) for p in QUIET_WARNINGS)], shown
    assert "💡" not in caplog.text and "litlogger" not in caplog.text
    assert "GPU available: False, used: False" in caplog.text  # the rest of Lightning's report stays
    assert "Restored all states from the checkpoint" in caplog.text


def test_the_filters_match_by_message_and_end_with_the_block(caplog):
    caplog.set_level(logging.INFO)
    workers = ("The 'train_dataloader' does not have many workers which may be a bottleneck. Consider increasing "
               "the value of the `num_workers` argument` to `num_workers=15` in the `DataLoader` to improve performance.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_lightning():
            rank_zero_warn(workers, category=PossibleUserWarning)
            rank_zero_warn("GPU available but not used. You can set it by doing `Trainer(accelerator='gpu')`.",
                           category=PossibleUserWarning)
            rank_zero_warn("The 'train_dataloader' returned a batch of unknown size", category=PossibleUserWarning)
            rank_zero_warn("You defined a `validation_step` but have no `val_dataloader`. Skipping val loop.")
            rank_zero_info("💡 Tip: For seamless cloud uploads and versioning, try installing [litmodels]")
            rank_zero_info("an ordinary message")
        rank_zero_warn(workers, category=PossibleUserWarning)
        rank_zero_info("💡 Tip: shown again outside fit()")
    assert [str(w.message) for w in caught] == ["The 'train_dataloader' returned a batch of unknown size", workers]
    assert "litmodels" not in caplog.text and "an ordinary message" in caplog.text
    assert "shown again outside fit()" in caplog.text
