"""android_bench: HostDevice on real LiteRT, AdbDevice against tests/fake_adb, `srsearch bench`."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from android_bench import (
    AdbDevice,
    BenchResult,
    Device,
    DeviceError,
    HostDevice,
    device_from_target,
)
from android_bench.adb import parse_benchmark_output, result_from_output
from srsearch.cli import main as cli_main
from srsearch.common.errors import UserError
from srsearch.deploy.tflite import convert

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")

FAKE_ADB = Path(__file__).parent / "fake_adb" / "adb"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny SR nets as .tflite; the second has a space and a quote in its name."""
    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    nets = [
        nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2)),
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1),
                      nn.PixelShuffle(2)),
    ]  # fmt: skip
    names = ["plain.tflite", "my model's v2.tflite"]
    return [convert(net, (1, 3, 16, 16), d / name) for net, name in zip(nets, names, strict=True)]


def _check_stats(result: BenchResult, runs: int) -> None:
    assert len(result.samples_ms) == result.runs == runs
    assert 0 < result.min_ms <= result.p10_ms <= result.median_ms <= result.p90_ms
    assert result.p90_ms <= result.max_ms == max(result.samples_ms)
    assert result.mean_ms == pytest.approx(sum(result.samples_ms) / runs)
    assert result.init_ms > 0 and result.first_ms > 0


# --- host -----------------------------------------------------------------------------------


@pytest.mark.parametrize("isolate", [False, True])
def test_host_benchmark(models: list[Path], isolate: bool) -> None:
    seen = []
    results = HostDevice(threads=2, isolate=isolate).benchmark(
        models, runs=7, warmup=2, on_result=seen.append
    )
    assert [r.model for r in results] == models
    assert seen == results
    for r in results:
        _check_stats(r, runs=7)
    if isolate:  # a fresh process per model: its peak memory growth is visible
        assert all(r.memory_mb > 0.1 for r in results), [r.memory_mb for r in results]


def test_host_fingerprint() -> None:
    fp = HostDevice(threads=2).fingerprint()
    assert fp["kind"] == "host" and fp["threads"] == 2 and fp["delegate"] == "xnnpack"
    assert fp["runtime"] == "ai-edge-litert" and fp["runtime_version"].startswith("2.")
    key = HostDevice(threads=2).fingerprint_id()
    assert key == HostDevice(threads=2).fingerprint_id()  # stable
    assert key != HostDevice(threads=1).fingerprint_id()
    assert key.startswith("host-") and "-2t-xnnpack-" in key
    assert key.replace("-", "").isalnum()


def test_host_errors(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="--target adb"):
        HostDevice(delegate="gpu")
    with pytest.raises(UserError, match=r"missing\.tflite does not exist"):
        HostDevice().benchmark([tmp_path / "missing.tflite"])
    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"garbage")
    with pytest.raises(DeviceError, match=r"LiteRT failed on .*bogus\.tflite"):
        HostDevice(isolate=True).benchmark([bogus], runs=1, warmup=1)


# --- fake adb -------------------------------------------------------------------------------


_FAKE_VARS = (
    "DEVICES", "SIGNAL_ON", "DROP_ON", "DROP_STAYS", "OFFLINE_ON", "HANG_ON", "RUN_US", "CPUS",
    "UNKNOWN_FLAGS", "GPU", "THERMAL", "NNAPI_OPS", "PROPS",
)  # fmt: skip


