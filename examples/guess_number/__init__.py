"""A user's own environment for craft_pl: guess a secret number from "too low" / "too high" feedback."""

from guess_number.env import GuessNumberEnv

__all__ = ["GuessNumberEnv"]
