"""Jobs and the CLI: validation with key paths and exit codes, the template job on a user's own
image folder + model file, `spray inspect`."""
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from spray.pipelines.demo import DEMO_JOB
from spray.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, main


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_demo_config_file_is_the_demo_job():
    assert yaml.safe_load(open("configs/demo.yaml")) == DEMO_JOB


def test_invalid_jobs_exit_2_with_key_paths(tmp_path, capsys):
    job = _write(tmp_path / "j.yaml", {"data": {"type": "bed", "nmae": "watermark"}, "explain": {"batch_size": 0}})
    assert main(["run", job]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "data.nmae: unknown key" in err and "explain.batch_size" in err and "greater than or equal to 1" in err
    job = _write(tmp_path / "k.yaml", {"data": {"type": "npz", "path": str(tmp_path / "none.npz")},
                                       "model": {"factory": "spray.models.zoo:small_resnet"}})
    assert main(["explain", job]) == EXIT_CONFIG
    assert "data.path: npz file" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("data: [unclosed")
    assert main(["run", str(tmp_path / "bad.yaml")]) == EXIT_CONFIG
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "absent.yaml")]) == EXIT_CONFIG
    assert main(["run", job, "--set", "nonsense"]) == EXIT_CONFIG
    job = _write(tmp_path / "m.yaml", {"data": {"type": "bed"}, "model": {"factory": "x:y"}})
    assert main(["run", job]) == EXIT_CONFIG
    assert "brings its own model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--help"])


@pytest.fixture
def user_project(tmp_path, monkeypatch):
    """An image folder and a model file, as a user brings them."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for c in ("circle", "square", "stripe"):
        for i in range(24):
            img = (rng.random((40, 40, 3)) * 80).astype(np.uint8)
            if c == "circle":
                yy, xx = np.mgrid[0:40, 0:40]
                img[(yy - 20) ** 2 + (xx - 20) ** 2 < 80 + i] = 230
            elif c == "square":
                img[10:30, 10:30] = 230
            else:
                img[:, 18:22] = 230
            (tmp_path / "data" / "train" / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(tmp_path / "data" / "train" / c / f"{i:03d}.png")
    (tmp_path / "my_model.py").write_text(
        "from spray.models import small_resnet\n"
        "def make_model(num_classes=10):\n"
        "    return small_resnet(num_classes, width=0.125)\n")
    torch.manual_seed(0)
    from spray.models import small_resnet
    torch.save(small_resnet(3, width=0.125).state_dict(), tmp_path / "my_model.pt")
    return tmp_path


def test_template_job_on_a_users_folder_and_model(user_project, capsys):
    template = yaml.safe_load(open(__file__.rsplit("/tests/", 1)[0] + "/configs/template.yaml"))
    template["model"]["kwargs"] = {"num_classes": 3}
    template["cluster"]["mode"] = "synchronous"
    template["analysis"].update({"embeddings": [], "min_class_size": 10, "k_max": 4})
    template["preprocess"]["center_crop"] = 32
    job = _write(user_project / "my-job.yaml", template)
    assert main(["run", job, "--quiet", "--set", "explain.shard_size=16"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "report:" in out and (user_project / "reports/my-audit/report/index.html").exists()
    summary = json.loads((user_project / "reports/my-audit/report/summary.json").read_text())
    assert [c["name"] for c in summary["classes"]] == ["circle", "square", "stripe"]
    members = [m for c in summary["classes"] for cl in c["clusters"] for m in cl["members"]]
    assert sorted(members) == sorted(f"{c}/{i:03d}.png" for c in ("circle", "square", "stripe") for i in range(24))
    resolved = yaml.safe_load((user_project / "reports/my-audit/job.resolved.yaml").read_text())
    assert len(resolved["hash"]) == 64
    assert main(["inspect", "reports/my-audit", "--verify"]) == EXIT_OK
    assert "integrity: OK" in capsys.readouterr().out
    # a different model into the same run folder is refused, and the store is untouched
    template["model"]["kwargs"] = {"num_classes": 3}
    template["explain"]["composite"] = "epsilon"
    assert main(["explain", _write(user_project / "other.yaml", template), "--quiet"]) == EXIT_CONFIG
    assert "differs in: composite" in capsys.readouterr().err
    assert main(["inspect", "reports/my-audit", "--verify"]) == EXIT_OK
    # weights that do not fit the model: a failed run (exit 1) that names the fix
    template["model"]["kwargs"] = {"num_classes": 5}
    template["out"] = "reports/other"
    assert main(["run", _write(user_project / "bad.yaml", template), "--quiet"]) == EXIT_FAILED
    assert "do not fit the model" in capsys.readouterr().err
