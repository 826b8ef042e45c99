"""The word diff of two texts, bounded in time on any length (pure).

Texts of ordinary length (up to about 4,000 words a side) get difflib's longest-match
diff. Longer ones are aligned first on anchors, patience style: the common head and tail, then
the words that occur exactly once on each side, kept in order (a longest increasing run).
Each stretch between anchors is diffed the same way, by difflib when it is small. The work is
counted in words, not seconds, so the result is deterministic; a stretch that would cost more
than the budget, or holds no anchor, is shown whole: its old words deleted, its new inserted.
So a 60,000-word description with scattered edits diffs in well under a second.
"""

from __future__ import annotations

import difflib
from bisect import bisect_left
from collections.abc import Sequence
from typing import Final, Literal, NamedTuple

Op = Literal["equal", "delete", "insert"]
ELLIPSIS: Final = "\u2026"
MARKS: Final = {"equal": "{}", "delete": "[-{}-]", "insert": "{{+{}+}}"}  # git's word diff
EXACT_CELLS: Final = 4000 * 4000  # two texts of at most this many word pairs go to difflib
STRETCH_CELLS: Final = 500 * 500  # ... and so does a stretch between anchors of at most this
RUN_WORDS: Final = 150  # a report shows this many words at each end of a long rewritten run
WORK_PER_WORD: Final = 40  # anchor passes may touch each word this many times on average

Block = tuple[int, int, int]  # (start in old, start in new, length) of words both share


class Segment(NamedTuple):
    """A run of words the word diff keeps, deletes or inserts."""

    op: Op
    words: tuple[str, ...]

    @property
    def text(self) -> str:
        """Return the run's words joined by single spaces."""
        return " ".join(self.words)


def _exact(a: Sequence[str], b: Sequence[str], a0: int, b0: int) -> list[Block]:
    """Return difflib's matching blocks of two stretches, offset to their places."""
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return [(a0 + i, b0 + j, n) for i, j, n in matcher.get_matching_blocks() if n]


def _unique_anchors(a: Sequence[str], b: Sequence[str]) -> list[tuple[int, int]]:
    """Return the words that occur once in each stretch, as the longest run in order on both."""
    seen_a: dict[str, int] = {}
    for index, word in enumerate(a):
        seen_a[word] = -1 if word in seen_a else index
    seen_b: dict[str, int] = {}
    for index, word in enumerate(b):
        if seen_a.get(word, -1) >= 0:
            seen_b[word] = -1 if word in seen_b else index
    pairs = sorted((seen_a[w], j) for w, j in seen_b.items() if j >= 0)
    # Longest increasing run of new positions (patience sorting, n log n).
    tails: list[int] = []
    tail_at: list[int] = []
    back: list[int] = []
    for index, (_, j) in enumerate(pairs):
        slot = bisect_left(tails, j)
        back.append(tail_at[slot - 1] if slot else -1)
        if slot == len(tails):
            tails.append(j)
            tail_at.append(index)
        else:
            tails[slot] = j
            tail_at[slot] = index
    out = []
    at = tail_at[-1] if tail_at else -1
    while at >= 0:
        out.append(pairs[at])
        at = back[at]
    return out[::-1]


def matching_blocks(a: Sequence[str], b: Sequence[str]) -> list[Block]:
    """Return the runs of words two texts share, in order, within a bounded amount of work."""
    if len(a) * len(b) <= EXACT_CELLS:
        return _exact(a, b, 0, 0)
    budget = WORK_PER_WORD * (len(a) + len(b))
    blocks: list[Block] = []
    stack = [(0, len(a), 0, len(b))]
    while stack:
        a_lo, a_hi, b_lo, b_hi = stack.pop()
        head = 0
        while a_lo + head < a_hi and b_lo + head < b_hi and a[a_lo + head] == b[b_lo + head]:
            head += 1
        if head:
            blocks.append((a_lo, b_lo, head))
            a_lo, b_lo = a_lo + head, b_lo + head
        tail = 0
        while a_hi - tail > a_lo and b_hi - tail > b_lo and a[a_hi - tail - 1] == b[
                b_hi - tail - 1]:
            tail += 1
        if tail:
            blocks.append((a_hi - tail, b_hi - tail, tail))
            a_hi, b_hi = a_hi - tail, b_hi - tail
        if a_lo == a_hi or b_lo == b_hi:
            continue
        if (a_hi - a_lo) * (b_hi - b_lo) <= STRETCH_CELLS:
            blocks += _exact(a[a_lo:a_hi], b[b_lo:b_hi], a_lo, b_lo)
            continue
        budget -= (a_hi - a_lo) + (b_hi - b_lo)
        anchors = _unique_anchors(a[a_lo:a_hi], b[b_lo:b_hi]) if budget > 0 else []
        # No anchor (or no budget left): the stretch is shown whole, deleted then inserted.
        starts = [(a_lo, b_lo)] + [(a_lo + i + 1, b_lo + j + 1) for i, j in anchors]
        ends = [(a_lo + i, b_lo + j) for i, j in anchors] + [(a_hi, b_hi)]
        for i, j in anchors:
            blocks.append((a_lo + i, b_lo + j, 1))
        if anchors:
            stack += [(s[0], e[0], s[1], e[1]) for s, e in zip(starts, ends, strict=True)]
    return _merged(sorted(blocks))


def _merged(blocks: list[Block]) -> list[Block]:
    """Join blocks that touch, so equal runs come out whole."""
    out: list[Block] = []
    for i, j, n in blocks:
        if out and out[-1][0] + out[-1][2] == i and out[-1][1] + out[-1][2] == j:
            out[-1] = (out[-1][0], out[-1][1], out[-1][2] + n)
        else:
            out.append((i, j, n))
    return out


def word_diff(old: str, new: str) -> list[Segment]:
    """Return a word-level diff of two texts: equal runs, then deletions before insertions."""
    before, after = old.split(), new.split()
    segments: list[Segment] = []
    i = j = 0
    for bi, bj, size in [*matching_blocks(before, after), (len(before), len(after), 0)]:
        if bi > i:
            segments.append(Segment("delete", tuple(before[i:bi])))
        if bj > j:
            segments.append(Segment("insert", tuple(after[j:bj])))
        if size:
            segments.append(Segment("equal", tuple(before[bi:bi + size])))
        i, j = bi + size, bj + size
    return segments


def clip(segments: Sequence[Segment], context: int = 6) -> list[Segment]:
    """Shorten unchanged runs to `context` words either side of a change, with an ellipsis.

    A deleted or inserted run longer than 2 * RUN_WORDS keeps its first and last RUN_WORDS
    words around an ellipsis: a report shows where a text was rewritten, and the exports'
    old and new carry it whole.
    """
    out = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        words = segment.words
        if segment.op != "equal":
            if len(words) > 2 * RUN_WORDS:
                words = (*words[:RUN_WORDS], ELLIPSIS, *words[-RUN_WORDS:])
            out.append(Segment(segment.op, words))
            continue
        if len(words) <= context:
            out.append(segment)
            continue
        head = words[:context] if index > 0 else ()
        tail = words[-context:] if index < last else ()
        if index in (0, last) or len(words) > 2 * context:
            words = (*head, ELLIPSIS, *tail) if head or tail else (ELLIPSIS,)
        out.append(Segment("equal", words))
    return out


def marked(segments: Sequence[Segment]) -> str:
    """Return a word diff as plain text with `[-deleted-]` and `{+inserted+}` markers."""
    return " ".join(MARKS[segment.op].format(segment.text) for segment in segments)
