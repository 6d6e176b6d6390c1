"""Several runtimes behind the one ``Runtime`` the agent is written against.

A host runs LXC containers and QEMU microVMs side by side; which one a
sandbox gets is a property of its image (``Recipe.runtime``). The set sends
``create`` to the image's runtime and remembers the owner of each sandbox,
so everything else addressed by id reaches the right runtime, and nothing
above this (the sandbox book, exec, the API) asks which runtime it has.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager

import vmimages
from agent.runtimes.base import Process, ProcessSpec, Runtime, RuntimeFailure, SandboxGone, SandboxSpec


class RuntimeSet(Runtime):
    def __init__(self, runtimes: Mapping[str, Runtime]) -> None:
        self.runtimes = dict(runtimes)
        self.name = "+".join(self.runtimes)
        self._owner: dict[str, Runtime] = {}

    def describe(self) -> dict[str, dict[str, object]]:
        return {name: info for runtime in self.runtimes.values() for name, info in runtime.describe().items()}

    def runtime_for(self, image: str) -> Runtime:
        recipe = vmimages.resolve(image)
        name = recipe.runtime if recipe is not None else "lxc"
        if name not in self.runtimes:
            raise RuntimeFailure(f"image {image} needs the {name} runtime, which this agent does not run")
        return self.runtimes[name]

    def owner(self, sandbox_id: str) -> Runtime:
        runtime = self._owner.get(sandbox_id)
        if runtime is None:
            raise SandboxGone(f"sandbox {sandbox_id} does not exist")
        return runtime

    def workspace_as_device(self, image: str) -> bool:
        return self.runtime_for(image).workspace_as_device(image)

    def frozen(self, sandbox_id: str, path: str) -> AbstractAsyncContextManager[None]:
        return self.owner(sandbox_id).frozen(sandbox_id, path)

    async def create(self, spec: SandboxSpec) -> None:
        runtime = self.runtime_for(spec.image)
        self._owner[spec.id] = runtime
        await runtime.create(spec)

    async def start(self, sandbox_id: str) -> None:
        await self.owner(sandbox_id).start(sandbox_id)

    async def spawn(self, sandbox_id: str, spec: ProcessSpec) -> Process:
        return await self.owner(sandbox_id).spawn(sandbox_id, spec)

    async def pause(self, sandbox_id: str) -> None:
        await self.owner(sandbox_id).pause(sandbox_id)

    async def resume(self, sandbox_id: str) -> None:
        await self.owner(sandbox_id).resume(sandbox_id)

    async def fork(self, source_id: str, spec: SandboxSpec) -> None:
        runtime = self.owner(source_id)
        self._owner[spec.id] = runtime
        await runtime.fork(source_id, spec)

    async def destroy(self, sandbox_id: str) -> None:
        owner = self._owner.get(sandbox_id)
        for runtime in [owner] if owner is not None else self.runtimes.values():
            await runtime.destroy(sandbox_id)
        self._owner.pop(sandbox_id, None)

    async def running(self) -> set[str]:
        return set().union(*[await r.running() for r in self.runtimes.values()])

    async def leftovers(self) -> set[str]:
        """All runtimes' leftovers; also how owners are learnt after a restart."""
        found: set[str] = set()
        for runtime in self.runtimes.values():
            for sandbox_id in await runtime.leftovers():
                self._owner.setdefault(sandbox_id, runtime)
                found.add(sandbox_id)
        return found
