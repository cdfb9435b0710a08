"""Training on real Fashion-MNIST subsets with a quarter-width ResNet-18 (ImageNet stem: 28 px -> 7 px fast)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN

import pipeline.stages.train.loaders as train_loaders
import pipeline.stages.train.loop as train_module
import pipeline.stages.train.steps as train_steps
from models import build_model
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.core.errors import EdgeError
from pipeline.engine.checkpoint import load_checkpoint, load_weights

# the session's tiny run, smaller: fewer images, smaller batches, two epochs
TINY = {k: v for k, v in TINY_RUN.items() if k != "finetune_subset"} | {
    "batch_size": "64",
    "train_subset": "1024",
    "eval_subset": "500",
    "epochs": "2",
}


def tiny(tmp_path, **overrides):
    return load_config(None, {**TINY, "runs_dir": str(tmp_path), **{k: str(v) for k, v in overrides.items()}})


def test_loss_falls_and_accuracy_beats_chance(tmp_path, test_split_watch):
    from pipeline.data import load_data_for

    cfg = tiny(tmp_path, name="learn", epochs=4, train_subset=3000)
    out = train_module.train(cfg, test_split_watch.wrap(load_data_for(cfg)))
    assert test_split_watch() == [] and test_split_watch.reads  # the best epoch chosen on validation images
    metrics = json.loads((out / "metrics.json").read_text())
    losses = [e["train_loss"] for e in metrics["epochs"]]
    assert losses[-1] < 0.75 * losses[0]
    assert metrics["test_acc"] > 0.5  # chance is 0.1
    native_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()  # amp=true: bf16 autocast where the CPU has it
    assert metrics["device"] == "cpu" and metrics["amp"] == ("bfloat16" if native_bf16 else "fp32")
    assert metrics["channels_last"] and metrics["test_images"] == 500
    assert all(e["images_per_s"] > 0 and 0 <= e["val_acc"] <= 1 for e in metrics["epochs"])
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["epoch"] == metrics["best_epoch"] and ckpt["config"]["width"] == 0.25
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "config", "data"} <= set(ckpt)
    model = build_model(ckpt["model_name"], **ckpt["model_options"])
    model.load_state_dict(ckpt["model"])  # the checkpoint carries what it takes to rebuild the model
    assert not list(out.glob(".*.tmp"))


def test_resume_after_interruption_reaches_the_same_weights(tmp_path, monkeypatch):
    """With the most state a run carries: the weight average (ema), augmentation with random erasing."""
    recipe = {"ema": 0.9, "augment": "true", "random_erasing": 0.5}
    straight = train_module.train(tiny(tmp_path, name="straight", epochs=3, **recipe))
    real_epoch = train_steps.train_epoch

    def interrupted(*args, **kwargs):
        if args[8] == 2:  # the epoch argument: Ctrl-C during the third epoch
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(tiny(tmp_path, name="resumed", epochs=3, **recipe))
    assert load_checkpoint(tmp_path / "resumed" / "train" / "last.pt")["epoch"] == 2  # still valid
    monkeypatch.setattr(train_module, "train_epoch", real_epoch)
    resumed = train_module.train(tiny(tmp_path, name="resumed", epochs=3, resume="true", **recipe))
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(resumed / "last.pt")
    assert a["epoch"] == b["epoch"] == 3 and a["ema_steps"] == b["ema_steps"] == 3 * (1024 // 64)
    for section in ("model", "train_model"):  # the average (what is exported) and the raw weights
        for key, tensor in a[section].items():
            assert torch.equal(tensor, b[section][key]), (section, key)
    conv = "conv1.weight"
    assert not torch.equal(a["model"][conv], a["train_model"][conv])  # the average is not the last step
    assert [e["val_acc"] for e in a["history"]] == [e["val_acc"] for e in b["history"]]


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_good(tmp_path, monkeypatch, capsys):
    real_input = train_loaders.to_device_input
    calls = {"n": 0}
    steps_per_epoch = 1024 // 64

    def poisoned(images, *args, **kwargs):
        x = real_input(images, *args, **kwargs)
        if kwargs.get("augment_with") is not None or len(args) > 4:  # training batches only
            calls["n"] += 1
            if calls["n"] == steps_per_epoch + 3:
                x[0, 0, 0, 0] = float("nan")
        return x

    monkeypatch.setattr(train_steps, "to_device_input", poisoned)
    code = main(["train", *[f"{k}={v}" for k, v in TINY.items()], f"runs_dir={tmp_path}", "name=nan"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert err.startswith("error: train failed: epoch 2 step 3: loss is nan") and "last.pt" in err
    assert load_checkpoint(tmp_path / "nan" / "train" / "last.pt")["epoch"] == 1


def test_fine_tune_from_state_dict_with_other_class_count(tmp_path, capsys):
    source = build_model("resnet18", width=0.25, num_classes=5, in_channels=1)
    torch.save(source.state_dict(), tmp_path / "five.pth")
    out = train_module.train(tiny(tmp_path, name="ft", epochs=1, weights=tmp_path / "five.pth"))
    err = capsys.readouterr().err
    assert "fc.weight (5, 128) -> (10, 128): class count differs, classifier replaced" in err
    assert load_checkpoint(out / "best.pt")["model"]["fc.weight"].shape == (10, 128)
    fresh = build_model("resnet18", width=0.25, num_classes=10, in_channels=1)
    load_weights(fresh, tmp_path / "five.pth")  # everything but the classifier comes from the file
    assert torch.equal(fresh.conv1.weight, source.conv1.weight)
    assert torch.equal(fresh.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)

    torch.save(build_model("resnet34", width=0.25).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(EdgeError, match=r"r34.pth: keys do not match ResNet: missing \[\], unexpected \['layer1.2"):
        train_module.train(tiny(tmp_path, name="ft2", epochs=1, weights=tmp_path / "r34.pth"))


def test_bad_checkpoints_give_one_line_errors(tmp_path, capsys):
    args = ["train", *[f"{k}={v}" for k, v in TINY.items()], f"runs_dir={tmp_path}", "name=bad", "resume=true"]
    assert main(args) == 2
    assert "no checkpoint to resume" in capsys.readouterr().err
    last = tmp_path / "bad" / "train" / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"\x00garbage")
    assert main(args) == 2
    assert "not a readable torch weights file" in capsys.readouterr().err
    torch.save({"state": torch.zeros(2)}, last)
    assert main(args) == 2
    assert "not a resnet-edge training checkpoint" in capsys.readouterr().err
    torch.save({"format": "resnet-edge-checkpoint-v1", "evil": EdgeError("x")}, last)  # a pickled object
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "not a readable torch weights file" in err and err.count("\n") == 1


def test_resume_refuses_a_changed_experiment(tmp_path):
    train_module.train(tiny(tmp_path, name="r", epochs=1))
    with pytest.raises(EdgeError, match=r"resume with a different lr \(lr=0.1 in the checkpoint\)"):
        train_module.train(tiny(tmp_path, name="r", epochs=1, lr=0.5, resume="true"))


def _torchrun(tmp_path, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "pipeline.cli",
        "train",
        *[f"{k}={v}" for k, v in TINY.items()],
        f"runs_dir={tmp_path}",
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_ddp_two_processes_gloo(tmp_path):
    proc = _torchrun(tmp_path, "name=ddp", "epochs=1", "train_subset=512")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "ddp" / "train"
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "last.pt", "metrics.json"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and len(metrics["epochs"]) == 1
    assert metrics["batch_size"] == 64 and metrics["per_rank_batch"] == 32  # recorded, never silently changed
    assert proc.stderr.count("trained: ") == 1  # only rank 0 logs


def test_ddp_batch_that_does_not_divide_is_an_error(tmp_path):
    from pipeline.stages.train import check_batch

    message = "batch_size=63 does not divide evenly across 2 processes; use a multiple of 2"
    with pytest.raises(EdgeError, match=message):  # where it is made
        check_batch(63, 2, 1024)
    assert check_batch(64, 2, 1024) == 32
    proc = _torchrun(tmp_path, "name=ddp3", "epochs=1", "batch_size=63")
    assert proc.returncode != 0
    # rank 0 says it through the stage wrapper (`error: train failed: ...`), other ranks as `error: ...`; torchrun
    # may stop a rank before it prints, so the test asks for the message from either
    assert f"error: train failed: {message}" in proc.stderr or f"error: {message}" in proc.stderr


def test_ddp_more_processes_than_data(tmp_path):
    proc = _torchrun(tmp_path, "name=ddp2", "train_subset=1", "batch_size=2")
    assert proc.returncode != 0
    assert "error: train failed: 2 processes x batch 1 need at least 2 training images; have 1" in proc.stderr


def test_presets_and_overrides(tmp_path):
    cfg = load_config(None, {"preset": "gpu", "epochs": "3"})
    assert (cfg.preset, cfg.stem, cfg.image_size, cfg.epochs) == ("gpu", "small", 28, 3)
    auto = load_config(None, {})
    assert auto.preset == ("gpu" if torch.cuda.is_available() else "cpu")
    (tmp_path / "c.yaml").write_text("model: resnet34\nepochs: 9\n")
    cfg = load_config(tmp_path / "c.yaml", {"epochs": "2"})
    assert (cfg.model, cfg.epochs) == ("resnet34", 2)
    with pytest.raises(EdgeError, match="epochs=two: expected int"):
        load_config(None, {"epochs": "two"})
    with pytest.raises(EdgeError, match="preset=tpu"):
        load_config(None, {"preset": "tpu"})


def test_training_path_imports_no_conversion_tools():
    code = (
        "import sys, pipeline.cli, pipeline.stages.train; "
        "bad = [m for m in ('tensorflow', 'onnx', 'onnx2tf', 'nncf', 'onnxruntime') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def _labels_at_random(tmp_path) -> Path:
    """Fashion-MNIST with every training label drawn at random (seeded): its images, no signal in its labels. The
    validation split is carved from these, so no model can score above chance on it, on any host."""
    import numpy as np

    from pipeline.data import FASHION_MNIST_DIR

    root = tmp_path / "random-labels"
    root.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (root / name).symlink_to(FASHION_MNIST_DIR / name)
    labels = np.random.default_rng(0).integers(0, 10, 60000, dtype=np.uint8)
    (root / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + (60000).to_bytes(4, "big") + labels.tobytes())
    return root


def test_a_run_that_learns_nothing_is_an_error(tmp_path, capsys):
    """Learning nothing, by construction: labels drawn at random keep validation at chance whatever the float path,
    and AdamW at lr=10 (a legal rate) moves every weight by about 10 a step, so the loss stays far above a uniform
    guess's. That must not read as `train ok`. (A learning rate alone was not certain: SGD at lr=5, then AdamW at
    lr=10 on the real labels, trained on some hosts.)"""
    code = main(
        [
            "train",
            *[f"{k}={v}" for k, v in TINY.items() if k != "lr"],
            "optimizer=adamw",
            "lr=10",
            f"data_root={_labels_at_random(tmp_path)}",
            f"runs_dir={tmp_path}",
            "name=diverged",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2, err
    assert err.startswith("error: train failed: training diverged: last epoch's train loss ")
    assert float(err.split("train loss ")[1].split(" ")[0]) > 2 * 2.30  # above twice a uniform guess's
    assert "(a uniform guess scores 2.30) and best validation top-1 " in err
    assert float(err.split("best validation top-1 ")[1].split("%")[0]) <= 15.0  # chance level, in percent
    assert "is chance level (1/10); lower lr=10.0" in err
    assert (tmp_path / "diverged" / "train" / "last.pt").is_file()  # kept, to look at


def test_chance_rule_is_the_decision():
    """The rule itself, on figures: a loss above 2 ln K with validation at chance is an error; a short run that
    learned little (loss near ln K) or a high loss with validation above chance is not."""
    from pipeline.stages.train import check_learned

    with pytest.raises(
        EdgeError,
        match=r"training diverged: last epoch's train loss 4.61 \(a uniform guess scores "
        r"2.30\) and best validation top-1 15.00% is chance level \(1/10\); lower lr=5",
    ):
        check_learned(4.61, 0.15, 10, 5, Path("x"))
    check_learned(2.31, 0.10, 10, 5, Path("x"))  # learned little: not an error
    check_learned(30.0, 0.151, 10, 5, Path("x"))  # above chance


def test_distillation_loss_is_hinton_kd():
    """(1 - a) CE + a T^2 KL(teacher/T || student/T), checked against the formula written out by hand."""
    import torch.nn.functional as F

    from pipeline.stages.train import distillation_loss

    torch.manual_seed(0)
    student, teacher, labels = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    ce = F.cross_entropy(student, labels)
    assert torch.allclose(distillation_loss(student, teacher, labels, 0.0, 4.0), ce)
    p = torch.softmax(teacher / 4, 1)
    kl = (p * (torch.log(p) - torch.log_softmax(student / 4, 1))).sum(1).mean()
    assert torch.allclose(distillation_loss(student, teacher, labels, 1.0, 4.0), 16 * kl, atol=1e-6)
    assert torch.allclose(distillation_loss(student, teacher, labels, 0.3, 4.0), 0.7 * ce + 0.3 * 16 * kl, atol=1e-6)
    assert distillation_loss(teacher, teacher, labels, 1.0, 2.0).abs() < 1e-6  # a student equal to its teacher


def test_fine_tune_with_a_teacher_learns_the_teacher(fmnist):
    """kd_alpha=1: the loss is distillation only; a randomly initialised student fine-tuned from a trained-looking
    teacher's soft labels moves toward it (the KL falls), whatever the hard labels say."""
    import dataclasses

    from models import build_model
    from pipeline.stages.train import fine_tune

    cfg = _eighth_width_config(finetune_subset="512", eval_subset="256", kd_alpha="1.0", kd_temperature="2.0")
    torch.manual_seed(0)
    teacher = build_model("resnet18", num_classes=10, in_channels=1, width=0.125).eval()
    student = build_model("resnet18", num_classes=10, in_channels=1, width=0.125)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    history = fine_tune(student, cfg, fmnist, 3, 0.05, teacher=teacher)
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]  # the distillation term falls
    # the gradient reaches the student only: the teacher is unchanged (BN statistics too) and holds no gradient
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters()) and not teacher.training
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
    plain = fine_tune(
        build_model("resnet18", num_classes=10, in_channels=1, width=0.125),
        dataclasses.replace(cfg, kd_alpha=0.0),
        fmnist,
        1,
        0.05,
        teacher=teacher,
    )
    assert plain[0]["train_loss"] > 1.0  # kd_alpha=0 ignores the teacher: plain cross-entropy on 10 classes


