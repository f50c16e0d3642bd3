"""Warm-start only (no validation): cached demonstrations, then print a sha256 of the warm-started weights and
the loss trace, and stop. Usage: python ws_hash.py <tag> validate --config configs/webshop.yaml [overrides]"""
import hashlib, json, os, pickle, sys, time
import torch
TAG = sys.argv.pop(1)
import craft_pl.datamodule as dm
import craft_pl.model.policy as policy_mod
from craft_pl.rollout.demonstrations import demonstrations as real_demos

def cached_demos(env, count, panel_seed, history_length, privileged_fraction=0.0):
    path = f"/tmp/ti/demos_{count}_{panel_seed}_{history_length}_{privileged_fraction}.pkl"
    if os.path.exists(path):
        return pickle.load(open(path, "rb"))
    demos = real_demos(env, count, panel_seed, history_length, privileged_fraction)
    pickle.dump(demos, open(path + ".tmp", "wb")); os.replace(path + ".tmp", path)
    return demos

dm.demonstrations = cached_demos
real_ws = policy_mod.warm_start_weights

def ws(model, rows, settings, key, pad_id, generator):
    t = time.time()
    losses = real_ws(model, rows, settings, key, pad_id, generator)
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode()); h.update(value.detach().contiguous().numpy().tobytes())
    out = {"tag": TAG, "key": key, "weights_sha": h.hexdigest()[:16], "threads": torch.get_num_threads(),
           "torch": torch.__version__, "steps": len(losses), "loss_last": losses[-1],
           "loss_mean_last100": sum(losses[-100:]) / len(losses[-100:]), "ws_seconds": round(time.time() - t, 1),
           "first_diff_step": None}
    json.dump({"losses": losses, **out}, open(f"/tmp/ti/ws_{TAG}.json", "w"))
    print("WSHASH", json.dumps(out), flush=True)
    raise SystemExit(0)

policy_mod.warm_start_weights = ws
from craft_pl.cli import main
main()
