"""AdbDevice against the faithful fake adb: real messages, exit codes, delegates, thermal state.

Each test drives a behaviour of the real tools that tests/fake_adb/adb reproduces (sources are
cited there) and checks that the harness reports it for what it is.
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

import android_bench.adb as adb_mod
import android_bench.adb_transport as adb_transport
from android_bench import AdbDevice, BenchResult, DeviceError
from android_bench.delegates import GPU_DELEGATE_OPS, graph_ops, partitions
from srsearch.cli import main as cli_main
from srsearch.common.errors import UserError
from srsearch.deploy.tflite import convert
from tests.test_android_bench import FakePhone

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")


class _Mix(nn.Module):
    """conv -> repeat_interleave (BROADCAST_TO, refused by the GPU delegate) -> conv."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(6, 12, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pixel_shuffle(self.b(torch.repeat_interleave(self.a(x), 2, 1)), 2)


class _Clamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, 0.0, 1.0)  # one RELU_0_TO_1: nothing for the GPU delegate


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("graphs")
    torch.manual_seed(0)
    nets = {
        "plain": nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2)),
        "mix": _Mix(),
        "clamp": _Clamp(),
    }
    return {k: convert(m.eval(), (1, 3, 8, 8), d / f"{k}.tflite") for k, m in nets.items()}


@pytest.fixture
def phone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakePhone:
    p = FakePhone(tmp_path, monkeypatch)
    for var in ("OFFLINE_ON", "DROP_STAYS", "SIGNAL_ON", "HANG_ON", "RUN_US", "CPUS",
                "UNKNOWN_FLAGS", "GPU", "THERMAL", "NNAPI_OPS", "PROPS"):  # fmt: skip
        monkeypatch.delenv(f"FAKE_ADB_{var}", raising=False)
    monkeypatch.setattr(AdbDevice, "COOLDOWN_POLL_S", 0.01)
    return p


def _dev(phone: FakePhone, **kw) -> AdbDevice:
    return AdbDevice(benchmark_binary=phone.binary, reconnect_timeout_s=2, **kw)


def _runs(phone: FakePhone) -> list[str]:
    return [c[-1] for c in phone.calls() if "shell" in c and "--graph=" in c[-1]]


# --- devices and connections ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ("noperm", r"no permissions .*udev rules"),
        ("unauthorized", "unauthorized: unlock the phone"),
        ("offline", "offline"),
        ("authorizing", "authorizing"),
    ],
)
def test_device_states_of_devices_l(phone: FakePhone, graphs, state: str, message: str) -> None:
    phone.set(DEVICES=f"R58M:{state}")
    with pytest.raises(DeviceError, match=message):
        _dev(phone).benchmark([graphs["plain"]], runs=2, warmup=1)
    assert ["devices", "-l"] in phone.calls()


def test_offline_blip_is_retried(phone: FakePhone, graphs, caplog) -> None:
    """`adb: device offline` (shell) and `adb: error: failed to get feature set: device
    offline` (push) are connection problems: waited for and retried once."""
    phone.set(OFFLINE_ON="2")  # the 2nd device command is the push of benchmark_model
    with caplog.at_level(logging.WARNING, logger="android_bench.adb"):
        (r,) = _dev(phone).benchmark([graphs["plain"]], runs=3, warmup=1)
    assert r.runs == 3
    assert "failed to get feature set: device offline" in caplog.text
    assert any(c[-1] == "wait-for-device" for c in phone.calls())


def test_usb_drop_mid_batch_keeps_finished_results(phone: FakePhone, graphs) -> None:
    """Exit 255 with no text mid-run, twice: retried once, then a connection error that
    keeps what finished; never blamed on the model."""
    phone.set(DROP_ON="2,3", DROP_STAYS="0")
    seen: list[BenchResult] = []
    models = [graphs["plain"], graphs["mix"]]
    with pytest.raises(adb_mod.AdbConnectionError) as info:
        _dev(phone).benchmark(models, runs=2, warmup=1, on_result=seen.append)
    msg = str(info.value)
    assert "lost the connection to FAKE0001" in msg and "exit 255" in msg
    assert "1 finished result" in msg and "delegate" not in msg
    assert [r.model for r in seen] == [graphs["plain"]]
    assert [r.model for r in info.value.results] == [graphs["plain"]]
    assert sum(c[-1] == "wait-for-device" for c in phone.calls()) == 1


def test_usb_drop_for_good(phone: FakePhone, graphs) -> None:
    phone.set(DROP_ON="1", DROP_STAYS="1")
    with pytest.raises(adb_mod.AdbConnectionError, match=r"did not come back within 2 s"):
        _dev(phone).benchmark([graphs["plain"]], runs=2, warmup=1)


