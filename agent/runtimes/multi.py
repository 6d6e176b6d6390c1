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

import trio

import vmimages
from agent.runtimes.base import (
    FileInfo,
    FileReader,
    FileWriter,
    Process,
    ProcessSpec,
    PtyProcess,
    PtySpec,
    Runtime,
    RuntimeFailure,
    SandboxGone,
    SandboxSpec,
)


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

    async def adopt(self, started_id: str, sandbox_id: str) -> None:
        runtime = self.owner(started_id)
        await runtime.adopt(started_id, sandbox_id)
        self._owner[sandbox_id] = self._owner.pop(started_id)

    async def spawn(self, sandbox_id: str, spec: ProcessSpec) -> Process:
        return await self.owner(sandbox_id).spawn(sandbox_id, spec)

    async def spawn_pty(self, sandbox_id: str, spec: PtySpec) -> PtyProcess:
        return await self.owner(sandbox_id).spawn_pty(sandbox_id, spec)

    async def open_port(self, sandbox_id: str, port: int) -> trio.abc.Stream:
        return await self.owner(sandbox_id).open_port(sandbox_id, port)

    async def open_file(self, sandbox_id: str, path: str) -> FileReader:
        return await self.owner(sandbox_id).open_file(sandbox_id, path)

    async def create_file(self, sandbox_id: str, path: str, *, parents: bool) -> FileWriter:
        return await self.owner(sandbox_id).create_file(sandbox_id, path, parents=parents)

    async def stat(self, sandbox_id: str, path: str) -> FileInfo:
        return await self.owner(sandbox_id).stat(sandbox_id, path)

    async def list_dir(self, sandbox_id: str, path: str, limit: int) -> tuple[list[FileInfo], bool]:
        return await self.owner(sandbox_id).list_dir(sandbox_id, path, limit)

    async def mkdir(self, sandbox_id: str, path: str, *, parents: bool) -> None:
        await self.owner(sandbox_id).mkdir(sandbox_id, path, parents=parents)

    async def remove(self, sandbox_id: str, path: str, *, recursive: bool) -> None:
        await self.owner(sandbox_id).remove(sandbox_id, path, recursive=recursive)

    async def rename(self, sandbox_id: str, source: str, target: str, *, overwrite: bool) -> None:
        await self.owner(sandbox_id).rename(sandbox_id, source, target, overwrite=overwrite)

    async def archive(self, sandbox_id: str, path: str) -> Process:
        return await self.owner(sandbox_id).archive(sandbox_id, path)

    async def extract(self, sandbox_id: str, path: str) -> Process:
        return await self.owner(sandbox_id).extract(sandbox_id, path)

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
