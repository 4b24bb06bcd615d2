"""Config composition and the checks that stop a bad command line before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.assemble import CONF_DIR
from src.errors import ConfigError
from src.config_checks import check
from src.preflight import preflight
from tests.conftest import make_config

GROUPS = ("task", "model", "parametrization", "optimizer", "scheduler", "data", "trainer", "logger",
          "sweep", "budget", "experiment", "vrpo")
NEEDS_GPU = {"trainer": {"gpu", "fsdp"}, "experiment": {"gpt2_124m"}}
_HERE = Path(__file__)
UNTIED = "model.tie_head=false"  # μP arms need an untied readout
IMAGES = ["task=image_diffusion", "model=dit"]  # image data goes with a diffusion model and task
SFT = ["task=masked_lm", "model=llada"]  # prompt-response data goes with a masked-diffusion LM
PREFS = ["task=preference", "model=llada"]
NEEDS_VALUES = {
    "data": {"text_files": [f"data.paths=[{_HERE}]"], "hf_text": [f"data.name_or_path={_HERE}"],
             "mnist5k": IMAGES, "digits": IMAGES, "shapes": IMAGES, "cifar10": [*IMAGES, "data.root=/tmp"],
             "image_folder": [*IMAGES, f"data.root={_HERE.parent.parent}"], "hf_images": [*IMAGES, "@hf_images"],
             "latents": [*IMAGES, "@latents"], "arithmetic": SFT, "sorting": SFT, "sft_file": [*SFT, f"data.path={_HERE}"],
             "preference_file": [*PREFS, f"data.path={_HERE}"], "sampled_pairs": [*PREFS, f"init_from={_HERE.parent}"]},
    "parametrization": {"mup": [UNTIED], "depth_mup": [UNTIED], "completep": [UNTIED]},
    "model": {**{m: ["task=image_diffusion", "data=digits"] for m in ("dit", "dit_s", "dit_b", "dit_l", "dit_xl",
                                                                      "uvit", "pixart", "mmdit")},
              "llada": ["task=masked_lm", "data=arithmetic"],
              "llada_hf": ["task=masked_lm", "data=arithmetic", "@llada_hf"]},
    "vrpo": {o: ["task=preference", "model=llada", "data=preference_file", f"data.path={_HERE}"]
             for o in ("vrpo", "naive_dpo")},
    "task": {"image_diffusion": ["model=dit", "data=digits"], "masked_lm": ["model=llada", "data=arithmetic"],
             "preference": ["model=llada", "data=preference_file", f"data.path={_HERE}"]},
    "experiment": {"llada_vrpo": [f"init_from={_HERE.parent}"]},
}


def _local_files(tmp_path, name: str) -> str:
    """A small local data set for the file-based image options."""
    import datasets
    import torch
    from PIL import Image

    if name == "@llada_hf":  # a tiny random checkpoint in the published layout
        from src.models.llada import LLaDA
        from src.models.llada_hf import save_published

        save_published(LLaDA(vocab_size=300, width=32, depth=2, head_dim=16, mask_id=290), tmp_path / "llada")
        return f"model.path={tmp_path / 'llada'}"
    if name == "@latents":
        torch.save({"latents": torch.randn(10, 4, 8, 8), "labels": torch.arange(10) % 3}, tmp_path / "l.pt")
        return f"data.path={tmp_path / 'l.pt'}"
    rows = {"image": [Image.new("RGB", (8, 8)) for _ in range(10)], "label": [i % 3 for i in range(10)]}
    datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).save_to_disk(str(tmp_path / "ds"))
    return f"data.name_or_path={tmp_path / 'ds'}"


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_every_group_exists_and_has_options():
    for group in GROUPS:
        assert _options(group), group


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_option_composes_and_passes_the_checks(group, option, tmp_path):
    extra = [_local_files(tmp_path, v) if v.startswith("@") else v for v in NEEDS_VALUES.get(group, {}).get(option, [])]
    cfg = make_config(f"{group}={option}", *extra)
    if option in NEEDS_GPU.get(group, set()):
        with pytest.raises(ConfigError, match="needs a CUDA GPU"):
            check(cfg)
    else:
        check(cfg)


def test_experiment_files_are_global_presets():
    for path in (CONF_DIR / "experiment").glob("*.yaml"):
        assert path.read_text().startswith("# @package _global_"), path.name


@pytest.mark.parametrize("argv, message", [
    (["model=foo"], "model=foo: no such option; choose one of dit, dit_b, dit_l, dit_s, dit_xl, gpt2, llada, llada_hf, "
                     "mmdit, pixart, uvit"),
    (["data=nothing"], "data=nothing: no such option; choose one of arithmetic, cifar10, digits, hf_images, hf_text, "
                       "image_folder, latents, mnist5k, preference_file, pysource, sampled_pairs, sft_file, shapes, "
                       "sorting, text_files"),
    (["model=dit"], "model (DiT) does not take vocab_size from the data: pair it with data that gives image_size, "
                    "in_channels, num_classes"),
    (["model.widht=64"], "model.widht: no such key in the config"),
    (["model.width=100"], "model: width=100 is not divisible by head_dim=32; choose a width that is a multiple of 32"),
    (["model.depth=0"], "model: depth=0 must be a positive integer"),
    (["model.head_dim=-4"], "model: head_dim=-4 must be a positive integer"),
    (["data.batch_size=0"], "data: batch_size=0 must be a positive integer"),
    (["data.seq_len=-1"], "data: seq_len=-1 must be a positive integer"),
    (["optimizer.betas=[0.9,1.5]"], "optimizer: Invalid beta parameter at index 1: 1.5"),
    (["optimizer.eps=-1"], "optimizer: Invalid epsilon value: -1"),
    (["optimizer=sgd", "optimizer.momentum=-1"], "optimizer: Invalid momentum value: -1"),
    (["+optimizer.foo=1"], "optimizer: AdamW.__init__() got an unexpected keyword argument 'foo'"),
    (["model.max_seq_len=8"], "model.max_seq_len=8 is shorter than data.seq_len=128"),
    (["trainer.devices=0"], "trainer.devices=0 must be a positive integer, a list of device ids or auto"),
    ([f"data.tokenizer={Path(__file__)}"], f"data.tokenizer='{Path(__file__)}': not a Hugging Face tokenizer"),
    (["sweep_metric.key=val/los"], "sweep_metric.key='val/los'; this task records val/loss"),
    (["sweep_metric.last_n=0"], "sweep_metric.last_n=0 must be a positive integer"),
    (["divergence.factor=0"], "divergence.factor=0 must be a number > 1"),
    (["compile=maybe"], "compile='maybe' must be true or false"),
    (["-m", "trainer=ddp", "seed=0,1"], "trainer=ddp inside a multirun"),
    (["steps=0"], "steps=0 must be a positive integer"),
    (["optimizer.lr=0"], "optimizer.lr=0 must be a number > 0"),
    (["scheduler.warmup=1.5"], "scheduler.warmup=1.5 must be a fraction in [0, 1]"),
    (["data=text_files"], "data.paths is required: set data.paths=<value>"),
    (["data=text_files", "data.paths=[/no/such/file.txt]"], "data.paths: no file matches '/no/such/file.txt'"),
    (["data.tokenizer=/no/such/dir"], "data.tokenizer='/no/such/dir': no such file or directory"),
    (["trainer=fsdp"], "trainer.strategy=fsdp needs a CUDA GPU and none is available"),
    (["logger.wandb.mode=sometimes"], "logger.wandb.mode='sometimes'; choose one of offline, online, disabled"),
    (["experiment=dit_mup_sweep", "budget=families"],
     "budget=families has no numbers for task=image_diffusion (no conf/study_budget/image_diffusion_families.yaml); "
     "choose one of default, full, seeded, smoke"),
    (["experiment=gpt2_width_depth_sweep", "budget.log2_lrs=[]"],
     "sweep.log2_lr: the sweep has no values (an empty list in the budget?)"),
    (["model.width=64,128"], "Ambiguous value for argument 'model.width=64,128'"),
    (["-m", "model.width=64,80"], "model: width=80 is not divisible by head_dim=32"),
])
def test_bad_command_lines_stop_with_one_line_naming_the_key(argv, message):
    with pytest.raises(ConfigError) as err:
        preflight(argv)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_good_command_lines_pass():
    preflight([])
    preflight(["-m", "model.width=64,128", "optimizer.lr=1e-3,2e-3"])
    preflight(["--help"])
    preflight(["experiment=gpt2_smoke", "data=text_files", f"data.paths=[{Path(__file__)}]"])
