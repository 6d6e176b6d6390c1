"""MicroVM latency through the qemu runtime, next to bare QEMU on the same host.

Each round, interleaved so that all see the same host conditions:

- bare QEMU: the same kernel and initramfs on the same machine type,
  started directly, timed to the first line ``/init`` prints (the kernel's
  boot) — the floor under anything we do;
- cold boot: ``QemuRuntime.create`` + ``start`` until the guest agent
  answered (exec-ready), then the first exec of ``true``;
- pause: the guest agent told, VM state saved to a file (size reported);
- resume from that snapshot until exec-ready, then the first exec;
- warm start: a new sandbox forked from the image's template (a snapshot of
  a booted guest, built once before the rounds) until exec-ready.

The differences are what Chaser adds: boot→agent-ready minus bare boot is
our initramfs, overlay root and guest agent; resume vs cold boot is what
snapshots buy. Absolute figures depend on the accelerator (this prints which:
TCG where KVM cannot run the guest) and the host; nothing here judges them.
Every VM has its NIC wired to nothing (no network slot: the runtime alone);
everything stays on this host.

    python -m benchmarks.bench_vm --rounds 5 [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

import vmimages
import vmimages.bundle
from agent.runtimes.base import ProcessSpec, SandboxSpec
from agent.runtimes.execution import collect
from agent.runtimes.qemu import machine
from agent.runtimes.qemu.command import KERNEL_CMDLINE
from agent.runtimes.qemu.runtime import QemuRuntime
from benchmarks.bench_sessions import Row, Samples, aligned, fail_on_sigterm, percentile
from vmimages.vm import VmImageFiles

IMAGES_DIR = Path("/var/lib/chaser/images")
IMAGE = "default-vm"
INIT_STARTED = b"chaser-init: started"
ENV = {"PATH": "/usr/bin:/bin"}
BARE_TIMEOUT = 120.0

ROWS = (
    Row("cold boot → guest agent ready", "boot_ready", "bare QEMU: kernel → /init", "bare_init"),
    Row("cold boot → first exec done", "boot_exec", "bare QEMU: kernel → /init", "bare_init"),
    Row("resume → guest agent ready", "resume_ready", "cold boot → guest agent ready", "boot_ready"),
    Row("resume → first exec done", "resume_exec", "cold boot → first exec done", "boot_exec"),
    Row("warm start (template) → first exec", "warm_exec", "cold boot → first exec done", "boot_exec"),
    Row("pause (state → file)", "pause", "resume → guest agent ready", "resume_ready"),
)


async def bare_boot(qemu: str, m: machine.Machine, files: VmImageFiles, memory_mb: int) -> float:
    """Seconds from starting QEMU to the first line of /init on its serial console."""
    argv = [
        qemu, "-machine", f"{m.machine},accel={m.accel}", "-cpu", m.cpu, "-m", str(memory_mb), "-smp", "1",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-nic", "none", "-serial", "stdio",
        "-kernel", str(files.kernel), "-initrd", str(files.initrd), "-append", f"{KERNEL_CMDLINE} chaser.probe",
    ]  # fmt: skip
    started = time.perf_counter()
    seen = bytearray()
    with trio.fail_after(BARE_TIMEOUT):
        process = await trio.lowlevel.open_process(argv, stdout=-1, stdin=-3)  # PIPE, DEVNULL
        try:
            assert process.stdout is not None
            while INIT_STARTED not in seen:
                chunk = await process.stdout.receive_some()
                if not chunk:
                    raise RuntimeError(f"bare QEMU ended before /init: {bytes(seen[-500:])!r}")
                seen += chunk
            elapsed = time.perf_counter() - started
            await process.wait()  # the probe powers off right after
        finally:
            with trio.CancelScope(shield=True):
                process.kill()
                await process.wait()
    return elapsed


async def exec_true(runtime: QemuRuntime, sandbox_id: str) -> None:
    process = await runtime.spawn(sandbox_id, ProcessSpec(argv=["true"], env=ENV))
    result = await collect(process, 60, 1024)
    if result.exit_code != 0:
        raise RuntimeError(f"`true` exited {result.exit_code}: {result.output!r}")


async def vm_round(runtime: QemuRuntime, image: SandboxSpec, samples: Samples, sizes: list[int]) -> None:
    sandbox = SandboxSpec(id=str(uuid.uuid4()), image=image.image, rootfs=image.rootfs)
    try:
        await runtime.create(sandbox)
        t0 = time.perf_counter()
        await runtime.start(sandbox.id)
        t1 = time.perf_counter()
        await exec_true(runtime, sandbox.id)
        t2 = time.perf_counter()
        await runtime.pause(sandbox.id)
        t3 = time.perf_counter()
        sizes.append(runtime.paths(sandbox.id).memory.stat().st_size)
        await runtime.resume(sandbox.id)
        t4 = time.perf_counter()
        await exec_true(runtime, sandbox.id)
        t5 = time.perf_counter()
    finally:
        with trio.CancelScope(shield=True):
            await runtime.destroy(sandbox.id)
    samples["boot_ready"].append(t1 - t0)
    samples["boot_exec"].append(t2 - t0)
    samples["pause"].append(t3 - t2)
    samples["resume_ready"].append(t4 - t3)
    samples["resume_exec"].append(t5 - t3)


async def warm_round(runtime: QemuRuntime, image: SandboxSpec, samples: Samples) -> None:
    sandbox = SandboxSpec(id=str(uuid.uuid4()), image=image.image, rootfs=image.rootfs)
    try:
        t0 = time.perf_counter()
        await runtime.create(sandbox)
        if not runtime.paths(sandbox.id).memory.exists():
            raise RuntimeError("no template to start from: the warm start would be a cold boot")
        await runtime.start(sandbox.id)
        await exec_true(runtime, sandbox.id)
        samples["warm_exec"].append(time.perf_counter() - t0)
    finally:
        with trio.CancelScope(shield=True):
            await runtime.destroy(sandbox.id)


async def build_template(runtime: QemuRuntime, image: SandboxSpec) -> None:
    """One cold create makes the runtime build the image's template; wait for it."""
    sandbox = SandboxSpec(id=str(uuid.uuid4()), image=image.image, rootfs=image.rootfs)
    await runtime.create(sandbox)
    await runtime.destroy(sandbox.id)
    with trio.fail_after(300):
        while not any(runtime.templates_dir.glob("*/memory.snap")):
            await trio.sleep(0.2)


