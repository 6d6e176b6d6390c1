"""Build the agent's runtimes from its configuration.

The qemu runtime needs a machine to run VMs on, which a probe finds by
booting a VM image's kernel: with no VM image built on this host there is
nothing to boot (and nothing a VM session could start from), so the runtime
is left out until one is.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import trio

import vmimages
import vmimages.bundle
from agent.config import AgentConfig
from agent.runtimes.base import Runtime
from agent.runtimes.lxc.runtime import LxcRuntime
from agent.runtimes.multi import RuntimeSet
from agent.runtimes.qemu import machine
from agent.runtimes.qemu.jail import VmUids
from agent.runtimes.qemu.runtime import QemuRuntime
from agent.storage.idmap import IdMap
from agent.storage.scratch import ScratchVolume
from vmimages.recipes import VmRecipe
from vmimages.vm import files

log = logging.getLogger(__name__)


async def start_runtimes(config: AgentConfig, nursery: trio.Nursery, scratch: ScratchVolume | None) -> RuntimeSet:
    """The configured runtimes; ones with background tasks run in ``nursery``."""
    runtimes: dict[str, Runtime] = {}
    if "lxc" in config.runtimes:
        lxc = await _lxc_runtime(config, scratch)
        await nursery.start(lxc.run)
        runtimes["lxc"] = lxc
    if "qemu" in config.runtimes:
        qemu = await _qemu_runtime(config)
        if qemu is not None:
            await nursery.start(qemu.run)
            runtimes["qemu"] = qemu
    return RuntimeSet(runtimes)


async def _lxc_runtime(config: AgentConfig, scratch: ScratchVolume | None) -> LxcRuntime:
    """The lxc runtime, with the in-sandbox agent's bundle and every built image's
    shifted copy ready (each made once per host: the first start takes longer)."""
    runtime = LxcRuntime(
        config.state_dir / "lxc",
        await _bundle(config),
        IdMap(config.container_id_first, config.container_id_count),
        scratch=scratch,
        start_timeout=config.start_timeout,
    )
    for recipe in vmimages.RECIPES.values():
        if recipe.runtime == "lxc" and vmimages.is_built(config.images_dir, recipe):
            await runtime.prepare_image(vmimages.root_of(config.images_dir, recipe))
    return runtime


async def _bundle(config: AgentConfig) -> Path:
    """The in-sandbox agent's bundle every sandbox runs its agent from: the configured one, or built here once."""
    if config.sandbox_bundle is not None:
        return config.sandbox_bundle
    return await trio.to_thread.run_sync(vmimages.bundle.build, config.images_dir)


def refusals(runtimes: RuntimeSet) -> dict[str, str]:
    """The runtimes that run here but take no new sandboxes, and why (for ``ImageStore``)."""
    qemu = runtimes.runtimes.get("qemu")
    if isinstance(qemu, QemuRuntime) and qemu.refusal is not None:
        return {"qemu": qemu.refusal}
    return {}


def qemu_run_dir(config: AgentConfig) -> Path:
    """The agent's VM socket dir: one per state dir, so agents sharing a host
    never take each other's sockets for their own debris."""
    agent_key = hashlib.sha256(str(config.state_dir.resolve()).encode()).hexdigest()[:12]
    return config.run_dir / f"vm-{agent_key}"


async def _qemu_runtime(config: AgentConfig) -> QemuRuntime | None:
    built = [
        r for r in vmimages.RECIPES.values() if isinstance(r, VmRecipe) and vmimages.is_built(config.images_dir, r)
    ]
    if not built:
        log.info("no VM image is built in %s: the qemu runtime is off", config.images_dir)
        return None
    image = files(config.images_dir, built[0])
    found = await machine.probe(config.qemu_binary, image.kernel, image.initrd, config.run_dir / "machine.json")
    return QemuRuntime(
        config.state_dir / "qemu",
        qemu_run_dir(config),
        found,
        bundle=await _bundle(config),
        memory_mb=config.vm_memory_mb,
        vcpus=config.vm_vcpus,
        qemu=config.qemu_binary,
        warm_start=config.vm_warm_start,
        uids=VmUids(config.vm_uid_first, config.vm_uid_count, config.run_dir / "vm-uids.lock"),
        allow_tcg=config.vm_allow_tcg,
    )
