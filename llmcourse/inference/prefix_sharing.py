"""Chapter 11: prefix sharing, reusing the KV cache of tokens that earlier requests already began with.

Many requests start alike (a system prompt, a few-shot preamble, an earlier turn of the same chat). Their keys
and values for the shared beginning are the same, so a server can compute and store them once.

* :class:`RadixTree` keeps every prompt seen so far as a path of tokens, with shared beginnings merged into one
  edge (SGLang's RadixAttention organises its cache this way); :meth:`RadixTree.insert` says how many leading
  tokens of a new prompt were already there, i.e. how many need no prefill.
* :func:`block_sharing` counts what a paged cache (section 2) saves when requests reuse whole blocks of a common
  prefix (vLLM's automatic prefix caching works on full blocks): a block is reused when the tokens up to its
  end equal those of a block already stored.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Node:
    children: dict[int, tuple[tuple[int, ...], "_Node"]] = field(default_factory=dict)  # first token -> edge


class RadixTree:
    """A radix tree over token sequences: each edge holds a run of tokens, siblings differ in their first."""

    def __init__(self) -> None:
        self.root = _Node()
        self.nodes = 1

    def match(self, tokens: list[int]) -> int:
        """How many leading tokens of ``tokens`` some inserted sequence also begins with."""
        node, done = self.root, 0
        while done < len(tokens) and tokens[done] in node.children:
            edge, child = node.children[tokens[done]]
            same = _common(edge, tokens[done:])
            done += same
            if same < len(edge):
                break
            node = child
        return done

    def insert(self, tokens: list[int]) -> int:
        """Add ``tokens``; returns how many leading tokens were already in the tree (reused, not recomputed)."""
        tokens = [int(t) for t in tokens]
        node, done = self.root, 0
        while done < len(tokens):
            first = tokens[done]
            if first not in node.children:
                node.children[first] = (tuple(tokens[done:]), _Node())
                self.nodes += 1
                return done
            edge, child = node.children[first]
            same = _common(edge, tokens[done:])
            if same < len(edge):  # split the edge where the new sequence leaves it
                middle = _Node({edge[same]: (edge[same:], child)})
                node.children[first] = (edge[:same], middle)
                self.nodes += 1
                child = middle
            done += same
            node = child
        return done

    def edges(self) -> list[tuple[int, ...]]:
        """Every edge's tokens, depth first (a picture of how the prompts share their beginnings)."""
        out: list[tuple[int, ...]] = []

        def walk(node: _Node) -> None:
            for first in sorted(node.children):
                edge, child = node.children[first]
                out.append(edge)
                walk(child)

        walk(self.root)
        return out


def _common(a: tuple[int, ...] | list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def reused_tokens(prompts: list[list[int]]) -> list[int]:
    """For each prompt in arrival order, how many of its leading tokens an earlier prompt already had."""
    tree = RadixTree()
    return [tree.insert(p) for p in prompts]


def block_sharing(prompts: list[list[int]], block_size: int) -> dict[str, int]:
    """Blocks a paged cache needs for ``prompts`` without and with reuse of identical full prefix blocks.

    A full block is identified by every token up to its end (two blocks with the same tokens but different
    beginnings hold different keys and values); the last, partly filled block of each prompt is never shared.
    """
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a whole number >= 1, got {block_size!r}")
    total, seen, partial = 0, set(), 0
    for p in prompts:
        p = tuple(int(t) for t in p)
        full = len(p) // block_size
        total += -(-len(p) // block_size)
        partial += len(p) % block_size > 0
        seen.update(p[:(i + 1) * block_size] for i in range(full))
    return {"without_sharing": total, "with_sharing": len(seen) + partial, "saved": total - len(seen) - partial}


__all__ = ["RadixTree", "block_sharing", "reused_tokens"]
