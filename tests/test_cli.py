import subprocess
import sys

from unetseg.cli import main


def test_model_info_paper_net(capsys):
    assert main(["model-info", "--max-tile", "572"]) == 0
    out = capsys.readouterr().out
    assert "31,030,658" in out
    assert "23 (18 3x3, 4 up-conv, 1 1x1" in out
    assert "92 px" in out
    assert "572x572 -> 388x388" in out


def test_missing_model_is_one_line_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "unetseg", "model-info", "--model", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("unetseg: error:") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr
