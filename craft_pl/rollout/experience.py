"""Making experience: the RL step's recipe, from tasks to a scored, prepared ``RolloutBatch``.

Read top to bottom, ``ExperienceMaker.make`` is one RL step's data side:

1. **rollout**: G sibling episodes per task with the current policy (``timing/rollout_s``); with dynamic sampling
   (DAPO), groups whose G episode rewards are all equal are dropped and further tasks rolled out until the step has
   as many informative groups as tasks, or ``max_gen_batches`` rollouts were made (then the step trains on what it
   drew, informative groups first, topped up to the task count);
2. **rows**: one row per (trajectory, turn), with its reward, anchor state and text side record;
3. **scoring**: old log-probs (rollout-time weights) and, when the objective has a KL term, reference log-probs
   (``timing/scoring_s``);
4. **teacher scoring**: when the objective distils, the privileged teacher's log-probs of the same response ids
   (``timing/teacher_scoring_s``);
5. **preparation**: the loss recipe's group-level work on the whole step (advantages, pillar preparation;
   ``timing/prepare_s``): the data side's one call into the learner per RL step.

It takes the policy, the engine, the environment and the loss recipe as arguments and reads nothing through the
trainer. Its statistics travel with the experience (the step's first mini-batch carries them to the learner).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Iterator

import torch

from craft_pl.batch import RolloutBatch, Task, Trajectory, TurnText, TurnTexts, anchor_ids, state_ids
from craft_pl.envs.base import AgentEnv
from craft_pl.evaluation import EpisodeMetrics, success_by_hint
from craft_pl.rollout.collector import Collector
from craft_pl.rollout.engine import GenerationEngine, SamplingParams
from craft_pl.rollout.prompts import teacher_prompt
from craft_pl.rollout.signal import groups_of, has_reward_spread, signal_stats

if TYPE_CHECKING:
    from craft_pl.loss import LossRecipe


@dataclass(frozen=True)
class Refill:
    """Dynamic sampling's supply of further tasks: ``draw()`` gives the next tasks of the seeded task stream."""

    draw: Callable[[], list[Task]]
    max_gen_batches: int


@dataclass
class Experience:
    """One RL step's rows (tensors and ids), their text, the episodes they came from, and what it all cost."""

    batch: RolloutBatch
    texts: TurnTexts
    trajectories: list[Trajectory]
    stats: dict[str, float] = field(default_factory=dict)


