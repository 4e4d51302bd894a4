"""A small word-level tokenizer with Qwen's special tokens, built in code (no download).

Why it exists: tests, the benchmark and the tiny trained models need a real `PreTrainedTokenizerFast` that
round-trips through `save_pretrained` / `AutoTokenizer.from_pretrained` exactly like a hub tokenizer, but
with a vocabulary small enough for a model of a few hundred thousand parameters. The vocabulary covers the
synthetic world of coloured shapes used for training (colours, shapes, counts, yes/no, order words) and
the processors' per-frame time text (digits one by one, "<", ">", "seconds"); anything else maps to an
unknown token, so arbitrary text never fails to encode.
"""
from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

__all__ = ["SPECIAL_TOKENS", "UNK_TOKEN", "BASE_WORDS", "TIME_WORDS", "build_tokenizer"]

UNK_TOKEN = "<|unk|>"

#: Qwen2-VL's chat and vision markers; each is matched as one token, never split.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|video_pad|>",
    "<|image_pad|>",
)

COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "white", "black", "pink", "cyan")
SHAPES = ("cube", "ball", "cone", "cylinder", "star", "ring")
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
PLURALS = ("cubes", "balls", "cones", "cylinders", "stars", "rings", "objects", "things", "shapes")
GRAMMAR = (
    "what", "which", "who", "where", "when", "how", "many", "much", "was", "were", "is", "are", "did",
    "do", "does", "you", "see", "saw", "seen", "a", "an", "the", "of", "in", "on", "at", "to", "and", "or",
    "not", "no", "yes", "there", "it", "that", "this", "these", "those", "first", "last", "before",
    "after", "then", "next", "colour", "color", "shape", "object", "thing", "appear", "appeared",
    "shown", "show", "video", "frame", "frames", "time", "scene", "camera", "moving", "moved", "left",
    "right", "top", "bottom", "middle", "center", "between", "same", "different", "more", "fewer",
    "than", "all", "any", "none", "only", "also", "both", "with", "without", "from", "by", "for",
    "count", "number", "order", "earlier", "later", "second", "third", "answer", "question", "word",
    "i", "system", "user", "assistant", "helpful", "describe", "tell", "me", "please", "can", "have",
    "has", "had", "be", "been", "about",
)
PUNCTUATION = ("?", ".", ",", "!", ":", ";", "'", "-", "(", ")")
#: What the processors' per-frame time text needs: Qwen3-VL's "<12.5 seconds>", SmolVLM2's "Frame from 01:05:".
#: Digits are split one by one (the pre-tokenizer), so any time is made of known tokens.
TIME_WORDS = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "<", ">", "seconds")
#: Every ordinary word of the built-in vocabulary, in id order after the special tokens.
BASE_WORDS: tuple[str, ...] = COLOURS + SHAPES + NUMBERS + PLURALS + GRAMMAR + PUNCTUATION


def _vocabulary(extra_words: list[str] | None, time_text: bool) -> dict[str, int]:
    """Ids: unknown first, then the special tokens, then words (time words last); duplicates keep their
    first id."""
    vocab: dict[str, int] = {}
    time_words = TIME_WORDS if time_text else ()
    for word in (UNK_TOKEN, *SPECIAL_TOKENS, *BASE_WORDS, *(w.lower() for w in (extra_words or [])), *time_words):
        if word and word not in vocab:
            vocab[word] = len(vocab)
    return vocab


def build_tokenizer(extra_words: list[str] | None = None, *, time_text: bool = True) -> PreTrainedTokenizerFast:
    """Build the tiny tokenizer.

    Text is lower-cased and split into words and single punctuation marks; the decoder joins words with
    spaces. `extra_words` extends the vocabulary (lower-cased). The chat special tokens are registered as
    added tokens so `<|im_start|>user` encodes as two tokens, exactly as with Qwen's own tokenizer.
    `time_text` (default) adds `TIME_WORDS` and splits digits one by one, so per-frame time text such as
    "<12.5 seconds>" encodes to known tokens; `time_text=False` is the vocabulary the built-in trained model
    (models/infinipot-tiny-qwen2vl) was trained with, which infinipot_train keeps using.
    """
    vocab = _vocabulary(extra_words, time_text)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Whitespace(),
            pre_tokenizers.Split(Regex(r"[^\w\s]"), behavior="isolated"),
        ]
        + ([pre_tokenizers.Digits(individual_digits=True)] if time_text else [])
    )
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with single spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token=UNK_TOKEN,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
    )
    # `additional_special_tokens` in transformers 5 may only record names; make sure every marker is an
    # added (never split) special token that keeps its id from the vocabulary above.
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    return tokenizer
