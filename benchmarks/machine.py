"""What a recorded number depends on beyond the code: packages, torch's CPU kernel family, the CPU and how busy it
was. Every benchmark that writes a result stores ``machine_record()`` with it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_record() -> dict:
    """``pip freeze`` (editable installs left out), torch's CPU capability (the warm start's weights depend on it:
    ``benchmarks/results/teacher_investigation.md``), the CPU, its core count, the thread setting, the load average
    when the record was taken and the warm-start cache in use."""
    import torch

    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True).stdout
    return {
        "python": platform.python_version(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_1_5_15_min": [round(x, 2) for x in os.getloadavg()],
        "craft_pl_cache": os.environ.get("CRAFT_PL_CACHE", "(default ~/.cache/craft_pl)"),
        "pip_freeze": [line for line in freeze.splitlines() if line and not line.startswith(("-e ", "#"))],
    }
