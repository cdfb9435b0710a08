"""What arm64_check.py builds once and caches: a Debian bookworm arm64 root file system (mmdebstrap, run under
qemu-user), the aarch64 and x86_64 wheels of each runtime, and one venv per runtime inside the root file system and
on the host. Every piece is built in a temporary folder and renamed when complete, so an interrupted build leaves
nothing half-made. Standard library only."""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE, PYTHON = "bookworm", "3.11"  # bookworm's python3 is 3.11; its glibc is 2.36
GLIBC = (2, 36)
MIRROR = "http://deb.debian.org/debian"
RUNTIMES = {  # name: (the packages pip installs, the module bench_tflite.py will find)
    "ai-edge-litert": (["numpy", "ai-edge-litert"], "ai_edge_litert.interpreter"),
    "tflite-runtime": (["numpy<2", "tflite-runtime"], "tflite_runtime.interpreter"),
}


class CheckError(Exception):
    """One line naming the problem and what to install or run."""


def manylinux_tags(arch: str = "aarch64", glibc: tuple[int, int] = GLIBC) -> list[str]:
    """Every manylinux platform tag a glibc-`glibc` system accepts, oldest first: pip download takes only the tags it
    is given, so each one from 2_17 (manylinux2014) to the target's glibc must be listed."""
    return [f"manylinux2014_{arch}"] + [f"manylinux_2_{minor}_{arch}" for minor in range(17, glibc[1] + 1)]


def pip_download_command(packages: list[str], dest: Path, arch: str) -> list[str]:
    platforms = [arg for tag in manylinux_tags(arch) for arg in ("--platform", tag)]
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--only-binary=:all:",
        "--python-version",
        PYTHON,
        *platforms,
        "--dest",
        str(dest),
        *packages,
    ]


def mmdebstrap_command(target: Path) -> list[str]:
    return [
        "mmdebstrap",
        "--arch=arm64",
        "--variant=minbase",
        "--include=python3,python3-venv",
        "--quiet",
        SUITE,
        str(target),
        MIRROR,
    ]


def chroot_command(root: Path, argv: list[str], cwd: str = "/") -> list[str]:
    """A command inside the arm64 root file system with a clean environment; qemu runs it through binfmt_misc."""
    return [
        "chroot",
        str(root),
        "/usr/bin/env",
        "-i",
        "PATH=/usr/local/bin:/usr/bin:/bin",
        "HOME=/root",
        "LANG=C.UTF-8",
        "/bin/sh",
        "-c",
        f"cd {shlex.quote(cwd)} && exec {shlex.join(argv)}",
    ]


def run_tool(cmd: list[str], what: str, timeout: int = 3600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()][-1:] or ["no output"]
        raise CheckError(f"{what} failed (exit {proc.returncode}): {tail[0][:300]}")
    return proc


def built_once(final: Path, build, what: str) -> Path:
    """`build(tmp)` into a temporary sibling of `final`, renamed to `final` when it returns: nothing half-built."""
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}-*"):  # left by a build that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    start = time.perf_counter()
    print(f"arm64: building {what} ...", file=sys.stderr)
    try:
        build(tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"arm64: {what} built in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return final


def rootfs(cache: Path) -> Path:
    def build(tmp: Path) -> None:
        os.rmdir(tmp)  # mmdebstrap wants to make the directory itself
        try:
            run_tool(mmdebstrap_command(tmp), "mmdebstrap (bookworm arm64)")
        finally:
            tmp.mkdir(exist_ok=True)  # for built_once's clean-up or rename

    return built_once(cache / "rootfs", build, f"the {SUITE} arm64 root file system (mmdebstrap, a few minutes)")


def wheels(cache: Path, runtime: str, arch: str) -> Path:
    packages = RUNTIMES[runtime][0]
    return built_once(
        cache / "wheels" / f"{runtime}-{arch}",
        lambda tmp: run_tool(pip_download_command(packages, tmp, arch), f"pip download {runtime} ({arch})"),
        f"{arch} wheels for {runtime}",
    )


def venv_once(final: Path, build, what: str) -> None:
    """A venv names its own path in its scripts, so it is built in place and marked complete last; one without the
    marker (an interrupted build) is removed and built again."""
    marker = final / ".complete"
    if marker.exists():
        return
    start = time.perf_counter()
    print(f"arm64: building {what} ...", file=sys.stderr)
    shutil.rmtree(final, ignore_errors=True)
    try:
        build()
        marker.write_text("ok\n")
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
    print(f"arm64: {what} built in {time.perf_counter() - start:.0f} s", file=sys.stderr)


def arm64_venv(root: Path, runtime: str, wheel_dir: Path) -> str:
    """/opt/<runtime> inside the root file system, installed from the downloaded wheels (no network inside)."""
    venv, inside = f"/opt/{runtime}", root / "wheels" / runtime

    def build() -> None:
        shutil.rmtree(inside, ignore_errors=True)
        shutil.copytree(wheel_dir, inside)
        try:
            run_tool(chroot_command(root, ["python3", "-m", "venv", venv]), f"python3 -m venv ({runtime}, arm64)")
            run_tool(
                chroot_command(
                    root,
                    [
                        f"{venv}/bin/pip",
                        "install",
                        "--quiet",
                        "--no-index",
                        "--find-links",
                        f"/wheels/{runtime}",
                        *RUNTIMES[runtime][0],
                    ],
                ),
                f"pip install {runtime} (arm64)",
            )
        finally:
            shutil.rmtree(inside, ignore_errors=True)

    venv_once(root / venv.lstrip("/"), build, f"the arm64 venv for {runtime} (under emulation)")
    return f"{venv}/bin/python"


def host_venv(cache: Path, runtime: str) -> Path:
    """The same runtime on this x86_64 host, from its own downloaded wheels: the image-by-image reference."""
    wheel_dir, final = wheels(cache, runtime, platform.machine()), cache / "host" / runtime

    def build() -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        python = shutil.which(f"python{PYTHON}") or sys.executable
        run_tool([python, "-m", "venv", str(final)], f"venv ({runtime}, host)")
        run_tool(
            [
                str(final / "bin" / "pip"),
                "install",
                "--quiet",
                "--no-index",
                "--find-links",
                str(wheel_dir),
                *RUNTIMES[runtime][0],
            ],
            f"pip install {runtime} (host)",
        )

    venv_once(final, build, f"the host venv for {runtime}")
    return final / "bin" / "python"
