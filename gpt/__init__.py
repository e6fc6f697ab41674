"""gpt: the character-level GPT of "Let's build GPT", on tensorlite."""
from .config import PRESETS, GPTConfig, TrainConfig, preset
from .data import CharTokenizer, download_tinyshakespeare, get_batch, load_text, train_val_split
from .model import GPT, BigramLanguageModel

__all__ = ["GPT", "GPTConfig", "TrainConfig", "PRESETS", "preset", "BigramLanguageModel",
           "CharTokenizer", "load_text", "train_val_split", "get_batch", "download_tinyshakespeare"]
