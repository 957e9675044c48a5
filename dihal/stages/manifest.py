"""Stage manifests: what a stage wrote, so whoever reads it later can tell it was changed since.

Why this exists: DVC does not re-check artifacts it has seen. A local cache object whose mode is
read-only (0444) is trusted without hashing (`dvc_data` `LocalHashFileDB.check`), and with the
old `cache.type = hardlink,copy` an artifact *is* its cache object (one inode), so truncating an
artifact in place (root ignores the read-only bit) truncates the cache too. `dvc repro` then sees
the output "modified", restores it from the dvc.lock / run-cache entry by checking out that same
damaged object, records the damaged file under the old md5 in its state db, and from then on says
"up to date"; deleting the folder checks the damaged object out again; even `dvc repro -f` only
fixes the workspace (the rerun's identical md5 is "already cached", so the bad object stays).

So every stage's output directory gets `manifest.json` (written by the stage dispatcher once the
stage has finished, so DVC tracks it as part of the out): each file's size and, for files up to
`HASH_LIMIT`, its sha256. Large files (per-layer hidden states) get a size check only: a stat,
which catches truncated and partly written files for free, where hashing them would cost a read
of every layer on every run. Readers verify before reading (`verify_inputs` in the dispatcher,
`verify_stages` in `dihal.ledger.ingest`), and `dihal run` repairs before `dvc repro`
(`repair_corrupted`). Outputs written before manifests existed have none and are accepted.

This module is imported lazily by the dispatcher, whose imports are not part of any stage's code
hash (`dihal.stages.identity`): checking never changes results, so editing it renames no stage.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

from dihal.utils.atomic import write_atomic
from dihal.utils.digest import file_sha256

FORKED_ENV = "DIHAL_ZYGOTE_CHILD"  # set by dihal.execute.zygote in the stages it forks

MANIFEST = "manifest.json"
HASH_LIMIT = 16 * 2**20  # bytes: files up to this size are hashed; larger ones are checked by size
VERSION = 1


# DVC's cache link type for dihal projects. With hardlinks (OLD_CACHE_TYPE, which older projects have) an artifact
# and its cache object are one inode, so an in-place edit of the artifact edits the cache; a reflink
# (copy-on-write, where the file system has it) or a copy keeps the cache's bytes apart.
CACHE_TYPE = "reflink,copy"
OLD_CACHE_TYPE = "hardlink,copy"


def upgrade_cache_type(root: Path, dvc_config) -> bool:
    """Switch a project still on dihal's old default cache type to CACHE_TYPE (any other choice is the
    user's and is left alone); `dvc_config(args)` runs `dvc config`. Reads `.dvc/config` as text, so the
    usual case costs no DVC call. Artifacts already hard-linked stay linked until `dvc checkout --relink`;
    their manifests still catch an in-place edit."""
    config = Path(root) / ".dvc" / "config"
    section, old = "", False
    for line in (config.read_text() if config.is_file() else "").splitlines():
        head = re.fullmatch(r"\s*\[(.+)\]\s*", line)
        section = head.group(1).strip() if head else section
        value = re.fullmatch(r"\s*type\s*=\s*(.*?)\s*", line)
        old = old or (section == "cache" and value is not None and value.group(1).strip("'\"") == OLD_CACHE_TYPE)
    if not old:
        return False
    dvc_config(["config", "cache.type", CACHE_TYPE])
    return True


class ArtifactCorrupted(RuntimeError):
    """A stage output no longer matches its manifest; the message names the stage, its out dir and the files."""

    def __init__(self, message: str, out: Path, problems: list[str]):
        super().__init__(message)
        self.out = out
        self.problems = problems


def _files(out: Path) -> list[str]:
    """Every file under `out` but the manifest, as sorted relative POSIX paths (DVC's `relpath`s)."""
    found = []
    for dirpath, _, names in os.walk(out):
        for name in names:
            rel = Path(dirpath, name).relative_to(out).as_posix()
            if rel != MANIFEST:
                found.append(rel)
    return sorted(found)


def describe(out: Path, hash_limit: int = HASH_LIMIT) -> dict:
    """The manifest of `out` as it is now."""
    files = {}
    for rel in _files(out):
        size = (out / rel).stat().st_size
        files[rel] = {"size": size, **({"sha256": file_sha256(out / rel)} if size <= hash_limit else {})}
    return {"version": VERSION, "hash_limit": hash_limit, "files": files}


def write(out: Path | str, kind: str, stage_hash: str, runtime: dict | None = None) -> Path:
    """Record what `out` holds, and how it was computed (`runtime`: threads, and whether the process was a fork);
    called once the stage has written everything."""
    out = Path(out)
    if runtime:  # a fork of `dihal run`'s warm process (dihal.execute.zygote) or a process of its own
        runtime = {**runtime, "start": "fork" if os.environ.get(FORKED_ENV) else "fresh"}
    manifest = {**describe(out), "kind": kind, "stage_hash": stage_hash, **({"runtime": runtime} if runtime else {})}
    write_atomic(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return out / MANIFEST


def load(out: Path | str) -> dict | None:
    """The manifest of `out`, or None for an output written before manifests (or not written at all)."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:  # a damaged manifest is itself damage: never silently unchecked
        return {"files": {}, "unreadable": f"{MANIFEST} cannot be read ({err})"}


def _check_file(path: Path, rel: str, want: dict) -> str | None:
    """What is wrong with one file against its manifest entry, or None."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return f"{rel} is missing"
    if size != want["size"]:
        return f"{rel} is {size} bytes, expected {want['size']}"
    if "sha256" in want:
        got = file_sha256(path)
        if got != want["sha256"]:
            return f"{rel} has sha256 {got[:12]}…, expected {want['sha256'][:12]}… (same size, {size} bytes)"
    return None


def problems(out: Path | str, manifest: dict | None = None) -> list[str]:
    """Each way `out` differs from its manifest (missing, resized or, for small files, changed files).
    Empty when it matches or has no manifest. Files the manifest does not list are not checked."""
    out = Path(out)
    manifest = load(out) if manifest is None else manifest
    if manifest is None:
        return []
    found = [manifest["unreadable"]] if "unreadable" in manifest else []
    for rel, want in sorted(manifest["files"].items()):
        issue = _check_file(out / rel, rel, want)
        if issue:
            found.append(issue)
    return found


def _message(out: Path, stage: str, found: list[str], reader: str | None) -> str:
    more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
    what = f"{out} (output of stage {stage})"
    head = f"{reader} cannot read its input {what}: it" if reader else what
    return (
        f"{head} was changed after the stage wrote it: {'; '.join(found[:3])}{more}. Run `dihal run` on the "
        "spec to recompute it (`dvc repro -f` alone can leave the damaged copy in DVC's cache)"
    )


def verify(out: Path | str, stage: str, reader: str | None = None) -> None:
    """Raise ArtifactCorrupted when `out` (the output of `stage`) differs from its manifest."""
    out = Path(out)
    found = problems(out)
    if found:
        raise ArtifactCorrupted(_message(out, stage, found, reader), out, found)


def verify_stages(root: Path, stages) -> None:
    """Verify the outputs of pipeline stages (`dihal.compile.plan.Stage`) before reading them."""
    for st in stages:
        verify(root / st.out, st.name)


def verify_inputs(cfg) -> None:
    """Before a stage runs: verify every upstream output it may read (`cfg.inputs` and the chain `cfg.link`)."""
    metrics = (cfg.results or {}).get("metrics")  # metrics/<DVC stage name>.json where the kind has one
    reader = f"stage {Path(metrics).stem if metrics else f'{cfg.kind}-{cfg.hash[:8]}'} ({cfg.out})"
    dirs = [*cfg.inputs.values(), *([cfg.link] if cfg.link else [])]
    for d in dirs:
        d = Path(d)
        m = load(d)
        if m is not None:
            owner = f"{m.get('kind', d.parent.name)}-{str(m.get('stage_hash', d.name))[:8]}"
            found = problems(d, m)
            if found:
                raise ArtifactCorrupted(_message(d, owner, found, reader), d, found)


# --- `dihal run` pre-flight ----------------------------------------------------------------------


def repair_corrupted(plan, root: Path, echo=None) -> list[str]:
    """Before `dvc repro`: make sure no stage of `plan` is served from damaged bytes; returns the stages reset.

    An output that differs from its manifest is removed, and so is every DVC cache object that holds a
    damaged copy of one of its files (found through the dvc.lock and run-cache entries for the out), so
    DVC recomputes the stage instead of checking the damage out again; when the cache's copies are intact
    DVC restores the output from them. A missing output is checked through its cache copies the same way.
    Intact outputs cost a stat per file plus a hash of their small files; DVC is only opened on damage
    or for missing outputs that DVC has cached before.
    """
    if echo is None:  # like dvc_repro: resolved per call; False = silent
        echo = sys.stderr
    root = Path(root)
    cache = _Cache(root)
    reset = []
    for st in plan.stages:
        out = root / st.out
        if out.is_dir():
            found = problems(out)
            if not found:
                continue
            dropped, restorable = cache.drop_bad(st.out)
            shutil.rmtree(out)
        else:
            dropped, restorable = cache.drop_bad(st.out)
            if not dropped:
                continue
            found = [f"the cached copy of {d}" for d in dropped]
        what = (
            f"restoring stage {st.name} from DVC's intact cached copy"
            if restorable and not dropped
            else f"recomputing stage {st.name}"
        )
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        if echo is not False:
            echo.write(f"{st.out}: {found[0]}{more} — {what}\n")
            echo.flush()
        reset.append(st.name)
    return reset


class _Cache:
    """DVC's record of stage outputs (dvc.lock, run-cache, objects), read only when needed."""

    def __init__(self, root: Path):
        self.root = root
        self._texts: list[str] | None = None
        self._docs: dict[int, dict] = {}
        self.files = self.runs = None

    def _load(self) -> list[str]:
        if self._texts is None:
            self._texts = []
            if (self.root / ".dvc").is_dir():
                from dvc.repo import Repo

                with Repo(str(self.root)) as repo:
                    self.files, self.runs = Path(repo.cache.local.path), Path(repo.stage_cache.cache_dir)
                lock = self.root / "dvc.lock"
                self._texts = [lock.read_text()] if lock.is_file() else []
                if self.runs.is_dir():
                    self._texts += [p.read_text() for p in self.runs.glob("*/*/*") if p.is_file()]
        return self._texts

    def trees(self, out_rel: Path) -> set[str]:
        """The `.dir` hashes DVC could restore `out_rel` from: its dvc.lock entry and its run-cache entries."""
        import yaml

        want, found = str(out_rel), set()
        for i, text in enumerate(self._load()):
            if want not in text:
                continue
            if i not in self._docs:  # dvc.lock can be long: parse each file once per pre-flight
                self._docs[i] = yaml.safe_load(text) or {}
            doc = self._docs[i]
            entries = doc.get("stages", {}).values() if "stages" in doc else [doc]
            for entry in entries:
                for o in entry.get("outs") or []:
                    if o.get("path") == want and str(o.get("md5", "")).endswith(".dir"):
                        found.add(o["md5"])
        return found

    def obj(self, md5: str) -> Path:
        return self.files / md5[:2] / md5[2:]

    def drop_bad(self, out_rel: Path) -> tuple[list[str], bool]:
        """Remove the cache objects of `out_rel` that differ from the manifest cached with them.
        Returns what was wrong with each, and whether some cached tree of `out_rel` is still complete."""
        dropped, complete = [], False
        for dir_md5 in sorted(self.trees(out_rel)):
            try:
                tree = {e["relpath"]: e["md5"] for e in json.loads(self.obj(dir_md5).read_text())}
                manifest = json.loads(self.obj(tree[MANIFEST]).read_text())
            except (OSError, ValueError, KeyError):
                continue  # no tree or no manifest in the cache: nothing to check it against
            for rel, want in sorted(manifest.get("files", {}).items()):
                path = self.obj(tree[rel]) if rel in tree else None
                issue = _check_file(path, rel, want) if path is not None and path.exists() else None
                if issue:
                    path.unlink()
                    dropped.append(issue)
            complete = complete or all(self.obj(md5).exists() for md5 in tree.values())
        return dropped, complete
