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


def test_model_info_shows_the_model_card(tmp_path, capsys):
    from unetseg.models import ModelCard, TrainingInfo, UNet, save

    card = ModelCard(classes=("bg", "cell", "border"), border_class=2, task="instances", output_shift=(-0.5, 0.25),
                     training=TrainingInfo(train=("a", "b"), tile=(36, 36), precision="bf16", step=9, metrics={"dice": 0.9}))
    save(UNet(1, 3, base_channels=2, depth=2), tmp_path, card=card)
    assert main(["model-info", "--model", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "task              instances" in out and "2=border" in out and "border: border" in out
    assert "[-0.5, 0.25]" in out and "2 image(s)" in out and "bf16" in out and "dice 0.9000" in out