def test_usb_drop_once_then_back(phone: FakePhone, graphs) -> None:
    phone.set(DROP_ON="1")
    (r,) = _dev(phone).benchmark([graphs["plain"]], runs=2, warmup=1)
    assert r.runs == 2 and len(_runs(phone)) == 2


def test_stdin_is_closed(phone: FakePhone, graphs, monkeypatch) -> None:
    seen = []
    real = subprocess.run

    def spy(*args, **kwargs):
        seen.append(kwargs.get("stdin"))
        return real(*args, **kwargs)

    monkeypatch.setattr(adb_transport.subprocess, "run", spy)  # adb runs there
    _dev(phone).benchmark([graphs["plain"]], runs=2, warmup=1)
    assert seen and all(s is subprocess.DEVNULL for s in seen)


# --- benchmark_model's exit codes and flags ---------------------------------------------------


@pytest.mark.parametrize(
    ("signal", "status", "words"),
    [(6, 134, "aborted"), (9, 137, "low-memory killer"), (11, 139, "segmentation fault")],
)
def test_exit_code_diagnosis(phone, graphs, signal: int, status: int, words: str) -> None:
    phone.set(SIGNAL_ON=f"1:{signal}")
    with pytest.raises(DeviceError) as info:
        _dev(phone).benchmark([graphs["plain"]], runs=2, warmup=1)
    msg = str(info.value)
    assert f"exit status {status}" in msg and words in msg
    assert "Loaded model" in msg  # the log's tail
    if status != 139:
        assert "op or size" not in msg


def test_cpu_mask_hex_without_0x(phone: FakePhone, graphs) -> None:
    _dev(phone, cpu_mask="0xF0").benchmark([graphs["plain"]], runs=2, warmup=1)
    assert _runs(phone)[0].startswith("echo srsearch-pid:$$; exec taskset f0 ")


def test_cpu_mask_checked_against_the_phone(phone: FakePhone, graphs) -> None:
    phone.set(CPUS="0-3")
    with pytest.raises(DeviceError, match=r"--cpu-mask f0 selects CPUs 4-7.*has CPUs 0-3"):
        _dev(phone, cpu_mask="f0").benchmark([graphs["plain"]], runs=2, warmup=1)
    assert _runs(phone) == []


def test_threads_beyond_the_mask_warn(phone: FakePhone, graphs, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="android_bench.adb"):
        _dev(phone, cpu_mask="30", threads=4).benchmark([graphs["plain"]], runs=2, warmup=1)
    assert "4 threads on 2 CPUs (mask 30: CPUs 4-5)" in caplog.text


def test_max_secs_set_and_run_count_checked(phone: FakePhone, graphs) -> None:
    phone.set(RUN_US="400000")  # 0.4 s a run: --max_secs=1 stops after 3 of 6
    with pytest.raises(DeviceError, match=r"ran 3 of the 6 timed runs.*--max_secs=1"):
        _dev(phone, max_secs=1).benchmark([graphs["plain"]], runs=6, warmup=1)
    assert "--max_secs=1" in _runs(phone)[0]


def test_timeout_stops_only_our_remote_process(phone: FakePhone, graphs) -> None:
    phone.set(HANG_ON="1")
    other = phone.root / "proc/77"  # somebody else's process on the phone
    other.mkdir(parents=True)
    (other / "cmdline").write_text("/system/bin/surfaceflinger\0")
    with pytest.raises(DeviceError, match=r"took over 4 s; stopped it on the phone \(pid \d+\)"):
        _dev(phone, timeout_s=4).benchmark([graphs["plain"]], runs=2, warmup=1)
    assert sorted(p.name for p in (phone.root / "proc").iterdir()) == ["77"]
    kills = [c[-1] for c in phone.calls() if "kill" in c[-1]]
    assert len(kills) == 1 and "/proc/" in kills[0] and "benchmark_model" in kills[0]


def test_warmup_at_least_one(phone: FakePhone, graphs) -> None:
    with pytest.raises(UserError, match="warmup=0: need at least 1"):
        _dev(phone).benchmark([graphs["plain"]], runs=2, warmup=0)


