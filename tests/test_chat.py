"""A published tokenizer's EOS and chat template (src/data/chat.py): prompts render as transformers
renders them, the layout uses the tokenizer's own EOS, and VRPO runs end to end from a published
LLaDA checkpoint with its tokenizer."""

from __future__ import annotations

import json
import math

import pytest
import torch

from src.data.pairs import Layout, PreferenceFileData
from src.data.text import HFTokenizer
from src.errors import ConfigError
from src.models.llada import LLaDA
from src.models.llada_hf import save_published
from src.records import read_record
from src.run import train_init_stage
from tests.conftest import make_config, run_cli

SPECIAL = ["<|startoftext|>", "<|endoftext|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
           "<|mdm_mask|>"]
# The template LLaDA-8B-Instruct ships: BOS, then each turn as header, trimmed content and <|eot_id|>,
# then the assistant header the answer follows.
LLADA_TEMPLATE = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
                  "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim "
                  "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
                  "{{ content }}{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}")
ROWS = [{"prompt": f"What is {a} plus {b}?", "chosen": f"The sum is {a + b}.", "rejected": f"The sum is {a + b + 1}."}
        for a in range(6) for b in range(6)]


def chat_tokenizer(directory, template: str | None = LLADA_TEMPLATE):
    """A small byte-level BPE in a published checkpoint's layout: tokenizer.json with LLaDA's special
    tokens, and tokenizer_config.json naming BOS, EOS and the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = [" ".join(r.values()) for r in ROWS] * 4 + ["user assistant\n\n"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=200, special_tokens=SPECIAL,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    config = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
              "tokenizer_class": "PreTrainedTokenizerFast"}
    (directory / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": template}
                                                                if template else config))
    return tok


def test_the_chat_template_renders_and_tokenizes_as_transformers_does(tmp_path):
    transformers = pytest.importorskip("transformers")
    chat_tokenizer(tmp_path)
    ours = HFTokenizer(tmp_path)
    theirs = transformers.PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    messages = [{"role": "user", "content": "  What is 2 plus 3?\n"}]
    text = ours.config.render(messages[0]["content"])
    assert text == theirs.apply_chat_template(messages, tokenize=False)
    assert text.startswith("<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2 plus 3?<|eot_id|>")
    ids = Layout(ours, 64, chat=True).prompt(messages[0]["content"]).tolist()
    assert ids == list(theirs.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


def test_the_layout_pads_with_the_tokenizers_own_eos_after_a_templated_prompt(tmp_path):
    tok = chat_tokenizer(tmp_path)
    data = PreferenceFileData(path=str(_prefs(tmp_path)), tokenizer=str(tmp_path), max_length=64, batch_size=4,
                              val_size=4)
    data.setup()
    layout = data.layout
    assert layout.chat and layout.eos_id == tok.token_to_id("<|endoftext|>")
    assert layout.vocab_size == tok.get_vocab_size() == data.model_inputs["vocab_size"]  # EOS is no extra id
    val = data.val.tensors
    for i, row in enumerate(data.val_rows):
        tokens = val["chosen"][i]
        response = val["chosen_response"][i]
        start = int(response.nonzero()[0])
        prompt = tokens[:start].tolist()
        assert prompt[0] == tok.token_to_id("<|startoftext|>")
        assert tok.decode(prompt, skip_special_tokens=False).endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
        ids = tokens[response].tolist()
        assert ids == tok.encode(row["chosen"]).ids + [layout.eos_id]  # the answer, then its EOS
        assert layout.decode(tokens[start:].tolist()) == row["chosen"]
        assert (tokens[val["chosen_padding"][i]] == layout.eos_id).all()


def test_chat_template_off_and_missing_and_a_bad_eos(tmp_path):
    chat_tokenizer(tmp_path / "chat")
    plain = PreferenceFileData(path=str(_prefs(tmp_path)), tokenizer=str(tmp_path / "chat"), chat_template=False)
    assert not plain.layout.chat and plain.layout.prompt("hi").tolist() == HFTokenizer(tmp_path / "chat").encode("hi").tolist()
    chat_tokenizer(tmp_path / "bare", template=None)
    with pytest.raises(ConfigError, match="data.chat_template=true, but data.tokenizer=.* has no chat template"):
        PreferenceFileData(path=str(_prefs(tmp_path)), tokenizer=str(tmp_path / "bare"), chat_template=True)
    assert not PreferenceFileData(path=str(_prefs(tmp_path)), tokenizer=str(tmp_path / "bare")).layout.chat
    config = tmp_path / "bare" / "tokenizer_config.json"
    config.write_text(json.dumps({"eos_token": "<|nope|>"}))
    with pytest.raises(ConfigError, match=r"eos_token '<\|nope\|>' is not in the tokenizer's vocab"):
        HFTokenizer(tmp_path / "bare")
    config.write_text(json.dumps({"chat_template": "{{ raise_exception('one user turn only') }}"}))
    with pytest.raises(ConfigError, match="chat_template failed to render a prompt \\(one user turn only\\)"):
        HFTokenizer(tmp_path / "bare").config.render("hi")


def test_vrpo_runs_end_to_end_from_a_published_checkpoint_with_its_chat_tokenizer(tmp_path):
    common = _published_vrpo(tmp_path)
    with pytest.raises(ConfigError, match="init_stage would train its own model there, not model.path="):
        train_init_stage(make_config(*common, f"paths.output_dir={tmp_path / 'out'}"))  # its default SFT dir
    _train_vrpo(common, tmp_path / "vrpo")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_vrpo_from_a_published_checkpoint_with_fsdp_bf16_and_checkpointed_copies(tmp_path):
    _train_vrpo([*_published_vrpo(tmp_path), "trainer=fsdp", "trainer.devices=1", "task.chunk=8",
                 "task.checkpointing=true"], tmp_path / "vrpo")


def _published_vrpo(tmp_path) -> list[str]:
    """A tiny published LLaDA checkpoint with its chat tokenizer in one dir; the overrides to use it."""
    tok = chat_tokenizer(tmp_path / "ckpt")
    torch.manual_seed(0)
    model = LLaDA(300, width=32, depth=2, head_dim=16, mask_id=tok.token_to_id("<|mdm_mask|>"))
    save_published(model, tmp_path / "ckpt")
    return ["experiment=llada_vrpo", "model=llada_hf", f"model.path={tmp_path / 'ckpt'}"]


def _train_vrpo(overrides: list[str], run_dir) -> None:
    tmp_path = run_dir.parent
    done = run_cli(*overrides, "init_from=null", "data=preference_file", f"data.path={_prefs(tmp_path)}",
                   f"data.tokenizer={tmp_path / 'ckpt'}", "data.max_length=64", "data.val_size=4",
                   "data.batch_size=4", "vrpo.n_t=2", "steps=2", "val_every=2", "ckpt_every=2", "logger=csv",
                   "task.sample_accuracy=false", f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-2000:]
    record = read_record(run_dir)
    assert record["status"] == "ok" and record["config"]["model"]["width"] == 32
    final = record["metrics"]["final"]
    assert 0 <= final["val/preference_accuracy"] <= 1 and math.isfinite(final["val/loss"])


def _prefs(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path
