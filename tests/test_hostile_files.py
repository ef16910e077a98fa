"""Hostile and careless outputs: no output is ever an input, special files are written, never replaced,
writes survive SIGTERM/SIGHUP and a closed or full stdout, and output problems are found before any work."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from graphs import mlp, save
from hostile import assert_unchanged, cli, one_error_line, refused, run_cli, snapshot

from srp_onnx.errors import UsageError
from srp_onnx.io import TEMP_PREFIX, atomic_open, check_outputs


@pytest.fixture()
def work(tmp_path):
    """A folder with an ANN, its converted model, float data and calibration data."""
    save(mlp("Clip"), tmp_path / "m.onnx")
    save(mlp("Relu"), tmp_path / "r.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((12, 16)).astype(np.float32), y=rng.integers(0, 4, 12))
    np.savez(tmp_path / "cal.npz", x=rng.standard_normal((12, 16)).astype(np.float32), y=rng.integers(0, 4, 12))
    r = cli(["convert", tmp_path / "m.onnx", "-o", tmp_path / "m.snn.onnx"])
    assert r.exit_code == 0, r.output
    return tmp_path


# -- class 2: outputs never overwrite inputs (by inode, before any work) --------------------------------------

@pytest.mark.parametrize("case", [
    ("eval", "{w}/m.snn.onnx", "--data", "{w}/d.npz", "--json", "{w}/m.snn.onnx"),
    ("eval", "{w}/m.snn.onnx", "--data", "{w}/d.npz", "--csv", "{w}/m.snn.onnx"),
    ("eval", "{w}/m.snn.onnx", "--data", "{w}/d.npz", "--json", "{w}/d.npz"),
    ("eval", "{w}/m.snn.onnx", "--data", "{w}/d.npz", "--ann", "{w}/m.onnx", "--json", "{w}/m.onnx"),
    ("analyze", "{w}/m.snn.onnx", "--data", "{w}/d.npz", "--json", "{w}/m.snn.onnx"),
    ("analyze", "{w}/m.snn.onnx", "--data", "{w}/d.npz", "--json", "{w}/d.npz"),
    ("convert", "{w}/r.onnx", "--calib", "{w}/cal.npz", "-o", "{w}/cal.npz"),
    ("convert", "{w}/m.onnx", "-o", "{w}/./sub/../m.onnx"),
    ("convert", "{w}/m.onnx", "-o", "{w}/hard.onnx"),  # a hard link to the model
    ("convert", "{w}/m.onnx", "-o", "{w}/soft.onnx"),  # a symlink to the model
    ("eval", "{w}/m.snn.onnx", "--data", "{w}/d.npz", "--json", "{w}/x.json", "--csv", "{w}/x.json"),
    ("eval", "{w}/m.snn.onnx", "--data", "{w}/d.npz", "--json", "{w}/x.json", "--csv", "{w}/sub/../x.json"),
    ("eval", "{w}/m.snn.onnx", "--data", "{w}/d.npz", "--json", "{w}/x.svg", "--plot", "{w}/x.svg"),
], ids=lambda c: "-".join(Path(a).name for a in c if not a.startswith("-")))
def test_an_output_that_is_an_input_or_another_output_is_refused_before_any_work(work, case):
    (work / "sub").mkdir()
    os.link(work / "m.onnx", work / "hard.onnx")
    (work / "soft.onnx").symlink_to(work / "m.onnx")
    before = snapshot(work)
    line = refused([a.format(w=work) for a in case], "same file")
    assert "eval [" not in line
    assert_unchanged(before, work)
    assert not (work / "x.json").exists()


def test_check_outputs_compares_files_not_names(tmp_path):
    a = tmp_path / "a"
    a.write_bytes(b"1")
    os.link(a, tmp_path / "b")
    with pytest.raises(UsageError, match="same file as the data"):
        check_outputs({"--json": tmp_path / "b"}, {"the data": [a]})
    check_outputs({"--json": tmp_path / "c"}, {"the data": [a]})  # a new file is fine


# -- class 3: special files are written to, never replaced -------------------------------------------------------

def test_dev_null_stays_a_device(work):
    r = cli(["convert", work / "m.onnx", "-o", os.devnull])
    assert r.exit_code == 0, r.output
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def _read_fifo(path: Path, into: list) -> threading.Thread:
    def reader():
        with open(path, "rb") as f:
            into.append(f.read())
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("through_link", [False, True])
def test_a_fifo_or_a_link_to_one_is_written_through_and_stays(work, through_link):
    fifo = work / "fifo"
    os.mkfifo(fifo)
    target = fifo
    if through_link:
        target = work / "stdout-like"
        target.symlink_to(fifo)  # as /dev/stdout -> /proc/self/fd/1 -> pipe
    got: list[bytes] = []
    t = _read_fifo(fifo, got)
    r = cli(["eval", work / "m.snn.onnx", "--data", work / "d.npz", "--json", target])
    t.join(10)
    assert r.exit_code == 0, r.output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert not through_link or os.path.islink(target)
    assert got and b'"T": 8' in got[0]


def test_a_real_pipe_output_like_process_substitution(work):
    """`--json >(cat)` hands the command a /dev/fd path of a pipe: written through, not replaced."""
    code = ("import os, subprocess, sys\n"
            "r, w = os.pipe()\n"
            "cat = subprocess.Popen(['cat'], stdin=r, stdout=subprocess.PIPE)\n"
            "os.close(r)\n"
            "from srp_onnx_cli.main import main\n"
            f"sys.argv = ['srp-onnx', 'eval', {str(work / 'm.snn.onnx')!r}, '--data', {str(work / 'd.npz')!r},"
            " '--json', f'/dev/fd/{w}']\n"
            "try:\n    main()\n"
            "except SystemExit as e:\n    os.close(w); out = cat.communicate()[0]; "
            "print('CODE', e.code, b'\"T\": 8' in out, file=sys.stderr)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, pass_fds=())
    assert "CODE 0 True" in p.stderr, p.stderr


def test_a_symlink_to_a_regular_file_gets_the_new_content_and_stays_a_link(work):
    real = work / "real.json"
    real.write_text("old")
    link = work / "link.json"
    link.symlink_to(real)
    r = cli(["eval", work / "m.snn.onnx", "--data", work / "d.npz", "--json", link])
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and '"T": 8' in real.read_text()


# -- class 6/8: output problems found before any work, one line, exit 2 -------------------------------------------

def test_a_legal_long_name_is_written_and_an_illegal_one_refused(work):
    name = "a" * 245 + ".onnx"  # 250 bytes: legal; the temporary name must not push it over NAME_MAX
    r = cli(["convert", work / "m.onnx", "-o", work / name])
    assert r.exit_code == 0, r.output
    assert (work / name).is_file()
    before = snapshot(work)
    refused(["eval", work / "m.snn.onnx", "--data", work / "d.npz", "--json", work / ("b" * 256)], "too long")
    assert_unchanged(before, work)


def test_non_utf8_file_names_work_and_are_quoted(work):
    odd = os.fsdecode(b"m\xff\x1b[2J.onnx")
    os.link(work / "m.onnx", work / odd)
    r = cli(["convert", work / odd, "-o", work / os.fsdecode(b"o\xfe.onnx")])
    assert r.exit_code == 0, r.output
    assert (work / os.fsdecode(b"o\xfe.onnx")).is_file() and "\\xfe" in r.output
    line = refused(["convert", work / os.fsdecode(b"missing\xff\n.onnx")], "\\xff", "\\n")
    assert "\x1b" not in line


def test_a_full_output_device_is_one_line_exit_2(work):
    before = snapshot(work)
    refused(["eval", work / "m.snn.onnx", "--data", work / "d.npz", "--json", "/dev/full"], "/dev/full",
            "No space left")
    assert_unchanged(before, work)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_an_unwritable_folder_is_refused_before_any_work(work):
    ro = work / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        line = refused(["eval", work / "m.snn.onnx", "--data", work / "d.npz", "--json", ro / "r.json"],
                       "not writable")
        assert "eval [" not in line
    finally:
        ro.chmod(0o755)


def test_a_missing_output_folder_is_refused_before_any_work(work):
    refused(["convert", work / "r.onnx", "--calib", "digits", "-o", work / "no" / "x.onnx"], "does not exist")


# -- class 7: results are written before anything is printed ------------------------------------------------------

def test_closed_stdout_still_leaves_the_model_and_the_json(work):
    for args, out in ((["convert", work / "m.onnx", "-o", work / "c.onnx"], work / "c.onnx"),
                      (["eval", work / "m.snn.onnx", "--data", work / "d.npz", "--json", work / "e.json"],
                       work / "e.json")):
        p = subprocess.Popen([sys.executable, "-m", "srp_onnx_cli.main", *map(str, args)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        p.stdout.close()  # `| true`: the reader is gone before anything is printed
        p.wait(60)
        assert out.is_file() and out.stat().st_size > 100, p.stderr.read()


def test_stdout_on_dev_full_is_one_line_exit_2_after_writing_the_file(work):
    with open("/dev/full", "w") as full:
        p = run_cli(["eval", work / "m.snn.onnx", "--data", work / "d.npz", "--json", work / "f.json"], stdout=full)
    assert p.returncode == 2, p.stderr
    one_error_line(p.stderr, "standard output")
    assert (work / "f.json").is_file()


# -- class 10: SIGTERM and SIGHUP during a write, like Ctrl-C -----------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_a_write_removes_the_temporary_file(work, sig):
    code = ("import os, signal\n"
            "import srp_onnx.convert as c\n"
            "from srp_onnx.io import atomic_open\n"
            "def save(model, path):\n"
            "    with atomic_open(path, 'wb') as f:\n"
            "        f.write(b'x' * 100000)\n"
            f"        os.kill(os.getpid(), {int(sig)})\n"
            "        f.write(b'y')\n"
            "c.save_model = save\n"
            "from srp_onnx_cli.main import main\n"
            f"main(['convert', {str(work / 'm.onnx')!r}, '-o', {str(work / 'out.onnx')!r}])\n")
    before = snapshot(work)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 128 + sig, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and sig.name in p.stderr, p.stderr
    assert not (work / "out.onnx").exists()
    assert_unchanged(before, work)


def test_an_error_inside_a_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "keep.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target, "w") as f:
        f.write("new")
        raise RuntimeError
    assert target.read_text() == "old"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_an_output_onto_the_models_external_weights_is_refused(tmp_path):
    from onnx import external_data_helper

    model = mlp("Clip")
    external_data_helper.convert_model_to_external_data(model, all_tensors_to_one_file=True, location="w.bin",
                                                         size_threshold=0)
    import onnx

    onnx.save(model, str(tmp_path / "e.onnx"))
    before = snapshot(tmp_path)
    refused(["convert", tmp_path / "e.onnx", "-o", tmp_path / "w.bin"], "same file as the model's weights")
    assert_unchanged(before, tmp_path)