def test_statistics_are_computed_for_real(phone: FakePhone, graphs) -> None:
    """The fake times run i as 1000 + 10 * (7i mod 11) us and prints benchmark_model's own
    statistics (nth_element percentiles, integer std); the harness reads them back."""
    (r,) = _dev(phone).benchmark([graphs["plain"]], runs=7, warmup=2)
    samples = [1000 + 10 * ((7 * i) % 11) for i in range(2, 9)]
    s, n = sorted(samples), len(samples)
    mean = sum(samples) / n
    std = int((sum(x * x for x in samples) / n - mean**2) ** 0.5)
    assert (r.runs, r.min_ms, r.max_ms) == (7, s[0] / 1e3, s[-1] / 1e3)
    assert r.median_ms == pytest.approx(s[n // 2] / 1e3) and not r.median_is_avg
    assert r.mean_ms == pytest.approx(mean / 1e3, rel=1e-5)
    assert r.std_ms == pytest.approx(std / 1e3)
    assert r.extra["p5_ms"] == s[n * 5 // 100] / 1e3 and r.extra["p95_ms"] == s[n * 95 // 100] / 1e3
    assert r.first_ms == 1.0  # warm-up run 0: 1000 + 0
    assert r.memory_mb == pytest.approx(3.25)


def test_host_percentiles_follow_nth_element() -> None:
    r = BenchResult.from_samples(Path("m.tflite"), [4.0, 1.0, 3.0, 2.0])
    assert (r.median_ms, r.p10_ms, r.p90_ms) == (3.0, 1.0, 4.0)
    assert (r.extra["p5_ms"], r.extra["p95_ms"]) == (1.0, 4.0)


# --- delegates ----------------------------------------------------------------------------------


def test_gpu_op_screen_is_shared() -> None:
    from srsearch.deploy.tflite import GPU_DELEGATE_OPS as export_screen

    assert export_screen == GPU_DELEGATE_OPS


def test_gpu_refused_op_fails_and_names_it(phone: FakePhone, graphs) -> None:
    with pytest.raises(adb_mod.DelegationError) as info:
        _dev(phone, delegate="gpu").benchmark([graphs["mix"]], runs=2, warmup=1)
    msg = str(info.value)
    assert "GPU delegate refused" in msg and "BROADCAST_TO" in msg
    assert "--allow-partial-delegation" in msg
    run = _runs(phone)[0]
    assert "--use_gpu=true" in run and "--require_full_delegation=true" in run
    assert "--gpu_precision_loss_allowed=true" in run and "--gpu_backend=cl" in run


def test_gpu_partial_delegation_records_node_counts(phone: FakePhone, graphs) -> None:
    ops = graph_ops(graphs["mix"])
    accepted = [op in GPU_DELEGATE_OPS for op in ops]
    dev = _dev(phone, delegate="gpu", allow_partial_delegation=True)
    (r,) = dev.benchmark([graphs["mix"]], runs=2, warmup=1)
    assert r.extra["delegation"] == {
        "delegate": "gpu",
        "delegated_nodes": sum(accepted),
        "total_nodes": len(ops),
        "partitions": partitions(accepted),
        "full": False,
        "refused_ops": ["BROADCAST_TO"],
    }
    assert partitions(accepted) == 2
    assert "--require_full_delegation=false" in _runs(phone)[0]
    assert dev.fingerprint()["full_delegation"] is False


def test_gpu_takes_nothing(phone: FakePhone, graphs) -> None:
    with pytest.raises(adb_mod.DelegationError, match=r"RELU_0_TO_1.*0 of 1 node"):
        _dev(phone, delegate="gpu").benchmark([graphs["clamp"]], runs=2, warmup=1)
    dev = _dev(phone, delegate="gpu", allow_partial_delegation=True)
    (r,) = dev.benchmark([graphs["clamp"]], runs=2, warmup=1)
    assert r.extra["delegation"]["delegated_nodes"] == 0


def test_gpu_full_delegation_and_fingerprint(phone: FakePhone, graphs) -> None:
    dev = _dev(phone, delegate="gpu", gpu_precision="fp32", gpu_backend="gl")
    (r,) = dev.benchmark([graphs["plain"]], runs=2, warmup=1)
    n = len(graph_ops(graphs["plain"]))
    assert r.extra["delegation"]["full"] and r.extra["delegation"]["delegated_nodes"] == n
    fp = dev.fingerprint()
    assert (fp["delegate"], fp["gpu_precision"], fp["gpu_backend"]) == ("gpu", "fp32", "OpenGL")
    assert fp["build_fingerprint"].startswith("google/panther/")
    assert fp["soc_manufacturer"] == "Google" and fp["full_delegation"] is True
    assert "--gpu_precision_loss_allowed=false" in _runs(phone)[0]
    assert dev.fingerprint_id() != _dev(phone, delegate="gpu").fingerprint_id()


def test_gpu_without_opencl(phone: FakePhone, graphs) -> None:
    phone.set(GPU="gl")
    with pytest.raises(DeviceError, match=r"could not start the GPU delegate.*--gpu-backend gl"):
        _dev(phone, delegate="gpu").benchmark([graphs["plain"]], runs=2, warmup=1)


def test_build_without_gpu_flags_is_not_timed_as_gpu(phone: FakePhone, graphs) -> None:
    phone.set(UNKNOWN_FLAGS="use_gpu,gpu_precision_loss_allowed,gpu_backend")
    with pytest.raises(DeviceError, match=r"does not know --use_gpu=true.*Unconsumed cmdline"):
        _dev(phone, delegate="gpu").benchmark([graphs["plain"]], runs=2, warmup=1)


def test_nnapi_refusal_reports_node_counts(phone: FakePhone, graphs) -> None:
    phone.set(NNAPI_OPS="CONV_2D")
    with pytest.raises(adb_mod.DelegationError, match=r"NNAPI delegate refused"):
        _dev(phone, delegate="nnapi").benchmark([graphs["mix"]], runs=2, warmup=1)


# --- thermal state ------------------------------------------------------------------------------


def test_throttled_reading_is_flagged(phone: FakePhone, graphs) -> None:
    phone.set(THERMAL="[0, 2]")  # normal before the model, moderate after it
    (r,) = _dev(phone).benchmark([graphs["plain"]], runs=2, warmup=1)
    th = r.extra["thermal"]
    assert r.extra["throttled"] is True
    assert (th["before"]["status"], th["after"]["status"]) == (0, 2)
    assert th["after"]["status_name"] == "moderate"
    assert th["before"]["zones_c"] == {"skin-therm": 34.25, "cpu-big": 48.1}
    assert th["before"]["cpu_khz"]["cpu7"] == 2850000
    assert json.loads(json.dumps(r.to_dict()))["extra"]["throttled"] is True


def test_cooldown_waits_for_normal(phone: FakePhone, graphs) -> None:
    phone.set(THERMAL="[3, 1, 0]")
    (r,) = _dev(phone, cooldown_s=5).benchmark([graphs["plain"]], runs=2, warmup=1)
    assert r.extra["thermal"]["before"]["status"] == 0 and r.extra["throttled"] is False
    assert r.extra["thermal"]["cooldown_polls"] == 2


# --- CLI --------------------------------------------------------------------------------------


def test_cli_bench_two_phones_rounds_and_flags(phone: FakePhone, graphs, tmp_path, capsys):
    phone.set(DEVICES="AAA:device,BBB:device", THERMAL="[0, 1]")
    out = tmp_path / "two.json"
    argv = ["bench", str(graphs["plain"]), str(graphs["mix"]), "--target", "adb:AAA,adb:BBB",
            "--benchmark-binary", str(phone.binary), "--runs", "2", "--warmup", "1",
            "--rounds", "2", "--json", str(out)]  # fmt: skip
    assert cli_main(argv) == 0
    report = json.loads(out.read_text())
    assert [t["target"] for t in report["targets"]] == ["adb:AAA", "adb:BBB"]
    first = report["targets"][0]["results"][0]
    assert len(first["round_ms"]) == 2
    assert first["median_ms"] == pytest.approx(statistics.median(first["round_ms"]))
    assert first["throttled"] is True  # status 1 after the first model
    assert report["targets"][0]["device_id"] == report["targets"][1]["device_id"]
    printed = capsys.readouterr().out
    assert printed.count("latency (ms)") == 1  # two identical phones: one fingerprint, one table
    assert "AAA" in printed and "BBB" in printed


def test_cli_bench_gpu_refusal_names_op(phone: FakePhone, graphs, capsys) -> None:
    argv = ["bench", str(graphs["mix"]), "--target", "adb", "--delegate", "gpu",
            "--benchmark-binary", str(phone.binary), "--runs", "2", "--rounds", "1"]  # fmt: skip
    assert cli_main(argv) == 2
    assert "BROADCAST_TO" in capsys.readouterr().err


def test_cli_latency_build_takes_delegate() -> None:
    import argparse

    from srsearch.commands import latency

    parser = argparse.ArgumentParser()
    latency.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        [
            "latency",
            "build",
            "--out",
            "x.json",
            "--target",
            "adb",
            "--delegate",
            "nnapi",
            "--allow-partial-delegation",
        ]  # fmt: skip
    )
    opts = latency._device_options(args)
    assert opts["delegate"] == "nnapi" and opts["allow_partial_delegation"] is True