class Timers:
    """Seconds per named stage, reported as ``timing/<name>_s``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def stats(self) -> dict[str, float]:
        return {f"timing/{name}_s": value for name, value in self.seconds.items()}


class ExperienceMaker:
    """Turns tasks into a scored, prepared ``RolloutBatch`` (see the module docstring for the recipe)."""

    def __init__(self, env_factory: Callable[[], AgentEnv], history_length: int, engine: GenerationEngine,
                 scoring_batch_size: int, env_step_timeout_s: float = 60.0,
                 invalid_history: str = "placeholder") -> None:
        self.collector = Collector(env_factory, history_length, env_step_timeout_s, invalid_history)
        self.engine = engine
        self.scoring_batch_size = scoring_batch_size

    def make(self, policy, tasks: list[Task], group_size: int, sampling: SamplingParams, generator: torch.Generator,
             recipe: "LossRecipe", env: AgentEnv, progress: Callable[[int], None] | None = None,
             one_update: bool = False, refill: Refill | None = None) -> Experience:
        """One RL step's experience on ``tasks`` (``env`` answers the environment's questions: penalty, task types,
        privileged context; ``recipe`` says which log-probs to score and prepares the rows). With ``one_update``
        (the step's rows are one mini-batch used once) the old log-probs equal the training forward's detached
        ones, so they are left to it (``old_logp`` None) unless a preparation reads them."""
        timers = Timers()
        with timers("rollout"):
            drawn = self.collector.run(tasks, group_size, policy, self.engine, sampling, generator, progress=progress)
            gen_batches = 1
            while refill is not None and gen_batches < refill.max_gen_batches and \
                    sum(map(has_reward_spread, groups_of(drawn).values())) < len(tasks):
                more = self.collector.run(refill.draw(), group_size, policy, self.engine, sampling, generator,
                                          progress=progress)
                drawn += renumbered(more, groups=len(groups_of(drawn)), group_size=group_size)
                gen_batches += 1
        trajectories = drawn
        if refill is not None:  # the step trains on the chosen groups; its statistics describe every drawn one
            trajectories = informative_first(drawn, len(tasks), group_size)
            tasks = [group[0].task for group in groups_of(trajectories).values()]
        batch, texts = rows_from_trajectories(trajectories, env.invalid_action_penalty)
        batch.temperature = scoring_temperature(sampling)
        with timers("scoring"):
            score_logprobs(policy, batch, recipe.needs_reference_logp, self.scoring_batch_size,
                           with_old=recipe.reads_old_logp_in_prepare or not one_update)
        stats = rollout_stats(drawn, batch, env.task_types, sampling.max_new_tokens)
        if refill is not None:
            stats["rollout/gen_batches"] = float(gen_batches)
        if env.hints_may_mislead:  # the student's success where the teacher is wrong, on purpose, and elsewhere
            split = success_by_hint(drawn, env.task_types, env.hint_is_reliable, "rollout")
            stats.update({f"rollout/success_rate_{name}": rate for name, rate in split.items()})
        if recipe.needs_teacher_logp:
            with timers("teacher_scoring"):
                texts = with_privileged_contexts(texts, tasks, env)
                stats.update(score_teacher(policy, batch, texts, sampling.max_new_tokens, self.scoring_batch_size,
                                           recipe.needs_full_distribution))
                stats["teacher/hint_reliability"] = sum(map(env.hint_is_reliable, tasks)) / max(1, len(tasks))
        with timers("prepare"):
            stats.update(recipe.prepare(batch))
        stats.update(timers.stats())
        return Experience(batch, texts, trajectories, stats)


def renumbered(trajectories: list[Trajectory], groups: int, group_size: int) -> list[Trajectory]:
    """Another rollout's episodes with group ids after the ``groups`` already drawn (trajectory ids follow)."""
    for trajectory in trajectories:
        trajectory.group_id += groups
        trajectory.trajectory_id += groups * group_size
    return trajectories


def informative_first(drawn: list[Trajectory], count: int, group_size: int) -> list[Trajectory]:
    """``count`` groups of ``drawn``: those with reward spread in draw order, then the others in draw order, as
    copies renumbered 0.. in that order (the collector's numbering: group g holds trajectories g*G .. g*G + G - 1);
    ``drawn`` itself is left as it was."""
    groups = list(groups_of(drawn).values())
    chosen = ([g for g in groups if has_reward_spread(g)] + [g for g in groups if not has_reward_spread(g)])[:count]
    return [replace(trajectory, group_id=new_id, trajectory_id=new_id * group_size + sibling)
            for new_id, group in enumerate(chosen) for sibling, trajectory in enumerate(group)]


def rows_from_trajectories(trajectories: list[Trajectory], penalty: float) -> tuple[RolloutBatch, TurnTexts]:
    """One row per (trajectory, turn); reward = episode reward - penalty x [this turn's action was invalid]. Rows of
    a group in the same anchor state at a turn share an ``anchor_id``, and in the same state at any turn a
    ``state_id``. Also the rows' text, keyed by (trajectory, turn)."""
    rows = [(t, k, turn) for t in trajectories for k, turn in enumerate(t.turns)]
    width = max(1, max((len(turn.response_ids) for _, _, turn in rows), default=1))
    response_mask = torch.zeros(len(rows), width, dtype=torch.bool)
    sampling_logp = torch.zeros(len(rows), width)
    for r, (_, _, turn) in enumerate(rows):
        response_mask[r, : len(turn.response_ids)] = True
        sampling_logp[r, : len(turn.response_ids)] = torch.tensor(turn.sampling_logp, dtype=torch.float32)
    group_ids = [t.group_id for t, _, _ in rows]
    turn_index = [k for _, k, _ in rows]
    batch = RolloutBatch(
        prompt_ids=[turn.prompt_ids for _, _, turn in rows],
        response_ids=[turn.response_ids for _, _, turn in rows],
        response_mask=response_mask,
        group_ids=torch.tensor(group_ids, dtype=torch.long),
        trajectory_ids=torch.tensor([t.trajectory_id for t, _, _ in rows], dtype=torch.long),
        turn_index=torch.tensor(turn_index, dtype=torch.long),
        anchor_ids=anchor_ids(group_ids, turn_index, [turn.anchor for _, _, turn in rows]),
        state_ids=state_ids(group_ids, [turn.anchor for _, _, turn in rows]),
        rewards=torch.tensor([t.episode_reward - penalty * (not turn.valid_action) for t, _, turn in rows],
                             dtype=torch.float32),
        valid_action=torch.tensor([turn.valid_action for _, _, turn in rows], dtype=torch.bool),
        sampling_logp=sampling_logp,
    )
    texts = {(t.trajectory_id, k): TurnText(t.task.task_id, t.task.task_type, turn.prompt_parts.current,
                                            turn.prompt_parts, t.privileged_context, turn.history_dropped)
             for t, k, turn in rows}
    return batch, texts


def rollout_stats(trajectories: list[Trajectory], batch: RolloutBatch, task_types: list[str],
                  max_new_tokens: int) -> dict[str, float]:
    """``rollout/*``: the drawn episodes' metrics (as evaluation computes them) and collapse diagnostics
    (``craft_pl.rollout.signal``), the trained rows' sizes, and how often siblings share a state (``anchor_groups``:
    distinct (group, turn, anchor) states; ``anchor_shared_rows``: share of rows with a same-state sibling, the
    coverage that same-state credit needs)."""
    metric = EpisodeMetrics(task_types, "rollout")
    metric.update(trajectories)
    stats = metric.compute()
    stats.update(signal_stats(trajectories))
    stats["rollout/rows"] = float(batch.num_rows)
    stats["rollout/response_tokens"] = float(batch.response_mask.sum())
    _, anchor_sizes = torch.unique(batch.anchor_ids, return_counts=True)
    stats["rollout/anchor_groups"] = float(anchor_sizes.numel())
    stats["rollout/anchor_shared_rows"] = float((anchor_sizes[anchor_sizes > 1]).sum()) / max(1, batch.num_rows)
    stats["rollout/truncated_generations"] = float(sum(
        1 for t in trajectories for turn in t.turns if not turn.valid_action and len(turn.response_ids) >= max_new_tokens))
    return stats


@torch.no_grad()
def score_logprobs(policy, batch: RolloutBatch, with_reference: bool, micro_batch_size: int,
                   with_old: bool = True) -> None:
    """Old log-probs (rollout-time weights; skipped when ``with_old`` is False: the on-policy update takes them from
    its own forward) and, when asked, reference log-probs (adapters off)."""
    if with_old:
        batch.old_logp, _, _ = policy.token_logprobs(batch.prompt_ids, batch.response_ids, "policy",
                                                     micro_batch_size=micro_batch_size, temperature=batch.temperature)
    if with_reference:
        batch.ref_logp, _, _ = policy.token_logprobs(batch.prompt_ids, batch.response_ids, "reference",
                                                     micro_batch_size=micro_batch_size, temperature=batch.temperature)


def scoring_temperature(sampling: SamplingParams) -> float:
    """The temperature every log-prob of a rollout's responses is taken at: the rollout's (greedy rollouts: 1.0)."""
    return sampling.temperature if sampling.temperature > 0 else 1.0


def with_privileged_contexts(texts: TurnTexts, tasks: list[Task], env: AgentEnv) -> TurnTexts:
    """The rows' text with each group's privileged context, as RL's teacher sees it (a hint may be wrong where the
    environment's ``hint_reliability`` says so; a task with no context is an error naming the fix)."""
    contexts = {}
    for task in tasks:
        contexts[task.task_id] = env.privileged_context(task)
        if not contexts[task.task_id].strip():
            raise RuntimeError(
                f"the method needs a teacher but {type(env).__name__} gave no privileged context for task "
                f"{task.task_id!r}; give every task a skill or hint, or set model.objective.distill_coef: 0"
            )
    return {key: TurnText(text.task_id, text.task_type, text.observation, text.prompt_parts,
                          contexts[text.task_id], text.history_dropped) for key, text in texts.items()}


@torch.no_grad()
def score_teacher(policy, batch: RolloutBatch, texts: TurnTexts, max_new_tokens: int,
                  micro_batch_size: int, full_distribution: bool = False) -> dict[str, float]:
    """Teacher log-probs: privileged text + the student's prompt, the student's response ids unchanged (and, with
    ``full_distribution``, its whole next-token distributions in ``batch.extras["teacher_log_probs"]``)."""
    keys = list(zip(batch.trajectory_ids.tolist(), batch.turn_index.tolist()))
    teacher_prompts, truncated = [], 0
    for key in keys:
        text = texts[key]
        teacher = teacher_prompt(policy, text.prompt_parts, text.privileged_context, max_new_tokens)
        truncated += teacher.cut or teacher.history_dropped > text.history_dropped
        teacher_prompts.append(teacher.ids)
    scores, _ = policy.token_scores(teacher_prompts, batch.response_ids, "teacher", micro_batch_size=micro_batch_size,
                                    full_distribution=full_distribution, temperature=batch.temperature)
    batch.teacher_logp = scores.logp
    if full_distribution:
        batch.extras["teacher_log_probs"] = scores.log_probs
    contexts = {text.task_id: text.privileged_context for text in texts.values()}
    context_tokens = [len(policy.encode_prompt(c, budget=10**9)) for c in contexts.values()]
    return {
        "teacher/truncated_rows": float(truncated),
        "teacher/context_tokens": sum(context_tokens) / max(1, len(context_tokens)),
    }
