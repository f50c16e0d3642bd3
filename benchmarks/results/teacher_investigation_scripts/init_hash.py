"""sha256 of the tiny model's random init (configs/webshop.yaml shape, vocab 1024) for a few seeds."""
import hashlib, sys
sys.path.insert(0, "/tmp/ti/scratch/tinyonly")
import torch, transformers
from tiny import tiny_qwen2
out = []
for seed in (0, 1):
    m = tiny_qwen2(1024, 128, 2, 4, 2, 384, 2048, seed, 0, 2)
    h = hashlib.sha256()
    for n, v in sorted(m.state_dict().items()):
        h.update(n.encode()); h.update(v.contiguous().numpy().tobytes())
    out.append(f"seed{seed}={h.hexdigest()[:16]} std(q0)={m.model.layers[0].self_attn.q_proj.weight.std():.5f} std(emb)={m.model.embed_tokens.weight.std():.5f}")
print("transformers", transformers.__version__, "torch", torch.__version__, *out)
