"""One ``--device`` vocabulary for ``train`` and ``evaluate``: ``auto``, ``cpu``, ``gpu``.

``auto`` takes a CUDA GPU when torch sees one, else the CPU. Asking for ``gpu`` where there is none is
a one-line :class:`~pipeline.errors.ConfigError` (exit 2), checked twice: first without torch (no
NVIDIA device node on the machine: answered in microseconds, before the multi-second torch import),
then with ``torch.cuda.is_available()`` once torch is loaded. Only the stdlib is imported here.
"""

from __future__ import annotations

import glob
import os

from ..errors import ConfigError

#: The vocabulary; ``cuda`` is accepted as another name for ``gpu``.
DEVICES = ("auto", "cpu", "gpu")
ALIASES = {"cuda": "gpu"}
DEVICE_HELP = "auto (a CUDA GPU if present, else the CPU), cpu or gpu (an error where there is none)."


def normalise(device: str | None, where: str = "--device") -> str:
    """``None`` → ``auto``; ``cuda`` → ``gpu``; anything else outside :data:`DEVICES` raises ConfigError."""
    if device is None:
        return "auto"
    name = ALIASES.get(str(device).strip().lower(), str(device).strip().lower())
    if name not in DEVICES:
        raise ConfigError(f"{where}: expected one of {', '.join(DEVICES)}, got {device!r}")
    return name


def nvidia_device_nodes() -> bool:
    """True when the machine exposes an NVIDIA GPU to this process (device nodes or the driver's list)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*") or glob.glob("/proc/driver/nvidia/gpus/*") or os.path.exists("/dev/dxg"))


def _no_gpu(reason: str) -> ConfigError:
    return ConfigError(f"--device gpu: no CUDA GPU is available ({reason}); use --device cpu or --device auto")


def check_before_import(device: str) -> None:
    """Fail fast, before torch is imported, when a GPU is requested on a machine without one."""
    if device == "gpu" and not nvidia_device_nodes():
        raise _no_gpu("no NVIDIA device on this machine")


def resolve(device: str) -> str:
    """``auto``/``cpu``/``gpu`` → ``cpu`` or ``gpu`` as it will run (imports torch)."""
    import torch

    cuda = torch.cuda.is_available()
    if device == "gpu" and not cuda:
        raise _no_gpu(f"torch {torch.__version__} sees none")
    return "gpu" if device == "gpu" or (device == "auto" and cuda) else "cpu"


def on_cuda(accelerator: str) -> bool:
    """Whether ``trainer.accelerator`` (``auto``/``cpu``/``gpu``) runs on a CUDA GPU here (imports torch)."""
    return resolve(normalise(accelerator, "trainer.accelerator")) == "gpu"


def torch_device(device: str) -> str:
    """The torch device string (``cuda`` or ``cpu``) for a vocabulary name."""
    return "cuda" if resolve(device) == "gpu" else "cpu"
