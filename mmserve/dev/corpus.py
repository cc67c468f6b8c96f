"""A mixed text corpus for tokenizer parity tests and benchmarks: prose, contractions, accented Latin,
Greek, Cyrillic, CJK, emoji, digits, punctuation, HTML entities, odd whitespace, and what ftfy rewrites (curly
quotes, ligatures, fullwidth forms, combining marks, mojibake, control characters), some strings longer than
any context."""

from __future__ import annotations

import random
from collections.abc import Iterator

PIECES = {
    "ascii prose": ["the quick brown fox", "jumps over", "a lazy dog.", "Hello, World!", "CLIP models"],
    "contractions": ["should've", "y'all", "I'd", "we'll", "they're", "can't", "it's", "o'clock", "'tis"],
    "accented latin": ["naïve", "café", "résumé", "Ångström", "straße", "Łódź", "ÉCOLE", "coöperate"],
    "greek": ["ΟΔΟΣ", "αλφάβητο", "Σοφία", "ΣΑΣ.", "ἀρχή"],
    "cyrillic": ["Привет", "мир", "ЁЛКА", "съешь"],
    "cjk": ["日本語", "中文字符", "한국어", "カタカナ", "ひらがな"],
    "emoji": ["🙂", "🚀🚀", "👨‍👩‍👧", "🏳️‍🌈", "👍🏽", "❤️"],
    "digits": ["0", "12345", "3.14159", "2026-11-26", "١٢٣", "½"],
    "punctuation": ["!!!", "?!", "...", "—", "(*&^%$#@)", "«»", "“quoted”", "--", ";;"],
    "html": ["&amp;", "&lt;b&gt;", "&#39;", "&#x41;", "&quot;x&quot;", "&nbsp;", "&ampx", "&#0;", "&notin;"],
    "whitespace": [" ", "  ", "\t", "\n", "\u00a0", "\u2003", "\r\n"],
    # What ftfy rewrites: curly quotes, ligatures, fullwidth forms, combining marks, mojibake, controls.
    "ftfy fixes": ["don\u2019t", "it\u2019s", "\u2018single\u2019", "\ufb01ne", "\ufb02ow", "\uff26\uff55\uff4c\uff4c",
                   "\uff11\uff12", "cafe\u0301", "n\u0303", "Ã©tÃ©", "cafÃ©", "\u00e2\u0080\u0099", "\x1b[31m", "\x07",
                   "\x00", "\r", "\u01c5", "\u2026"],
}


def corpus(count: int, seed: int = 20261126) -> Iterator[str]:
    """`count` strings mixing every piece kind, some longer than the context."""
    rng = random.Random(seed)
    kinds = list(PIECES)
    for i in range(count):
        length = rng.choice([1, 3, 8, 20, 120]) if i % 50 else 400
        yield " ".join(rng.choice(PIECES[rng.choice(kinds)]) for _ in range(rng.randint(1, length)))
