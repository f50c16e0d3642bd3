"""``RolloutDataModule``: each epoch (= one RL step) samples tasks, runs G sibling rollouts per task with the current
policy, scores the rows (old and reference log-probs), lets the objective prepare group-level quantities and serves
shuffled mini-batches. The number of optimizer steps per RL step is ``ppo_epochs x num_mini_batches``, fixed by
configuration whatever the episodes' lengths.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Callable, Iterator

import lightning.pytorch as pl
import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm

from craft_pl.distributed import globalise_token_counts, rank_share
from craft_pl.envs.base import AgentEnv, Task
from craft_pl.rollout.batch import RolloutBatch
from craft_pl.rollout.collector import (
    Collector,
    Trajectory,
    collect_demonstrations,
    encode_prompt_parts,
    teacher_budget,
    with_privileged_context,
)
from craft_pl.rollout.engine import GenerationEngine, HFEngine, SamplingParams
from craft_pl.rollout.stats import episode_stats
from craft_pl.seeding import NamedGenerators, derive_seed, run_seed

log = logging.getLogger(__name__)
# RLStep's length is exact (ppo_epochs x num_mini_batches) and it is never split across loader workers.
warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")


def _keep(batch):
    return batch


def rows_from_trajectories(trajectories: list[Trajectory], penalty: float) -> RolloutBatch:
    """One row per (trajectory, turn); reward = episode reward - penalty x [this turn's action was invalid]."""
    rows = [(t, k, turn) for t in trajectories for k, turn in enumerate(t.turns)]
    width = max(1, max((len(turn.response_ids) for _, _, turn in rows), default=1))
    response_mask = torch.zeros(len(rows), width, dtype=torch.bool)
    sampling_logp = torch.zeros(len(rows), width)
    for r, (_, _, turn) in enumerate(rows):
        response_mask[r, : len(turn.response_ids)] = True
        sampling_logp[r, : len(turn.response_ids)] = torch.tensor(turn.sampling_logp, dtype=torch.float32)
    return RolloutBatch(
        prompt_ids=[turn.prompt_ids for _, _, turn in rows],
        prompt_parts=[turn.prompt_parts for _, _, turn in rows],
        history_dropped=[turn.history_dropped for _, _, turn in rows],
        response_ids=[turn.response_ids for _, _, turn in rows],
        response_mask=response_mask,
        group_ids=torch.tensor([t.group_id for t, _, _ in rows], dtype=torch.long),
        trajectory_ids=torch.tensor([t.trajectory_id for t, _, _ in rows], dtype=torch.long),
        turn_index=torch.tensor([k for _, k, _ in rows], dtype=torch.long),
        rewards=torch.tensor([t.episode_reward - penalty * (not turn.valid_action) for t, _, turn in rows],
                             dtype=torch.float32),
        valid_action=torch.tensor([turn.valid_action for _, _, turn in rows], dtype=torch.bool),
        task_types=[t.task.task_type for t, _, _ in rows],
        privileged_context=[t.privileged_context for t, _, _ in rows],
        sampling_logp=sampling_logp,
    )


class EvaluationRollouts(IterableDataset):
    """Iterating runs the evaluation episodes with the current policy and yields their trajectories in chunks."""

    def __init__(self, datamodule: "RolloutDataModule", tasks: list[Task], samples_per_task: int,
                 privileged: bool = False) -> None:
        self.datamodule = datamodule
        self.tasks = tasks
        self.samples_per_task = samples_per_task
        self.privileged = privileged

    def __iter__(self) -> Iterator[list[Trajectory]]:
        dm = self.datamodule
        generator = torch.Generator().manual_seed(derive_seed(dm.seed, "evaluation"))
        sampling = SamplingParams(dm.evaluation_temperature, dm.top_p, dm.max_new_tokens)
        chunk = max(1, dm.val_batch_envs // self.samples_per_task)
        for start in range(0, len(self.tasks), chunk):
            yield dm.collector.run(self.tasks[start : start + chunk], self.samples_per_task, dm.policy, dm.engine,
                                   sampling, generator, privileged=self.privileged)


class RLStep(IterableDataset):
    """One RL step's mini-batches, rolled out when iterated; its length is known before (``ppo_epochs x
    num_mini_batches``), so Lightning counts the step's batches without running it."""

    def __init__(self, datamodule: "RolloutDataModule") -> None:
        self.datamodule = datamodule

    def __len__(self) -> int:
        return self.datamodule.mini_batches_per_step

    def __iter__(self) -> Iterator[RolloutBatch]:
        yield from self.datamodule.rl_step()


class RolloutDataModule(pl.LightningDataModule):
    """Generates sibling trajectories on demand, one RL step per epoch."""

    def __init__(
        self,
        env: Callable[[], AgentEnv],
        tasks_per_step: PositiveInt = 8,
        group_size: PositiveInt = 4,
        history_length: NonNegativeInt = 2,
        max_new_tokens: PositiveInt = 24,
        temperature: float = 1.0,
        top_p: float = 1.0,
        ppo_epochs: PositiveInt = 1,
        num_mini_batches: PositiveInt = 4,
        train_panel_size: PositiveInt = 4096,
        val_tasks: PositiveInt = 128,
        val_samples_per_task: PositiveInt = 1,
        val_temperature: float | None = None,
        val_batch_envs: PositiveInt = 128,
        val_privileged: bool = True,
        panel_seed: int = 0,
        scoring_batch_size: PositiveInt = 64,
        engine: GenerationEngine | None = None,
    ) -> None:
        """
        Args:
            env: The environment class and its arguments (``class_path`` / ``init_args``); one instance per episode.
            tasks_per_step: B, tasks sampled per RL step.
            group_size: G, sibling rollouts per task (GRPO group).
            history_length: Past (observation, action) pairs shown in each prompt.
            max_new_tokens: Longest response per turn; longer generations are invalid actions.
            temperature: Rollout sampling temperature.
            top_p: Rollout nucleus sampling mass.
            ppo_epochs: Passes over the step's rows.
            num_mini_batches: Mini-batches (= optimizer steps) per PPO epoch.
            train_panel_size: Size of the fixed train task panel that RL samples from.
            val_tasks: Size of the fixed validation panel.
            val_samples_per_task: Episodes per validation task (averaging cuts sampling noise).
            val_temperature: Evaluation sampling temperature (0 = greedy); null = the environment's protocol
                (``AgentEnv.eval_temperature``: 0.4 for ALFWorld and WebShop, greedy for Search-QA).
            val_batch_envs: Environments evaluated together in one batched rollout.
            val_privileged: Also evaluate the policy *with* privileged context (``val/success_rate_privileged``),
                when the environment offers it: how much better the teacher's view is.
            panel_seed: Seed of the task panels (kept apart from the run seed so seeds share panels).
            scoring_batch_size: Rows per no-grad forward when scoring old and reference log-probs.
            engine: Generation engine (default ``HFEngine``).
        """
        super().__init__()
        SamplingParams(temperature, top_p, max_new_tokens)
        if val_temperature is not None:
            SamplingParams(val_temperature, top_p, max_new_tokens)
        self.env_factory = env
        self.tasks_per_step = tasks_per_step
        self.group_size = group_size
        self.history_length = history_length
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.ppo_epochs = ppo_epochs
        self.num_mini_batches = num_mini_batches
        self.train_panel_size = train_panel_size
        self.val_tasks = val_tasks
        self.val_samples_per_task = val_samples_per_task
        self.val_temperature = val_temperature
        self.val_batch_envs = val_batch_envs
        self.val_privileged = val_privileged
        self.panel_seed = panel_seed
        self.scoring_batch_size = scoring_batch_size
        self.engine = engine or HFEngine()
        self.collector = Collector(env, history_length)
        self.generators: NamedGenerators | None = None
        self.seed = 0
        self.last_rollout_stats: dict[str, float] = {}
        self._panels: dict[str, list[Task]] = {}

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        if self.generators is None:
            self.seed = run_seed()
            self.generators = NamedGenerators(self.seed)

    @property
    def reference_env(self) -> AgentEnv:
        return self.collector.environments(1)[0]

    def panel(self, split: str) -> list[Task]:
        if split not in self._panels:
            size = {"train": self.train_panel_size, "val": self.val_tasks, "test": self.val_tasks}[split]
            self._panels[split] = self.reference_env.task_panel(split, size, self.panel_seed)
        return self._panels[split]

    @property
    def evaluation_temperature(self) -> float:
        """``val_temperature`` when set, else the environment's evaluation protocol."""
        if self.val_temperature is not None:
            return self.val_temperature
        return float(self.reference_env.eval_temperature)

    @property
    def has_privileged_context(self) -> bool:
        """Whether the environment offers privileged context (skills or hints) for its tasks."""
        try:
            self.reference_env.privileged_context(self.panel("train")[0])
        except NotImplementedError:
            return False
        return True

    def demonstrations(self, count: int, privileged_fraction: float = 0.0) -> list[tuple[str, str]]:
        """Expert (prompt, response) pairs on ``count`` train tasks seeded apart from RL and validation; a
        ``privileged_fraction`` of the episodes (chosen by a seeded draw) carry the privileged context."""
        env = self.reference_env
        tasks = env.task_panel("train", count, derive_seed(self.panel_seed, "demonstrations"))
        flags = None
        if privileged_fraction > 0 and self.has_privileged_context:
            draw = torch.rand(count, generator=torch.Generator().manual_seed(derive_seed(self.panel_seed, "privileged")))
            flags = (draw < privileged_fraction).tolist()
        demos, expert_success = collect_demonstrations(env, tasks, self.history_length, flags)
        log.info("expert demonstrations: %d rows, expert success %.3f", len(demos), expert_success)
        return demos

    @property
    def policy(self):
        return self.trainer.lightning_module.policy

    # ------------------------------------------------------------------ training: one RL step
    def train_dataloader(self) -> DataLoader:
        """The mini-batches of one RL step. The rollout runs when Lightning first iterates the loader, not when it
        builds it: Lightning also builds loaders it never iterates (on resume, for the step the checkpoint ended),
        and a rollout there would advance the sampling streams and break exact resume."""
        return DataLoader(RLStep(self), batch_size=None, shuffle=False, collate_fn=_keep)

    @property
    def mini_batches_per_step(self) -> int:
        return self.ppo_epochs * self.num_mini_batches

    def rl_step(self) -> list[RolloutBatch]:
        """Roll out B x G episodes with the current policy, score them, prepare the step, cut mini-batches."""
        module = self.trainer.lightning_module
        started = time.perf_counter()
        tasks = self._sample_tasks()
        sampling = SamplingParams(self.temperature, self.top_p, self.max_new_tokens)
        with tqdm(total=self.reference_env.max_turns, desc=f"rollout {self.trainer.current_epoch}", unit="turn",
                  leave=False, disable=self.trainer.progress_bar_callback is None) as bar:

            def advance(running: int) -> None:
                bar.set_postfix(episodes=running)
                bar.update()

            trajectories = self.collector.run(tasks, self.group_size, self.policy, self.engine, sampling,
                                              self.generators.torch["rollout"], progress=advance)
        penalty = self.reference_env.invalid_action_penalty
        batch = rows_from_trajectories(trajectories, penalty)
        rollout_seconds = time.perf_counter() - started
        stats = episode_stats(trajectories, "rollout")
        self._score(batch, module.objective.needs_reference)
        if module.needs_teacher:
            stats.update(self._score_teacher(batch, tasks))
        module.prepare_step(batch)
        stats["rollout/rows"] = float(batch.num_rows)
        stats["rollout/response_tokens"] = float(batch.response_mask.sum())
        stats["rollout/truncated_generations"] = float(sum(
            1 for t in trajectories for turn in t.turns if not turn.valid_action and len(turn.response_ids) >= self.max_new_tokens))
        stats["timing/rollout_s"] = rollout_seconds
        stats["timing/scoring_s"] = time.perf_counter() - started - rollout_seconds
        self.last_rollout_stats = stats
        return self._mini_batches(batch)

    def _sample_tasks(self) -> list[Task]:
        panel = self.panel("train")
        index = torch.randperm(len(panel), generator=self.generators.torch["tasks"])[: self.tasks_per_step]
        return rank_share([panel[i] for i in index.tolist()])  # several processes: this rank's whole groups

    @torch.no_grad()
    def _score(self, batch: RolloutBatch, with_reference: bool) -> None:
        """Old log-probs (rollout-time weights) and, when the objective needs them, reference log-probs."""
        policy = self.policy
        batch.old_logp, _, _ = policy.token_logprobs(batch.prompt_ids, batch.response_ids, "policy",
                                                     micro_batch_size=self.scoring_batch_size)
        if with_reference:
            batch.ref_logp, _, _ = policy.token_logprobs(batch.prompt_ids, batch.response_ids, "reference",
                                                         micro_batch_size=self.scoring_batch_size)

    @torch.no_grad()
    def _score_teacher(self, batch: RolloutBatch, tasks: list[Task]) -> dict[str, float]:
        """Teacher log-probs: privileged text + the student's prompt, the student's response ids unchanged."""
        env = self.reference_env
        contexts = {}
        for group_id, task in enumerate(tasks):
            contexts[group_id] = env.privileged_context(task)
            if not contexts[group_id].strip():
                raise RuntimeError(
                    f"the method needs a teacher but {type(env).__name__} gave no privileged context for task "
                    f"{task.task_id!r}; give every task a skill or hint, or set model.objective.distill_coef: 0"
                )
        batch.privileged_context = [contexts[int(g)] for g in batch.group_ids]
        budget = teacher_budget(self.policy, SamplingParams(max_new_tokens=self.max_new_tokens))
        teacher_prompts, truncated = [], 0
        for context, parts, student_dropped in zip(batch.privileged_context, batch.prompt_parts,
                                                   batch.history_dropped):
            teacher = encode_prompt_parts(self.policy, with_privileged_context(context, parts), budget)
            truncated += teacher.cut or teacher.history_dropped > student_dropped
            teacher_prompts.append(teacher.ids)
        started = time.perf_counter()
        batch.teacher_logp, _, _ = self.policy.token_logprobs(teacher_prompts, batch.response_ids, "teacher",
                                                             micro_batch_size=self.scoring_batch_size)
        context_tokens = [len(self.policy.encode_prompt(c, budget=10**9)) for c in contexts.values()]
        return {
            "teacher/truncated_rows": float(truncated),
            "teacher/context_tokens": sum(context_tokens) / max(1, len(context_tokens)),
            "timing/teacher_scoring_s": time.perf_counter() - started,
        }

    def _mini_batches(self, batch: RolloutBatch) -> list[RolloutBatch]:
        mini_batches = []
        for _ in range(self.ppo_epochs):
            order = torch.randperm(batch.num_rows, generator=self.generators.torch["shuffle"])
            for index in torch.tensor_split(order, self.num_mini_batches):
                if index.numel() == 0:
                    index = order[:1]
                mini = batch.select(index)
                mini.num_tokens = int(mini.response_mask.sum())
                mini_batches.append(mini)
        globalise_token_counts(mini_batches)  # several processes: token means over all ranks' tokens
        return mini_batches

    # ------------------------------------------------------------------ evaluation
    def val_dataloader(self) -> list[DataLoader]:
        """The validation panel without privileged context, then (when enabled) with it."""
        loaders = [DataLoader(EvaluationRollouts(self, self.panel("val"), self.val_samples_per_task),
                              batch_size=None, collate_fn=_keep)]
        if self.val_privileged and self.has_privileged_context:
            loaders.append(DataLoader(EvaluationRollouts(self, self.panel("val"), self.val_samples_per_task,
                                                         privileged=True), batch_size=None, collate_fn=_keep))
        return loaders

    def test_dataloader(self) -> DataLoader:
        return DataLoader(EvaluationRollouts(self, self.panel("test"), self.val_samples_per_task), batch_size=None,
                          collate_fn=_keep)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        """Batches hold token-id lists and trajectories; tensors move to the model's device where they are used."""
        return batch

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"generators": self.generators.state_dict() if self.generators else None}

    def load_state_dict(self, state: dict) -> None:
        if state.get("generators"):
            self.generators = NamedGenerators(state["generators"]["seed"])
            self.generators.load_state_dict(state["generators"])
            self.seed = self.generators.seed
