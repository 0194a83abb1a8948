"""bench/run --ray on a real local Ray cluster (ray.cluster_utils.Cluster: several raylets on this machine, each
offering its own target) and the real isolated workers: where rows run, that a node runs one row at a time, the
report's groups, files shipped through the object store, and a node lost mid-row."""
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.conftest import FAST, REPO, TINY, deploycmp, rows_by_id


TARGETS = """
[targets.fleet-a]
base = "server-cpu"
threads = 1
runtimes = ["onnxruntime"]

[targets.fleet-b]
base = "server-cpu"
threads = 1
runtimes = ["onnxruntime"]
"""


@contextmanager
def cluster(*targets: str):
    """A head node and one node per further target, 1 CPU each; yields (cluster, [(node, target)])."""
    from ray.cluster_utils import Cluster  # make install puts Ray in (the ray extra): no skipping here

    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {f"deploycmp:{targets[0]}": 1}, "include_dashboard": False})
    try:
        nodes = [(c.head_node, targets[0])]
        nodes += [(c.add_node(num_cpus=1, resources={f"deploycmp:{t}": 1}), t) for t in targets[1:]]
        c.wait_for_nodes()
        yield c, nodes
    finally:
        c.shutdown()


def _targets_file(tmp_path) -> Path:
    path = tmp_path / "targets.toml"
    path.write_text(TARGETS)
    return path


def _env(c) -> dict:
    return {"RAY_ADDRESS": c.address}  # what `--ray auto` finds on a machine of the cluster


def test_rows_run_on_the_nodes_of_their_target_one_at_a_time_and_the_report_groups_by_node(tmp_path):
    out, targets = tmp_path / "run", _targets_file(tmp_path)
    with cluster("mobile-cpu", "fleet-a", "fleet-b") as (c, nodes):
        offering = {node.node_id: target for node, target in nodes}
        proc = deploycmp("run", *TINY, "--formats", "onnx", "--targets-file", targets, "--target",
                         "mobile-cpu,fleet-a,fleet-b", "--batch", "1,2", "--out", out, "--format", "md", *FAST,
                         "--ray", "auto", env=_env(c))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        rows = rows_by_id(out)
        assert len(rows) == 6 and {r["status"] for r in rows.values()} == {"ok"}
        for row in rows.values():
            assert offering[row["node"]["id"]] == row["target"], row["id"]  # ran on a node offering its target
            assert row["node"]["hostname"] == row["host"]["hostname"] and row["host"]["cpu"]
            assert row["threads"] == 1 and row["peak_gflops"]
            assert (out / row["log"] if "log" in row else out / "logs" / f"{row['id']}.log").is_file()
        by_node: dict = {}
        for row in rows.values():
            by_node.setdefault(row["node"]["id"], []).append((row["node"]["started"], row["node"]["ended"]))
        assert set(by_node) == set(offering)
        for spans in by_node.values():  # a node measured one row at a time
            spans.sort()
            assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), spans
        md = (out / "report.md").read_text()
        for node_id, target in offering.items():
            heading = f"### Host {rows[f'onnx-none-onnxruntime-{target}-b1']['host']['hostname']} (Ray node {node_id[:8]})"
            assert heading in md, md
            group = md.split(heading)[1].split("### Host")[0]
            assert f"| {target} |" in group and all(f"| {t} |" not in group for t in offering.values() if t != target)

        # the artifacts shipped through the object store instead of the shared path; checked by sha256 on the node
        proc = deploycmp("bench", out, "--targets-file", targets, "--target", "fleet-a", "--batch", "1", *FAST,
                         "--ray", "auto", "--ray-files", "ship", "--force", env=_env(c))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        shipped = rows_by_id(out)["onnx-none-onnxruntime-fleet-a-b1"]
        assert shipped["status"] == "ok" and shipped["node"]["files"] == "ship"
        assert shipped["node"]["started"] > rows["onnx-none-onnxruntime-fleet-a-b1"]["node"]["ended"]
        assert (out / shipped["samples_to_look_at"]["file"]).is_file()  # what the worker wrote came back
        data = next((out / "artifacts" / "onnx-none").glob("*.data"))
        data.write_bytes(data.read_bytes()[::-1])
        proc = deploycmp("bench", out, "--targets-file", targets, "--target", "fleet-b", "--batch", "1", *FAST,
                         "--ray", "auto", "--ray-files", "ship", "--force", env=_env(c))
        row = rows_by_id(out)["onnx-none-onnxruntime-fleet-b-b1"]
        assert proc.returncode == 1 and row["status"] == "failed" and "sha256" in row["error"], row["error"]
        assert offering[row["node"]["id"]] == "fleet-b"


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _row_worker_under(node) -> tuple[str, int] | None:
    """(row, pid) of the worker process that runs under this Ray node (a descendant of its raylet), the row read from
    the worker's spec (its samples file is named by the row); None when it runs none."""
    raylet = node.all_processes["raylet"][0].process.pid
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"deploycmp.measure.row_worker" not in argv:
                continue
            spec = json.loads(Path(argv[argv.index(b"deploycmp.measure.row_worker") + 1].decode()).read_text())
            pid = int(proc.name)
            while pid > 1 and pid != raylet:
                pid = _ppid(pid)
        except (OSError, ValueError, IndexError):
            continue
        if pid == raylet and spec.get("job") == "row":
            return Path(spec["samples_file"]).name.removesuffix(".samples.npz"), int(proc.name)
    return None


