"""Tokenizers, from characters to byte-level regex BPE (chapter 03).

Each module holds one idea of the chapter; ``training`` trains byte-pair
merges and ``corpora`` builds the offline texts the chapter trains on.
"""

from llmcourse.tokenizers.simple import CharTokenizer, UnknownTokenError, WordTokenizer
from llmcourse.tokenizers.basic import BasicTokenizer, MergeStep, get_pair_counts, merge
from llmcourse.tokenizers.regex_bpe import RegexTokenizer
from llmcourse.tokenizers.tiktoken_bridge import cl100k_encoding, from_tiktoken_ranks, load_cl100k, to_tiktoken