def test_random_erasing_zeroes_one_rectangle_of_the_stated_area():
    x = torch.rand(256, 1, 28, 28) + 0.5  # no zeros of its own
    g = torch.Generator().manual_seed(0)
    # flip and shift off the table: erase only (shifts of a zero-padded image would add zeros of their own)
    plain = train_loaders.augment(x, True, torch.Generator().manual_seed(0), erasing=0.0)
    erased = train_loaders.augment(x, True, g, erasing=1.0)
    zeros = (erased == 0).float() - (plain == 0).float()  # same generator seed: the same crop and flip
    share = zeros.flatten(1).mean(1)
    assert (share > 0).all() and 0.01 < share.min() and share.max() <= 0.3  # 2-25%, rounded to whole pixels
    rows, cols = zeros[:, 0].any(2), zeros[:, 0].any(1)
    assert torch.equal(zeros[:, 0].sum((1, 2)), (rows.sum(1) * cols.sum(1)).float())  # one filled rectangle
    half = train_loaders.augment(x, True, torch.Generator().manual_seed(1), erasing=0.5)
    hit = (half == 0).float() - (train_loaders.augment(x, True, torch.Generator().manual_seed(1)) == 0).float()
    assert 0.3 < (hit.flatten(1).sum(1) > 0).float().mean() < 0.7


