"""A Hugging Face tokenizer's ``tokenizer_config.json``: its special tokens and its chat template.

Published chat checkpoints (LLaDA-8B-Instruct, LLaDA 1.5) ship, beside ``tokenizer.json``, a
``tokenizer_config.json`` naming ``eos_token`` / ``bos_token`` and a Jinja ``chat_template``. A prompt
is formatted as the checkpoint was fine-tuned: the template rendered over one user message, with the
assistant header appended (``add_generation_prompt``), then tokenized without adding special tokens
again (the template already holds them).

Rendered with a sandboxed Jinja environment configured as ``transformers`` configures its own
(``trim_blocks``, ``lstrip_blocks``, ``raise_exception``), so the text is the one
``PreTrainedTokenizerFast.apply_chat_template`` gives (tests/test_chat.py checks it against
transformers); transformers itself stays a test-only dependency.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from src.errors import ConfigError

CONFIG = "tokenizer_config.json"


@dataclass(frozen=True)
class TokenizerConfig:
    """The parts of ``tokenizer_config.json`` the data uses: special token strings and the template."""

    eos_token: str | None = None
    bos_token: str | None = None
    chat_template: str | None = None

    @classmethod
    def read(cls, directory: Path) -> TokenizerConfig:
        """The config in ``directory``, or an empty one when there is none."""
        path = directory / CONFIG
        if not path.is_file():
            return cls()
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err.msg})") from None
        template = raw.get("chat_template")
        if isinstance(template, list):  # the multi-template form: [{"name": "default", "template": …}]
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        return cls(_token(raw.get("eos_token")), _token(raw.get("bos_token")), template)

    def render(self, user: str, source: str = CONFIG) -> str:
        """The chat-formatted text of one user turn, ready for the assistant's answer."""
        if self.chat_template is None:
            raise ConfigError(f"{source}: no chat_template, so data.chat_template=true cannot format prompts")
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        try:
            return env.from_string(self.chat_template).render(
                messages=[{"role": "user", "content": user}], add_generation_prompt=True,
                bos_token=self.bos_token or "", eos_token=self.eos_token or "")
        except TemplateError as err:
            raise ConfigError(f"{source}: chat_template failed to render a prompt ({err})") from None


def _token(value: str | dict | None) -> str | None:
    """A special token as written in the config: a string, or an AddedToken dict with ``content``."""
    return value.get("content") if isinstance(value, dict) else value
