"""The Python tokenizer against open_clip's SimpleTokenizer (the reference)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmserve.dev.corpus import corpus
from mmserve.modalities.text import ClipTokenizer, trim_padding

CASES = [
    "a photo of a cat",
    "A LARGE Red Circle on the LEFT",
    "should've, can't, we'll, I'd, they're, it's",
    "numbers 12345 and 3.14159",
    "  lots   of\twhitespace \n here  ",
    "&amp;lt;html&amp;gt; entities &quot;twice&quot;",
    "naïve café résumé Ünïcödé",
    "日本語のテキスト and 中文",
    "emoji 🙂🚀 and symbols @#$%^&*()",
    "<start_of_text> literal specials <end_of_text>",
    "",
    "x" * 500,
]


@pytest.fixture(scope="module")
def reference():
    from mmserve.dev.training import reference_tokenizer

    return reference_tokenizer()[0]


@pytest.fixture(scope="module")
def tokenizer(bundled_model_dir):
    return ClipTokenizer.from_model_dir(bundled_model_dir)


@pytest.mark.parametrize("text", CASES)
def test_matches_open_clip(tokenizer, reference, text):
    expected = reference([text], context_length=77).numpy()
    assert np.array_equal(tokenizer([text]), expected)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_matches_open_clip_on_generated_text(tokenizer, reference, text):
    """Any text, control characters included: ftfy first, as open_clip does."""
    assert np.array_equal(tokenizer([text]), reference([text], context_length=77).numpy())


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=80))
def test_the_ascii_fast_path_skips_only_what_ftfy_leaves_alone(text):
    import ftfy

    from mmserve.modalities.text import _UNCHANGED_BY_FTFY

    if _UNCHANGED_BY_FTFY.fullmatch(text):
        assert ftfy.fix_text(text) == text


@pytest.mark.parametrize("text", [
    "don\u2019t smart quotes \u201chere\u201d", "it\u2019s", "\ufb01ne \ufb02ow ligatures", "\uff26\uff55\uff4c\uff4c width",
    "cafe\u0301 combining", "Ã©tÃ© mojibake", "caf\u00c3\u00a9", "tab\tcr\r\nlf\x1b[31mred\x1b[0m", "bell\x07 nul\x00 del\x7f",
    "&amp;quot; &lt;b&gt;", "\u01c5 digraph", "a\u00a0nbsp",
])
def test_text_that_ftfy_fixes_tokenizes_as_open_clip(tokenizer, reference, text):
    assert np.array_equal(tokenizer([text]), reference([text], context_length=77).numpy()), text



@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from("aaabbcdeeeilmnorstuyzéß"), min_size=49, max_size=400))
def test_long_words_take_the_fast_merge_and_match_open_clip(tokenizer, reference, word):
    """Pieces over 48 symbols are merged with a heap (O(n log n)); the ids are the reference's, in full."""
    expected = reference.encode(word)
    assert tokenizer.encode(word) == expected
    assert np.array_equal(tokenizer([word]), reference([word], context_length=77).numpy())


def test_a_huge_word_tokenizes_quickly_and_exactly(tokenizer, reference):
    """The reference's merge loop is quadratic (a 30,000-letter word: 3.6 s in this C++, minutes in Python)."""
    import time

    rng = np.random.default_rng(3)
    word = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 50_000))
    started = time.perf_counter()
    ids, lengths = tokenizer.tokenize([word, word + " and more"])
    assert time.perf_counter() - started < 1.0
    assert lengths.tolist() == [77, 77]
    prefix = word[:2000]  # the reference's own result on a prefix long enough to fill 77 ids
    assert ids[0, 1:76].tolist() == reference.encode(prefix)[:75]


def test_long_text_is_truncated_keeping_end_of_text(tokenizer):
    tokens = tokenizer(["word " * 200])
    assert tokens.shape == (1, 77) and tokens[0, 0] == 49406 and tokens[0, -1] == 49407


def test_trim_padding_cuts_after_the_last_end_of_text(tokenizer):
    tokens = tokenizer(["short", "a somewhat longer caption here"])
    trimmed = trim_padding(tokens, 49407)
    assert trimmed.shape[1] == int(np.nonzero(tokens[1] == 49407)[0][0]) + 1
    assert np.array_equal(trimmed, tokens[:, : trimmed.shape[1]])
    with pytest.raises(ValueError, match="end-of-text"):
        trim_padding(np.zeros((1, 5), dtype=np.int32), 49407)


def test_lengths_count_up_to_end_of_text(tokenizer):
    ids, lengths = tokenizer.tokenize(["a red circle", "", "word " * 100])
    assert lengths.tolist() == [5, 2, 77]
    for row, length in zip(ids, lengths):
        assert row[length - 1] == 49407 and not row[length:].any()


def test_invalid_utf8_names_the_text(tokenizer):
    with pytest.raises(ValueError, match=r"text 1: invalid UTF-8 at byte 2"):
        tokenizer._core.encode_batch([b"fine", b"ok\xff"], 77)


def test_reference_quirks_are_reproduced(tokenizer, reference):
    # Final sigma (str.lower), U+0345 skipped by the IGNORECASE split, long s as a contraction,
    # html entities with and without ';', invalid numeric references, the specials spelled out.
    for text in ["ΟΔΟΣ ΣΑ AΣ.", "a\u0345b *\u0345", "it'ſ", "&ampx &amp &#0; &#xD800; &#1114112; &#128;",
                 "<end_of_text>", "İstanbul"]:
        assert np.array_equal(tokenizer([text]), reference([text], context_length=77).numpy()), text


def test_fix_text_false_skips_ftfy(bundled_model_dir, reference):
    raw = ClipTokenizer.from_model_dir(bundled_model_dir, fix_text=False)
    text = "don\u2019t"
    assert not np.array_equal(raw([text]), reference([text], context_length=77).numpy())


def test_batches_are_identical_on_any_thread_count(bundled_model_dir):
    texts = [f"caption number {i} with some words" for i in range(200)]
    one = ClipTokenizer.from_model_dir(bundled_model_dir, threads=1)(texts)
    many = ClipTokenizer.from_model_dir(bundled_model_dir, threads=4)(texts)
    assert np.array_equal(one, many)


@pytest.mark.slow
def test_matches_open_clip_on_100000_strings(tokenizer, reference):
    import ftfy

    texts = list(corpus(100_000))  # none excluded: about 45% of them are changed by ftfy
    assert sum(ftfy.fix_text(text) != text for text in texts[:2000]) > 500
    mismatches = []
    for start in range(0, len(texts), 5000):
        chunk = texts[start : start + 5000]
        got = tokenizer(chunk)
        want = reference(chunk, context_length=77).numpy()
        rows = np.nonzero((got != want).any(axis=1))[0]
        mismatches += [chunk[r] for r in rows]
    assert not mismatches, mismatches[:5]
