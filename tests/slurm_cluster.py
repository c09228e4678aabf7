"""A real single-node SLURM cluster for tests, owned by the test process.

The launcher and requeue code paths only show their bugs against the real scheduler: the
environment a job sees, how signals reach steps, what a requeue does to the state. So the
tests start Debian's own slurmctld, slurmd and munged (installed by ``.ci/install-slurm``)
as background processes with a configuration generated in a temporary folder, and stop them
afterwards. Nothing in /etc is read or written: every command gets ``SLURM_CONF`` through
``SlurmCluster.env``, and the ports are picked free, so two clusters (two test runs, or a
leftover) do not collide.

Usage::

    from tests import slurm_cluster as harness

    slurm_cluster = harness.slurm_cluster  # the fixture (an import trips ruff F401/F811)

    def test_job(slurm_cluster):
        job = slurm_cluster.sbatch("#!/bin/bash\\necho hi > out.txt\\n")
        assert slurm_cluster.wait_job(job, timeout=30) == "COMPLETED"

Needs root: slurmd starts job processes as the submitting user and munged runs as ``munge``.
Standalone on purpose (no fcn_lightning imports), so it can be reused or moved.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import pytest

INSTALL_HINT = "run .ci/install-slurm (installs slurmctld slurmd slurm-client munge)"
# Each one the harness runs, so a partial install is reported, not a confusing failure later.
BINARIES = ("slurmctld", "slurmd", "sinfo", "sbatch", "srun", "squeue", "scontrol", "scancel")
MUNGE_BINARIES = ("munged", "munge", "unmunge")
# Debian puts the daemons in /usr/sbin, which a non-login root shell may not have on PATH.
SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
# States after which a job does not run again by itself. REQUEUED is not one: the job goes
# back to PENDING and runs again.
FINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "SPECIAL_EXIT",
        "TIMEOUT",
    }
)
# Seconds between polls of the daemons: short, since every test waits on them.
POLL_S = 0.2


def _search_path() -> str:
    """PATH with the sbin folders appended, so the daemons are found from any shell."""
    parts = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join([p for p in parts if p] + [d for d in SBIN_DIRS if d not in parts])


def _which(name: str) -> str | None:
    return shutil.which(name, path=_search_path())


def slurm_available() -> str | None:
    """None when a cluster can be started here, else why not (for ``pytest.skip``)."""
    missing = [b for b in BINARIES + MUNGE_BINARIES if _which(b) is None]
    if missing:
        return f"SLURM is not installed (missing {', '.join(missing)}): {INSTALL_HINT}"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return f"no 'munge' user to run munged as: {INSTALL_HINT}"
    if os.geteuid() != 0:
        return "a test SLURM cluster needs root (slurmd and munged switch users)"
    return None


def _free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports nobody listens on now (all held open until all are picked,
    so they differ). A race with another process is possible but unlikely; the daemons then
    fail to bind and start() reports it."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("", 0))
            ports.append(s.getsockname()[1])
        return ports


def _node_resources() -> tuple[int, int]:
    """(CPUs, RealMemory in MiB) to declare for this machine.

    CPUs: the ones this process may run on (nproc), which is what jobs can use. RealMemory:
    90% of MemTotal, since slurmd drains a node that reports less memory than configured.
    """
    cpus = len(os.sched_getaffinity(0))
    mem_kib = 1024 * 1024  # fallback: 1 GiB
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    return cpus, max(1, int(mem_kib / 1024 * 0.9))


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"({path}: {e})"
    return "\n".join(text.splitlines()[-lines:])


def _ancestors() -> set[int]:
    """This process and its parents: never killed by the leftover sweep, even if a caller
    copied ``SlurmCluster.env`` into its own environment."""
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _processes_with_env(marker: bytes) -> list[int]:
    """Processes whose environment holds `marker` (``SLURM_CONF=<this cluster's file>``):
    job processes and slurmstepd outlive slurmd (they are not its children after the
    daemon forks), and this finds exactly this cluster's, not another test run's."""
    skip, found = _ancestors(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in env.split(b"\0"):
            found.append(int(entry.name))
    return found


class SlurmCluster:
    """One slurmctld, one slurmd and one munged, configured in `tmp_path`.

    Use as a context manager, or call start() and stop(). Every command run against it must
    get `env` (SLURM_CONF points at the generated slurm.conf). Logs, the configuration and
    job scripts stay in `tmp_path` for post-mortems; the sockets live in a short folder
    under /tmp (a Unix socket path is limited to 107 bytes) that stop() removes.
    """

    partition = "debug"
    cluster_name = "testcluster"
    # The partition's time limit in minutes (a day, a common one): a job asking for more is
    # refused at submission (EnforcePartLimits).
    max_time_min = 1440

    def __init__(self, tmp_path: Path | str, start_timeout: float = 30.0) -> None:
        self.root = Path(tmp_path).resolve()
        self.start_timeout = start_timeout
        self.node = socket.gethostname().split(".")[0]
        self.conf_path = self.root / "slurm.conf"
        self.log_dir = self.root / "log"
        self.state_dir = self.root / "state"
        self.jobs_dir = self.root / "jobs"
        self.run_dir: Path | None = None  # created by start()
        self.ctld_port = self.slurmd_port = 0
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, Path] = {}
        self._scripts = 0
        self.env = self._make_env()

    def _make_env(self) -> dict[str, str]:
        """The caller's environment without SLURM_*/SBATCH_*/SRUN_*/SALLOC_* (a test run
        inside a real SLURM job would otherwise aim sbatch and srun at that job), plus
        SLURM_CONF and a PATH that has the SLURM binaries."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "SQUEUE_", "SINFO_"))
        }
        env["SLURM_CONF"] = str(self.conf_path)
        env["PATH"] = _search_path()
        return env

    # --- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> SlurmCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start munged, slurmctld and slurmd, and wait until the node is idle.

        Raises RuntimeError with the daemons' log tails if any step does not come up within
        `start_timeout`; the daemons started so far are stopped first.
        """
        if self._procs:
            raise RuntimeError("SlurmCluster already started")
        reason = slurm_available()
        if reason:
            raise RuntimeError(reason)
        try:
            self._prepare()
            self._start_munge()
            self._start_slurmctld()
            self._start_slurmd()
        except BaseException:
            self.stop()
            raise

    def _prepare(self) -> None:
        for d in (self.log_dir, self.state_dir, self.jobs_dir):
            d.mkdir(parents=True, exist_ok=True)
        base = "/tmp" if os.path.isdir("/tmp") else None
        self.run_dir = Path(tempfile.mkdtemp(prefix="slurm-", dir=base))
        # Jobs run as root here, but keep the folder readable: munge clients of other users
        # must reach the socket.
        self.run_dir.chmod(0o755)
        (self.run_dir / "spool").mkdir()
        self.ctld_port, self.slurmd_port = _free_ports(2)
        self.conf_path.write_text(self._slurm_conf())

    def _slurm_conf(self) -> str:
        assert self.run_dir is not None
        cpus, mem_mib = _node_resources()
        log, state, run = self.log_dir, self.state_dir, self.run_dir
        return f"""\
