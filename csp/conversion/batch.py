"""Batch conversion: many sources, a process pool or a Dask cluster, a resumable journal, a report.

One bad slide never stops the batch: every outcome is recorded per slide. The journal (SQLite, in the
output directory) is keyed by source identity (path, size, mtime; content sha256 once converted), so a
re-run after a crash or ``kill -9`` skips completed slides, redoes partial ones and reports sources that
changed since they were converted.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import sqlite3
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from typing import Any

from csp.container.stores import is_url
from csp.errors import CspError

SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".scn", ".bif", ".vms", ".vmu", ".mrxs", ".qptiff",
                  ".svslide", ".dcm", ".csp")
JOURNAL_NAME = ".csp-journal.sqlite"


@dataclass(frozen=True)
class Job:
    """One slide to convert."""

    source: str
    dest: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    """What happened to one job (one row of the report)."""

    source: str
    dest: str
    status: str  # done | skipped | failed | changed-redone
    error: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    source_sha256: str = ""
    verified: bool = False
    labels: dict[str, str] = field(default_factory=dict)


def output_name(source: str, layout: str) -> str:
    """Container file name for a source: its name without extension(s) + ``.csp`` / ``.zarr``."""
    base = os.path.basename(os.path.normpath(source.rstrip("/")))
    stem = base
    for suffix in (".ome.tiff", ".ome.tif"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    else:
        stem = os.path.splitext(stem)[0] or stem
    return stem + (".csp" if layout == "zip" else ".zarr")


def _join(outdir: str, name: str) -> str:
    return f"{outdir.rstrip('/')}/{name}" if is_url(outdir) else os.path.join(outdir, name)


def expand_inputs(inputs: Sequence[str], outdir: str, *, layout: str = "zip",
                  suffixes: Sequence[str] = SLIDE_SUFFIXES) -> list[Job]:
    """Expand files, directories (recursive, by extension; a folder holding ``.dcm`` files is one
    slide), glob patterns and manifest CSVs (``source[,destination][,label columns...]``) into jobs."""
    jobs: list[Job] = []
    for item in inputs:
        if item.lower().endswith(".csv") and os.path.isfile(item):
            jobs.extend(_manifest(item, outdir, layout))
        elif is_url(item):
            jobs.append(Job(item, _join(outdir, output_name(item, layout))))
        elif os.path.isdir(item):
            jobs.extend(Job(s, _join(outdir, output_name(s, layout))) for s in _scan_dir(item, suffixes))
        elif any(ch in item for ch in "*?["):
            for s in sorted(glob.glob(item, recursive=True)):
                jobs.append(Job(s, _join(outdir, output_name(s, layout))))
        else:
            jobs.append(Job(item, _join(outdir, output_name(item, layout))))
    seen: dict[str, str] = {}
    unique = []
    for j in jobs:
        if j.dest in seen:
            raise CspError(j.source, f"output {j.dest} would also be written for {seen[j.dest]}; "
                                     "rename one or use a manifest with explicit destinations")
        seen[j.dest] = j.source
        unique.append(j)
    return unique


def _scan_dir(root: str, suffixes: Sequence[str]) -> list[str]:
    out = []
    for dirpath, dirnames, files in os.walk(root):
        dirnames.sort()
        if any(f.lower().endswith(".dcm") for f in files):
            out.append(dirpath)  # a DICOM series folder is one slide
            dirnames[:] = []
            continue
        out.extend(os.path.join(dirpath, f) for f in sorted(files) if f.lower().endswith(tuple(suffixes))
                   and not f.lower().endswith(".dcm"))
    return out


def _manifest(path: str, outdir: str, layout: str) -> list[Job]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "source" not in rows[0]:
        raise CspError(path, "manifest CSV needs a 'source' column (optional 'destination' and label columns)")
    jobs = []
    for r in rows:
        src = r.pop("source")
        dest = r.pop("destination", "") or _join(outdir, output_name(src, layout))
        jobs.append(Job(src, dest, {k: v for k, v in r.items() if k}))
    return jobs


# ------------------------------------------------------------------------------------------- journal
class Journal:
    """SQLite run journal: one row per source, updated as jobs start and finish."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.db = sqlite3.connect(path, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("""CREATE TABLE IF NOT EXISTS slides (
            source TEXT PRIMARY KEY, dest TEXT, size INTEGER, mtime_ns INTEGER, sha256 TEXT,
            status TEXT, error TEXT, bytes_in INTEGER, bytes_out INTEGER, seconds REAL,
            started REAL, finished REAL)""")
        cols = {r[1] for r in self.db.execute("PRAGMA table_info(slides)")}
        if "settings" not in cols:  # journals written before settings were recorded
            self.db.execute("ALTER TABLE slides ADD COLUMN settings TEXT")
        self.db.commit()

    def get(self, source: str) -> dict[str, Any] | None:
        cur = self.db.execute("SELECT source, dest, size, mtime_ns, sha256, status, settings FROM slides "
                              "WHERE source=?", (source,))
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip(("source", "dest", "size", "mtime_ns", "sha256", "status", "settings"), row, strict=True))

    def start(self, job: Job, ident: tuple[int, int], settings: str | None = None) -> None:
        self.db.execute("""INSERT INTO slides (source, dest, size, mtime_ns, status, started, settings)
            VALUES (?, ?, ?, ?, 'running', ?, ?) ON CONFLICT(source) DO UPDATE SET dest=excluded.dest,
            size=excluded.size, mtime_ns=excluded.mtime_ns, status='running', started=excluded.started,
            settings=excluded.settings, error=NULL""",
                        (job.source, job.dest, ident[0], ident[1], time.time(), settings))
        self.db.commit()

    def finish(self, o: Outcome) -> None:
        self.db.execute("""UPDATE slides SET status=?, error=?, bytes_in=?, bytes_out=?, seconds=?,
            sha256=?, finished=? WHERE source=?""",
                        ("done" if o.status in ("done", "changed-redone", "skipped") else o.status, o.error,
                         o.bytes_in, o.bytes_out, o.seconds, o.source_sha256, time.time(), o.source))
        self.db.commit()

    def close(self) -> None:
        self.db.close()


def source_ident(source: str) -> tuple[int, int]:
    """(size, mtime in ns) of a source file or folder (sum / newest over its files) or URL."""
    if is_url(source):
        import fsspec

        fs, p = fsspec.core.url_to_fs(source)
        info = fs.info(p)
        mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or 0
        if hasattr(mtime, "timestamp"):
            mtime = mtime.timestamp()
        return int(info.get("size") or 0), int(float(mtime) * 1e9)
    if os.path.isdir(source):
        size, newest = 0, 0
        for root, _d, files in os.walk(source):
            for f in files:
                st = os.stat(os.path.join(root, f))
                size += st.st_size
                newest = max(newest, st.st_mtime_ns)
        return size, newest
    st = os.stat(source)
    return st.st_size, st.st_mtime_ns


def container_complete(dest: str) -> bool:
    """True if ``dest`` holds a complete container (completion record present)."""
    if is_url(dest):
        import fsspec

        fs, p = fsspec.core.url_to_fs(dest)
        if not fs.exists(p):
            return False
    elif not os.path.exists(dest):
        return False
    from csp.container.reader import ContainerReader

    try:
        ContainerReader(dest).close()
        return True
    except CspError:
        return False


# ------------------------------------------------------------------------------------------- one job
def convert_job(job: Job, options: dict[str, Any]) -> Outcome:
    """Convert one job; never raises (errors become a failed :class:`Outcome`). Picklable for pools/Dask."""
    from csp.conversion.pipeline import convert

    t0 = time.perf_counter()
    staged_src = staged_dst = None
    try:
        src, dst = job.source, job.dest
        if is_url(src):
            staged_src = _stage_in(src)
            src = staged_src
        if is_url(dst):
            tmpdir = tempfile.mkdtemp(prefix="csp-stage-")
            staged_dst = os.path.join(tmpdir, os.path.basename(dst.rstrip("/")))
            dst = staged_dst
        else:
            _clean_partials(dst)
        res = convert(src, dst, overwrite=options.get("overwrite", False), layout=options.get("layout"),
                      verify=options.get("verify", True), deidentify=options.get("deidentify", False),
                      profile=options.get("profile", "passthrough"),
                      pixel_codec=options.get("pixel_codec", "csp"),
                      archive_effort=options.get("archive_effort"))
        if staged_dst is not None:
            _stage_out(staged_dst, job.dest)
        return Outcome(job.source, job.dest, "done", bytes_in=res.bytes_in, bytes_out=res.bytes_out,
                       seconds=time.perf_counter() - t0, source_sha256=res.source_sha256 or "",
                       verified=res.verified, labels=dict(job.labels))
    except CspError as exc:
        err = str(exc) if job.source in str(exc) else f"{job.source}: {exc.detail}"
        return Outcome(job.source, job.dest, "failed", error=err, seconds=time.perf_counter() - t0,
                       labels=dict(job.labels))
    except Exception as exc:  # noqa: BLE001 - per-slide isolation: record, never stop the batch
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return Outcome(job.source, job.dest, "failed", error=f"{job.source}: unexpected error: {tb}",
                       seconds=time.perf_counter() - t0, labels=dict(job.labels))
    finally:
        for p in (staged_src, staged_dst):
            if p is not None:
                import shutil

                shutil.rmtree(os.path.dirname(p), ignore_errors=True)


def _clean_partials(dst: str) -> None:
    for p in glob.glob(glob.escape(dst) + ".partial-*"):
        import shutil

        shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.remove(p)


def _stage_in(url: str) -> str:
    import fsspec

    fs, p = fsspec.core.url_to_fs(url)
    tmpdir = tempfile.mkdtemp(prefix="csp-src-")
    local = os.path.join(tmpdir, os.path.basename(p.rstrip("/")))
    fs.get(p, local, recursive=fs.isdir(p))
    return local


def _stage_out(local: str, url: str) -> None:
    """Upload a finished container (multipart for large files, done by the filesystem) and only then
    make it visible: uploaded under a ``.partial`` name, moved into place last."""
    import fsspec

    fs, p = fsspec.core.url_to_fs(url)
    tmp = p.rstrip("/") + ".partial-upload"
    if os.path.isdir(local):
        fs.put(local, tmp, recursive=True)
    else:
        fs.put_file(local, tmp)
    if fs.exists(p):
        fs.rm(p, recursive=True)
    fs.mv(tmp, p, recursive=os.path.isdir(local))


# ------------------------------------------------------------------------------------------- batch
@dataclass
class BatchResult:
    """Outcomes of a batch, in input order."""

    outcomes: list[Outcome]
    seconds: float

    @property
    def failed(self) -> list[Outcome]:
        """Failed jobs."""
        return [o for o in self.outcomes if o.status == "failed"]

    def write_report(self, path: str) -> None:
        """Write every outcome as JSON (``.json``) or CSV (anything else)."""
        rows = [asdict(o) for o in self.outcomes]
        if path.lower().endswith(".json"):
            with open(path, "w") as fh:
                json.dump({"seconds": self.seconds, "slides": rows}, fh, indent=1)
            return
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["source"])
            w.writeheader()
            for r in rows:
                r["labels"] = json.dumps(r["labels"])
                w.writerow(r)


def run_batch(jobs: Sequence[Job], *, workers: int = 1, overwrite: bool = False, verify: bool = True,
              reverify: bool = False, layout: str | None = None, deidentify: bool = False,
              journal_dir: str | None = None, dask_scheduler: str | None = None,
              on_event: Callable[[str, Job, Outcome | None], None] | None = None,
              profile: str = "passthrough", pixel_codec: str = "csp",
              archive_effort: int | None = None) -> BatchResult:
    """Convert ``jobs``; resumable through the journal in ``journal_dir`` (default: beside the outputs).

    Parameters
    ----------
    workers
        Processes in the local pool (ignored with ``dask_scheduler``).
    reverify
        Also re-read and compare already completed containers with their sources.
    dask_scheduler
        Address of an existing Dask distributed scheduler; the same jobs run there.
    on_event
        Progress callback ``(event, job, outcome)`` with events ``start``, ``end``.
    profile
        Storage tier: ``"passthrough"`` or ``"archive"`` (see :func:`csp.conversion.pipeline.convert`).
    pixel_codec
        Lossless codec for stored pixels: ``"csp"`` or ``"zstd"`` (see :func:`csp.conversion.pipeline.convert`).
    archive_effort
        libjxl effort of the archive tier (``None``: its default; see :func:`csp.conversion.pipeline.convert`).
    """
    t0 = time.perf_counter()
    jdir = journal_dir or (os.path.dirname(jobs[0].dest) if jobs and not is_url(jobs[0].dest) else ".")
    os.makedirs(jdir or ".", exist_ok=True)
    journal = Journal(os.path.join(jdir, JOURNAL_NAME))
    options = {"overwrite": overwrite, "verify": verify, "layout": layout, "deidentify": deidentify,
               "profile": profile, "pixel_codec": pixel_codec, "archive_effort": archive_effort}
    # what changes the output: a finished slide converted with other settings is redone, not skipped
    settings = json.dumps({"profile": profile, "deidentify": deidentify, "layout": layout,
                           "pixel_codec": pixel_codec, "archive_effort": archive_effort}, sort_keys=True)
    outcomes: dict[int, Outcome] = {}
    todo: list[tuple[int, Job, dict[str, Any]]] = []
    try:
        for i, job in enumerate(jobs):
            ident = source_ident(job.source) if _exists(job.source) else (0, 0)
            row = journal.get(job.source)
            done = container_complete(job.dest)
            same = row is not None and (row["size"], row["mtime_ns"]) == ident
            same = same and row is not None and row["settings"] in (None, settings)
            if done and row is not None and row["status"] == "done" and same and not overwrite:
                o = Outcome(job.source, job.dest, "skipped", source_sha256=row["sha256"] or "",
                            labels=dict(job.labels))
                if reverify:
                    o = _reverify(job, o)
                outcomes[i] = o
                if on_event:
                    on_event("end", job, o)
                continue
            opts = dict(options)
            changed = done and row is not None and not same
            if done and (changed or row is None or row["status"] != "done"):
                opts["overwrite"] = True  # a stale or foreign container at the destination: redo it
            if done and row is None and not overwrite:
                opts["overwrite"] = False  # not ours: let the converter refuse it clearly
            journal.start(job, ident, settings)
            todo.append((i, job, {**opts, "_changed": changed}))
        runner = _run_dask if dask_scheduler else _run_pool
        for i, job, o in runner(todo, workers, dask_scheduler, on_event):
            outcomes[i] = o
            journal.finish(o)
    finally:
        journal.close()
    return BatchResult([outcomes[i] for i in range(len(jobs))], time.perf_counter() - t0)


def _exists(source: str) -> bool:
    if is_url(source):
        import fsspec

        fs, p = fsspec.core.url_to_fs(source)
        return fs.exists(p)
    return os.path.exists(source)


def _reverify(job: Job, o: Outcome) -> Outcome:
    from csp.container.verify import verify_container

    try:
        verify_container(job.dest, source=job.source)
        o.verified = True
    except CspError as exc:
        o.status, o.error = "failed", f"re-verification failed: {exc}"
    return o


def _finish(job: Job, opts: dict[str, Any], o: Outcome) -> Outcome:
    if opts.get("_changed") and o.status == "done":
        o.status = "changed-redone"
    return o


def _run_pool(todo: list[tuple[int, Job, dict[str, Any]]], workers: int, _addr: str | None,
              on_event: Callable | None) -> Iterable[tuple[int, Job, Outcome]]:
    if workers <= 1:
        for i, job, opts in todo:
            if on_event:
                on_event("start", job, None)
            o = _finish(job, opts, convert_job(job, _clean(opts)))
            if on_event:
                on_event("end", job, o)
            yield i, job, o
        return
    pending = list(todo)
    while pending:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures: dict[Future, tuple[int, Job, dict[str, Any]]] = {}
            queue = list(pending)
            pending = []
            broken = False
            while queue or futures:
                while queue and len(futures) < workers * 2 and not broken:
                    i, job, opts = queue.pop(0)
                    if on_event:
                        on_event("start", job, None)
                    futures[pool.submit(convert_job, job, _clean(opts))] = (i, job, opts)
                if not futures:
                    break
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for f in done:
                    i, job, opts = futures.pop(f)
                    try:
                        o = _finish(job, opts, f.result())
                    except BrokenProcessPool:
                        broken = True
                        o = Outcome(job.source, job.dest, "failed",
                                    error=f"{job.source}: the conversion process died (crash or killed)")
                    if on_event:
                        on_event("end", job, o)
                    yield i, job, o
            if broken:
                pending = queue  # start a fresh pool for what was not yet submitted


def _run_dask(todo: list[tuple[int, Job, dict[str, Any]]], _workers: int, address: str | None,
              on_event: Callable | None) -> Iterable[tuple[int, Job, Outcome]]:
    from distributed import Client, as_completed

    with Client(address) as client:
        futures = {}
        for i, job, opts in todo:
            if on_event:
                on_event("start", job, None)
            futures[client.submit(convert_job, job, _clean(opts), pure=False)] = (i, job, opts)
        for f in as_completed(futures):
            i, job, opts = futures[f]
            try:
                o = _finish(job, opts, f.result())
            except Exception as exc:  # noqa: BLE001 - a lost worker etc.
                o = Outcome(job.source, job.dest, "failed", error=f"{job.source}: dask task failed: {exc}")
            if on_event:
                on_event("end", job, o)
            yield i, job, o


def _clean(opts: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in opts.items() if not k.startswith("_")}


__all__ = ["BatchResult", "Job", "Journal", "Outcome", "container_complete", "convert_job", "expand_inputs",
           "output_name", "run_batch"]
