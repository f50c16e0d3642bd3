import hashlib, sys, torch
for path in sys.argv[1:]:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    h = hashlib.sha256()
    for name, value in sorted(saved["state_dict"].items()):
        h.update(name.encode()); h.update(value.contiguous().numpy().tobytes())
    print(path, "weights_sha", h.hexdigest()[:16], "loss_last", saved["losses"][-1], "steps", len(saved["losses"]))