# Generated by tests/slurm_cluster.py for one test run; not read from or written to /etc.
ClusterName={self.cluster_name}
# Loopback addresses: a single-node cluster should not depend on the host name resolving.
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job is held (Reason=BeginTime) this long before it may start
# again (default 120 s).
AuthInfo=socket={self.munge_socket},cred_expire=5
StateSaveLocation={state}
SlurmdSpoolDir={run}/spool
SlurmctldPidFile={run}/slurmctld.pid
SlurmdPidFile={run}/slurmd.pid
SlurmctldLogFile={log}/slurmctld.log
SlurmdLogFile={log}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups (no cgroup.conf, containers rarely allow them) and no accounting daemon.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# Rerun the scheduler every second: nothing else wakes it when a requeued job's BeginTime
# passes (the default 60 s, or up to a backfill cycle, would make each requeue that slow).
SchedulerParameters=sched_interval=1,bf_interval=1
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# Requeue (scontrol requeue after the USR2 warning, as submitit does) must be allowed.
JobRequeue=1
# Refuse at submission a job that asks for more than the partition's limits (CPUs, nodes,
# time), as many clusters do, instead of leaving it pending forever.
EnforcePartLimits=ALL
# Without accounting, scontrol is the only record of a finished job: keep it 10 minutes.
MinJobAge=600
# Seconds between SIGTERM and SIGKILL on cancel and at the time limit (default 30).
KillWait=5
InactiveLimit=0
SlurmctldTimeout=300
SlurmdTimeout=300
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mib} State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime={self.max_time_min} State=UP
"""

    @property
    def munge_socket(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir / "munge" / "munge.socket"

    def _spawn(self, name: str, argv: list[str], user: str | None = None) -> None:
        """Start a daemon in the foreground (we own the process, no pid-file chase), in its
        own session so a Ctrl-C on the test run does not reach it before stop() does."""
        out = self.log_dir / f"{name}.out"
        self._logs[name] = out
        with open(out, "ab") as f:
            self._procs[name] = subprocess.Popen(
                argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=user,
                cwd=self.root if user is None else "/",
            )

    def _wait_for(self, what: str, ready: Callable[[], bool], names: tuple[str, ...]) -> None:
        """Poll `ready` until true; fail early if one of the daemons `names` died."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            for name in names:
                if self._procs[name].poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {self._procs[name].returncode} while waiting for "
                        f"{what}\n{self.log_tails()}"
                    )
            if ready():
                return
            time.sleep(POLL_S)
        raise RuntimeError(
            f"test SLURM cluster: {what} not within {self.start_timeout:.0f} s\n{self.log_tails()}"
        )

    def _start_munge(self) -> None:
        """munged as the munge user with its own key and socket.

        munged checks who owns and who may write its key and the folders of its key, log
        and seed, and clients must be able to reach its socket: so the key, log, seed and
        pid file go in a 700 folder owned by munge, the socket in a 755 one. (The system's
        munged, if any, is left alone: its socket and key are not used.)
        """
        assert self.run_dir is not None
        munge = pwd.getpwnam("munge")
        sock_dir = self.munge_socket.parent
        private = self.run_dir / "munge-private"
        for d, mode in ((sock_dir, 0o755), (private, 0o700)):
            d.mkdir()
            os.chown(d, munge.pw_uid, munge.pw_gid)
            d.chmod(mode)
        key = private / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        os.chown(key, munge.pw_uid, munge.pw_gid)
        key.chmod(0o600)
        self._logs["munged.log"] = private / "munged.log"
        self._spawn(
            "munged",
            [
                _which("munged") or "munged",
                "-F",
                "-S",
                str(self.munge_socket),
                f"--key-file={key}",
                f"--log-file={private / 'munged.log'}",
                f"--pid-file={private / 'munged.pid'}",
                f"--seed-file={private / 'munged.seed'}",
            ],
            user="munge",
        )

        def munge_works() -> bool:
            if not self.munge_socket.exists():
                return False
            cred = subprocess.run(
                ["munge", "-n", "-S", str(self.munge_socket)],
                capture_output=True,
                env=self.env,
                timeout=10,
            )
            if cred.returncode != 0:
                return False
            back = subprocess.run(
                ["unmunge", "-S", str(self.munge_socket)],
                input=cred.stdout,
                capture_output=True,
                env=self.env,
                timeout=10,
            )
            return back.returncode == 0

        self._wait_for("munged answering", munge_works, ("munged",))

    def _start_slurmctld(self) -> None:
        # -i: ignore any saved state (the folder is fresh anyway).
        self._spawn("slurmctld", [_which("slurmctld") or "slurmctld", "-D", "-i"])

        def controller_up() -> bool:
            r = self.run(["scontrol", "ping"], check=False, timeout=10)
            return r.returncode == 0 and "UP" in r.stdout

        self._wait_for("slurmctld answering", controller_up, ("munged", "slurmctld"))

    def _start_slurmd(self) -> None:
        self._spawn("slurmd", [_which("slurmd") or "slurmd", "-D", "-N", self.node])
        self._wait_for(f"node {self.node} idle", self.node_idle, ("munged", "slurmctld", "slurmd"))

    def node_idle(self) -> bool:
        r = self.run(["sinfo", "-h", "-n", self.node, "-o", "%T"], check=False, timeout=10)
        return r.returncode == 0 and r.stdout.strip() == "idle"

    def stop(self) -> None:
        """Cancel leftover jobs, then SIGTERM slurmd, slurmctld and munged by pid (SIGKILL
        after 10 s), then kill any process still carrying this cluster's SLURM_CONF (job
        processes and slurmstepd are not children of slurmd). Safe to call twice."""
        if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            with contextlib.suppress(Exception):
                self.cancel_all()
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self._procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        marker = f"SLURM_CONF={self.conf_path}".encode()
        for pid in _processes_with_env(marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self._procs.clear()
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of each daemon's logs, for error messages."""
        files = [self.log_dir / "slurmctld.log", self.log_dir / "slurmd.log", *self._logs.values()]
        return "\n".join(f"--- {p} ---\n{_tail(p, lines)}" for p in files if p.exists())

    # --- commands --------------------------------------------------------------------------

    def run(
        self, argv: list[str], check: bool = True, timeout: float = 60, **kwargs: object
    ) -> subprocess.CompletedProcess[str]:
        """A SLURM command against this cluster (text output). check=True raises with its
        stderr, which subprocess.CalledProcessError alone would not show."""
        r = subprocess.run(
            argv,
            env=kwargs.pop("env", self.env),  # type: ignore[arg-type]
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,  # type: ignore[arg-type]
        )
        if check and r.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited with {r.returncode}\nstdout: {r.stdout}\n"
                f"stderr: {r.stderr}"
            )
        return r

    def sbatch(self, script_text: str, *args: str, cwd: Path | str | None = None) -> str:
        """Submit `script_text` as a batch script (extra sbatch `args` before it); returns
        the job id. The job runs in `cwd`, by default the cluster's jobs folder, where its
        slurm-<id>.out lands."""
        self._scripts += 1
        script = self.jobs_dir / f"script-{self._scripts}.sh"
        script.write_text(script_text)
        script.chmod(0o755)
        workdir = Path(cwd) if cwd is not None else self.jobs_dir
        r = self.run(
            ["sbatch", "--parsable", "-p", self.partition, *args, str(script)], cwd=workdir
        )
        return r.stdout.strip().split(";")[0]

    def job_info(self, job_id: str) -> dict[str, str]:
        """`scontrol show job -o` as a dict (JobState, Reason, Restarts, ExitCode, ...);
        empty if the controller no longer knows the job."""
        r = self.run(["scontrol", "show", "job", "-o", str(job_id)], check=False)
        if r.returncode != 0:
            return {}
        # Values may hold spaces only in the last fields (Command=, WorkDir=...); split on
        # ' Key=' boundaries.
        return dict(re.findall(r"(?:^|\s)([A-Za-z:/_]+)=(\S*)", r.stdout.strip()))

    def job_state(self, job_id: str) -> str:
        """The job's state (PENDING, RUNNING, COMPLETED, ...), '' if unknown."""
        return self.job_info(job_id).get("JobState", "")

    def wait_job(
        self, job_id: str, timeout: float = 60, states: frozenset[str] | None = None
    ) -> str:
        """Poll until the job reaches one of `states` (default: a final state) and return
        it; TimeoutError (with the job's record and the logs) otherwise."""
        wanted = FINAL_STATES if states is None else states
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if state in wanted:
                return state
            time.sleep(POLL_S)
        info = self.run(["scontrol", "show", "job", str(job_id)], check=False).stdout
        raise TimeoutError(
            f"job {job_id} still {state or 'unknown'} after {timeout:.0f} s, waiting for "
            f"{sorted(wanted)}\n{info}\n{self.log_tails()}"
        )

    def cancel_all(self, timeout: float = 30) -> None:
        """Cancel every job of this cluster and wait until none is left running."""
        ids = self.run(["squeue", "-h", "-o", "%i"], timeout=10).stdout.split()
        if not ids:
            return
        self.run(["scancel", *ids], check=False, timeout=10)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.run(["squeue", "-h", "-t", "PD,R,CG,S,CF,RQ", "-o", "%i"], check=False)
            if r.returncode == 0 and not r.stdout.split():
                return
            time.sleep(POLL_S)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """One cluster for the whole test session (starting one takes seconds). Skipped only
    when SLURM is not installed or cannot run here; a cluster that fails to start is an
    error. Tests should wait for or cancel their own jobs (cancel_all())."""
    reason = slurm_available()
    if reason:
        pytest.skip(reason)
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster
