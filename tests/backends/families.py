"""Tiny random-weight models of the Llama, Qwen, Mistral, Gemma and Phi families, each with
its family's real chat template and special tokens, written as Hugging Face folders.

The templates are the families' public ``tokenizer_config.json`` ones (Meta-Llama-3-8B-Instruct,
Qwen2.5-Instruct without its tool-calling branch, Mistral-7B-Instruct-v0.1, gemma-2-2b-it,
Phi-3-mini-4k-instruct). The tokenizer is the built-in ``tiny`` one (bytes, no merges) with
the family's specials added, so the rendered text round-trips exactly and a family's own
markers are single tokens, as in the real tokenizers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["FAMILIES", "Family", "build_family"]

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
QWEN2 = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. "
    "You are a helpful assistant.<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) "
    "or (message.role == 'assistant' and not message.tool_calls) %}"
    "{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}{% endfor %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
PHI3 = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)


@dataclass(frozen=True)
class Family:
    """One model family: its config class, special tokens and chat template."""

    name: str
    config: str
    bos: str
    eos: str
    specials: tuple[str, ...]
    template: str
    #: where the folder keeps its template, as the family's published folders do
    template_in: Literal["tokenizer_config.json", "chat_template.jinja"]
    #: the assistant's part of a turn as the template renders it: what training is on
    turn: Callable[[str], str]
    #: the token that ends a turn (a single token of the tokenizer)
    end_of_turn: str
    #: whether the template takes a system message
    system: bool = True
    extra: tuple[tuple[str, Any], ...] = ()


FAMILIES = {
    f.name: f
    for f in (
        Family(
            "llama",
            "LlamaConfig",
            "<|begin_of_text|>",
            "<|eot_id|>",
            ("<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"),
            LLAMA3,
            "tokenizer_config.json",
            lambda text: f"{text}<|eot_id|>",
            "<|eot_id|>",
        ),
        Family(
            "qwen",
            "Qwen2Config",
            "<|endoftext|>",
            "<|im_end|>",
            ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
            QWEN2,
            "chat_template.jinja",
            lambda text: f"{text}<|im_end|>\n",
            "<|im_end|>",
        ),
        Family(
            "mistral",
            "MistralConfig",
            "<s>",
            "</s>",
            ("[INST]", "[/INST]"),
            MISTRAL,
            "tokenizer_config.json",
            lambda text: f"{text}</s> ",
            "</s>",
            system=False,
        ),
        Family(
            "gemma",
            "Gemma2Config",
            "<bos>",
            "<eos>",
            ("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"),
            GEMMA,
            "chat_template.jinja",
            lambda text: f"{text}<end_of_turn>\n",
            "<end_of_turn>",
            system=False,
            extra=(("head_dim", 16),),
        ),
        Family(
            "phi",
            "Phi3Config",
            "<s>",
            "<|endoftext|>",
            ("<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
            PHI3,
            "chat_template.jinja",
            lambda text: f"{text}<|end|>\n",
            "<|end|>",
        ),
    )
}


def build_family(family: Family, tiny: Path, dest: Path) -> Path:
    """Write a random 1-layer model of ``family`` with the ``tiny`` byte tokenizer, the
    family's specials and chat template to ``dest``; returns ``dest``."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    new = [s for s in family.specials if s not in tokenizer.get_vocab()]
    tokenizer.add_special_tokens({"additional_special_tokens": new})
    tokenizer.bos_token, tokenizer.eos_token = family.bos, family.eos
    tokenizer.chat_template = family.template
    tokenizer.save_pretrained(dest)
    if family.template_in == "tokenizer_config.json":
        (dest / "chat_template.jinja").unlink()
        config_file = dest / "tokenizer_config.json"
        saved = json.loads(config_file.read_text(encoding="utf-8"))
        saved["chat_template"] = family.template
        config_file.write_text(json.dumps(saved, indent=2), encoding="utf-8")
    vocab = len(tokenizer)
    config = getattr(transformers, family.config)(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.convert_tokens_to_ids(family.bos),
        eos_token_id=tokenizer.convert_tokens_to_ids(family.eos),
        pad_token_id=tokenizer.pad_token_id,
        **dict(family.extra),
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(dest)
    return dest
