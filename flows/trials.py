"""Throwaway workspaces for sweep trials, so a sweep never touches the project's own files.

A workspace is a copy of the project's tree (sources, `dvc.yaml`, `dvc.lock`, `params.yaml`, the
corpus and every DVC-tracked input, including `dvc add`-ed and `dvc import-url`-ed files) without
its git folder, virtual environment, MLflow store and the outputs of the stages a trial re-runs.
Large files are hard links (nothing in a workspace writes into an existing file: DVC deletes a
stage's outputs before re-running it and rnnpipe writes by atomic rename), and the workspace uses
the project's DVC cache, so a trial's outputs can be checked out in the project afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from flows.stages import stage_environment
from rnnpipe.errors import ERROR_FILE_ENV, StepFailed, read_error_record

# Never copied: version control, environments, stores, caches, local state.
SKIPPED = {".git", ".venv", "venv", "mlruns", ".rnnpipe", "dvc_plots", "__pycache__",
           ".pytest_cache", ".ruff_cache", ".hypothesis", ".stack", ".mypy_cache"}
COPIED = ("dvc.yaml", "dvc.lock", "params.yaml", ".dvcignore")  # rewritten: real copies


def project_cache(project: Path) -> str:
    """The project's DVC cache folder."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        return str(repo.cache.local_cache_dir)


def stage_outputs(project: Path, stages: tuple[str, ...]) -> set[str]:
    """The outputs (relative paths) of the named pipeline stages."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        return {os.path.relpath(out.fs_path, project) for stage in repo.index.stages
                if getattr(stage, "name", None) in stages for out in stage.outs}


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)
    return dst


def make_workspace(source: Path, workdir: Path, cache_dir: str,
                   leave_out: set[str] = frozenset(), remotes: dict | None = None) -> Path:
    """Copy `source`'s tree into `workdir` (see the module docstring) without `leave_out`
    (relative paths), and make it a DVC repository on `cache_dir` with `remotes`
    (`remote_config`; a trial's copy keeps the base's)."""
    skipped = {Path(p) for p in leave_out}

    def ignore(folder: str, names: list[str]) -> set[str]:
        rel = Path(os.path.relpath(folder, source))
        out = {n for n in names if n in SKIPPED or n.endswith(".egg-info")
               or (rel / n).as_posix() in {s.as_posix() for s in skipped}}
        if rel == Path("."):
            out.add(".dvc")
        return out

    shutil.copytree(source, workdir, ignore=ignore, copy_function=_link_or_copy,
                    dirs_exist_ok=True, symlinks=True)
    for name in COPIED:  # DVC rewrites these in place: never share their inode
        target = workdir / name
        if target.exists():
            target.unlink()
            shutil.copy2(source / name, target)
    write_dvc_config(workdir, cache_dir, remotes)
    return workdir


def uncached_outputs(workdir: Path) -> dict[str, dict[str, bytes]]:
    """The stage outputs DVC does not cache (`cache: false`: the reports, kept in git), which
    `dvc checkout` cannot restore in another checkout: `{output: {file: bytes}}`, paths relative
    to `workdir`."""
    from dvc.repo import Repo

    found: dict[str, dict[str, bytes]] = {}
    with Repo(str(workdir)) as repo:
        for stage in repo.index.stages:
            for out in stage.outs:
                path = Path(out.fs_path)
                if out.use_cache or not path.exists():
                    continue
                files = sorted(p for p in path.rglob("*") if p.is_file()) \
                    if path.is_dir() else [path]
                found[path.relative_to(workdir).as_posix()] = {
                    f.relative_to(workdir).as_posix(): f.read_bytes() for f in files}
    return found


def restore_outputs(project: Path, outputs: dict[str, dict[str, bytes]]) -> None:
    """Write what `uncached_outputs` returned into `project`, replacing those outputs."""
    from rnnpipe.io import atomic_path

    for out, files in outputs.items():
        target = project / out
        if target.is_dir():
            shutil.rmtree(target)
        for rel, data in files.items():
            with atomic_path(project / rel) as tmp:
                tmp.write_bytes(data)


BUNDLE_SKIPPED = {".dvc/tmp", ".dvc/cache"}


def remote_config(project: Path) -> dict:
    """The DVC remotes of the project's committed `.dvc/config` and its default remote (not
    `config.local`: credentials stay on this machine; a worker brings its own through its
    environment)."""
    from configobj import ConfigObj

    config = ConfigObj(str(project / ".dvc" / "config"))
    remotes = {name: dict(section) for name, section in config.items()
               if name.startswith("remote ")}
    default = config.get("core", {}).get("remote")
    return {"remotes": remotes, "default": default}


def write_dvc_config(workdir: Path, cache_dir: str, remotes: dict | None = None) -> None:
    """`.dvc/config` of a workspace: no git, no analytics, this cache, the project's remotes."""
    from configobj import ConfigObj

    dvc_dir = workdir / ".dvc"
    dvc_dir.mkdir(exist_ok=True)
    config = ConfigObj(encoding="utf-8")
    config.filename = str(dvc_dir / "config")
    config["core"] = {"no_scm": "true", "analytics": "false", "check_update": "false",
                      "site_cache_dir": str(dvc_dir / "tmp" / "site")}
    if remotes and remotes.get("default"):
        config["core"]["remote"] = remotes["default"]
    for name, section in (remotes or {}).get("remotes", {}).items():
        config[name] = section
    config["cache"] = {"dir": cache_dir}
    config.write()


def bundle(workdir: Path, destination: Path) -> Path:
    """`workdir` as a `.tar.gz` a worker that cannot see this machine's folders unpacks
    (`unbundle`): the code, params, `dvc.yaml`/`dvc.lock` and the shared stages' outputs."""
    import tarfile

    def skip(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        name = info.name.removeprefix("./")
        return None if any(name == s or name.startswith(s + "/") for s in BUNDLE_SKIPPED) \
            else info

    from rnnpipe.io import atomic_path

    with atomic_path(destination) as tmp, tarfile.open(tmp, "w:gz") as tar:
        tar.add(workdir, arcname=".", filter=skip)
    return destination


def unbundle(archive: Path, workdir: Path) -> Path:
    """Unpack a `bundle` into `workdir`: a DVC repository with a private cache, and the
    project's remotes (kept from the bundle's `.dvc/config`)."""
    import tarfile

    with tarfile.open(archive) as tar:
        tar.extractall(workdir, filter="data")
    write_dvc_config(workdir, str(workdir / ".dvc" / "cache"), remote_config(workdir))
    return workdir


def repro(workdir: Path, target: str, env: dict[str, str] | None = None) -> str:
    """`dvc repro <target>` in a workspace as a subprocess; the step's own error is raised
    (`StepUserError` for bad params or data). Returns DVC's output."""
    with tempfile.TemporaryDirectory(prefix="rnnpipe-trial-") as tmp:
        error_file = os.path.join(tmp, "error.json")
        proc = subprocess.run(
            [sys.executable, "-m", "dvc", "repro", target], cwd=workdir,
            env={**os.environ, **stage_environment({**(env or {}), ERROR_FILE_ENV: error_file})},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        if proc.returncode != 0:
            record = read_error_record(error_file)
            if record is not None:
                raise record.exception()
            tail = "\n".join(proc.stdout.splitlines()[-20:])
            raise StepFailed(f"dvc repro {target} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout
