"""The word diff: deleted and inserted words, clipped context, and bounded time on long texts."""

from __future__ import annotations

import time

from conftest import edited_words, real_words

from trialdiff.worddiff import Segment, clip, marked, word_diff


def test_word_diff_marks_deleted_and_inserted_words() -> None:
    segments = word_diff("a minimum of 6 months or 1 year apart", "a minimum of 1 year apart")
    assert marked(segments) == "a minimum of [-6 months or-] 1 year apart"
    replaced = word_diff("score of 0, 1, or 2 *", "score of 0, 1, or 2. *")
    assert marked(replaced) == "score of 0, 1, or [-2-] {+2.+} *"
    assert word_diff("same  words", "same words") == [Segment("equal", ("same", "words"))]


def test_clip_keeps_context_around_changes() -> None:
    old = " ".join(f"w{i}" for i in range(40))
    new = old.replace("w20", "W20")
    assert marked(clip(word_diff(old, new), context=3)) == \
        "\u2026 w17 w18 w19 [-w20-] {+W20+} w21 w22 w23 \u2026"


def _timed_diff(old: list[str], new: list[str]) -> tuple[list[Segment], float]:
    """Return the word diff of two word lists and the seconds it took, checking it is whole."""
    start = time.perf_counter()
    segments = word_diff(" ".join(old), " ".join(new))
    spent = time.perf_counter() - start
    assert [w for s in segments if s.op != "insert" for w in s.words] == old
    assert [w for s in segments if s.op != "delete" for w in s.words] == new
    return segments, spent


def test_word_diff_of_long_real_text_is_bounded_and_finds_the_edits() -> None:
    # 28 real records' criteria and descriptions as one 11,759-word text: beyond difflib's
    # size, so the anchored path runs; it must find the 60 scattered edits, not rewrite it all.
    words = real_words()
    assert len(words) > 10_000
    segments, spent = _timed_diff(words, edited_words(words, 60))
    assert spent < 1.5
    assert sum(len(s.words) for s in segments if s.op != "equal") <= 3 * 60


def test_word_diff_of_a_60000_word_repeated_text_falls_back_in_bounded_time() -> None:
    # The same real text repeated to 60,000 words has no word that occurs once: the diff
    # may fall back to coarser runs but must stay correct and fast (difflib took ~10 s).
    words = (real_words() * 6)[:60_000]
    segments, spent = _timed_diff(words, edited_words(words, 50))
    assert spent < 1.5
    shown = clip(segments)
    assert max(len(s.words) for s in shown) <= 2 * 150 + 1
