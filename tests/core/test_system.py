"""The system-metrics sampler (mldash/_system.py): series, fields, faults, GPUs, stop and fork."""

from __future__ import annotations

import os
import socket
import threading
import time
import types
from collections import Counter, defaultdict

import psutil
import pytest

import mldash
from mldash import _system
from mldash._system import RETRY_AFTER, SystemSampler, default_labels, interval_setting, visible_gpus

THREAD = "mldash-system-metrics"


class Recorder:
    """Stands in for ``exp.metrics``: every point appended, by series name."""

    def __init__(self) -> None:
        self.points: dict[str, list[dict]] = defaultdict(list)

    def __call__(self, name: str):
        return types.SimpleNamespace(append=lambda **fields: self.points[name].append(fields))


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


def fake_nvml(count: int = 2, init_error: int | None = None) -> types.ModuleType:
    """A pynvml with ``count`` devices; ``nv.lost`` and ``nv.unsupported`` make calls fail."""
    nv = types.ModuleType("pynvml")
    nv.NVMLError = NVMLError
    nv.NVML_ERROR_NOT_SUPPORTED, nv.NVML_ERROR_FUNCTION_NOT_FOUND, nv.NVML_ERROR_GPU_IS_LOST = 3, 13, 15
    nv.NVML_TEMPERATURE_GPU, nv.NVML_CLOCK_SM, nv.NVML_CLOCK_MEM = 0, 1, 2
    nv.calls, nv.lost, nv.unsupported = Counter(), set(), set()
    nv.inits = nv.shutdowns = 0
    uuids = [f"GPU-{chr(ord('a') + i) * 8}-0000" for i in range(count)]

    def init():
        nv.inits += 1
        if init_error is not None:
            raise NVMLError(init_error)

    def shutdown():
        nv.shutdowns += 1

    nv.nvmlInit, nv.nvmlShutdown = init, shutdown
    nv.nvmlDeviceGetCount = lambda: count
    nv.nvmlDeviceGetHandleByIndex = lambda i: ("handle", i)
    nv.nvmlDeviceGetUUID = lambda h: uuids[h[1]].encode()  # bytes, as pynvml before 11.5
    nv.nvmlDeviceGetHandleByUUID = lambda u: (_ for _ in ()).throw(NVMLError(13))
    readings = {
        "nvmlDeviceGetUtilizationRates": lambda i, *a: types.SimpleNamespace(gpu=37 + 18 * i, memory=5 + i),
        "nvmlDeviceGetMemoryInfo": lambda i, *a: types.SimpleNamespace(used=(1 + i) << 30, total=80 << 30),
        "nvmlDeviceGetTemperature": lambda i, *a: 60 + i,
        "nvmlDeviceGetPowerUsage": lambda i, *a: 250_500 + 1000 * i,  # milliwatts
        "nvmlDeviceGetEnforcedPowerLimit": lambda i, *a: 700_000,
        "nvmlDeviceGetClockInfo": lambda i, kind: {1: 1980, 2: 2619}[kind],
        "nvmlDeviceGetCurrentClocksEventReasons": lambda i, *a: 0x4,
    }

    def device_call(name, read):
        def call(handle, *args):
            index = handle[1]
            nv.calls[name, index] += 1
            if index in nv.lost:
                raise NVMLError(nv.NVML_ERROR_GPU_IS_LOST)
            if name in nv.unsupported:
                raise NVMLError(nv.NVML_ERROR_NOT_SUPPORTED)
            return read(index, *args)
        return call

    for name, read in readings.items():
        setattr(nv, name, device_call(name, read))
    return nv


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture
def nvml(monkeypatch):
    nv = fake_nvml()
    monkeypatch.setitem(__import__("sys").modules, "pynvml", nv)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return nv


def sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD]


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


