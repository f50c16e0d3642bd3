"""Where a response ends: EOS or one of the environment's stop strings, matched on token ids where possible."""

from __future__ import annotations

from typing import Sequence

import torch

DEFAULT_STOP_STRINGS = ("</action>",)
"""Stop strings when the caller names none (``AgentEnv.stop_strings``'s default)."""


class StopMatcher:
    """Ends responses at EOS or a stop string: single-token stops and the stop strings' own id sequences are matched
    on ids; text is decoded only for rows whose last token could end a stop string another way."""

    def __init__(self, tokenizer, stop_strings: Sequence[str], device: torch.device) -> None:
        self.tokenizer, self.stop_strings = tokenizer, list(stop_strings)
        single = {tokenizer.eos_token_id} - {None}
        self.texts, self.sequences = [], []
        for text in stop_strings:
            ids = list(tokenizer(text, add_special_tokens=False).input_ids)
            single.update(ids if len(ids) == 1 else [])
            if len(ids) > 1:
                self.texts.append(text)
                self.sequences.append(torch.tensor(ids, device=device))
        self.single_ids = torch.tensor(sorted(single), dtype=torch.long, device=device)
        self.window = max([8] + [len(s) for s in self.sequences])
        self._ends = {text[-1] for text in self.texts}
        self._could_end: dict[int, bool] = {}
        """Token id -> whether text ending with it can end a multi-token stop string (a partial character can)."""

    def serves(self, tokenizer, stop_strings: Sequence[str], device: torch.device) -> bool:
        """Whether this matcher was built for ``tokenizer``, ``stop_strings`` and ``device`` (so can be reused)."""
        return (self.tokenizer is tokenizer and self.stop_strings == list(stop_strings)
                and self.single_ids.device == device)

    def finished(self, tokens: torch.Tensor, lengths: torch.Tensor, token: torch.Tensor,
                 active: torch.Tensor) -> torch.Tensor:
        """Rows ``[rows]`` that end at this step: ``tokens [rows, T]`` hold each row's ``lengths`` tokens so far, the
        last of them ``token``; only ``active`` rows are looked at."""
        done = torch.isin(token, self.single_ids) & active
        for sequence in self.sequences:
            span = len(sequence)
            columns = (lengths[:, None] - span + torch.arange(span, device=tokens.device)).clamp_min(0)
            done |= (tokens.gather(1, columns) == sequence).all(-1) & (lengths >= span) & active
        if not self.texts:
            return done
        undecided = torch.nonzero(active & ~done).flatten()
        for row, token_id in zip(undecided.tolist(), token[undecided].tolist()):
            if token_id not in self._could_end:
                text = self.tokenizer.decode([token_id])
                self._could_end[token_id] = not text or "\ufffd" in text or text[-1] in self._ends
            if self._could_end[token_id]:
                end = int(lengths[row])
                tail = self.tokenizer.decode(tokens[row, max(0, end - self.window) : end].tolist())
                done[row] = any(tail.endswith(text) for text in self.texts)
        return done
