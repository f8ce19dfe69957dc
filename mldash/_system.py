"""System metrics: a background sampler that appends ``sys/*`` series to a run.

Units are in the names. Rates and percentages over time cover the span since the
previous sample (the first sample has none); I/O ``*_bytes`` count from the first.
Every point also carries the labels: ``host``, and ``rank`` / ``local_rank`` where
a launcher set them. The core stamps each point's time.

- ``sys/cpu``: ``process_percent`` (100 = one core busy), ``system_percent`` (all
  cores, 0-100), ``cores`` (logical), ``load1`` (1-minute load), ``threads`` (ours)
- ``sys/memory``: ``process_rss_bytes``, ``used_bytes``, ``available_bytes``,
  ``total_bytes``, ``percent``
- ``sys/disk``, the disk holding ``path``: ``used_bytes``, ``free_bytes``, ``total_bytes``,
  ``percent``, ``read_bytes``, ``write_bytes``, ``read_bytes_per_s``, ``write_bytes_per_s``
  (I/O of all disks where that disk's device is unknown: overlay, NFS, not Linux)
- ``sys/network``, all interfaces but loopback: ``sent_bytes``, ``recv_bytes``,
  ``sent_bytes_per_s``, ``recv_bytes_per_s``
- ``sys/gpu/<i>``, NVIDIA through NVML, ``<i>`` the CUDA index this process sees:
  ``nvml_index`` (physical; -1: a MIG instance), ``utilization_percent``,
  ``memory_utilization_percent``, ``memory_used_bytes``, ``memory_total_bytes``,
  ``temperature_c``, ``power_w``, ``power_limit_w``, ``sm_clock_mhz``,
  ``memory_clock_mhz``, ``throttle_reasons`` (NVML's bitmask: THROTTLE_BITS)

A field appears only where it was measured: absent is not zero. Nothing raises into training:
a probe (one library call) that fails rests, and is tried again after 30, 60, ... 480 samples;
one the hardware does not support, never. NVML is called on the sampler's thread only.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sys
import threading
import time
import weakref
from typing import Any, Callable, Iterable, Mapping

psutil: Any = None  # imported by the first sampler, so that `import mldash` stays light


def _import_psutil() -> None:
    global psutil
    if psutil is None:
        try:
            import psutil as module  # without it: only the load, disk I/O on Linux and the GPUs
        except ImportError:  # pragma: no cover - a dependency; a broken install must not break runs
            return
        psutil = module

DEFAULT_INTERVAL = 10.0
_NVIDIA_DRIVER = "/proc/driver/nvidia"  # there on Linux wherever NVIDIA's kernel driver is loaded
ENV = "MLDASH_SYSTEM_METRICS"
RETRY_AFTER = 30  # samples before a failed probe is tried again (doubling, at most 16x)
THROTTLE_BITS = {  # nvmlClocksEventReason*: why the clocks are below their maximum
    0x1: "gpu_idle", 0x2: "applications_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown", 0x10: "sync_boost",
    0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake", 0x100: "display_clocks"}
_MEMORY = {"used_bytes": "used", "available_bytes": "available", "total_bytes": "total", "percent": "percent"}
_DISK = {"used_bytes": "used", "free_bytes": "free", "total_bytes": "total", "percent": "percent"}
_WORDS = ("false", "off", "no", "true", "on", "yes")
_RANKS = {  # label -> what launchers (torchrun, MPI, SLURM) set, in order of trust
    "rank": ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID"),
    "local_rank": ("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"),
}


def interval_setting(value: Any = None) -> float | None:
    """Seconds between samples for ``Experiment(system_metrics=value)``, or None: off. None reads
    $MLDASH_SYSTEM_METRICS (seconds, 0/false/off), else 10; True is 10; False or 0 is off."""
    what, text = "system_metrics", os.environ.get(ENV, "").strip()
    if value is None and text:
        what, word = f"${ENV}", text.lower()
        try:
            value = word in ("true", "on", "yes") if word in _WORDS else float(text)
        except ValueError:
            raise ValueError(f"{what} must be a number of seconds or 0/false/off, got {text!r}") from None
    if value is None or value is True or value is False:
        return None if value is False else DEFAULT_INTERVAL
    if not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds or False, not {type(value).__name__}")
    if value != 0 and not (0.01 <= value <= 86400):  # also refuses NaN
        raise ValueError(f"{what} must be 0.01 to 86400 seconds, or 0 for off; got {value!r}")
    return float(value) if value else None


def default_labels(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """``host``, and ``rank`` / ``local_rank`` where a launcher set them."""
    labels: dict[str, Any] = {"host": socket.gethostname() or "unknown"}
    for label, names in _RANKS.items():
        found = [text for text in (environ.get(name, "").strip() for name in names) if text.isdigit()]
        if found:
            labels[label] = int(found[0])
    return labels


def rank_share(labels: Mapping[str, Any], environ: Mapping[str, str] = os.environ,
               launcher_setting: Callable[[], str | None] | None = None) -> str | None:
    """What a rank other than zero records so that each machine appears once: "machine" (its
    host and GPUs) for the first process of a machine (local rank 0, or no local rank known);
    "gpus" for another whose CUDA_VISIBLE_DEVICES is its own (the launcher's differs: SLURM's
    ``--gpus-per-task``, a wrapper script), not one the whole job inherited; else None."""
    if not labels.get("local_rank"):
        return "machine"
    mine = environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not mine:
        return None  # it sees the machine's GPUs, which its local rank 0 records
    return "gpus" if (launcher_setting or _parent_setting)() != mine else None


def _parent_setting() -> str | None:
    """CUDA_VISIBLE_DEVICES of the launcher (the parent process), where Linux tells."""
    try:
        with open(f"/proc/{os.getppid()}/environ", "rb") as f:
            pairs = f.read().split(b"\0")
    except OSError:
        return None
    for pair in pairs:
        if pair.startswith(b"CUDA_VISIBLE_DEVICES="):
            return pair.split(b"=", 1)[1].decode(errors="replace").strip()
    return None


def visible_gpus(setting: str | None, uuids: list[str], by_uuid: Callable[[str], Any] | None = None) -> list[Any]:
    """What CUDA_VISIBLE_DEVICES=``setting`` shows, in CUDA's order: indices into ``uuids``
    (NVML's order), or ``by_uuid(MIG UUID)``. As CUDA reads it: unset is all, empty none;
    an entry is an index or a unique UUID prefix; the first that names nothing ends the
    list. (CUDA's default order is fastest first, NVML's PCI order: equal on one GPU type.)"""
    if setting is None:
        return list(range(len(uuids)))
    found: list[Any] = []
    for entry in (part.strip() for part in setting.split(",")):
        if entry.lstrip("-").isdigit():
            device = int(entry) if 0 <= int(entry) < len(uuids) else None
        else:
            matches = [i for i, uuid in enumerate(uuids) if entry and uuid.startswith(entry)]
            device = matches[0] if len(matches) == 1 else None
            if device is None and by_uuid is not None and entry.startswith("MIG-"):
                with contextlib.suppress(Exception):
                    device = by_uuid(entry)
        if device is None or device in found:
            break
        found.append(device)
    return found


def _gpu_calls(nv: Any) -> list[tuple[str, Callable[[Any], dict]]]:
    """One probe per NVML call: an unsupported call loses its fields, not the device's."""

    def throttle(h: Any) -> dict:  # renamed in NVML 12; older drivers know only the old name
        try:
            return {"throttle_reasons": nv.nvmlDeviceGetCurrentClocksEventReasons(h)}
        except Exception as error:
            if not isinstance(error, AttributeError) and getattr(error, "value", None) != 13:  # FUNCTION_NOT_FOUND
                raise
            return {"throttle_reasons": nv.nvmlDeviceGetCurrentClocksThrottleReasons(h)}

    return [
        ("utilization", lambda h: _of(nv.nvmlDeviceGetUtilizationRates(h), utilization_percent="gpu",
                                      memory_utilization_percent="memory")),
        ("memory", lambda h: _of(nv.nvmlDeviceGetMemoryInfo(h), memory_used_bytes="used", memory_total_bytes="total")),
        ("temperature", lambda h: {"temperature_c": nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)}),
        ("power", lambda h: {"power_w": round(nv.nvmlDeviceGetPowerUsage(h) / 1000, 2)}),
        ("power_limit", lambda h: {"power_limit_w": round(nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000, 2)}),
        ("sm_clock", lambda h: {"sm_clock_mhz": nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)}),
        ("memory_clock", lambda h: {"memory_clock_mhz": nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)}),
        ("throttle", throttle),
    ]


