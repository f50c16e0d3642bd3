"""Scripted Search-QA policy that reads only the question and the ``<information>`` it gets back."""

from __future__ import annotations

from craft_pl.envs.base import Expert
from craft_pl.envs.search_qa.questions import Plan, parse_question
from craft_pl.envs.search_qa.retrieval import read_information
from craft_pl.envs.search_qa.world import KINDS, passage_pattern

_PATTERNS = [passage_pattern(kind) for kind in KINDS]
UNKNOWN = "unknown"


def read_facts(title: str, text: str) -> dict[str, str] | None:
    """The facts a passage states about its own title entity, or ``None`` if it is not an entity passage."""
    for pattern in _PATTERNS:
        match = pattern.match(text)
        if match and match.group("name") == title:
            return match.groupdict()
    return None


class SearchQAExpert(Expert):
    """Search the entity the question names, read its passage, follow links (bridge: search the linked entity;
    comparison: search the second entity), then answer. A name whose passage a search did not return is searched
    once more with the whole question; failing that the expert answers ``unknown``."""

    def __init__(self) -> None:
        self.reset("")

    def reset(self, instruction: str) -> None:
        self._question = instruction if isinstance(instruction, str) else ""
        self._plan: Plan | None = parse_question(self._question)
        self._facts: dict[str, dict[str, str]] = {}
        self._searched: set[str] = set()

    def act(self, observation: str, admissible_actions: list[str]) -> str:
        for title, text in read_information(observation or ""):
            facts = read_facts(title, text)
            if facts is not None:
                self._facts.setdefault(title, facts)
        plan = self._plan
        if plan is None:
            return self._search_or_give_up(self._question)
        if plan.other:  # comparison: the earlier of two years
            for name in (plan.entity, plan.other):
                if name not in self._facts:
                    return self._search_or_give_up(name)
            years = [int(self._facts[n].get(plan.relation, "0") or 0) for n in (plan.entity, plan.other)]
            return f"<answer>{plan.entity if years[0] < years[1] else plan.other}</answer>"
        name = plan.entity
        for link in plan.links:
            if name not in self._facts:
                return self._search_or_give_up(name)
            name = self._facts[name].get(link, "")
            if not name:
                return f"<answer>{UNKNOWN}</answer>"
        if name not in self._facts:
            return self._search_or_give_up(name)
        return f"<answer>{self._facts[name].get(plan.relation, UNKNOWN)}</answer>"

    def _search_or_give_up(self, query: str) -> str:
        for candidate in (query, self._question):
            if candidate and candidate not in self._searched:
                self._searched.add(candidate)
                return f"<search>{candidate}</search>"
        return f"<answer>{UNKNOWN}</answer>"
