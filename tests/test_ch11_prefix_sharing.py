"""Prefix sharing against brute force: the radix tree's reused tokens equal the longest common prefix with any
earlier prompt, and the shared block count equals counting distinct block-aligned prefixes by hand."""
import random

import pytest

from llmcourse.inference import prefix_sharing as ps


def _lcp(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_radix_tree_reuse_equals_the_longest_common_prefix_with_earlier_prompts():
    rng = random.Random(0)
    stems = [[rng.randrange(5) for _ in range(rng.randrange(0, 12))] for _ in range(6)]
    prompts = [rng.choice(stems) + [rng.randrange(5) for _ in range(rng.randrange(0, 10))] for _ in range(300)]
    reused = ps.reused_tokens(prompts)
    for i, p in enumerate(prompts):
        assert reused[i] == max([_lcp(p, q) for q in prompts[:i]], default=0)
    tree = ps.RadixTree()
    for p in prompts:
        tree.insert(p)
    for p in prompts + [[1, 2, 3, 4, 0, 0, 1]]:
        assert tree.match(p) == max(_lcp(p, q) for q in prompts)


def test_radix_tree_by_hand():
    tree = ps.RadixTree()
    assert tree.insert([1, 2, 3, 4]) == 0
    assert tree.insert([1, 2, 5]) == 2          # splits the edge (1, 2, 3, 4) after 1, 2
    assert tree.insert([1, 2, 3]) == 3
    assert tree.insert([7]) == 0
    assert tree.edges() == [(1, 2), (3,), (4,), (5,), (7,)]  # (3, 4) split where prompt 3 ends
    assert tree.match([1, 2, 3, 9]) == 3


def test_block_sharing_by_hand_and_by_brute_force():
    a, b, c = [1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 9], [9, 2, 3, 4]
    got = ps.block_sharing([a, b, c], block_size=2)
    # blocks: a -> (1,2) (3,4) (5,6) [7]; b -> (1,2) (3,4) (5,9); c -> (9,2) (3,4)-after-(9,2)
    assert got == {"without_sharing": 4 + 3 + 2, "with_sharing": 4 + 1 + 2, "saved": 2}
    rng = random.Random(1)
    prompts = [[rng.randrange(3) for _ in range(rng.randrange(1, 15))] for _ in range(200)]
    for bs in [1, 3, 4]:
        got = ps.block_sharing(prompts, bs)
        distinct = {tuple(p[:end]) for p in prompts for end in range(bs, len(p) + 1, bs)}
        partial = sum(len(p) % bs > 0 for p in prompts)
        assert got["with_sharing"] == len(distinct) + partial
        assert got["without_sharing"] == sum(-(-len(p) // bs) for p in prompts)
    with pytest.raises(ValueError, match="block_size"):
        ps.block_sharing(prompts, 0)
