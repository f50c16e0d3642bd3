"""``RolloutDataModule``, the rollout-step machine: each epoch (= one RL step) samples tasks, makes the step's
experience (``craft_pl.rollout.experience``) with the policy it was handed, and serves shuffled mini-batches. The
number of optimizer steps per RL step is ``ppo_epochs x num_mini_batches``, fixed by configuration whatever the
episodes' lengths. It also runs the evaluation panels.

The learner hands over its policy and its loss recipe once (``connect``); the data module never reaches into the
trainer's module. The step's rollout statistics ride on its first mini-batch (``RolloutBatch.step_stats``).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Callable, Iterator, Literal

import lightning.pytorch as pl
import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm

from craft_pl.batch import DataFacts, RolloutBatch, Task, Trajectory, TurnTexts, check_invalid_history
from craft_pl.distributed import globalise_token_counts, rank_share, world
from craft_pl.envs.base import AgentEnv
from craft_pl.rollout.demonstrations import demonstrations, student_demonstrations
from craft_pl.rollout.engine import GenerationEngine, HFEngine, SamplingParams
from craft_pl.rollout.env_process import process_env_factory
from craft_pl.rollout.experience import ExperienceMaker, Refill
from craft_pl.seeding import NamedGenerators, derive_seed, run_seed

if TYPE_CHECKING:
    from craft_pl.loss import LossRecipe

# RLStep's length is exact (ppo_epochs x num_mini_batches) and it is never split across loader workers.
warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")


def _keep(batch):
    return batch


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
            yield dm.experience.collector.run(self.tasks[start : start + chunk], self.samples_per_task, dm.policy,
                                              dm.engine, sampling, generator, privileged=self.privileged)


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
        invalid_history: Literal["placeholder", "text"] = "placeholder",
        max_new_tokens: PositiveInt = 24,
        temperature: float = 1.0,
        top_p: float = 1.0,
        ppo_epochs: PositiveInt = 1,
        num_mini_batches: PositiveInt = 4,
        train_panel_size: PositiveInt = 4096,
        val_tasks: PositiveInt = 128,
        val_samples_per_task: PositiveInt = 1,
        test_tasks: PositiveInt | None = None,
        test_samples_per_task: PositiveInt | None = None,
        val_temperature: float | None = None,
        val_batch_envs: PositiveInt = 128,
        val_privileged: bool = True,
        val_signal: bool = True,
        panel_seed: int = 0,
        scoring_batch_size: PositiveInt = 64,
        engine: GenerationEngine | None = None,
        env_step_timeout_s: float = 60.0,
        dynamic_sampling: bool = False,
        max_gen_batches: PositiveInt = 4,
        env_workers: str = "thread",
    ) -> None:
        """
        Args:
            env: The environment class and its arguments (``class_path`` / ``init_args``); one instance per episode.
            tasks_per_step: B, tasks sampled per RL step.
            group_size: G, sibling rollouts per task (GRPO group).
            history_length: Past (observation, action) pairs shown in each prompt.
            invalid_history: What the history shows for an invalid turn's action, in RL, validation and the warm
                start's demonstrations alike: ``placeholder`` (the words ``invalid action``) or ``text`` (the
                command the agent wrote, so that it can see what it tried; verl-agent's history does so). On
                ALFWorld's tiny model ``text`` made the invalid-command cascades worse (the model copies the command):
                ``benchmarks/results/alfworld_warm_start_diagnosis.md``.
            max_new_tokens: Longest response per turn; longer generations are invalid actions.
            temperature: Rollout sampling temperature; every log-prob of the rollout's responses (old, reference,
                teacher, the update's) is taken at it (logits / T), so the PPO ratio compares what was sampled.
            top_p: Rollout nucleus sampling mass.
            ppo_epochs: Passes over the step's rows.
            num_mini_batches: Mini-batches (= optimizer steps) per PPO epoch.
            train_panel_size: Size of the fixed train task panel that RL samples from.
            val_tasks: Size of the fixed validation panel.
            val_samples_per_task: Episodes per validation task (averaging cuts sampling noise).
            test_tasks: Size of the held-out test panel (``test``); null = ``val_tasks``. A reported number can come
                from a larger panel than the one every periodic validation runs.
            test_samples_per_task: Episodes per test task; null = ``val_samples_per_task``.
            val_temperature: Evaluation sampling temperature (0 = greedy); null = the environment's protocol
                (``AgentEnv.eval_temperature``: 0.4 for ALFWorld and WebShop, greedy for Search-QA).
            val_batch_envs: Environments evaluated together in one batched rollout.
            val_privileged: Also evaluate the policy *with* privileged context (``val/success_rate_privileged``),
                when the environment offers it: how much better the teacher's view is.
            val_signal: Before RL, also measure the validation panel's greedy success (``val/success_rate_greedy``)
                and pass@G at the rollout temperature (``val/pass_at_g``, G = ``group_size``): whether sampling
                finds what greedy decoding misses, i.e. whether RL has anything to work with.
            panel_seed: Seed of the task panels (kept apart from the run seed so seeds share panels).
            scoring_batch_size: Rows per no-grad forward when scoring old and reference log-probs.
            engine: Generation engine (default ``HFEngine``).
            env_step_timeout_s: Most seconds one environment ``reset`` or ``step`` may take (0 = no limit); a call
                that takes longer ends its episode as an environment error (``rollout/env_errors``) and its
                environment instance is replaced.
            dynamic_sampling: DAPO's dynamic sampling (verl's ``algorithm.filter_groups``): drop groups whose G episode
                rewards are all equal (they give GRPO no gradient) and roll out further tasks until the step has
                ``tasks_per_step`` informative groups (``rollout/gen_batches``). One process only.
            max_gen_batches: Most rollouts of ``tasks_per_step`` tasks per RL step with dynamic sampling; at the cap
                the step trains on what it drew, informative groups first, topped up to ``tasks_per_step``.
            env_workers: ``thread`` (default): environments run in this process, a call over ``env_step_timeout_s``
                is abandoned on its thread (one stuck in C code holding the GIL cannot be stopped); ``process``: each
                environment runs in a worker process, killed and replaced when a call overruns (one pipe round trip
                per call: ``craft_pl.rollout.env_process``).
        """
        super().__init__()
        if isinstance(env_step_timeout_s, bool) or not isinstance(env_step_timeout_s, (int, float)) \
                or not env_step_timeout_s >= 0:
            raise ValueError(f"data.env_step_timeout_s={env_step_timeout_s!r} is invalid; use seconds >= 0 "
                             "(0 = no limit)")
        if env_workers not in ("thread", "process"):
            raise ValueError(f"data.env_workers={env_workers!r} is invalid; use 'thread' or 'process'")
        SamplingParams(temperature, top_p, max_new_tokens)
        if val_temperature is not None:
            SamplingParams(val_temperature, top_p, max_new_tokens)
        self.env_factory = env
        self.environment = env()
        """One instance built now, so that a bad environment argument fails while the configuration is checked;
        it answers the environment's questions (task panels, penalty, privileged context, demonstrations)."""
        self.tasks_per_step = tasks_per_step
        self.group_size = group_size
        self.history_length = history_length
        self.invalid_history = check_invalid_history(invalid_history)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.ppo_epochs = ppo_epochs
        self.num_mini_batches = num_mini_batches
        self.train_panel_size = train_panel_size
        self.val_tasks = val_tasks
        self.val_samples_per_task = val_samples_per_task
        self.test_tasks = test_tasks or val_tasks
        self.test_samples_per_task = test_samples_per_task or val_samples_per_task
        self.val_temperature = val_temperature
        self.val_batch_envs = val_batch_envs
        self.val_privileged = val_privileged
        self.val_signal = val_signal
        self.panel_seed = panel_seed
        self.scoring_batch_size = scoring_batch_size
        self.engine = engine or HFEngine()
        self.env_step_timeout_s = env_step_timeout_s
        self.dynamic_sampling = dynamic_sampling
        self.max_gen_batches = max_gen_batches
        self.env_workers = env_workers
        self.experience = ExperienceMaker(process_env_factory(env) if env_workers == "process" else env,
                                          history_length, self.engine, scoring_batch_size, env_step_timeout_s,
                                          invalid_history)
        self.generators: NamedGenerators | None = None
        self.seed = 0
        self.policy = None
        self.loss_recipe: LossRecipe | None = None
        self.step_texts: TurnTexts = {}
        """The text of the current RL step's rows, keyed by (trajectory, turn), for inspection callbacks."""
        self._panels: dict[str, list[Task]] = {}

    def connect(self, policy, loss_recipe: "LossRecipe") -> None:
        """Take what making experience needs from the learner, once: its policy and its loss recipe (which says
        what to score and prepares each step's rows)."""
        self.policy = policy
        self.loss_recipe = loss_recipe

    def data_facts(self) -> DataFacts:
        """What the learner needs from the data side."""
        return DataFacts(
            env_name=type(self.environment).__name__,
            task_types=list(self.environment.task_types),
            has_privileged_context=self.environment.has_privileged_context,
            group_size=self.group_size,
            demonstrations=self.demonstrations,
            student_demonstrations=self.student_demonstrations,
            evaluate=self.evaluate,
            hint_is_reliable=self.environment.hint_is_reliable,
            signal_at_start=self.signal_at_start if self.val_signal else None,
        )

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        if self.dynamic_sampling and world()[1] > 1:
            raise ValueError("data.dynamic_sampling works in one process only (each rank would decide its refills "
                             "alone); set data.dynamic_sampling: false or train on one device")
        if self.generators is None:
            self.seed = run_seed()
            self.generators = NamedGenerators(self.seed)

    def panel(self, split: str) -> list[Task]:
        if split not in self._panels:
            size = {"train": self.train_panel_size, "val": self.val_tasks, "test": self.test_tasks}[split]
            self._panels[split] = self.environment.task_panel(split, size, self.panel_seed)
        return self._panels[split]

    @property
    def evaluation_temperature(self) -> float:
        """``val_temperature`` when set, else the environment's evaluation protocol."""
        if self.val_temperature is not None:
            return self.val_temperature
        return float(self.environment.eval_temperature)

    def demonstrations(self, count: int, privileged_fraction: float = 0.0,
                       recovery_rate: float = 0.0, recovery_run: float = 0.0) -> list[tuple[str, str]]:
        """Expert (prompt, response) pairs on ``count`` train tasks (see ``craft_pl.rollout.demonstrations``)."""
        return demonstrations(self.environment, count, self.panel_seed, self.history_length, privileged_fraction,
                              recovery_rate, recovery_run, self.invalid_history)

    def student_demonstrations(self, count: int, model: torch.nn.Module, tokenizer, encode_prompt: Callable,
                               temperature: float, seed: int) -> list[tuple[str, str]]:
        """DAgger rows (``craft_pl.rollout.demonstrations.student_demonstrations``): ``model`` plays ``count`` train
        tasks, sampled at ``temperature`` (rollout's top-p and response length) from its own seeded stream."""
        sampling = SamplingParams(temperature, self.top_p, self.max_new_tokens)
        generator = torch.Generator().manual_seed(derive_seed(seed, "student_demonstrations"))
        engine, stops = HFEngine(), self.environment.stop_strings

        def respond(prompt: str) -> str:
            [generation] = engine.generate(model, tokenizer, [encode_prompt(prompt)], sampling, generator, stops)
            return tokenizer.decode(generation.token_ids, skip_special_tokens=False) if generation.finished else ""

        return student_demonstrations(self.environment, count, self.panel_seed, self.history_length, respond,
                                      self.invalid_history)

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
        """Make the step's experience with the current policy, cut mini-batches; the first carries the step's
        statistics to the learner."""
        if self.loss_recipe is None:
            raise RuntimeError("RolloutDataModule is not connected to a learner: call "
                               "craft_pl.module.connect(module, datamodule) before training (the CLI does it)")
        tasks = self._sample_tasks()
        sampling = SamplingParams(self.temperature, self.top_p, self.max_new_tokens)
        # disable=None: a bar on a terminal only; a log file gets no carriage-return bursts
        with tqdm(total=self.environment.max_turns, desc=f"rollout {self.trainer.current_epoch}", unit="turn",
                  leave=False, disable=True if self.trainer.progress_bar_callback is None else None) as bar:

            def advance(running: int) -> None:
                bar.set_postfix(episodes=running)
                bar.update()

            refill = Refill(self._sample_tasks, self.max_gen_batches) if self.dynamic_sampling else None
            experience = self.experience.make(self.policy, tasks, self.group_size, sampling,
                                              self.generators.torch["rollout"], self.loss_recipe, self.environment,
                                              progress=advance, one_update=self.mini_batches_per_step == 1,
                                              refill=refill)
        self.step_texts = experience.texts
        mini_batches = self._mini_batches(experience.batch)
        mini_batches[0].step_stats = experience.stats
        return mini_batches

    def _sample_tasks(self) -> list[Task]:
        panel = self.panel("train")
        index = torch.randperm(len(panel), generator=self.generators.torch["tasks"])[: self.tasks_per_step]
        return rank_share([panel[i] for i in index.tolist()])  # several processes: this rank's whole groups

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
        if self.val_privileged and self.environment.has_privileged_context:
            loaders.append(DataLoader(EvaluationRollouts(self, self.panel("val"), self.val_samples_per_task,
                                                         privileged=True), batch_size=None, collate_fn=_keep))
        return loaders

    def evaluate(self) -> list[list[Trajectory]]:
        """The validation panel's episodes now, outside Lightning's loop: [plain, privileged (empty if not run)]."""
        episodes = [[t for chunk in loader for t in chunk] for loader in self.val_dataloader()]
        return episodes + [[]] * (2 - len(episodes))

    def signal_at_start(self) -> dict[str, float]:
        """The validation panel's greedy success and pass@G (G sibling episodes per task at the rollout temperature,
        won when any of them is), each with its own seeded generator, no privileged context."""
        tasks = self.panel("val")
        greedy = self._episodes(tasks, 1, SamplingParams(0.0, self.top_p, self.max_new_tokens), "greedy")
        sampled = self._episodes(tasks, self.group_size, SamplingParams(self.temperature, self.top_p,
                                                                        self.max_new_tokens), "pass_at_g")
        solved: dict[str, bool] = {}
        for trajectory in sampled:
            solved[trajectory.task.task_id] = solved.get(trajectory.task.task_id, False) or trajectory.won
        return {"val/success_rate_greedy": sum(t.won for t in greedy) / max(1, len(greedy)),
                "val/pass_at_g": sum(solved.values()) / max(1, len(solved))}

    def _episodes(self, tasks: list[Task], samples: int, sampling: SamplingParams, purpose: str) -> list[Trajectory]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, f"evaluation/{purpose}"))
        chunk = max(1, self.val_batch_envs // samples)
        return [t for start in range(0, len(tasks), chunk) for t in self.experience.collector.run(
            tasks[start: start + chunk], samples, self.policy, self.engine, sampling, generator)]

    def test_dataloader(self) -> DataLoader:
        return DataLoader(EvaluationRollouts(self, self.panel("test"), self.test_samples_per_task), batch_size=None,
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