@dataclass
class Result:
    samples: Samples
    sizes: list[int]
    accel: str
    machine: str
    leaked: list[str]


async def run(rounds: int, warmup: int, memory_mb: int) -> Result:
    recipe = vmimages.resolve(IMAGE)
    assert recipe is not None
    if not vmimages.is_built(IMAGES_DIR, recipe):
        raise SystemExit(f"build the VM image first: chaser-agent build-image {IMAGE}")
    disk = vmimages.root_of(IMAGES_DIR, recipe)
    files = VmImageFiles(disk)
    image = SandboxSpec(id="", image=recipe.name, rootfs=disk)
    state = Path(tempfile.mkdtemp(prefix="chaser-bench-vm-"))
    run_dir = Path("/run/chaser") / f"bench-{uuid.uuid4().hex[:8]}"
    qemu = "qemu-system-x86_64"
    found = await machine.probe(qemu, files.kernel, files.initrd, Path("/run/chaser/machine.json"))
    bundle = vmimages.bundle.build(IMAGES_DIR)
    samples: Samples = defaultdict(list)
    sizes: list[int] = []
    # Two runtimes: one always boots cold, the other starts from its template.
    make = partial(QemuRuntime, run_dir=run_dir, machine=found, bundle=bundle, memory_mb=memory_mb, vcpus=1, qemu=qemu)
    cold, warm = (make(state / name, warm_start=name == "warm") for name in ("cold", "warm"))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(fail_on_sigterm)
            await nursery.start(cold.run)
            await nursery.start(warm.run)
            print("building the warm start template", file=sys.stderr)
            await build_template(warm, image)
            for i in range(warmup + rounds):
                print(f"round {i + 1 - warmup}/{rounds}" if i >= warmup else "warm-up", file=sys.stderr)
                into: Samples = samples if i >= warmup else defaultdict(list)
                into["bare_init"].append(await bare_boot(qemu, found, files, memory_mb))
                await vm_round(cold, image, into, sizes if i >= warmup else [])
                await warm_round(warm, image, into)
            leaked = sorted(await cold.leftovers() | await warm.leftovers())
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            for runtime in (cold, warm):
                for sandbox_id in await runtime.leftovers():
                    await runtime.destroy(sandbox_id)
        shutil.rmtree(state)
    return Result(samples, sizes, found.accel, found.machine, leaked)


def summarize(result: Result, rounds: int, memory_mb: int) -> dict[str, Any]:
    rows = []
    for row in ROWS:
        ours, base = result.samples[row.metric], result.samples[row.baseline_metric]
        p50, base_p50 = percentile(ours, 0.5) * 1000, percentile(base, 0.5) * 1000
        rows.append(
            {
                "path": row.label,
                "n": len(ours),
                "p50_ms": round(p50, 1),
                "p95_ms": round(percentile(ours, 0.95) * 1000, 1),
                "baseline": row.baseline_label,
                "baseline_p50_ms": round(base_p50, 1),
                "ratio_p50": round(p50 / base_p50, 2),
            }
        )
    return {
        "rounds": rounds,
        "accel": result.accel,
        "machine": result.machine,
        "memory_mb": memory_mb,
        "snapshot_mib_p50": round(percentile(result.sizes, 0.5) / (1 << 20), 1),
        "rows": rows,
        "leaked": result.leaked,
    }


def table(summary: dict[str, Any]) -> str:
    header = ("path", "n", "p50 ms", "p95 ms", "compared with", "p50 ms", "ratio p50")
    lines = [header] + [
        (
            r["path"],
            str(r["n"]),
            f"{r['p50_ms']:.0f}",
            f"{r['p95_ms']:.0f}",
            r["baseline"],
            f"{r['baseline_p50_ms']:.0f}",
            f"{r['ratio_p50']:.2f}x",
        )
        for r in summary["rows"]
    ]
    text = aligned(lines, left=(0, 4))
    text.append(
        f"\n{summary['rounds']} rounds, accel={summary['accel']} machine={summary['machine']}, "
        f"{summary['memory_mb']} MiB guests; memory snapshot p50 {summary['snapshot_mib_p50']} MiB; "
        f"left behind: {', '.join(summary['leaked']) or 'none'}"
    )
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_vm", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first (default 1)")
    parser.add_argument("--memory-mb", type=int, default=256, help="guest memory (default 256)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be at least 1, --warmup at least 0")
    result = trio.run(run, args.rounds, args.warmup, args.memory_mb)
    summary = summarize(result, args.rounds, args.memory_mb)
    print(json.dumps(summary, indent=2, ensure_ascii=False) if args.json else table(summary))
    return 1 if result.leaked else 0


if __name__ == "__main__":
    sys.exit(main())
