"""bench --ray: each row measured on a node of a Ray cluster that offers the row's target.

A node offers target T when it joins with `ray start --resources '{"deploycmp:T": 1}'` (docs/fleet.md). Every row
is one Ray task pinned to one such node, and this module gives each node one row at a time, whatever targets it
offers: two measurements never share a machine. On the node the task does what local bench does (measure_row.precheck,
measure_row.measure_once: a fresh worker process per row, its affinity, threads and timeout), so the numbers mean the
same; the row file is written here, on the driver, as each row arrives.

Artifacts reach the node through a shared run directory (the same path on every node) or, with
`--ray-files ship`, through Ray's object store; either way the node checks their sha256 before they run.
Ray is imported inside functions only: without it, nothing but --ray changes.
"""
from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from deploycmp.core.errors import UsageError, first_line

PREFIX = "deploycmp:"  # a node offering target T has the custom resource "deploycmp:T"
FILES = ("shared", "ship")


@dataclass(frozen=True)
class Fleet:
    address: str                 # host:port of the head node's GCS, ray://host:port, or auto
    files: str = "shared"        # shared: the run directory is at the same path on every node; ship: object store


@dataclass
class Node:
    id: str
    hostname: str
    address: str
    targets: set = field(default_factory=set)

    @property
    def name(self) -> str:
        return f"{self.hostname} (Ray node {self.id[:8]})"


def resource(target: str) -> str:
    return PREFIX + target


def require_ray() -> None:
    """One clear line (exit 2) when Ray is not installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UsageError("--ray needs Ray, which is not installed here: pip install 'deploycmp[ray]'") from None


def _check_reachable(address: str) -> None:
    """ray.init retries an address where nothing answers for minutes: refuse it at once instead."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "auto")
    if address == "auto" or address.startswith("ray://") or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as e:
        raise UsageError(f"--ray {address}: no Ray head node answers there ({getattr(e, 'strerror', None) or e}); "
                         "start one with 'ray start --head' (docs/fleet.md)") from None


def connect(address: str):
    """The ray module, connected to the cluster at `address` (never a new local one)."""
    require_ray()
    import logging

    import ray

    _check_reachable(address)
    try:
        ray.init(address=address, namespace="deploycmp", logging_level=logging.ERROR, log_to_driver=False)
    except ConnectionError as e:
        raise UsageError(f"--ray {address}: cannot connect to a Ray cluster ({str(e).splitlines()[0]})") from None
    return ray


def live_nodes(ray, dead: set) -> dict[str, Node]:
    """Alive nodes that offer at least one deploycmp target, by Ray node id."""
    nodes = {}
    for n in ray.nodes():
        if not n.get("Alive") or n["NodeID"] in dead:
            continue
        targets = {k[len(PREFIX):] for k, v in (n.get("Resources") or {}).items() if k.startswith(PREFIX) and v >= 1}
        if targets:
            nodes[n["NodeID"]] = Node(n["NodeID"], n.get("NodeManagerHostname") or n.get("NodeManagerAddress", "?"),
                                      n.get("NodeManagerAddress", "?"), targets)
    return nodes


def _files_of(run_dir: Path, paths: list[str]) -> dict[str, bytes]:
    return {p: (run_dir / p).read_bytes() for p in paths}


