"""Gradient bits of one tiny-model step at several torch thread counts (same input)."""
import hashlib, sys
sys.path.insert(0, "/tmp/ti/scratch/tinyonly")
import torch
from tiny import tiny_qwen2
m = tiny_qwen2(1024, 128, 2, 4, 2, 384, 2048, 0, 0, 2)
g = torch.Generator().manual_seed(0)
ids = torch.randint(3, 1024, (32, 200), generator=g)
for t in (1, 2, 4, 8, 16):
    torch.set_num_threads(t)
    m.zero_grad()
    out = m(input_ids=ids, labels=ids)
    out.loss.backward()
    h = hashlib.sha256()
    for n, p in sorted(m.named_parameters()):
        h.update(p.grad.contiguous().numpy().tobytes())
    print("threads", torch.get_num_threads(), "loss", out.loss.item(), "grad sha", h.hexdigest()[:16])