def _wait(condition, what: str, timeout: float = 120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if (found := condition()):
            return found
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _hold_first_rows(*nodes) -> dict:
    """Stop (SIGSTOP) the worker of the first row each node measures, as soon as it shows: node -> (row, pid). Held,
    no node runs ahead of the test however slowly the others start."""
    held: dict = {}

    def all_held():
        for node in nodes:
            if node not in held and (found := _row_worker_under(node)):
                os.kill(found[1], signal.SIGSTOP)
                held[node] = found
        return len(held) == len(nodes)

    _wait(all_held, "a row measured on each fleet-b node")
    return held


def test_a_node_lost_mid_row_is_retried_or_marked_and_a_rerun_resumes(tmp_path):
    out, targets = tmp_path / "run", _targets_file(tmp_path)
    args = ["run", *TINY, "--formats", "onnx", "--targets-file", targets, "--target", "fleet-a,fleet-b",
            "--batch", "1,2,3,4,5,6", "--out", out, "--format", "md", *FAST, "--min-time", "1", "--ray", "auto"]
    with cluster("fleet-a", "fleet-b", "fleet-b") as (c, nodes):
        (head, _), (first, _), (second, _) = nodes
        log = open(tmp_path / "run.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "deploycmp.cli", *map(str, args)], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, **_env(c)})
        held: dict = {}
        try:
            held = _hold_first_rows(first, second)  # the first row of each: 4 of the 6 fleet-b rows still to come
            retried, on_second = held[first][0], held[second]
            done_before = {p.name: p.read_text() for p in (out / "results").glob("*.json")}
            c.remove_node(first, allow_graceful=False)
            c.wait_for_nodes()  # the cluster knows: the lost row goes to the other node
            os.kill(on_second[1], signal.SIGCONT)
            path = out / "results" / f"{retried}.json"
            _wait(lambda: path.is_file(), f"{retried} measured again on the other node")
            lost_on_second = _wait(lambda: (r := _row_worker_under(second)) and r[0] not in (retried, on_second[0])
                                   and r[0], "a further row measured on the second fleet-b node")
            c.remove_node(second, allow_graceful=False)
            rc = proc.wait(timeout=120)
        finally:
            proc.kill()
            log.close()
            if (stopped := held.get(first)):  # went with its node; if not, it goes now
                with suppress(ProcessLookupError):
                    os.kill(stopped[1], signal.SIGKILL)
        said = (tmp_path / "run.log").read_text()
        assert rc == 1 and "Traceback" not in said and "Raylet is terminated" not in said, said
        rows = rows_by_id(out)
        assert len(rows) == 12
        assert all(r["status"] == "ok" and r["node"]["id"] == head.node_id for r in rows.values() if r["target"] == "fleet-a")
        again = rows[retried]
        assert again["status"] == "ok" and again["node"]["id"] == second.node_id, again
        assert len(again["nodes_lost"]) == 1 and first.node_id[:8] in again["nodes_lost"][0]
        marked = rows[lost_on_second]
        assert marked["status"] == "failed" and marked["error"].startswith("node lost (") and \
            second.node_id[:8] in marked["error"], marked["error"]
        rest = [r for r in rows.values() if r["target"] == "fleet-b" and r["id"] not in (retried, lost_on_second)]
        assert {r["status"] for r in rest} <= {"ok", "unavailable"}
        assert all("no live node of the Ray cluster offers target fleet-b" in r["error"] for r in rest
                   if r["status"] == "unavailable")
        for name, text in done_before.items():  # nothing finished was lost, the rows of the killed node included
            assert json.loads(text) == json.loads((out / "results" / name).read_text())

        # a new fleet-b node joins; the same command measures only what the lost nodes left
        third = c.add_node(num_cpus=1, resources={"deploycmp:fleet-b": 1})
        c.wait_for_nodes()
        todo = [r["id"] for r in rows.values() if r["status"] != "ok"]
        proc = deploycmp(*args, env=_env(c))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"measured {len(todo)} row(s), kept {12 - len(todo)}" in proc.stderr, proc.stderr
        now = rows_by_id(out)
        assert {r["status"] for r in now.values()} == {"ok"}
        assert all(now[i]["node"]["id"] == third.node_id for i in todo)
        assert all(now[i] == rows[i] for i in rows if i not in todo)


def test_ray_options_fail_in_one_line(tmp_path):
    fake = tmp_path / "no-ray"  # a Python where `import ray` fails as it does where Ray is not installed
    fake.mkdir()
    (fake / "ray.py").write_text("raise ModuleNotFoundError(\"No module named 'ray'\", name='ray')\n")

    proc = deploycmp("run", *TINY, "--formats", "onnx", "--out", tmp_path / "run", "--ray", "auto",
                     env={"PYTHONPATH": os.pathsep.join([str(fake), str(REPO)])})
    assert proc.returncode == 2 and "--ray needs Ray, which is not installed here: pip install 'deploycmp[ray]'" \
        in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()  # refused before the export
    start = time.monotonic()
    proc = deploycmp("run", *TINY, "--formats", "onnx", "--out", tmp_path / "run", "--ray", "127.0.0.1:1")
    assert proc.returncode == 2 and "no Ray head node answers there" in proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - start < 60, "a dead address must not keep deploycmp waiting"
    for args, message in ((["--ray-files", "ship"], "--ray-files needs --ray ADDRESS"),
                          (["--ray", "auto", "--tune"], "--tune does not run through --ray yet")):
        proc = deploycmp("run", *TINY, "--out", tmp_path / "run", *args)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
