"""PPO's resumable state on disk, without pickle.

A state checkpoint is ``<state_dir>/checkpoint-<step>/`` holding the policy and value weights
(safetensors), every optimizer and scheduler state and each process's RNG states as a
"tree" (tensors in ``<name>.safetensors``, the rest in ``<name>.json``), and ``trainer_state.json``
(step, KL controller, score normalisation, log history). It is written into a temporary
folder and renamed into place, so a checkpoint folder is either complete or absent; older
ones are removed after a new one lands. Nothing here uses ``torch.save``/``torch.load``.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from harness.core.artifacts import write_json_atomic

PREFIX = "checkpoint-"
_CKPT = re.compile(rf"^{PREFIX}(\d+)$")


# --------------------------------------------------------------------------- tensor trees


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a PPO state checkpoint")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def save_tree(obj: Any, directory: Path, name: str) -> None:
    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(obj, tensors)
    save_file(tensors, str(directory / f"{name}.safetensors"))
    (directory / f"{name}.json").write_text(json.dumps(encoded), encoding="utf-8")


def load_tree(directory: Path, name: str) -> Any:
    tensors = load_file(str(directory / f"{name}.safetensors"))
    return _decode(json.loads((directory / f"{name}.json").read_text(encoding="utf-8")), tensors)


# --------------------------------------------------------------------------- RNG


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- checkpoints


def latest_checkpoint(state_dir: Path | None) -> Path | None:
    """The highest ``checkpoint-<step>`` folder (only complete ones exist under that name)."""
    if state_dir is None or not Path(state_dir).is_dir():
        return None
    found = [(int(m.group(1)), p) for p in Path(state_dir).iterdir() if p.is_dir() and (m := _CKPT.match(p.name))]
    return max(found)[1] if found else None


def checkpoint_tmp(state_dir: Path, step: int) -> Path:
    """The temporary folder a checkpoint is assembled in before it is renamed into place."""
    return Path(state_dir) / f".tmp-{PREFIX}{step}"


def begin_checkpoint(state_dir: Path, step: int) -> Path:
    """Main process: a fresh temporary folder for ``checkpoint-<step>``."""
    tmp = checkpoint_tmp(state_dir, step)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def save_rng(tmp: Path, process_index: int) -> None:
    """Every process: its RNG states into the temporary folder."""
    save_tree(rng_state(), tmp, f"rng-{process_index}")


def finish_checkpoint(
    state_dir: Path,
    step: int,
    modules: dict[str, torch.nn.Module],
    trees: dict[str, Any],
    meta: dict[str, Any],
) -> Path:
    """Main process: weights, trees and ``trainer_state.json`` into the temp folder, rename it, drop older ones."""
    tmp = checkpoint_tmp(state_dir, step)
    final = Path(state_dir) / f"{PREFIX}{step}"
    for name, module in modules.items():
        save_model(module, str(tmp / f"{name}.safetensors"))
    for name, tree in trees.items():
        save_tree(tree, tmp, name)
    write_json_atomic(tmp / "trainer_state.json", {**meta, "step": step})
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in Path(state_dir).iterdir():
        if old != final and old.is_dir() and (_CKPT.match(old.name) or old.name.startswith(f".tmp-{PREFIX}")):
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(ckpt: Path, modules: dict[str, torch.nn.Module]) -> dict[str, Any]:
    """Load weights into ``modules`` in place; returns ``trainer_state.json``'s contents."""
    for name, module in modules.items():
        missing, unexpected = load_model(module, str(ckpt / f"{name}.safetensors"), strict=True)
        if missing or unexpected:
            raise RuntimeError(f"{ckpt}/{name}.safetensors does not match the model: {missing=} {unexpected=}")
    return json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
