"""Process-group setup under torchrun, DDP / FSDP2 wrapping, and launching torchrun ourselves."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    local_world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def die_with_parent() -> None:
    """Under torchrun every rank runs in a session of its own, so a SIGKILL to the launcher (which it
    cannot forward) would leave the ranks training on, orphaned, and a rerun would then write into
    the same run beside them. On Linux, ask the kernel to SIGKILL this rank when its parent (the
    torchrun agent) dies; exit at once if it already has."""
    if not sys.platform.startswith("linux") or "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    import ctypes
    import signal

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        if libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):  # no prctl: nothing to ask for
        return
    if parent == 1 or os.getppid() != parent:
        os._exit(1)


def setup() -> Dist:
    """Read torchrun's environment; start the process group (NCCL on GPUs, gloo on CPUs)."""
    import torch

    die_with_parent()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    return Dist(rank, world, local_rank, local_world, device)


def teardown() -> None:
    import torch

    dcp = sys.modules.get("midtrain.train.dcp")
    if dcp is not None:  # asynchronous checkpoint writes use a process group: let them end first
        dcp.drain()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def threads_per_process(requested: int | None, local_world: int) -> int:
    """torch threads for one process: `requested` (RunSpec.threads / --threads), else the
    MIDTRAIN_THREADS environment variable, else this node's cores ÷ its processes (oversubscription
    is brutal). The one place midtrain decides a thread count."""
    if requested:
        return requested
    env = os.environ.get("MIDTRAIN_THREADS")
    if env:
        return max(1, int(env))
    return max(1, (os.cpu_count() or 1) // max(local_world, 1))


def choose_strategy(strategy: str, world: int, parameters: int, device: torch.device) -> str:
    """auto: nothing on one process; FSDP2 for models of a billion parameters or more on GPUs; else DDP."""
    if world == 1:
        return "none"
    if strategy != "auto":
        return strategy
    return "fsdp" if device.type == "cuda" and parameters >= 1_000_000_000 else "ddp"


def wrap(model: torch.nn.Module, strategy: str, dist: Dist, precision: str) -> torch.nn.Module:
    import torch

    if strategy == "none":
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(dist.device.type, (dist.world,))
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if precision == "bf16"
        else MixedPrecisionPolicy()
    )
    layers = getattr(getattr(model, "model", None), "layers", None)
    for layer in layers or []:
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def all_reduce_sum(value: float, dist: Dist) -> float:
    import torch

    if dist.world == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=dist.device)
    torch.distributed.all_reduce(tensor)
    return float(tensor.item())


def launch(
    argv: list[str],
    nproc_per_node: int,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str = "127.0.0.1",
    master_port: int = 29500,
    threads: int | None = None,
) -> int:
    """Run `python -m midtrain.train.entry ARGV` under torchrun; returns its exit status."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={nproc_per_node}",
        f"--nnodes={nnodes}",
        f"--node-rank={node_rank}",
        f"--master-addr={master_addr}",
        f"--master-port={master_port}",
        "-m",
        "midtrain.train.entry",
        *argv,
    ]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(threads or threads_per_process(None, nproc_per_node)))
    env.setdefault("MIDTRAIN_THREADS", env["OMP_NUM_THREADS"])
    print("launching: " + shlex.join(command), file=sys.stderr, flush=True)
    return subprocess.call(command, env=env)
