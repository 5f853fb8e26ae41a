"""A tiny random Llama and its tokenizer, on disk, for the tests of models.pretrained and models.hf.

`save_tiny_llama(folder)` writes a `save_pretrained` folder (safetensors weights, config, a byte-level
BPE tokenizer trained here on generated English sentences, and a ChatML chat template like SmolLM2's);
`save_tiny_gguf(path, folder)` writes the same model and tokenizer as a float32 `.gguf` file the way
llama.cpp's converter does (its tensor names, its permutation of attn_q / attn_k, the tokenizer as
`tokenizer.ggml.*` metadata), so that transformers loads it back to the folder's weights exactly.

Nothing is downloaded; both build in a fraction of a second. Deterministic for a seed (the tokenizer is
the same for every seed: only the weights differ).
"""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path

import numpy as np
import torch

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
DEFAULT_SYSTEM = "You are a helpful assistant."
# SmolLM2-Instruct's template: ChatML, with a default system turn when the messages bring none
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + DEFAULT_SYSTEM + "<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
VOCAB_SIZE = 400
# rms_norm_eps: one that float32 (the GGUF's type for it) holds exactly, so the round trip keeps the config
SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=64, max_position_embeddings=512, rms_norm_eps=2.0**-20)
ROPE_THETA = 10000.0

_SUBJECTS = ["the cat", "a small dog", "my neighbour", "the old sailor", "our teacher", "a quiet child",
             "the baker", "every farmer", "the red fox", "a tired runner", "the new manager", "her brother"]
_VERBS = ["sees", "likes", "paints", "finds", "carries", "sells", "writes about", "waits for", "remembers",
          "cleans", "builds", "follows"]
_OBJECTS = ["the blue boat", "a warm loaf of bread", "the long road", "a letter from home", "the garden gate",
            "an apple tree", "the morning train", "a wooden chair", "the winter sky", "a bright lamp"]
_ENDINGS = [".", " today.", " every morning.", " near the river.", " in the rain.", " after lunch!",
            " with great care.", "?"]


def sentences(n: int = 400) -> list[str]:
    """`n` short English sentences, the same every call."""
    rng = random.Random(1234)
    out = []
    for _ in range(n):
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{rng.choice(_ENDINGS)}"
        out.append(s[0].upper() + s[1:])
    return out


def _byte_level(b: int) -> str:
    """The character GPT-2's byte-level pre-tokenizer writes for byte b."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    if b in printable:
        return chr(b)
    return chr(256 + [x for x in range(256) if x not in printable].index(b))


ASCII_ALPHABET = [_byte_level(b) for b in (9, 10, *range(32, 127))]


@functools.lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    """A byte-level BPE (GPT-2's pre-tokenizer) with SmolLM2's special tokens at ids 0-2.

    Its alphabet is the printable ASCII bytes, newline and tab only: any sequence of its tokens decodes to
    valid text, so even the random model's samples hold no broken characters (which curation would drop)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=[ENDOFTEXT, IM_START, IM_END],
                                  show_progress=False, initial_alphabet=ASCII_ALPHABET)
    tok.train_from_iterator(sentences(), trainer=trainer)
    return tok.to_str()


def tiny_tokenizer(*, chat_template: bool = True):
    """A fresh PreTrainedTokenizerFast of the tiny vocabulary (eos = pad = <|im_end|>, bos <|im_start|>)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
                                        bos_token=IM_START, eos_token=IM_END, pad_token=IM_END,
                                        add_bos_token=False, add_eos_token=False)
    if chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def tiny_llama(seed: int = 0, vocab_size: int | None = None):
    """The tiny random LlamaForCausalLM of `seed` (the global torch RNG is left as it was).

    Weights are drawn larger than transformers' init (std 0.02 would give near-uniform predictions), and
    the norms are not all ones, so that a swapped or mis-permuted tensor changes every output."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer(chat_template=False)
    config = LlamaConfig(vocab_size=vocab_size or len(tokenizer), tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, rope_theta=ROPE_THETA, **SHAPE)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("norm.weight"):
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def save_tiny_llama(folder: str | Path, *, seed: int = 0, chat_template: bool = True) -> Path:
    """Write the tiny model of `seed` and its tokenizer into `folder` (save_pretrained layout)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tiny_llama(seed).save_pretrained(folder)
    tiny_tokenizer(chat_template=chat_template).save_pretrained(folder)
    return folder


def _llama_cpp_permute(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permute of attn_q / attn_k (transformers reverses it on load)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def save_tiny_gguf(path: str | Path, folder: str | Path) -> Path:
    """Write the model and tokenizer of `folder` (from save_tiny_llama) as a float32 .gguf file at `path`."""
    import gguf
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    path, folder = Path(path), Path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = json.loads((folder / "config.json").read_text())
    weights = load_file(folder / "model.safetensors")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config["hidden_size"] // n_head

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_block_count(config["num_hidden_layers"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(ROPE_THETA)
    w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    w.add_vocab_size(config["vocab_size"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = state["model"]["vocab"]
    tokens = [tok for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    assert [vocab[t] for t in tokens] == list(range(len(tokens))) == list(range(config["vocab_size"]))
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]]
    special = set(tokenizer.all_special_tokens)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(tokenizer.bos_token_id)
    w.add_eos_token_id(tokenizer.eos_token_id)
    w.add_pad_token_id(tokenizer.pad_token_id)
    w.add_add_bos_token(False)
    if getattr(tokenizer, "chat_template", None):
        w.add_chat_template(tokenizer.chat_template)

    def tensor(name: str, key: str, permute_heads: int | None = None) -> None:
        array = weights[key].float().numpy()
        if permute_heads is not None:
            array = _llama_cpp_permute(array, n_head, permute_heads)
        w.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))

    tensor("token_embd.weight", "model.embed_tokens.weight")
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensor(f"blk.{i}.attn_norm.weight", p + "input_layernorm.weight")
        tensor(f"blk.{i}.attn_q.weight", p + "self_attn.q_proj.weight", n_head)
        tensor(f"blk.{i}.attn_k.weight", p + "self_attn.k_proj.weight", n_kv)
        tensor(f"blk.{i}.attn_v.weight", p + "self_attn.v_proj.weight")
        tensor(f"blk.{i}.attn_output.weight", p + "self_attn.o_proj.weight")
        tensor(f"blk.{i}.ffn_norm.weight", p + "post_attention_layernorm.weight")
        tensor(f"blk.{i}.ffn_gate.weight", p + "mlp.gate_proj.weight")
        tensor(f"blk.{i}.ffn_up.weight", p + "mlp.up_proj.weight")
        tensor(f"blk.{i}.ffn_down.weight", p + "mlp.down_proj.weight")
    tensor("output_norm.weight", "model.norm.weight")
    if "lm_head.weight" in weights:  # untied head; a tied one is token_embd (llama.cpp writes no output)
        tensor("output.weight", "lm_head.weight")

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
