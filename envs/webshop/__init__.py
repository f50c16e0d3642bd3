"""Self-contained synthetic WebShop (catalogue, BM25 search, text pages, WebShop's reward, expert, skills)."""

from craft_pl.envs.webshop.env import WebShopEnv
from craft_pl.envs.webshop.expert import WebShopExpert

__all__ = ["WebShopEnv", "WebShopExpert"]
