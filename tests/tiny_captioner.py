"""A tiny VisionEncoderDecoder captioner built here (no model hub): a 2-layer ViT encoder, a 2-layer GPT-2
decoder with cross-attention, random weights, a WordLevel tokenizer and a ViT image processor, saved with
save_pretrained so it loads like any Hugging Face image-to-text checkpoint. Random weights drawn wide
(initializer_range) so that different images give different captions."""
from __future__ import annotations

from pathlib import Path

WORDS = ("a an the photo picture of dog cat bird red blue green market boat sea tree man woman child street "
         "with on in at near two small big old house car bicycle beach mountain table food").split()


def build_tiny_captioner(out_dir: str | Path, seed: int = 0, image_size: int = 32) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (GPT2Config, PreTrainedTokenizerFast, ViTConfig, ViTImageProcessor,
                              VisionEncoderDecoderConfig, VisionEncoderDecoderModel)

    out = Path(out_dir)
    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>")
    encoder = ViTConfig(image_size=image_size, patch_size=8, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, initializer_range=0.5)
    decoder = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                         add_cross_attention=True, initializer_range=0.5, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    for holder in (config,):
        holder.decoder_start_token_id = tokenizer.bos_token_id
        holder.pad_token_id = tokenizer.pad_token_id
        holder.eos_token_id = tokenizer.eos_token_id
    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(config=config).eval()
    generation = model.generation_config
    generation.decoder_start_token_id = tokenizer.bos_token_id
    generation.pad_token_id = tokenizer.pad_token_id
    generation.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(out)
    return out
