"""The text of synthetic WebShop instructions: writing them from goal fields and reading them back.

Only text goes in and out of the readers, so the expert (which may see nothing but text) uses them too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from craft_pl.envs.webshop.catalog import words

_PRICE_TEXT = re.compile(r", and price lower than (\d+(?:\.\d+)?) dollars\s*$")
_MONEY = re.compile(r"\$(\d+(?:\.\d+)?)")
_OPTION = re.compile(r"^\s*([a-z]+): (.+?)\s*$")


def make_instruction(attributes: tuple[str, ...], query: str, options: tuple[tuple[str, str], ...],
                     price_upper: float | None) -> str:
    """``"i need a {attrs} {type} with color: x, and size: y, and price lower than {X:.2f} dollars"``."""
    text = f"i need a {', '.join(attributes)} {query}" if attributes else f"i need a {query}"
    if options:
        text += " with " + ", and ".join(f"{name}: {value}" for name, value in options)
    if price_upper is not None:
        text += f", and price lower than {price_upper:.2f} dollars"
    return text


@dataclass(frozen=True)
class ParsedInstruction:
    """What an instruction asks for."""

    descriptor: str
    """The ``{attrs} {type}`` span, e.g. ``"non slip, waterproof running shoes"`` (the expert's query)."""
    options: tuple[tuple[str, str], ...]
    price_upper: float | None


def parse_instruction(instruction: str) -> ParsedInstruction:
    """Read the descriptor, the ``name: value`` options and the price ceiling back from an instruction."""
    text = instruction.strip().lower()
    price = None
    match = _PRICE_TEXT.search(text)
    if match:
        price = float(match.group(1))
        text = text[: match.start()]
    options: list[tuple[str, str]] = []
    if " with " in text:
        text, tail = text.split(" with ", 1)
        for chunk in tail.split(", and "):
            found = _OPTION.match(chunk)
            if found:
                options.append((found.group(1), found.group(2)))
    for prefix in ("i need a ", "i need an ", "i need ", "i want a ", "i am looking for a "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    return ParsedInstruction(descriptor=text.strip(), options=tuple(options), price_upper=price)


def title_has_all(title: str, descriptor: str) -> bool:
    """Whether every word of ``descriptor`` occurs as a word of ``title``."""
    return set(words(descriptor)) <= set(words(title))


def price_bounds(text: str) -> tuple[float, float] | None:
    """``(low, high)`` of a displayed price (``"$12.34"`` or ``"$10.00 to $25.50"``); ``None`` if unreadable."""
    values = [float(v) for v in _MONEY.findall(text)]
    if not values:
        return None
    return min(values), max(values)
