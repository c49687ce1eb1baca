"""A box's limits without Docker: flags over DEVBOX_* variables over defaults, validation,
the engine checks (from a `docker info` dict), the host config and its read-back."""

from __future__ import annotations

import subprocess
import sys

import pytest

from devbox_cli.box_limits import (
    CAP_DROP,
    BoxLimits,
    box_host_config,
    fit_to_engine,
    format_size,
    limits_of,
    parse_size,
    resolve_limits,
)
from devbox_cli.errors import NotFoundError, UsageError

ENGINE = {
    "NCPU": 2,
    "Runtimes": {"runc": {}, "crun": {}},
    "Driver": "overlay2",
    "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]],
}


def test_defaults():
    limits = resolve_limits(environ={})
    assert (limits.cpus, limits.memory, limits.pids) == (2.0, 4 << 30, 4096)
    assert (limits.tmp_size, limits.disk, limits.runtime) == (2 << 30, None, None)
    assert limits.no_new_privileges and set(CAP_DROP) >= {"NET_RAW", "MKNOD"}


def test_a_flag_beats_its_variable_which_beats_the_default():
    env = {"DEVBOX_MEMORY": "1g", "DEVBOX_CPUS": "0.5", "DEVBOX_PIDS_LIMIT": "100",
           "DEVBOX_TMP_SIZE": "64m", "DEVBOX_RUNTIME": "crun", "DEVBOX_DISK": ""}  # fmt: skip
    from_env = resolve_limits(environ=env)
    assert (from_env.memory, from_env.cpus, from_env.pids) == (1 << 30, 0.5, 100)
    assert (from_env.tmp_size, from_env.runtime, from_env.disk) == (64 << 20, "crun", None)
    flags = resolve_limits(memory="512m", cpus="1.5", pids=200, runtime="runc", environ=env)
    assert (flags.memory, flags.cpus, flags.pids, flags.runtime) == (512 << 20, 1.5, 200, "runc")
    assert flags.origin["memory"] == "--memory" and from_env.origin["memory"] == "DEVBOX_MEMORY"


@pytest.mark.parametrize(
    "knob,var",
    [("cpus", "DEVBOX_CPUS"), ("memory", "DEVBOX_MEMORY"), ("pids", "DEVBOX_PIDS_LIMIT")],
)
def test_unlimited(knob, var):
    assert getattr(resolve_limits(**{knob: "unlimited"}, environ={}), knob) is None
    assert getattr(resolve_limits(environ={var: " Unlimited "}), knob) is None


@pytest.mark.parametrize(
    "text,size",
    [("512m", 512 << 20), ("2g", 2 << 30), ("2G", 2 << 30), ("1.5g", 3 << 29),
     ("1024", 1024), ("64MiB", 64 << 20), ("1gb", 1 << 30), (" 8k ", 8192), (4096, 4096)],
)  # fmt: skip
def test_sizes(text, size):
    assert parse_size(text, "--memory") == size


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"memory": "lots"}, "invalid --memory 'lots'"),
        ({"memory": "-1g"}, "invalid --memory"),
        ({"memory": "0"}, "invalid --memory"),
        ({"memory": "1m"}, "at least 32m"),
        ({"memory": "1e9"}, "invalid --memory"),
        ({"cpus": "nan"}, "invalid --cpus"),
        ({"cpus": "inf"}, "invalid --cpus"),
        ({"cpus": "0"}, "at least 0.01"),
        ({"cpus": "-2"}, "invalid --cpus"),
        ({"cpus": "two"}, "invalid --cpus"),
        ({"pids": "10"}, "at least 32"),
        ({"pids": "1.5"}, "invalid --pids-limit"),
        ({"pids": "-1"}, "invalid --pids-limit"),
        ({"tmp_size": "unlimited"}, "invalid --tmp-size"),
        ({"tmp_size": "1k"}, "at least 1m"),
        ({"disk": "1m"}, "at least 64m"),
        ({"runtime": "run c"}, "invalid --runtime"),
        ({"runtime": "../../bin/sh"}, "invalid --runtime"),
        ({"runtime": "-x"}, "invalid --runtime"),
    ],
)
def test_bad_values_are_usage_errors_naming_the_flag(kwargs, message):
    with pytest.raises(UsageError) as err:
        resolve_limits(**kwargs, environ={})
    assert message in str(err.value) and err.value.exit_code == 2


def test_a_bad_variable_is_named():
    with pytest.raises(UsageError, match="invalid DEVBOX_PIDS_LIMIT 'many'"):
        resolve_limits(environ={"DEVBOX_PIDS_LIMIT": "many"})


