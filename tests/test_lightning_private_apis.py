"""Pins the private Lightning APIs craft_pl relies on, so a Lightning upgrade that changes them
fails here with a clear reason instead of silently breaking exact resume.

- ``ModelCheckpoint._save_on_train_epoch_end``: ``None`` when the user left the timing to Lightning; set to ``True``
  so that checkpoints land at the end of the RL step (Lightning's public ``save_on_train_epoch_end`` argument is
  read only at construction, and the default checkpoint callback is built by the Trainer).
- ``Trainer._checkpoint_connector.dump_checkpoint(weights_only=False)``: the in-memory checkpoint dictionary (the
  public ``Trainer.save_checkpoint`` only writes files; the snapshot must not touch the disk every RL step).
- ``TensorBoardLogger._version`` / ``CSVLogger._version`` and ``Strategy._checkpoint_io``: one run per folder and
  atomic checkpoint writes (``craft_pl.storage.run_folder``, ``craft_pl.storage.atomic``).
"""

import inspect

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint


def test_model_checkpoint_keeps_a_private_save_on_train_epoch_end_that_is_none_by_default():
    assert ModelCheckpoint()._save_on_train_epoch_end is None
    assert ModelCheckpoint(save_on_train_epoch_end=True)._save_on_train_epoch_end is True


def test_trainer_can_dump_a_checkpoint_dictionary_in_memory():
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    dump = trainer._checkpoint_connector.dump_checkpoint
    assert "weights_only" in inspect.signature(dump).parameters


def test_loggers_keep_a_private_version_that_is_none_until_resolved(tmp_path):
    """``craft_pl.storage.run_folder.claim_version`` sets ``_version`` after creating ``version_N`` itself (one run per
    folder); ``root_dir`` is where the versions live."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    for logger_class in (TensorBoardLogger, CSVLogger):
        logger = logger_class(str(tmp_path))
        assert logger._version is None and logger.root_dir.startswith(str(tmp_path))
        logger._version = 7
        assert logger.version == 7 and logger.log_dir.endswith("version_7")


def test_strategies_keep_their_checkpoint_writer_in_a_private_attribute():
    """``craft_pl.storage.atomic.use_atomic_checkpoints`` swaps Lightning's default writer (``_checkpoint_io`` None or a
    plain ``TorchCheckpointIO``) for the atomic one through the public setter."""
    from craft_pl.storage.atomic import AtomicCheckpointIO, use_atomic_checkpoints

    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    use_atomic_checkpoints(trainer)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