def _of(record: Any, **names: str) -> dict:
    return {field: getattr(record, name) for field, name in names.items()}


def _existing(path: str) -> str:
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)  # the run's folder appears at its first write
    return path


def _disk_stat_file(path: str) -> str | None:
    """Linux's counters of the block device holding ``path`` (None: overlay, NFS, tmpfs, ...)."""
    dev = os.stat(_existing(path)).st_dev
    name = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat"
    return name if os.major(dev) and os.path.exists(name) else None


_live: "weakref.WeakSet[SystemSampler]" = weakref.WeakSet()


class SystemSampler:
    """Samples the machine every ``interval`` s on a daemon thread into ``metric(name)``
    (``exp.metrics``) for the series above. ``path``: the run's root, whose disk is measured;
    ``labels`` go into every point (None: ``default_labels()``); ``gpus``: only these CUDA
    indices (None: all visible); ``host``: False samples the GPUs only; ``on_error`` hears of
    an append that raised (the sampler never raises). One-shot: once stopped, or inherited by
    a forked child, it never samples.
    """

    def __init__(self, interval: float, metric: Callable[[str], Any], path: str | os.PathLike,
                 labels: Mapping[str, Any] | None = None, *, prefix: str = "sys", gpus: Iterable[int] | None = None,
                 host: bool = True, on_error: Callable[[BaseException], None] | None = None) -> None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0:
            raise ValueError(f"interval must be a number of seconds > 0, got {interval!r}")
        self.interval, self.prefix, self.host = float(interval), prefix, host
        self.path = os.path.abspath(os.fspath(path))
        self.labels = dict(default_labels() if labels is None else labels)
        self.problems: dict[str, str] = {}  # a probe -> its last error, for whoever asks why
        self.samples, self.cpu_seconds = 0, 0.0  # CPU time spent sampling, on any thread
        self._metric, self._on_error = metric, on_error
        self._only_gpus = None if gpus is None else set(gpus)
        self._series: dict[str, Any] = {}
        self._lock = threading.Lock()  # one sample at a time; stop() takes it to close
        self._state = threading.Lock()  # stop() and NVML's release happen once
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = self._closed = False
        self._retry_at: dict[str, tuple] = {}  # a failed probe -> (the sample to try it again, failures)
        self._first: dict[str, dict] = {}  # counters at the first sample, and at the last:
        self._last: dict[str, tuple[float, dict]] = {}
        _import_psutil()
        self._process, self._cores = psutil and psutil.Process(), os.cpu_count() or 1
        self._gpus: list[tuple] | None = None  # (series, NVML index, handle); None: not tried
        self._nvml, self._calls = None, []
        self._disk_file: str | None = ""  # "": not looked up yet; None: there is none

    def start(self) -> "SystemSampler":
        """Start the daemon thread: a sample now, then every ``interval``. Once only."""
        if self._thread is None and not self._stopped:
            self._thread = threading.Thread(target=self._run, name="mldash-system-metrics", daemon=True)
            _live.add(self)
            self._thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        """Take a last sample, end the thread, release NVML, in about ``2 * timeout`` s at most (a
        hung driver call is left behind); nothing is appended after it returns. Idempotent."""
        with self._state:
            if self._stopped:
                return
            self._stopped = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._closed = True  # no sample starts now; give one under way a moment to end
        if self._lock.acquire(timeout=timeout):
            self._lock.release()
        if thread is None or not thread.is_alive():
            self._close_nvml()  # otherwise the thread does, once its call returns

    def _run(self) -> None:
        try:
            next_at = time.monotonic()
            while True:
                self.sample()
                if self._stopped:
                    return  # that was the last one
                # On a fixed schedule; after a suspend, one sample, not a burst to catch up.
                next_at = max(next_at + self.interval, time.monotonic())
                self._wake.wait(next_at - time.monotonic())
        except BaseException:  # noqa: BLE001 - a sampler bug must not print into training
            pass
        finally:
            self._close_nvml()

    def sample(self) -> None:
        """Take one sample now and append it (the thread calls this; tests may too)."""
        with self._lock:
            if self._closed:
                return
            began, now = time.thread_time(), time.monotonic()
            for name, fields in (self._host_points(now) if self.host else []) + self._gpu_points():
                if fields and not self._closed:  # labels alone measure nothing
                    self._emit(name, {**fields, **self.labels})
            self.samples += 1
            self.cpu_seconds += time.thread_time() - began

    def _emit(self, name: str, fields: dict) -> None:
        try:
            if name not in self._series:
                self._series[name] = self._metric(name)
            self._series[name].append(**fields)
        except Exception as error:  # a full disk, a bug in the run: tell its owner, go on
            with contextlib.suppress(Exception):
                if self._on_error is not None:
                    self._on_error(error)

    # ---- probes --------------------------------------------------------------------------
    def _probe(self, key: str, call: Callable[[], dict], into: dict, permanent: Callable = lambda e: False) -> None:
        """``into.update(call())``, unless the probe rests after a failure."""
        retry_at, failures = self._retry_at.get(key, (0, 0))
        if self.samples < retry_at:
            return
        try:
            into.update(call())
        except Exception as error:
            rest = math.inf if permanent(error) else RETRY_AFTER * 2 ** min(failures, 4)
            self._retry_at[key] = (self.samples + rest, failures + 1)
            self.problems[key] = f"{type(error).__name__}: {error}"[:300]

    def _host_points(self, now: float) -> list[tuple[str, dict]]:
        cpu, memory, disk, network = {}, {}, {}, {}  # type: dict, dict, dict, dict
        self._probe("cpu.process", lambda: self._process_cpu(now), cpu)
        self._probe("cpu.system", lambda: self._system_cpu(now), cpu)
        if cpu:
            cpu["cores"] = self._cores
        self._probe("cpu.load", lambda: {"load1": round(os.getloadavg()[0], 2)}, cpu)
        self._probe("memory.process", lambda: {"process_rss_bytes": self._process.memory_info().rss}, memory)
        self._probe("memory.system", lambda: _of(psutil.virtual_memory(), **_MEMORY), memory)
        self._probe("disk.usage", lambda: _of(psutil.disk_usage(_existing(self.path)), **_DISK), disk)
        self._probe("disk.io", lambda: self._disk_io(now), disk)
        self._probe("network", lambda: self._network(now), network)
        p = self.prefix
        return [(f"{p}/cpu", cpu), (f"{p}/memory", memory), (f"{p}/disk", disk), (f"{p}/network", network)]

    def _process_cpu(self, now: float) -> dict:
        times = self._process.cpu_times()
        fields: dict = {"threads": self._process.num_threads()}
        change = self._delta("cpu.process", now, busy=times.user + times.system)
        if change is not None:
            # Clamped: the kernel counts CPU time in 10 ms ticks, so a short span can over-read.
            percent = 100 * change[1]["busy"] / change[0]
            fields["process_percent"] = round(min(100.0 * self._cores, max(0.0, percent)), 2)
        return fields

    def _system_cpu(self, now: float) -> dict:
        # Not psutil.cpu_percent(): its one process-wide baseline moves with the user's calls.
        t = psutil.cpu_times()
        total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)  # guest is in user too
        change = self._delta("cpu.system", now, idle=t.idle + getattr(t, "iowait", 0.0), total=total)
        if change is None or change[1]["total"] <= 0:
            return {}
        busy = 100 - 100 * change[1]["idle"] / change[1]["total"]
        return {"system_percent": round(min(100.0, max(0.0, busy)), 2)}

    def _disk_io(self, now: float) -> dict:
        if self._disk_file == "":
            self._disk_file = None  # looked up once: should that fail, all disks' I/O below
            self._disk_file = _disk_stat_file(self.path)
        if self._disk_file:
            with open(self._disk_file, "rb") as f:
                stat = f.read().split()  # counts sectors of 512 bytes, whatever the disk's are
            read, write = int(stat[2]) * 512, int(stat[6]) * 512
        else:
            io = psutil.disk_io_counters(perdisk=False)
            read, write = io.read_bytes, io.write_bytes
        return self._counters("disk.io", now, read=read, write=write)

    def _network(self, now: float) -> dict:
        # Not loopback: a local server's traffic is not the network's.
        nics = [n for name, n in psutil.net_io_counters(pernic=True).items() if not name.startswith("lo")]
        sent, recv = sum(n.bytes_sent for n in nics), sum(n.bytes_recv for n in nics)
        return self._counters("network", now, sent=sent, recv=recv)

    def _counters(self, key: str, now: float, **values: int) -> dict:
        """``<name>_bytes`` since the first sample, ``<name>_bytes_per_s`` since the last."""
        first = self._first.setdefault(key, dict(values))
        change = self._delta(key, now, **values)
        fields: dict = {}
        for name, value in values.items():
            grew = change[1][name] if change is not None else 0
            if grew < 0:  # a counter reset (a NIC went away): no rate, and the total goes on
                first[name] += grew
            fields[f"{name}_bytes"] = value - first[name]
            if change is not None and grew >= 0:
                fields[f"{name}_bytes_per_s"] = round(grew / change[0], 1)
        return fields

    def _delta(self, key: str, now: float, **values: float) -> tuple[float, dict] | None:
        """Seconds and changes since the last call for ``key``; None the first time."""
        last, self._last[key] = self._last.get(key), (now, values)
        if last is None or now <= last[0]:
            return None
        return now - last[0], {name: value - last[1][name] for name, value in values.items()}

    # ---- NVML ----------------------------------------------------------------------------
    def _gpu_points(self) -> list[tuple[str, dict]]:
        if self._gpus is None:
            self._gpus = []
            self._probe("nvml", self._open_nvml, {}, permanent=lambda e: True)
        if not self._gpus:
            return []
        points = []
        for series, nvml_index, handle in self._gpus:
            fields: dict = {}
            for name, call in self._calls:
                self._probe(f"{series}.{name}", lambda c=call, h=handle: c(h), fields, self._lasting)
            points.append((series, {"nvml_index": nvml_index, **fields} if fields else {}))
        return points

    def _open_nvml(self) -> dict:
        setting = os.environ.get("CUDA_VISIBLE_DEVICES")
        if setting is not None and not setting.strip():
            return {}  # this process sees no GPU: do not even load the library
        if "pynvml" not in sys.modules and sys.platform.startswith("linux") and not os.path.exists(_NVIDIA_DRIVER):
            return {}  # no NVIDIA driver: importing nvidia-ml-py alone would cost ~20 ms
        import pynvml as nv  # nvidia-ml-py; an ImportError means no GPU fields

        nv.nvmlInit()  # NVMLError without a driver or a GPU: no GPU fields
        self._nvml = nv
        try:
            handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(nv.nvmlDeviceGetCount())]
            uuids = [u.decode() if isinstance(u, bytes) else str(u) for u in map(nv.nvmlDeviceGetUUID, handles)]
            shown = visible_gpus(setting, uuids, getattr(nv, "nvmlDeviceGetHandleByUUID", None))
        except BaseException:
            self._close_nvml()
            raise
        self._calls = _gpu_calls(nv)
        codes = {getattr(nv, "NVML_ERROR_NOT_SUPPORTED", 3), getattr(nv, "NVML_ERROR_FUNCTION_NOT_FOUND", 13)}
        # Errors a retry will not change: unsupported here, or missing from this driver.
        self._lasting = lambda e: getattr(e, "value", None) in codes or isinstance(e, (AttributeError, TypeError))
        for cuda_index, device in enumerate(shown):
            if self._only_gpus is None or cuda_index in self._only_gpus:
                index, handle = (device, handles[device]) if isinstance(device, int) else (-1, device)
                self._gpus.append((f"{self.prefix}/gpu/{cuda_index}", index, handle))
        return {}

    def _close_nvml(self) -> None:
        with self._state:
            nv, self._nvml, self._gpus = self._nvml, None, []
        if nv is not None:
            with contextlib.suppress(Exception):
                nv.nvmlShutdown()  # NVML counts its inits: the user's and torch's stay open


def _after_fork_in_child() -> None:
    # A forked child (a DataLoader worker) gets no thread, maybe held locks, and the
    # parent's NVML handles: its copy of a sampler never samples.
    for sampler in list(_live):
        sampler._lock, sampler._state = threading.Lock(), threading.Lock()
        sampler._stopped = sampler._closed = True
        sampler._thread, sampler._nvml, sampler._gpus = None, None, []
    _live.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