# ---- the series, written through a real Experiment ----------------------------------------
def test_every_series_has_its_fields_with_plausible_values(root, no_gpu):
    exp = mldash.Experiment("sys/fields", root=root).start()
    sampler = SystemSampler(0.05, exp.metrics, exp.root).start()
    wait_for(lambda: sampler.samples >= 2)
    burn(0.4)  # this process busy on one core: some sample must say so
    wait_for(lambda: sampler.samples >= 12)
    sampler.stop()
    exp.finish()
    assert exp.metric_names() == ["sys/cpu", "sys/disk", "sys/memory", "sys/network"]
    read = {name: [p["data"] for p in exp.metrics(name).read(limit=10_000)["data"]] for name in exp.metric_names()}
    assert all(len(points) == sampler.samples for points in read.values())
    for points in read.values():
        assert {p["host"] for p in points} == {socket.gethostname()}

    cores = os.cpu_count()
    cpu = read["sys/cpu"]
    assert "process_percent" not in cpu[0] and "system_percent" not in cpu[0]  # no span to measure yet
    assert all(p["cores"] == cores and p["threads"] >= 2 for p in cpu)  # this thread and the sampler's
    assert all(0 <= p["process_percent"] <= 100 * cores for p in cpu[1:]), cpu
    # Absent where no clock tick fell between two samples (the last one comes right after another).
    assert all(0 <= p["system_percent"] <= 100 for p in cpu[1:] if "system_percent" in p), cpu
    assert sum("system_percent" in p for p in cpu[1:]) >= len(cpu) // 2, cpu
    assert max(p["process_percent"] for p in cpu[1:]) > 20
    assert all(p["load1"] >= 0 for p in cpu)

    total = psutil.virtual_memory().total
    for p in read["sys/memory"]:
        assert 10 << 20 < p["process_rss_bytes"] < total  # a Python with psutil is over 10 MiB
        assert p["total_bytes"] == total and 0 < p["available_bytes"] <= total and 0 < p["used_bytes"] < total
        assert 0 <= p["percent"] <= 100

    usage = psutil.disk_usage(str(root))
    for p in read["sys/disk"]:
        assert p["total_bytes"] == usage.total and p["used_bytes"] + p["free_bytes"] <= usage.total
        assert 0 <= p["percent"] <= 100 and p["read_bytes"] >= 0 and p["write_bytes"] >= 0
    assert all(p["read_bytes_per_s"] >= 0 and p["write_bytes_per_s"] >= 0 for p in read["sys/disk"][1:])

    network = read["sys/network"]
    assert "sent_bytes_per_s" not in network[0] and network[0]["sent_bytes"] == network[0]["recv_bytes"] == 0
    sent = [p["sent_bytes"] for p in network]
    assert sent == sorted(sent) and all(p["recv_bytes_per_s"] >= 0 for p in network[1:])


def test_stop_is_prompt_idempotent_takes_a_last_sample_and_leaves_no_thread(root, no_gpu):
    exp = mldash.Experiment("sys/stop", root=root).start()
    sampler = SystemSampler(60, exp.metrics, exp.root).start()
    wait_for(lambda: sampler.samples == 1)
    assert len(sampler_threads()) == 1
    began = time.monotonic()
    sampler.stop()
    assert time.monotonic() - began < 1.0  # not the 60 s interval
    assert sampler.samples == 2 and sampler_threads() == []
    began = time.monotonic()
    sampler.stop()
    sampler.sample()
    sampler.start()
    assert time.monotonic() - began < 0.2 and sampler.samples == 2 and sampler_threads() == []
    exp.finish()
    assert len(exp.metrics("sys/cpu")) == 2


def test_stop_does_not_wait_for_a_hung_probe_and_nothing_is_appended_after_it(monkeypatch, no_gpu):
    recorder, release = Recorder(), threading.Event()
    sampler = SystemSampler(0.05, recorder, os.getcwd(), labels={})
    real = psutil.virtual_memory
    monkeypatch.setattr(psutil, "virtual_memory", lambda: real() if release.wait(5) else real())
    sampler.start()
    time.sleep(0.2)  # the first sample hangs in virtual_memory()
    began = time.monotonic()
    sampler.stop(timeout=0.2)
    assert time.monotonic() - began < 1.0
    assert recorder.points == {}
    release.set()
    wait_for(lambda: not sampler_threads())
    assert recorder.points == {}  # the hung sample ended after stop(): dropped


