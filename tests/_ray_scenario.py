"""The Ray scenario of tests/test_ray.py, run inside private namespaces (never on its own).

tests/test_ray.py starts it as
``unshare --net --pid --kill-child --mount-proc sh -c 'ip link set lo up && exec python
tests/_ray_scenario.py --home H --out OUT'``: a network namespace with only loopback (Ray binds to
127.0.0.1 and no packet leaves the machine) and a PID namespace that takes every Ray process with
it when this script ends (no ``ray stop``, which would end Ray processes by name).

Here:

1. a Ray head node (``ray start --head``, token authentication on) starts in a mount namespace of
   its own with an empty tmpfs over the driver's ``DFKD_VIZ_HOME``: its workers cannot see the
   driver's files, so whatever they need must travel as bytes;
2. a driver without the token is refused;
3. a 2 teachers × 1 method × 2 seeds sweep runs with ``--executor ray`` (the second teacher is not
   trained yet: the driver trains it); the Ray worker process of the first cell to report is killed
   once (SIGKILL), and Ray runs that cell again;
4. a second sweep is stopped while its cells run (they ship their runs back, stopped) and resumed
   (the runs continue from their checkpoints, same run ids);
5. a sweep asking for a GPU on this CPU-only machine (no address: the driver starts a Ray instance
   of its own) fails at once with one sentence.

Every check's facts go to ``--out`` as JSON (tests/test_ray.py asserts on them), with the time of
each phase.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
CLI = [str(BIN / "dfkd-viz")]
OUT: dict = {"phases": {}}


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def cli_json(*args: str) -> dict:
    r = cli(*args)
    if r.returncode != 0:
        raise RuntimeError(f"dfkd-viz {' '.join(args)} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def wait_for(pred, timeout: float, poll: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(poll)
    return None


def progress_file(home: Path, sweep_id: str) -> dict:
    try:
        return json.loads((home / "sweeps" / sweep_id / "cell_progress.json").read_text())
    except (OSError, ValueError):
        return {}


def sweep_done(sweep_id: str, timeout: float) -> dict:
    def done():
        rep = cli_json("sweeps", "show", sweep_id, "--json")
        return rep if rep["state"] != "running" else None

    rep = wait_for(done, timeout, poll=1.0)
    if rep is None:
        raise RuntimeError(f"sweep {sweep_id} still running after {timeout} s")
    return rep


def phase(name: str, t0: float) -> None:
    OUT["phases"][name] = round(time.time() - t0, 1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    home: Path = args.home
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"dfkdray-{secrets.token_hex(3)}"
    work.mkdir(parents=True)
    token = work / "token"
    token.write_text(secrets.token_hex(32))
    os.environ.update(
        DFKD_VIZ_HOME=str(home),
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        RAY_USAGE_STATS_ENABLED="0",
    )
    os.environ.pop("RAY_ADDRESS", None)
    try:
        run(home, work)
        OUT["ok"] = True
    except Exception as exc:  # the test prints it
        OUT["ok"] = False
        OUT["error"] = f"{type(exc).__name__}: {exc}"
        log = home / "sweeps"
        OUT["runner_logs"] = {
            p.parent.name: p.read_text()[-3000:] for p in log.glob("*/runner.log") if p.exists()
        }
    args.out.write_text(json.dumps(OUT, indent=1))
    return 0


def run(home: Path, work: Path) -> None:
    # 1. the head node, blind to the driver's home
    t0 = time.time()
    head = subprocess.run(
        [
            "unshare",
            "--mount",
            "sh",
            "-c",
            f"mount -t tmpfs none '{home}' && exec '{BIN / 'ray'}' start --head --port=0 "
            f"--num-cpus=2 --num-gpus=0 --include-dashboard=false --disable-usage-stats "
            f"--temp-dir='{work / 'ray'}' --object-store-memory={100 * 2**20}",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    m = re.search(r"ray start --address='([^']+)'", head.stdout + head.stderr)
    if head.returncode != 0 or not m:
        raise RuntimeError(f"ray start failed: {(head.stdout + head.stderr)[-2000:]}")
    address = m.group(1)
    OUT["address"] = address
    phase("head", t0)
    probe = (
        "import json, os, sys, ray; ray.init(address=sys.argv[1], log_to_driver=False)\n"
        "f = ray.remote(lambda p: sorted(os.listdir(p)))\n"
        "print(json.dumps(ray.get(f.remote(sys.argv[2]))))"
    )
    r = subprocess.run(
        [sys.executable, "-c", probe, address, str(home)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    OUT["node_sees_home"] = (
        json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else r.stderr[-500:]
    )
    OUT["driver_sees_home"] = sorted(os.listdir(home))

    # 2. without the token, a driver is refused
    t0 = time.time()
    env = {**os.environ, "RAY_AUTH_TOKEN_PATH": str(work / "no-such-token"), "HOME": str(work)}
    r = subprocess.run(
        [sys.executable, "-c", "import sys, ray; ray.init(address=sys.argv[1])", address],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    OUT["no_token"] = {"rc": r.returncode, "tail": (r.stdout + r.stderr)[-400:]}
    phase("no_token", t0)

    # 3. 2 teachers × 1 method × 2 seeds; one cell's Ray worker killed once
    t0 = time.time()
    r = cli(
        "sweep", "--teachers", "mnist-clean", "mnist-lenet-short", "--methods", "dfq",
        "--seeds", "0", "1", "--steps", "12", "--threads", "1", "--eval-every", "4",
        "--executor", "ray", "--ray-address", address, "--cpus-per-run", "1",
        "--background", "--json",
    )  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"sweep failed to start: {r.stderr[-2000:]}")
    sweep1 = json.loads(r.stdout.strip().splitlines()[-1])["sweep_id"]
    OUT["sweep1"] = sweep1

    def victim():
        for key, e in progress_file(home, sweep1).items():
            if e.get("state") == "running" and e.get("pid") and e.get("attempts") == 1:
                return key, e["pid"]
        return None

    found = wait_for(victim, 240, poll=0.05)
    if not found:
        raise RuntimeError("no cell reported its Ray worker")
    key, pid = found
    os.kill(int(pid), signal.SIGKILL)
    OUT["killed"] = {"cell": key, "pid": pid}
    rep = sweep_done(sweep1, 400)
    OUT["sweep1_report"] = rep
    OUT["sweep1_progress"] = progress_file(home, sweep1)
    OUT["sweep1_runs"] = {
        row["run_id"]: cli_json("runs", "show", row["run_id"], "--json")
        for row in rep["rows"]
        if row.get("run_id")
    }
    OUT["runs_list"] = [r["run_id"] for r in cli_json("runs", "list", "--json")]
    OUT["checkpoints"] = {
        rid: sorted(p.name for p in (home / "runs" / rid / "checkpoints").glob("*.safetensors"))
        for rid in OUT["sweep1_runs"]
    }
    phase("sweep_kill", t0)

    # 4. stop while the cells run; resume
    t0 = time.time()
    r = cli(
        "sweep", "--teachers", "mnist-clean", "--methods", "dfq", "--seeds", "0", "1",
        "--seconds", "8", "--threads", "1", "--eval-every", "2",
        "--executor", "ray", "--ray-address", address, "--background", "--json",
    )  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"sweep 2 failed to start: {r.stderr[-2000:]}")
    sweep2 = json.loads(r.stdout.strip().splitlines()[-1])["sweep_id"]
    OUT["sweep2"] = sweep2

    def both_stepping():
        p = progress_file(home, sweep2)
        return len(p) == 2 and all((e.get("step") or 0) >= 2 for e in p.values())

    if not wait_for(both_stepping, 240, poll=0.2):
        raise RuntimeError(f"sweep 2's cells never ran: {progress_file(home, sweep2)}")
    OUT["sweep2_before_stop"] = progress_file(home, sweep2)
    t_stop = time.time()
    r = cli("sweeps", "stop", sweep2, "--wait", "60")
    OUT["stop"] = {"rc": r.returncode, "seconds": round(time.time() - t_stop, 1)}
    stopped = cli_json("sweeps", "show", sweep2, "--json")
    OUT["sweep2_stopped"] = stopped
    OUT["sweep2_stopped_runs"] = {
        row["run_id"]: cli_json("runs", "show", row["run_id"], "--json")
        for row in stopped["rows"]
        if row.get("run_id") and row["status"] != "pending"
    }
    r = cli("sweep", "--resume", sweep2, "--json", timeout=400)
    OUT["resume"] = {"rc": r.returncode, "stderr": r.stderr[-1500:]}
    OUT["sweep2_resumed"] = (
        json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else None
    )
    OUT["sweep2_events"] = {}
    for row in (OUT["sweep2_resumed"] or {}).get("rows", []):
        ev = cli_json("runs", "show", row["run_id"], "--json")
        OUT["sweep2_events"][row["run_id"]] = ev
    phase("stop_resume", t0)

    # 5. a GPU no node has: one sentence, at once (no address: a Ray instance of the sweep's own)
    t0 = time.time()
    r = cli(
        "sweep", "--teachers", "mnist-clean", "--methods", "dfq", "--seeds", "0",
        "--steps", "2", "--executor", "ray", "--gpus-per-run", "1",
    )  # fmt: skip
    OUT["gpu"] = {"rc": r.returncode, "stderr": r.stderr, "seconds": round(time.time() - t0, 1)}


if __name__ == "__main__":
    sys.exit(main())
