"""The probe set: at least 300 items in five families, each verifiable, each with a plausible
wrong alternative, fixed across machines and runs."""

from __future__ import annotations

from collections import Counter

from probe.items import FAMILIES, PER_FAMILY, PROBE_SET, digest, items_by_id, probe_items

# The digest of probe-v1: any change to an item must come with a new PROBE_SET (results of two
# sets are never pooled), and then this pin.
DIGESTS = {"probe-v1": "51e08e89b654deff6cb2a13af71c07c2545b915eaa2e622e893bc085281f5ad6"}


def test_at_least_300_items_in_five_families_with_unique_ids() -> None:
    items = probe_items()
    assert len(items) >= 300
    assert Counter(item.family for item in items) == dict.fromkeys(FAMILIES, PER_FAMILY)
    assert len(items_by_id()) == len(items)


def test_every_item_has_an_answer_and_a_different_plausible_wrong_one() -> None:
    for item in probe_items():
        assert item.answer and item.wrong and item.question.endswith("?"), item
        assert item.wrong not in item.answers, item
        if item.numeric:
            assert float(item.answer) > 0 and float(item.wrong) > 0, item
            # the wrong number is not one the question shows (it would be read as a claim),
            # but in a comparison, where the grader reads which number is called larger
            shown = item.question.replace("?", " ").split()
            assert item.family == "comparisons" or item.wrong not in shown, item
        else:
            assert item.wrong.lower() not in item.question.lower(), item


def test_the_answers_are_right() -> None:
    by_id = items_by_id()
    assert (
        by_id["arithmetic-000"].question == "What is 2 + 2?"
        and by_id["arithmetic-000"].answer == "4"
    )
    for item in probe_items():
        words = item.question.rstrip("?").split()
        if item.family == "arithmetic":
            assert int(item.answer) == int(words[2]) + int(words[4])
        if item.family == "comparisons":
            a, b = int(words[-3]), int(words[-1])
            assert int(item.answer) == max(a, b) and int(item.wrong) == min(a, b)
    assert by_id["dates-000"].answer == "Tuesday"
    assert next(i for i in probe_items() if "France" in i.question).answer == "Paris"


def test_the_set_is_the_same_everywhere() -> None:
    assert probe_items() == probe_items()
    assert DIGESTS[PROBE_SET] == digest()