def test_labels_name_host_and_rank(monkeypatch, no_gpu):
    for name in ("RANK", "LOCAL_RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
                 "SLURM_PROCID", "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)
    assert default_labels() == {"host": socket.gethostname()}
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("LOCAL_RANK", "x")  # not a number: no label
    assert default_labels() == {"host": socket.gethostname(), "rank": 5}
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert default_labels() == {"host": socket.gethostname(), "rank": 3, "local_rank": 1}
    recorder = Recorder()
    SystemSampler(1, recorder, os.getcwd()).sample()
    assert {(p["host"], p["rank"], p["local_rank"]) for p in recorder.points["sys/memory"]} == {
        (socket.gethostname(), 3, 1)}
    SystemSampler(1, recorder, os.getcwd(), labels={}, prefix="sys/rank3").sample()
    assert "host" not in recorder.points["sys/rank3/memory"][0]


@pytest.mark.parametrize("env, value, expected", [
    (None, None, 10.0), ("2.5", None, 2.5), ("0", None, None), ("off", None, None), ("false", None, None),
    ("true", None, 10.0), ("5", False, None), ("5", 0, None), ("5", True, 10.0), ("5", 0.5, 0.5),
])
def test_interval_setting(monkeypatch, env, value, expected):
    if env is None:
        monkeypatch.delenv(_system.ENV, raising=False)
    else:
        monkeypatch.setenv(_system.ENV, env)
    assert interval_setting(value) == expected


@pytest.mark.parametrize("env, value, error", [
    ("soon", None, ValueError), (None, -1, ValueError), (None, float("nan"), ValueError),
    (None, 10**6, ValueError), (None, "10", TypeError),
])
def test_interval_setting_refuses_bad_values(monkeypatch, env, value, error):
    if env is None:
        monkeypatch.delenv(_system.ENV, raising=False)
    else:
        monkeypatch.setenv(_system.ENV, env)
    with pytest.raises(error):
        interval_setting(value)


# ---- faults --------------------------------------------------------------------------------
def test_a_failing_psutil_probe_rests_while_the_others_go_on(monkeypatch, no_gpu):
    calls = Counter()
    real_memory, real_network = psutil.virtual_memory, psutil.net_io_counters

    def memory():
        calls["memory"] += 1
        raise psutil.AccessDenied(os.getpid())

    def network(pernic=False):
        calls["network"] += 1
        raise RuntimeError("no /proc/net/dev")

    monkeypatch.setattr(psutil, "virtual_memory", memory)
    monkeypatch.setattr(psutil, "net_io_counters", network)
    recorder = Recorder()
    sampler = SystemSampler(1, recorder, os.getcwd())
    for _ in range(10):
        sampler.sample()
    assert calls == {"memory": 1, "network": 1}  # not tried on every sample
    assert set(sampler.problems) == {"memory.system", "network"} and "AccessDenied" in sampler.problems["memory.system"]
    assert "sys/network" not in recorder.points  # no fields left: no point
    memory = recorder.points["sys/memory"]
    assert [("process_rss_bytes" in p, "used_bytes" in p) for p in memory] == [(True, False)] * 10
    assert len(recorder.points["sys/cpu"]) == len(recorder.points["sys/disk"]) == 10
    monkeypatch.setattr(psutil, "virtual_memory", real_memory)  # it recovers: the retry finds it
    monkeypatch.setattr(psutil, "net_io_counters", real_network)
    while sampler.samples < RETRY_AFTER + 2:
        sampler.sample()
    assert "used_bytes" in recorder.points["sys/memory"][-1] and len(recorder.points["sys/network"]) == 2


def test_an_append_that_raises_goes_to_on_error_never_to_the_caller(no_gpu):
    heard = []

    def metric(name):
        if name == "sys/disk":
            raise RuntimeError("no such series")
        return types.SimpleNamespace(append=lambda **fields: (_ for _ in ()).throw(OSError(28, "disk full")))

    sampler = SystemSampler(1, metric, os.getcwd(), on_error=heard.append)
    sampler.sample()
    assert sorted(type(e).__name__ for e in heard) == ["OSError", "OSError", "OSError", "RuntimeError"]
    SystemSampler(1, metric, os.getcwd(), on_error=lambda e: 1 / 0).sample()  # a broken callback too


# ---- GPUs, through a fake NVML -------------------------------------------------------------
def test_gpu_fields_and_nvml_released_once_at_stop(nvml):
    recorder = Recorder()
    sampler = SystemSampler(0.05, recorder, os.getcwd(), labels={}).start()
    wait_for(lambda: sampler.samples >= 2)
    sampler.stop()
    sampler.stop()
    assert sorted(n for n in recorder.points if n.startswith("sys/gpu")) == ["sys/gpu/0", "sys/gpu/1"]
    assert recorder.points["sys/gpu/1"][0] == {
        "nvml_index": 1, "utilization_percent": 55, "memory_utilization_percent": 6,
        "memory_used_bytes": 2 << 30, "memory_total_bytes": 80 << 30, "temperature_c": 61, "power_w": 251.5,
        "power_limit_w": 700.0, "sm_clock_mhz": 1980, "memory_clock_mhz": 2619, "throttle_reasons": 0x4,
    }
    assert _system.THROTTLE_BITS[0x4] == "sw_power_cap"
    assert (nvml.inits, nvml.shutdowns) == (1, 1) and sampler_threads() == []


@pytest.mark.parametrize("setting, shown", [
    (None, {0: 0, 1: 1}),
    ("1", {0: 1}),
    ("1,0", {0: 1, 1: 0}),
    (" 1 , 0 ", {0: 1, 1: 0}),
    ("GPU-bbbb", {0: 1}),  # a UUID prefix
    ("GPU-aaaaaaaa-0000,1", {0: 0, 1: 1}),
    ("0,7,1", {0: 0}),  # CUDA stops at the first entry that names no device
    ("1,1", {0: 1}),
    ("GPU-", {}),  # ambiguous
    ("-1", {}),
    ("", {}),
    ("MIG-1234", {}),
])
def test_cuda_visible_devices_maps_cuda_indices_to_nvml_devices(nvml, monkeypatch, setting, shown):
    if setting is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", setting)
    recorder = Recorder()
    SystemSampler(1, recorder, os.getcwd()).sample()
    gpus = {int(n.rsplit("/", 1)[1]): p[0] for n, p in recorder.points.items() if n.startswith("sys/gpu/")}
    assert {cuda: p["nvml_index"] for cuda, p in gpus.items()} == shown
    assert {cuda: p["utilization_percent"] for cuda, p in gpus.items()} == {c: 37 + 18 * i for c, i in shown.items()}
    assert nvml.inits == (0 if setting == "" else 1)  # empty: NVML not even loaded


def test_visible_gpus_with_a_mig_instance():
    uuids = ["GPU-aaaa", "GPU-bbbb"]
    assert visible_gpus("MIG-77", uuids, lambda u: ("mig", u)) == [("mig", "MIG-77")]
    assert visible_gpus("MIG-77,0", uuids, lambda u: 1 / 0) == []
    assert visible_gpus(None, uuids) == [0, 1] and visible_gpus("1,GPU-a", uuids) == [1, 0]


def test_only_the_gpus_asked_for(nvml):
    recorder = Recorder()
    SystemSampler(1, recorder, os.getcwd(), gpus=[1]).sample()
    assert [n for n in recorder.points if n.startswith("sys/gpu")] == ["sys/gpu/1"]


def test_no_gpu_fields_when_nvml_cannot_start(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    nv = fake_nvml(init_error=9)  # NVML_ERROR_DRIVER_NOT_LOADED
    monkeypatch.setitem(__import__("sys").modules, "pynvml", nv)
    recorder = Recorder()
    sampler = SystemSampler(1, recorder, os.getcwd())
    for _ in range(5):
        sampler.sample()
    sampler.stop()
    assert not any(n.startswith("sys/gpu") for n in recorder.points) and len(recorder.points["sys/cpu"]) == 5
    assert (nv.inits, nv.shutdowns) == (1, 0) and "nvml" in sampler.problems


def test_no_gpu_fields_without_nvidia_ml_py(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setitem(__import__("sys").modules, "pynvml", None)  # import raises ImportError
    recorder = Recorder()
    sampler = SystemSampler(1, recorder, os.getcwd())
    sampler.sample()
    sampler.sample()
    assert not any(n.startswith("sys/gpu") for n in recorder.points) and len(recorder.points["sys/memory"]) == 2
    assert sampler.problems["nvml"].startswith(("ImportError", "ModuleNotFoundError"))


def test_a_gpu_that_disappears_stops_its_series_and_is_not_polled_every_sample(nvml):
    recorder = Recorder()
    sampler = SystemSampler(1, recorder, os.getcwd())
    sampler.sample()
    nvml.lost.add(1)
    before = sum(n for (_, device), n in nvml.calls.items() if device == 1)
    for _ in range(6):
        sampler.sample()
    after = sum(n for (_, device), n in nvml.calls.items() if device == 1)
    assert len(recorder.points["sys/gpu/0"]) == 7 and len(recorder.points["sys/gpu/1"]) == 1
    assert after - before == len(sampler._calls) == 8  # each probe failed once, then rests
    assert sampler.problems["sys/gpu/1.utilization"] == "NVMLError: NVML error 15"
    nvml.lost.clear()  # it comes back: seen again at the retry
    while sampler.samples < 1 + RETRY_AFTER + 1:
        sampler.sample()
    assert len(recorder.points["sys/gpu/1"]) == 2


def test_an_unsupported_gpu_call_loses_its_field_and_is_never_retried(nvml):
    nvml.unsupported.add("nvmlDeviceGetPowerUsage")
    recorder = Recorder()
    sampler = SystemSampler(1, recorder, os.getcwd())
    for _ in range(RETRY_AFTER * 3):
        sampler.sample()
    points = recorder.points["sys/gpu/0"]
    assert len(points) == RETRY_AFTER * 3 and all("power_w" not in p and p["power_limit_w"] == 700.0 for p in points)
    assert nvml.calls["nvmlDeviceGetPowerUsage", 0] == 1


# ---- fork ----------------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_inherit_a_running_sampler(no_gpu):
    recorder = Recorder()
    sampler = SystemSampler(0.02, recorder, os.getcwd()).start()
    wait_for(lambda: sampler.samples >= 2)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 1
        try:
            seen = sampler.samples
            sampler.sample()
            sampler.start()
            time.sleep(0.1)
            sampler.stop()
            code = 0 if sampler.samples == seen and not sampler_threads() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    seen = sampler.samples
    wait_for(lambda: sampler.samples > seen)  # the parent's goes on
    sampler.stop()
    assert sampler_threads() == []


def test_a_run_samples_the_machine_by_default_and_not_when_told(root, monkeypatch, no_gpu):
    monkeypatch.delenv("MLDASH_SYSTEM_METRICS")
    with mldash.Experiment("sys/default", root=root) as exp:
        assert exp.system_metrics == 10.0
    names = exp.metric_names()
    assert {"sys/cpu", "sys/memory", "sys/disk"} <= set(names)
    assert sampler_threads() == []
    with mldash.Experiment("sys/off", root=root, system_metrics=False) as off:
        off.metrics("loss").append(value=1)
    assert off.metric_names() == ["loss"]
    monkeypatch.setenv("MLDASH_SYSTEM_METRICS", "0")
    with mldash.Experiment("sys/env-off", root=root) as env_off:
        env_off.metrics("loss").append(value=1)
    assert env_off.metric_names() == ["loss"] and env_off.system_metrics is None


def test_a_bad_system_metrics_setting_fails_at_construction(root):
    with pytest.raises((ValueError, TypeError)):
        mldash.Experiment("sys/bad", root=root, system_metrics="often")


@pytest.mark.parametrize("setting, expected", [(False, None), (2.5, 2.5)])
def test_the_integrations_take_system_metrics_like_the_experiment(root, setting, expected):
    pytest.importorskip("lightning")
    from mldash.integrations.lightning import MLDashLogger

    logger = MLDashLogger("sys/lightning", root=root, system_metrics=setting)
    assert logger.experiment.system_metrics == expected
    logger.experiment.finish()


def test_without_an_nvidia_driver_nvml_is_not_even_imported(root, monkeypatch, tmp_path):
    import sys

    from mldash import _system

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    monkeypatch.setattr(_system, "_NVIDIA_DRIVER", str(tmp_path / "no-driver"))
    exp = mldash.Experiment("sys/nodriver", root=root, system_metrics=False).start()
    sampler = _system.SystemSampler(60, exp.metrics, root)
    sampler.sample()
    sampler.stop()
    exp.finish()
    assert "pynvml" not in sys.modules or not sys.platform.startswith("linux")
    assert not any(n.startswith("sys/gpu") for n in exp.metric_names())
