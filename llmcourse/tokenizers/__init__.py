"""Chapter 03: tokenizers, from characters to byte-level regex BPE.

Modules in reading order:

* ``simple`` - character and word tokenizers, and what goes wrong with them;
* ``basic`` - byte-pair encoding on raw bytes, one merge at a time;
* ``training`` - training byte-pair merges fast;
* ``regex_bpe`` - GPT-style regex pre-splitting, special tokens, save and load;
* ``tiktoken_bridge`` - loading GPT-4's cl100k ranks into our tokenizer and comparing with tiktoken;
* ``corpora`` - the offline texts the chapter trains on;
* ``course_tokenizer`` - the course's own tokenizer, trained once and cached for the later chapters;
* ``consequences`` - what tokens do to a model's view: spelling, digits, trailing spaces, unused tokens;
* ``diagrams`` - pictures of one merge step and of the whole encoding pipeline;
* ``widgets`` - the merge stepper.
"""

from llmcourse.tokenizers.simple import CharTokenizer, UnknownTokenError, WordTokenizer
from llmcourse.tokenizers.basic import BasicTokenizer, MergeStep, get_pair_counts, merge
from llmcourse.tokenizers.regex_bpe import RegexTokenizer
from llmcourse.tokenizers.tiktoken_bridge import cl100k_encoding, from_tiktoken_ranks, load_cl100k, to_tiktoken