def on_node(job: dict, artifact_files: dict | None, reference_files: dict | None) -> dict:
    """The Ray task: one row measured on this node as local bench measures it. Returns the node, its environment,
    the precheck verdict or the worker outcomes, the peak (when asked), the times it held the node, and with shipped
    files the row's logs and samples file."""
    import platform

    import ray

    from deploycmp.core.environment import environment
    from deploycmp.core.rundir import MANIFEST, sha256_file
    from deploycmp.measure.row import measure_once, measure_peaks, precheck

    started = time.time()
    row, settings = job["row"], job["settings"]
    target = row["_target"]
    node = {"id": ray.get_runtime_context().get_node_id(), "hostname": platform.node(),
            "address": ray.util.get_node_ip_address(), "files": job["files"]}
    back = {"node": node, "env": environment(), "verdict": None, "outcomes": [], "peak": None, "files": {}}
    # threads and cores are this node's, as local bench's are the host's
    row["threads"] = target.resolved_threads(settings.threads)
    row["target_description"] = target.describe(settings.threads)
    from deploycmp.core.seal import allowing

    with tempfile.TemporaryDirectory(prefix="deploycmp-fleet-") as tmp, allowing(row.get("_source")):
        if artifact_files is None:
            run_dir = Path(job["run_dir"])
            manifest_file = run_dir / MANIFEST
            if not manifest_file.is_file() or sha256_file(manifest_file) != job["manifest_sha256"]:
                what = "is not on" if not manifest_file.is_file() else "holds another run on"
                back["verdict"] = ("failed", f"the run directory {run_dir} {what} {platform.node()}: share it at the "
                                             "same path on every node, or use --ray-files ship")
                back["not_measured"] = True
        else:
            run_dir = Path(tmp) / "run"
            for rel, data in {**artifact_files, **reference_files}.items():
                (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                (run_dir / rel).write_bytes(data)
        if back["verdict"] is None:
            back["verdict"] = precheck(row, run_dir)  # the target's cores, the runtime, the files' sha256: here
        if back["verdict"] is None:
            if job["peak"] and target.device == "cpu":
                back["peak"] = measure_peaks(run_dir, [target], settings.threads, settings.timeout).get(target.name)
            try:
                for round_ in range(settings.repeats):  # --repeat: all rounds of a row on its node, one after another
                    outcome = measure_once(row, run_dir, job["manifest"], settings, round_)
                    back["outcomes"].append(outcome)
                    if outcome.status != "ok":
                        break
            finally:  # a prewarmed process ends with the row on a node
                from deploycmp.core import prewarm

                prewarm.close_all()
        if artifact_files is not None:  # what the worker wrote goes back with the result
            for folder in ("logs", "results"):
                for p in (run_dir / folder).rglob("*"):
                    if p.is_file():
                        back["files"][str(p.relative_to(run_dir))] = p.read_bytes()
    node.update(started=started, ended=time.time())
    back["row"] = {k: row[k] for k in ("threads", "target_description")}
    return back


class Dispatch:
    """The driver's side: which node measures which row, one row per node at a time, and what a lost node costs."""

    def __init__(self, ray, fleet: Fleet, run_dir: Path, manifest: dict, settings, env: dict, progress, total: int):
        from deploycmp.core.rundir import MANIFEST, sha256_file

        self.ray, self.fleet, self.run_dir, self.manifest, self.settings = ray, fleet, run_dir, manifest, settings
        self.env, self.progress, self.total, self.finished = env, progress, total, 0
        self.manifest_sha256 = sha256_file(run_dir / MANIFEST)
        self.dead: set = set()
        self.nodes = live_nodes(ray, self.dead)
        self.lost: dict[str, list[str]] = {}    # row id -> the nodes lost while measuring it
        self.peaks: dict[tuple, dict | None] = {}
        self.blobs: dict[str, object] = {}      # --ray-files ship: object refs of the files, put once each
        self.task = ray.remote(num_cpus=0, max_retries=0)(on_node)

    def _blob(self, key: str, paths: list[str]):
        if key not in self.blobs:
            self.blobs[key] = self.ray.put(_files_of(self.run_dir, paths))
        return self.blobs[key]

    def submit(self, row: dict, node: Node):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from deploycmp.core.rundir import reference_for

        job = {"row": row, "settings": self.settings, "manifest": self.manifest, "files": self.fleet.files,
               "run_dir": str(self.run_dir.resolve()), "manifest_sha256": self.manifest_sha256,
               "peak": (node.id, row["target"]) not in self.peaks}
        artifact_files = reference_files = None
        if self.fleet.files == "ship":
            artifact = row["_artifact"]
            artifact_files = self._blob(f"artifact {artifact['id']}", [f["path"] for f in artifact.get("files", [])])
            reference = reference_for(self.manifest, row["shape"])["file"]
            reference_files = self._blob(f"reference {reference}", [reference])
        return self.task.options(resources={resource(row["target"]): 1},
                                 scheduling_strategy=NodeAffinitySchedulingStrategy(node.id, soft=False)
                                 ).remote(job, artifact_files, reference_files)

    def finish(self, row: dict, verdict, outcomes=(), back: dict | None = None) -> None:
        from deploycmp.core.rundir import inside, write_atomic
        from deploycmp.measure.row import finish_row

        env, peak = self.env, None
        if back:
            env = {**back["env"], "command": self.env["command"]}  # the node's host and versions, the user's command
            peak = back["peak"]
            row.update(back["row"])
            row["node"] = back["node"]
            for rel, data in back["files"].items():
                write_atomic(inside(self.run_dir, rel), data)
        if self.lost.get(row["id"]):
            row["nodes_lost"] = self.lost[row["id"]]
        if not back or back.get("not_measured"):
            row["key"] = None  # the cluster kept it from being measured: a re-run tries it again
        finish_row(row, verdict, list(outcomes), self.run_dir, env, peak)
        self.finished += 1
        if self.progress:
            self.progress(self.finished, self.total, row["id"] + (f" on {back['node']['hostname']}" if back else ""))

    def node_lost(self, row: dict, node: Node, pending: list) -> None:
        """The node went away mid-row: retry the row once on another node offering its target, else fail it."""
        self.dead.add(node.id)
        self.nodes = live_nodes(self.ray, self.dead)
        lost = self.lost.setdefault(row["id"], [])
        lost.append(node.name)
        if len(lost) == 1 and any(row["target"] in n.targets for n in self.nodes.values()):
            pending.insert(0, row)
        else:
            self.finish(row, ("failed", f"node lost ({', '.join(lost)})"))

    def run(self, rows: list[dict]) -> None:
        ray = self.ray
        pending = []
        for row in rows:
            artifact = row["_artifact"]
            if artifact["status"] != "ok":  # nothing to send anywhere
                self.finish(row, (artifact["status"], artifact.get("error") or "no artifact"))
            else:
                pending.append(row)
        busy: dict = {}  # object ref -> (row, node)
        try:
            while pending or busy:
                offered = {t for n in self.nodes.values() for t in n.targets}
                for row in [r for r in pending if r["target"] not in offered]:
                    pending.remove(row)
                    self.finish(row, ("unavailable", no_node_reason(row["target"], self.lost.get(row["id"]))))
                taken = {node.id for _, node in busy.values()}
                for node in self.nodes.values():
                    row = next((r for r in pending if r["target"] in node.targets), None) if node.id not in taken else None
                    if row is not None:
                        pending.remove(row)
                        busy[self.submit(row, node)] = (row, node)
                if not busy:
                    continue
                ready, _ = ray.wait(list(busy), num_returns=1)
                for ref in ready:
                    row, node = busy.pop(ref)
                    self.collect(ref, row, node, pending)
                self.nodes = live_nodes(ray, self.dead)  # nodes that joined since are used too
        finally:
            for ref in busy:  # interrupted: the tasks go, and with them their workers (the alive pipe closes)
                ray.cancel(ref, force=True)

    def collect(self, ref, row: dict, node: Node, pending: list) -> None:
        from ray.exceptions import NodeDiedError, RayError, RayTaskError

        try:
            back = self.ray.get(ref)
        except RayTaskError as e:  # on_node itself raised (a node whose deploycmp is broken ...)
            self.finish(row, ("failed", f"on {node.name}: {_typed(getattr(e, 'cause', None) or e)}"))
            return
        except NodeDiedError:
            self.node_lost(row, node, pending)
            return
        except RayError as e:
            if node.id not in live_nodes(self.ray, self.dead):
                self.node_lost(row, node, pending)
            else:
                self.finish(row, ("failed", f"Ray lost the task on {node.name}: {_typed(e)}"))
            return
        if back["peak"] is not None or (node.id, row["target"]) not in self.peaks:
            self.peaks[(node.id, row["target"])] = back["peak"]
        back["peak"] = self.peaks[(node.id, row["target"])]  # measured once per node and target, as here per target
        self.finish(row, back["verdict"], back["outcomes"], back)


def _typed(e) -> str:
    return f"{type(e).__name__}: {first_line(e, 300)}"


def no_node_reason(target: str, lost: list | None = None) -> str:
    text = f"no live node of the Ray cluster offers target {target}"
    if lost:
        text += f" any more (lost: {', '.join(lost)})"
    return text + f" (a node offers it when started with --resources '{{\"{resource(target)}\": 1}}')"


class _WithoutRayErrors:
    """sys.stdout, less what Ray's driver writes about the cluster: its error thread prints every lost node with the
    last 20 lines of its raylet's log to stdout, where the table goes, and ray.shutdown prints what it held back.
    The rows say what a lost node cost."""

    def __init__(self, out):
        self._out, self.shutting_down = out, False

    def write(self, text):
        if self.shutting_down or threading.current_thread().name == "ray_listen_error_messages":
            return len(text)
        return self._out.write(text)

    def __getattr__(self, name):
        return getattr(self._out, name)


def bench_on_fleet(fleet: Fleet, run_dir: Path, rows: list[dict], manifest: dict, settings, env: dict,
                   progress=None) -> None:
    """Measure `rows` on the cluster at fleet.address; every row's file is written as its result arrives."""
    ray = connect(fleet.address)
    stdout = sys.stdout
    sys.stdout = quiet = _WithoutRayErrors(stdout)
    try:
        if progress:
            progress(0, len(rows), f"Ray cluster at {fleet.address}")
        Dispatch(ray, fleet, Path(run_dir), manifest, settings, env, progress, len(rows)).run(rows)
    finally:
        quiet.shutting_down = True
        try:
            ray.shutdown()
        finally:
            sys.stdout = stdout


def fleet_key(key: str) -> str:
    """A row measured through Ray is not the local row of the same key (nor the other way round)."""
    from deploycmp.core.cache import digest

    return digest({"measured through": "ray", "key": key})


def check_options(ray_address: str | None, files: str | None, tune: bool) -> Fleet | None:
    if ray_address is None:
        if files is not None:
            raise UsageError("--ray-files needs --ray ADDRESS")
        return None
    if tune:
        raise UsageError("--tune does not run through --ray yet: tune on the machine itself (bench --tune there, "
                         "then merge)")
    if not ray_address.strip():
        raise UsageError("--ray needs an address: the head node's HOST:PORT, or auto")
    require_ray()
    _check_reachable(ray_address.strip())
    return Fleet(ray_address.strip(), files or "shared")