def test_ema_warms_up_then_holds_its_decay():
    """TensorFlow's warm-up: step n averages with decay min(ema, (1 + n) / (10 + n)), so the random initial weights
    are forgotten in a short run, and a long run averages at the configured decay."""
    update = train_steps.ema_update(0.998)
    for n, decay in ((0, 0.1), (90, 0.91), (10_000, 0.998)):
        avg, cur = [torch.zeros(3)], [torch.ones(3)]
        update(avg, cur, torch.tensor(n))
        assert torch.allclose(avg[0], torch.full((3,), 1 - decay)), (n, avg)
    counters = [torch.tensor(5)]
    update(counters, [torch.tensor(7)], torch.tensor(3))
    assert counters[0].item() == 7  # BN's batch counter follows the model


def test_center_tap_convs_give_the_same_outputs_and_gradients():
    """The CPU training path's 1x1-map shortcut changes nothing but speed: same logits, same gradients, same keys, and
    plain Conv2d again afterwards (what is exported after a fine-tune is the model as defined)."""
    from torch import nn

    from pipeline.stages.train import CenterTapConv2d, center_tap_convs

    torch.manual_seed(0)
    ref = build_model("resnet18", num_classes=10, in_channels=1, stem="imagenet", width=0.25).train()
    fast = build_model("resnet18", num_classes=10, in_channels=1, stem="imagenet", width=0.25).train()
    fast.load_state_dict(ref.state_dict())
    x, y = torch.randn(8, 1, 32, 32), torch.randint(0, 10, (8,))  # layer 4 meets a 1x1 map at 32 px
    hit = []
    with center_tap_convs(fast) as n:
        assert n == 20  # every conv of ResNet-18: 7x7, 3x3 and 1x1 are all padded by k // 2
        hooks = [
            m.register_forward_hook(lambda mod, inp, out: hit.append(inp[0].shape[-1] == 1))
            for m in fast.modules()
            if isinstance(m, CenterTapConv2d)
        ]
        for m in (ref, fast):
            torch.nn.functional.cross_entropy(m(x), y).backward()
        assert sum(hit) == 3  # layer4.0.conv2, layer4.1.conv1, layer4.1.conv2 took the matrix multiply
        assert torch.allclose(ref(x), fast(x), atol=1e-5)
    for (name, a), b in zip(ref.named_parameters(), fast.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-5), name
    assert list(fast.state_dict()) == list(ref.state_dict())
    assert not any(isinstance(m, CenterTapConv2d) for m in fast.modules())  # restored on the way out
    assert sum(type(m) is nn.Conv2d for m in fast.modules()) == 20
    for h in hooks:
        h.remove()


