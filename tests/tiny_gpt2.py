"""A tiny GPT-2 with seeded random weights and a ByteLevel BPE trained here: the offline stand-in for
GPT-2-large in tests. Built once per machine into a versioned temp directory (atomic rename)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

VERSION = "v1"
TRAINING_TEXT = [
    "A young girl is carrying a wooden basket of apples in a crowded market.",
    "The fisherman repaired an old fishing net on a wooden pier at sunset.",
    "Two children are flying a red kite in the city park on a warm summer evening.",
    "A small brown dog chased a tennis ball along the river bank.",
    "The chef cooked soup in a large iron pot in a sunny kitchen.",
    "Several hikers climbed a steep rocky path on a snowy mountain trail.",
    "The old lighthouse is white with a red roof and stands near the harbour.",
    "Visit our website for more photos of the summer festival and the old town.",
    "Prices rose in May, and analysts were surprised by the numbers.",
    "She asked where the station was, and nobody answered her question.",
] * 20


def build_tiny_gpt2(out_dir: str | Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    out = Path(out_dir)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TRAINING_TEXT, vocab_size=400, min_frequency=1,
                            special_tokens=["<|endoftext|>", "<pad>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>",
                                        eos_token="<|endoftext|>", pad_token="<pad>")
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id, initializer_range=0.5)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def tiny_gpt2_path() -> str:
    root = Path(os.environ.get("REALSYN_TEST_CACHE", Path(tempfile.gettempdir()) / "realsyn-test-models"))
    target = root / f"tiny-gpt2-{VERSION}"
    if not (target / "config.json").exists():
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=root, prefix=".tiny-gpt2-"))
        build_tiny_gpt2(staging)
        try:
            os.replace(staging, target)
        except OSError:  # another process won the race
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    return str(target)


# Perplexity band for the tiny model: its random weights give perplexities in the thousands, so the band
# is set to keep most sample sentences and drop some on each side (the rule is exercised, not skipped).
TINY_MIN_PERPLEXITY = 6000.0
TINY_MAX_PERPLEXITY = 50000.0


def perplexity_overrides() -> list[str]:
    return [f"sentence_filter.perplexity_model={tiny_gpt2_path()}",
            f"sentence_filter.min_perplexity={TINY_MIN_PERPLEXITY}",
            f"sentence_filter.max_perplexity={TINY_MAX_PERPLEXITY}"]