class FakePhone:
    """Environment for tests/fake_adb/adb: a sandbox device root and a command log."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = tmp_path / "device"
        self.log = tmp_path / "adb.log"
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        wrapper = bin_dir / "adb"  # run the fake with this interpreter (it has ai_edge_litert)
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_ADB}" "$@"\n')
        wrapper.chmod(0o755)
        self.binary = tmp_path / "benchmark_model"
        self.binary.write_bytes(b"\x7fELF fake benchmark_model")
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_ADB_ROOT", str(self.root))
        monkeypatch.setenv("FAKE_ADB_LOG", str(self.log))
        monkeypatch.setenv("FAKE_ADB_FIXED_TIMINGS", "1")
        for var in _FAKE_VARS:
            monkeypatch.delenv(f"FAKE_ADB_{var}", raising=False)

    def set(self, **env: str) -> None:
        for k, v in env.items():
            self.monkeypatch.setenv(f"FAKE_ADB_{k}", v)

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def device_files(self) -> list[str]:
        return sorted(
            str(p.relative_to(self.root))
            for p in self.root.rglob("*")
            if p.name != ".fake_adb_state.json" and p.relative_to(self.root).parts[0] == "data"
        )


@pytest.fixture
def phone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakePhone:
    return FakePhone(tmp_path, monkeypatch)


def test_adb_fingerprint(phone: FakePhone) -> None:
    phone.set(PROPS=json.dumps({"ro.soc.model": "", "ro.board.platform": "kalama"}))
    dev = AdbDevice(benchmark_binary=phone.binary, threads=4, delegate="gpu")
    fp = dev.fingerprint()
    assert fp["kind"] == "adb" and fp["name"] == "Pixel 7" and fp["manufacturer"] == "Google"
    assert fp["soc"] == "kalama"  # ro.soc.model empty -> ro.board.platform
    assert (fp["android"], fp["abi"], fp["threads"], fp["delegate"]) == (
        "14", "arm64-v8a", 4, "gpu"
    )  # fmt: skip
    assert len(fp["runtime_sha256"]) == 16
    assert dev.fingerprint_id().startswith("adb-pixel-7-4t-gpu-")
    assert AdbDevice(benchmark_binary=phone.binary, delegate="cpu").fingerprint_id() != (
        dev.fingerprint_id()
    )


def test_adb_benchmark_batch(phone: FakePhone, models: list[Path]) -> None:
    remote = "/data/local/tmp/sr search's dir"
    dev = AdbDevice(benchmark_binary=phone.binary, threads=4, cpu_mask="f0", remote_dir=remote)
    results = dev.benchmark(models, runs=6, warmup=2)

    # The fake times run i of call N as 1000 N + 10 (7i mod 11) us and prints benchmark_model's
    # statistics of them; parsed values must match exactly.
    for call, (model, r) in enumerate(zip(models, results, strict=True), start=1):
        base = 1000 * call
        warm = [base + 10 * ((7 * i) % 11) for i in range(2)]
        timed = [base + 10 * ((7 * i) % 11) for i in range(2, 8)]
        srt = sorted(timed)
        assert r.model == model
        assert r.runs == 6
        assert r.median_ms == pytest.approx(srt[3] / 1000)
        assert not r.median_is_avg
        assert r.mean_ms == pytest.approx(sum(timed) / 6 / 1000, rel=1e-5)  # 6 digits printed
        assert (r.min_ms, r.max_ms) == (srt[0] / 1000, srt[-1] / 1000)
        assert r.init_ms > 0
        assert r.first_ms == pytest.approx(warm[0] / 1000)
        assert r.memory_mb == pytest.approx(2.25 + call)
        assert {k: r.extra[k] for k in ("p5_ms", "p95_ms", "warmup_avg_ms")} == pytest.approx(
            {"p5_ms": srt[0] / 1000, "p95_ms": srt[5] / 1000,
             "warmup_avg_ms": sum(warm) / 2 / 1000}
        )  # fmt: skip
        assert r.extra["throttled"] is False
        assert r.p10_ms is None and r.p90_ms is None and r.samples_ms == ()

    calls = phone.calls()
    pushes = [c for c in calls if "push" in c]
    assert [Path(c[-2]) for c in pushes] == [phone.binary, *models]
    assert all(c[-1].startswith(remote + "/") for c in pushes)
    runs = [c for c in calls if c[:3] == ["-s", "FAKE0001", "shell"] and "--graph=" in c[3]]
    assert len(runs) == 2
    assert runs[0][3].startswith("echo srsearch-pid:$$; exec taskset f0 ")
    assert "--num_threads=4" in runs[0][3] and "--use_xnnpack=true" in runs[0][3]
    assert "--num_runs=6" in runs[0][3] and "--warmup_runs=2" in runs[0][3]
    assert phone.device_files() == ["data", "data/local", "data/local/tmp"]  # all removed


def test_adb_picks_serial_among_several(phone: FakePhone, models: list[Path]) -> None:
    phone.set(DEVICES="AAA:device,BBB:device")
    with pytest.raises(DeviceError, match=r"several devices attached: AAA \(device\), BBB"):
        AdbDevice(benchmark_binary=phone.binary).benchmark(models[:1], runs=2, warmup=1)
    dev = device_from_target("adb:BBB", benchmark_binary=phone.binary)
    (result,) = dev.benchmark(models[:1], runs=2, warmup=1)
    assert result.runs == 2
    assert all(c[:2] == ["-s", "BBB"] for c in phone.calls() if c[0] != "devices")


@pytest.mark.parametrize(
    ("devices", "message"),
    [
        ("", "no Android device found"),
        ("FAKE0001:unauthorized", "unauthorized: unlock the phone"),
        ("FAKE0001:offline", "offline: reconnect"),
    ],
)
def test_adb_device_states(phone: FakePhone, models, devices: str, message: str) -> None:
    phone.set(DEVICES=devices)
    with pytest.raises(DeviceError, match=message):
        AdbDevice(benchmark_binary=phone.binary).benchmark(models, runs=2)


def test_adb_unknown_serial(phone: FakePhone) -> None:
    with pytest.raises(DeviceError, match=r"device NOPE is not attached \(attached: FAKE0001\)"):
        AdbDevice(serial="NOPE").fingerprint()


def test_adb_not_installed(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="adb not found .*platform-tools"):
        AdbDevice(adb=str(tmp_path / "no-adb-here")).fingerprint()


def test_adb_missing_binary(phone: FakePhone, tmp_path: Path, models) -> None:
    with pytest.raises(DeviceError, match=r"benchmark binary .*nowhere does not exist.*nightly"):
        AdbDevice(benchmark_binary=tmp_path / "nowhere")
    with pytest.raises(DeviceError, match="no benchmark_model binary given"):
        AdbDevice().benchmark(models, runs=2)


def test_adb_crash_mid_batch(phone: FakePhone, models: list[Path]) -> None:
    phone.set(SIGNAL_ON="2:11")
    seen = []
    with pytest.raises(DeviceError) as info:
        AdbDevice(benchmark_binary=phone.binary).benchmark(models, runs=3, on_result=seen.append)
    message = str(info.value)
    assert f"failed on model {models[1]}" in message
    assert "exit status 139): segmentation fault (SIGSEGV)" in message
    assert "Loaded model" in message  # the log's tail
    assert [r.model for r in seen] == models[:1]  # the first result was delivered
    assert phone.device_files() == ["data", "data/local", "data/local/tmp"]  # cleaned up


def test_adb_retries_dropped_connection(phone: FakePhone, models, caplog) -> None:
    phone.set(DROP_ON="1")
    with caplog.at_level(logging.WARNING, logger="android_bench.adb"):
        results = AdbDevice(benchmark_binary=phone.binary).benchmark(models, runs=2)
    assert len(results) == 2
    # call 1 dropped (exit 255, no text); the retry is call 2, whose timed runs 3 and 4 (after
    # 3 warm-ups) take 2000 + 10 (7i mod 11) = 2100 and 2060 us; the median is the upper one
    assert results[0].median_ms == pytest.approx(2.100)
    assert f"lost FAKE0001 while benchmarking model {models[0]}" in caplog.text
    assert "exit 255" in caplog.text and "retrying once" in caplog.text
    assert any(c[-1] == "wait-for-device" for c in phone.calls())


def test_parse_older_benchmark_model_output() -> None:
    """Older builds: no percentiles, no memory line, different timings line."""
    text = (
        "Initialized session in 0.896ms\n"
        "count=215 first=12231 curr=2106 min=2065 max=12231 avg=2331.42 std=746\n\n"
        "count=459 first=2143 curr=2101 min=2056 max=2656 avg=2177.1 std=124\n\n"
        "Average inference timings in us: Warmup: 2331.42, Init: 896, Inference: 2177.1\n"
    )
    r = result_from_output(Path("m.tflite"), text)
    assert r.median_is_avg and r.median_ms == pytest.approx(2.1771)
    assert (r.runs, r.min_ms, r.max_ms, r.init_ms) == (459, 2.056, 2.656, 0.896)
    assert r.memory_mb is None and r.first_ms is None
    same = parse_benchmark_output(
        "INFO: count=5 curr=1500(all same)\nINFO: Inference timings in us: Init: 10, "
        "First inference: 1500, Warmup (avg): 1500, Inference (avg): 1500\n"
    )
    assert same["stats"]["median"] == same["stats"]["min"] == 1500


def test_device_from_target_errors(tmp_path: Path) -> None:
    assert isinstance(device_from_target("host", threads=1, benchmark_binary=None), HostDevice)
    with pytest.raises(DeviceError, match="unknown target 'phone'"):
        device_from_target("phone")
    with pytest.raises(DeviceError, match="--target host does not take benchmark_binary"):
        device_from_target("host", benchmark_binary=tmp_path)


# --- srsearch bench -------------------------------------------------------------------------


def test_cli_bench_host(models: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    flags = ["--runs", "4", "--warmup", "1", "--rounds", "2", "--json", str(out)]
    assert cli_main(["bench", *map(str, models), *flags]) == 0
    (report,) = json.loads(out.read_text())["targets"]
    assert report["device"]["kind"] == "host" and report["device_id"].startswith("host-")
    assert [r["model"] for r in report["results"]] == [str(m) for m in models]
    for r in report["results"]:
        assert [len(x["samples_ms"]) for x in r["rounds"]] == [4, 4]
        assert r["round_ms"] == [x["median_ms"] for x in r["rounds"]]
        assert r["median_ms"] == pytest.approx(sum(r["round_ms"]) / 2)
    printed = capsys.readouterr().out
    assert "median" in printed and "plain.tflite" in printed

    # --resume keeps what is there (same numbers) and times only the new model.
    third = tmp_path / "third.tflite"
    shutil.copyfile(models[0], third)
    assert cli_main(["bench", *map(str, models), str(third), *flags, "--resume"]) == 0
    again = json.loads(out.read_text())["targets"][0]["results"]
    assert again[:2] == report["results"] and again[2]["model"] == str(third)


def test_cli_bench_default_json_and_errors(models: list[Path], tmp_path: Path, capsys) -> None:
    model = tmp_path / "solo.tflite"
    shutil.copyfile(models[0], model)
    assert cli_main(["bench", str(model), "--runs", "2", "--warmup", "1", "--rounds", "1"]) == 0
    assert json.loads((tmp_path / "solo.bench.json").read_text())["runs"] == 2
    assert cli_main(["bench", str(model), "--gpu"]) == 2
    assert "--target adb" in capsys.readouterr().err
    assert cli_main(["bench", str(model), "--warmup", "0"]) == 2
    assert "need at least 1 warm-up run" in capsys.readouterr().err


def test_cli_bench_adb(phone: FakePhone, models: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "phone.json"
    argv = ["bench", str(models[0]), "--target", "adb:FAKE0001", "--gpu", "--runs", "3"]
    argv += ["--rounds", "1", "--benchmark-binary", str(phone.binary), "--json", str(out)]
    assert cli_main(argv) == 0
    (report,) = json.loads(out.read_text())["targets"]
    assert report["device"]["name"] == "Pixel 7" and report["device"]["delegate"] == "gpu"
    # runs 3..5 after 3 warm-ups: 1000 + 10 * (7i mod 11) = 1100, 1060, 1020 us
    assert report["results"][0]["median_ms"] == pytest.approx(1.060)
    assert report["results"][0]["rounds"][0]["extra"]["delegation"]["full"] is True
    assert any("--use_gpu=true" in c[-1] for c in phone.calls())


class _ScriptedDevice(Device):
    """Answers each benchmark call with the next scripted median per model; logs the order."""

    def __init__(self, medians):
        self.medians = {Path(k): list(v) for k, v in medians.items()}
        self.calls = []

    def fingerprint(self):
        return {"kind": "fake", "name": "scripted", "threads": 1, "delegate": "none"}

    def benchmark(self, tflite_paths, runs=20, warmup=3, *, on_result=None):
        self.calls.append([Path(p).name for p in tflite_paths])
        out = []
        for p in tflite_paths:
            ms = self.medians[Path(p)].pop(0)
            res = BenchResult.from_samples(Path(p), [ms] * runs)
            if on_result:
                on_result(res)
            out.append(res)
        return out


def test_benchmark_rounds_interleaves_and_keeps_the_median_round():
    a, b = Path("a.tflite"), Path("b.tflite")
    dev = _ScriptedDevice({a: [31.0, 29.0, 30.0], b: [20.0, 22.0, 21.0]})
    seen = []
    ra, rb = dev.benchmark_rounds([a, b], rounds=3, runs=5, on_result=seen.append)
    assert dev.calls == [["a.tflite", "b.tflite"], ["b.tflite", "a.tflite"],
                         ["a.tflite", "b.tflite"]]  # nobody always first
    assert (ra.median_ms, rb.median_ms) == (30.0, 21.0)  # the median round, not the first
    assert ra.extra["round_ms"] == [31.0, 29.0, 30.0]
    assert ra.extra["spread_pct"] == pytest.approx(100 * 2 / 30)
    assert len(seen) == 6 and ra.runs == 5


def test_benchmark_rounds_times_only_missing_rounds_and_checks_its_count():
    a, b = Path("a.tflite"), Path("b.tflite")
    dev = _ScriptedDevice({a: [10.0], b: [5.0, 6.0, 7.0]})
    (ra, rb) = dev.benchmark_rounds([a, b], rounds=3, done={a: 2})
    assert dev.calls == [["b.tflite"], ["b.tflite"], ["a.tflite", "b.tflite"]]
    assert (ra.median_ms, ra.extra["round_ms"]) == (10.0, [10.0])  # only its new round
    assert (rb.median_ms, rb.extra["round_ms"]) == (6.0, [5.0, 6.0, 7.0])
    assert dev.benchmark_rounds([a], rounds=3, done={a: 3}) == []  # nothing left to time
    with pytest.raises(UserError, match="rounds=0"):
        dev.benchmark_rounds([a], rounds=0)
