"""ALFWorld on its real engine (``alfworld`` + ``textworld[pddl]``, the ``alfworld`` extra): our seeded game
generator over the floor plans shipped in the alfworld wheel, or the official games when the user has them."""

from craft_pl.envs.alfworld.env import AlfWorldEnv
from craft_pl.envs.alfworld.expert import WalkthroughExpert
from craft_pl.envs.alfworld.generator import GameGenerator, GameRecord, GeneratorSettings
from craft_pl.envs.alfworld.tasks import TASK_TYPES

__all__ = ["AlfWorldEnv", "GameGenerator", "GameRecord", "GeneratorSettings", "TASK_TYPES", "WalkthroughExpert"]
