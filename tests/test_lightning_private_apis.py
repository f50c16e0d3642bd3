"""Pins the two private Lightning APIs ``InterruptCheckpoint`` relies on, so a Lightning upgrade that changes them
fails here with a clear reason instead of silently breaking exact resume.

- ``ModelCheckpoint._save_on_train_epoch_end``: ``None`` when the user left the timing to Lightning; set to ``True``
  so that checkpoints land at the end of the RL step (Lightning's public ``save_on_train_epoch_end`` argument is
  read only at construction, and the default checkpoint callback is built by the Trainer).
- ``Trainer._checkpoint_connector.dump_checkpoint(weights_only=False)``: the in-memory checkpoint dictionary (the
  public ``Trainer.save_checkpoint`` only writes files; the snapshot must not touch the disk every RL step).
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
