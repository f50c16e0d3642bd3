"""Credit inspection in TensorBoard: histograms of gate, credit and CTI, and token-credit pictures of trajectories.

Every ``every_n_steps`` RL steps this callback keeps the per-token factors of the step's rows (gate, pillar credit,
CTI) that the module's ``training_step`` returns, with each row's text from the data side's side record; at the end
of the step it writes

- ``credit/gate``, ``credit/credit``, ``credit/cti`` histograms over every valid token,
- ``credit/trajectories`` an image: for a few trajectories (drawn with this callback's own generator), each turn's
  observation, then its response tokens coloured by credit (red negative, green positive, white zero),
- ``credit/trajectories_text`` the same trajectories as a markdown table.
"""

from __future__ import annotations

import textwrap
from typing import Any

import lightning.pytorch as pl
import torch

from craft_pl.seeding import derive_seed, restore_generator, run_seed


class CreditInspector(pl.Callback):
    """Shows which tokens each pillar credited, and how."""

    def __init__(self, every_n_steps: int = 10, num_trajectories: int = 2, max_tokens_per_turn: int = 32) -> None:
        """
        Args:
            every_n_steps: Inspect every n-th RL step (0 = never).
            num_trajectories: Trajectories drawn into each picture.
            max_tokens_per_turn: Response tokens shown per turn in the picture.
        """
        if every_n_steps < 0 or num_trajectories < 1 or max_tokens_per_turn < 1:
            raise ValueError("credit_inspector: every_n_steps >= 0, num_trajectories >= 1, max_tokens_per_turn >= 1")
        self.every_n_steps = every_n_steps
        self.num_trajectories = num_trajectories
        self.max_tokens_per_turn = max_tokens_per_turn
        self.generator: torch.Generator | None = None
        self.records: dict[tuple[int, int], dict] = {}
        self.recording = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.records: dict[tuple[int, int], dict] = {}
        self.recording = bool(self.every_n_steps) and trainer.current_epoch % self.every_n_steps == 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        """Keep each row's per-token factors, keyed by (trajectory, turn)."""
        if not self.recording or not isinstance(outputs, dict) or "credit" not in outputs:
            return
        texts = getattr(trainer.datamodule, "step_texts", {})
        for row in range(batch.num_rows):
            key = (int(batch.trajectory_ids[row]), int(batch.turn_index[row]))
            length = len(batch.response_ids[row])
            text = texts.get(key)
            record = {"trajectory": key[0], "group": int(batch.group_ids[row]), "turn": key[1],
                      "response_ids": batch.response_ids[row], "observation": text.observation if text else "",
                      "advantage": float(batch.advantages[row]), "reward": float(batch.rewards[row])}
            for name, factor in outputs["credit"].items():
                record[name] = factor[row, :length].detach().cpu()
            self.records[key] = record

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        records = self.records
        self.recording = False
        experiment = getattr(trainer.logger, "experiment", None)
        if not records or experiment is None or not hasattr(experiment, "add_histogram"):
            return
        step = trainer.global_step
        for name in ("gate", "credit", "cti"):
            values = [r[name] for r in records.values() if name in r]
            if values:
                experiment.add_histogram(f"credit/{name}", torch.cat(values).float(), step)
        chosen = self._choose(records)
        tokenizer = pl_module.policy.tokenizer
        experiment.add_figure("credit/trajectories", self._figure(chosen, tokenizer), step)
        experiment.add_text("credit/trajectories_text", self._markdown(chosen, tokenizer), step)
        self.records = {}

    def _choose(self, records: dict) -> list[list[dict]]:
        if self.generator is None:
            self.generator = torch.Generator().manual_seed(derive_seed(run_seed(), "callbacks"))
        trajectories = sorted({key[0] for key in records})
        order = torch.randperm(len(trajectories), generator=self.generator)[: self.num_trajectories].tolist()
        return [[records[key] for key in sorted(k for k in records if k[0] == trajectories[i])] for i in order]

    def _tokens(self, record: dict, tokenizer) -> tuple[list[str], list[float]]:
        ids = record["response_ids"][: self.max_tokens_per_turn]
        credit = record.get("credit", record.get("gate"))
        values = credit[: len(ids)].tolist() if credit is not None else [0.0] * len(ids)
        tokens = ["".join(c if c.isprintable() and ord(c) < 0x2500 else "?" for c in tokenizer.decode([i])) for i in ids]
        return tokens, values

    def _figure(self, chosen: list[list[dict]], tokenizer):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import colormaps

        lines = sum(2 * len(turns) + 1 for turns in chosen)
        figure, axis = plt.subplots(figsize=(14, 0.32 * lines + 0.6))
        axis.set_xlim(0, self.max_tokens_per_turn)
        axis.set_ylim(lines, 0)
        axis.axis("off")
        colors, y = colormaps["RdYlGn"], 0
        for turns in chosen:
            first = turns[0]
            axis.text(0, y + 0.6, f"trajectory {first['trajectory']} (group {first['group']}), advantage "
                      f"{first['advantage']:+.2f}", fontsize=8, weight="bold")
            y += 1
            for record in turns:
                observation = " ".join(record["observation"].split())
                axis.text(0, y + 0.6, textwrap.shorten(f"turn {record['turn']}: {observation}", 180), fontsize=7,
                          color="dimgray")
                y += 1
                for x, (token, value) in enumerate(zip(*self._tokens(record, tokenizer))):
                    axis.add_patch(plt.Rectangle((x, y + 0.05), 0.95, 0.9, color=colors(0.5 + 0.5 * max(-1, min(1, value)))))
                    axis.text(x + 0.05, y + 0.65, token.strip()[:6] or "_", fontsize=6)
                y += 1
        figure.tight_layout()
        return figure

    def _markdown(self, chosen: list[list[dict]], tokenizer) -> str:
        rows = ["| trajectory | turn | advantage | tokens (credit) |", "|---|---|---|---|"]
        for turns in chosen:
            for record in turns:
                tokens, values = self._tokens(record, tokenizer)
                shown = " ".join(f"`{t.strip() or '_'}`({v:+.2f})" for t, v in zip(tokens, values))
                rows.append(f"| {record['trajectory']} | {record['turn']} | {record['advantage']:+.2f} | {shown} |")
        return "\n".join(rows)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state() if self.generator is not None else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.generator = restore_generator(state_dict.get("generator")) or self.generator
