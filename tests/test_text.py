# ruff: noqa: RUF001 -- look-alike characters are what these tests are about
"""The text rules of provisioning/text.py: the characters refused, and the folded key."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioning import text

TRICKY = 'ßẞσςΣİIıiÄäÅåﬁＡａΩΩKK\u0301e\u00e9\U0010ffff\U0001f600 _%\\"'


def test_every_control_character_but_tab_lf_cr_is_refused():
    controls = [chr(c) for c in (*range(0x00, 0x20), *range(0x7F, 0xA0))]
    refused = [c for c in controls if text.problem(f"a{c}b") is not None]
    assert sorted(set(controls) - set(refused)) == ["\t", "\n", "\r"]
    assert text.problem("a\x00b") == "holds NUL (U+0000 at position 1)"
    assert "lone surrogate" in text.problem("x\ud800")
    assert text.problem("İstanbul ß \U0010ffff\u202e🦄") is None
    with pytest.raises(text.TextError, match="userName holds NUL"):
        text.check("a\x00", "userName")


def test_documents_are_checked_keys_included():
    text.check_document({"a": ["b", {"c": "d\te"}], "n": 1})
    with pytest.raises(text.TextError, match=r"emails\[1\]\.value"):
        text.check_document({"emails": [{"value": "ok"}, {"value": "x\x1b[31m"}]})
    with pytest.raises(text.TextError, match="NUL"):
        text.check_document({"na\x00me": "x"})


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("Ärzte", "ÄRZTE"),
        ("Straße", "STRASSE"),
        ("ΟΔΥΣΣΕΥΣ", "οδυσσευς"),
        ("οδυσσευς", "οδυσσευσ"),  # final sigma
        ("İstanbul", "i̇stanbul"),  # dotted capital I
        ("ＡＢＣ", "abc"),  # fullwidth
        ("ﬁle", "FILE"),  # ligature
        ("e\u0301", "É"),  # decomposed and composed
    ],
)
def test_case_and_compatibility_variants_fold_alike(one, other):
    assert text.fold(one) == text.fold(other)


def test_distinct_texts_stay_distinct():
    assert text.fold("Ärzte") != text.fold("Arzte")
    assert text.fold("ı") != text.fold("i")  # dotless i is another letter


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(TRICKY) | st.characters(), max_size=20))
def test_folding_is_idempotent(value):
    assert text.fold(text.fold(value)) == text.fold(value)


def test_length_is_checked_after_folding():
    assert len("İ" * 200) == 200
    with pytest.raises(text.TextError, match="400 characters once case-folded"):
        text.key("İ" * 200, "userName")
    assert text.key("İ" * 127, "userName") == "i\u0307" * 127