def test_the_default_cpus_shrink_to_a_small_engine_an_explicit_value_does_not():
    assert fit_to_engine(resolve_limits(environ={}), {**ENGINE, "NCPU": 1}).cpus == 1.0
    with pytest.raises(UsageError, match="--cpus 3 is more than the engine's 2 CPUs"):
        fit_to_engine(resolve_limits(cpus="3", environ={}), ENGINE)
    with pytest.raises(UsageError, match="DEVBOX_CPUS 3 is more"):
        fit_to_engine(resolve_limits(environ={"DEVBOX_CPUS": "3"}), ENGINE)


def test_a_runtime_must_be_one_the_engine_lists():
    assert fit_to_engine(resolve_limits(runtime="crun", environ={}), ENGINE).runtime == "crun"
    with pytest.raises(NotFoundError) as err:
        fit_to_engine(resolve_limits(runtime="runsc", environ={}), ENGINE)
    assert "no Docker runtime 'runsc'" in err.value.message
    assert "(it has: crun, runc)" in err.value.message and "daemon.json" in err.value.hint


@pytest.mark.parametrize(
    "driver,backing,ok",
    [("overlay2", "extfs", False), ("overlay2", "xfs", True), ("btrfs", "", True),
     ("zfs", "", True), ("vfs", "", False), ("overlay2", "", False)],
)  # fmt: skip
def test_disk_needs_a_driver_that_can_cap_it(driver, backing, ok):
    info = {**ENGINE, "Driver": driver, "DriverStatus": [["Backing Filesystem", backing]]}
    limits = resolve_limits(disk="1g", environ={})
    if ok:
        assert fit_to_engine(limits, info).disk == 1 << 30
    else:
        with pytest.raises(UsageError, match=f"this engine's is {driver}"):
            fit_to_engine(limits, info)


def test_host_config_and_read_back_agree():
    limits = resolve_limits(cpus="1.5", memory="1g", pids="300", tmp_size="64m", environ={})
    host = box_host_config(limits)
    assert host["nano_cpus"] == 1_500_000_000
    assert host["mem_limit"] == host["memswap_limit"] == 1 << 30  # no swap
    assert host["pids_limit"] == 300 and host["security_opt"] == ["no-new-privileges"]
    assert host["tmpfs"] == {"/tmp": f"size={64 << 20},mode=1777,exec,nosuid,nodev"}
    assert "runtime" not in host and "storage_opt" not in host
    # what Docker's inspect gives back for such a container
    inspected = {"NanoCpus": host["nano_cpus"], "Memory": 1 << 30, "PidsLimit": 300,
                 "Tmpfs": host["tmpfs"], "Runtime": "runc", "SecurityOpt": ["no-new-privileges"],
                 "CapDrop": list(CAP_DROP), "StorageOpt": None}  # fmt: skip
    back = limits_of(inspected)
    assert back == BoxLimits(cpus=1.5, memory=1 << 30, pids=300, tmp_size=64 << 20, runtime="runc")
    unlimited = box_host_config(resolve_limits(cpus="unlimited", memory="unlimited",
                                               pids="unlimited", environ={}))  # fmt: skip
    assert unlimited["pids_limit"] == -1
    assert "nano_cpus" not in unlimited and "mem_limit" not in unlimited


def test_an_old_box_reads_back_as_unlimited_without_hardening():
    old = limits_of({"NanoCpus": 0, "Memory": 0, "PidsLimit": None, "CapDrop": ["NET_RAW"]})
    assert (old.cpus, old.memory, old.pids, old.tmp_size) == (None, None, None, None)
    assert not old.no_new_privileges
    assert "cpus unlimited" in old.describe() and "/tmp on disk" in old.describe()
    assert old.hardening() == "new privileges allowed; dropped capabilities: NET_RAW"


@pytest.mark.parametrize(
    "size,text", [(4 << 30, "4g"), (512 << 20, "512m"), (3 << 29, "1.5g"), (1000, "1000b")]
)
def test_format_size(size, text):
    assert format_size(size) == text


@pytest.mark.parametrize(
    "args,message",
    [
        (["--memory", "lots"], "invalid --memory 'lots'"),
        (["--cpus", "nan"], "invalid --cpus 'nan'"),
        (["--pids-limit", "5"], "invalid --pids-limit '5'"),
        (["--tmp-size", "x"], "invalid --tmp-size 'x'"),
        (["--disk", "0"], "invalid --disk '0'"),
        (["--runtime", "a b"], "invalid --runtime 'a b'"),
    ],
)
def test_the_cli_refuses_bad_limits_with_exit_2_before_docker(args, message, tmp_path):
    # DOCKER_HOST points nowhere: a bad value must be refused before Docker is asked.
    proc = subprocess.run(
        [sys.executable, "-m", "devbox_cli", "create", "x", *args],
        capture_output=True,
        text=True,
        env={
            "DEVBOX_HOME": str(tmp_path),
            "DOCKER_HOST": "unix:///nonexistent.sock",
            "PATH": "/usr/bin:/bin",
        },
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