def test_a_small_training_split_gets_the_whole_fine_tune_budget(fmnist):
    """finetune_subset is a budget in images seen: 1,024 images per epoch from a 256-image split are four shuffled
    passes (16 steps of 64), not one pass of 4 steps (3,600 images used to give channel pruning 28 steps in all)."""
    import dataclasses

    from models import build_model
    from pipeline.stages.train import fine_tune

    cfg = _eighth_width_config(finetune_subset="1024", train_subset="256", eval_subset="64")
    history = fine_tune(build_model("resnet18", num_classes=10, in_channels=1, width=0.125), cfg, fmnist, 1, 0.05)
    assert history[0]["steps"] == 1024 // 64
    big = dataclasses.replace(cfg, train_subset=4096)
    history = fine_tune(build_model("resnet18", num_classes=10, in_channels=1, width=0.125), big, fmnist, 1, 0.05)
    assert history[0]["steps"] == 1024 // 64  # the same budget on a larger split


def test_a_small_data_set_trains_for_at_least_min_steps(capsys):
    """The cpu preset's 4 epochs are 860 steps on Fashion-MNIST's 55,000 training images but 56 on a 3,600-image
    folder (a default run there ended at 68.75% and failed its int8 gates): min_steps=800 raises the epochs to 58
    there, says so in one line, and leaves Fashion-MNIST's 4 alone."""
    from pipeline.config import load_config
    from pipeline.stages.train.loop import with_step_floor

    cfg = load_config(None, {"preset": "cpu"})
    assert cfg.min_steps == 800 and cfg.epochs == 4 and cfg.batch_size == 256
    assert with_step_floor(cfg, 55_000, 55_000 // 256).epochs == 4
    small = with_step_floor(cfg, 3_600, 3_600 // 256)
    assert small.epochs == 58 and small.min_steps == 800  # 58 x 14 = 812 steps
    assert (
        "3,600 training images are 14 steps an epoch: 58 epochs instead of 4, for min_steps=800"
        in capsys.readouterr().err
    )
    assert with_step_floor(load_config(None, {"preset": "cpu", "min_steps": "0"}), 3_600, 14).epochs == 4


def test_a_small_real_image_folder_trains_to_the_step_floor(tmp_path, capsys, monkeypatch):
    """A small ImageFolder of real Fashion-MNIST PNGs (1,000 training images, 200 test), as bench/small_folder.py
    makes it at full size: the step floor turns 1 epoch of 14 steps into 11 epochs, and the model learns (it was
    left near chance by the bare epoch)."""
    from conftest import bench_script

    folder = bench_script(monkeypatch, "small_folder").write_folder(tmp_path / "data", 1000, 200)
    assert len(list((folder / "train").rglob("*.png"))) == 1000 and len(list((folder / "test").rglob("*.png"))) == 200
    cfg = tiny(
        tmp_path,
        name="folder",
        data_source="imagefolder",
        data_root=folder,
        in_channels=3,
        train_subset=0,
        eval_subset=0,
        epochs=1,
        min_steps=150,
    )
    out = train_module.train(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    assert (
        "900 training images are 14 steps an epoch: 11 epochs instead of 1, for min_steps=150"
        in capsys.readouterr().err
    )
    assert len(metrics["epochs"]) == 11 and metrics["test_images"] == 200
    assert metrics["test_acc"] > 0.6  # chance is 0.1


def _eighth_width_config(**keys):
    """An eighth-width ResNet-18 at 28 px, batches of 64, no augmentation: the fine-tuning tests' config."""
    base = {"model": "resnet18", "width": "0.125", "image_size": "28", "preset": "cpu", "batch_size": "64"}
    return load_config(None, {**base, "augment": "false", **keys})
