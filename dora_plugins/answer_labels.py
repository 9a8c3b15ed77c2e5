"""Labels mentioned in a model response, classified, and the answer they state: rules 1 to 4 of ``improved``.

See :mod:`dora_plugins.extract` for the rules. Every pattern runs on the lower-cased response and none nests
quantifiers; cue words are found with ``str.find`` (a regex alternation of words scans slowly), and past
MAX_MENTIONS label-like tokens the text is a flood, not an answer, so the time is linear in the text's length.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import islice

from . import answer_forms

# The rules that decide, as explain_answer reports them.
EXPLICIT = "explicit statement"
LABEL = "label"
ECHO = "echo"  # refused: only echoes of the format line or of the option list
CONTRADICTION = "contradiction"

_CUE = re.compile(r"(?:answer|solution|ending|option|choice)s?\s{0,3}(?:is|:|=)\s{0,3}[\"'*(\[]{0,2}\s{0,2}$")
_NUMBER_AFTER_CUE = re.compile(
    r"(?:answer|solution|ending|option|choice)s?\s{0,3}(?:is|:|=)\s{0,3}(?:number\s{1,3})?[\"'*(\[]{0,2}\s{0,2}"
    r"(\d{1,2})(?![\w:]|\.\d)"
)
_NUMBER_BEFORE = re.compile(r"(?:^|[^\w.])(\d{1,2})\s{0,3}(?:is|would\s{1,3}be)\s{1,3}(?:the\s{1,3})?$")
_LIST_OPENING = re.compile(r"[.)][ \t]{1,3}[^\W\d_]")  # after a "1": "1. meter", "1) Pull the wire"
_DIGIT_RUN = re.compile(r"[0-9]+")
_CUE_WORDS = ("answer", "solution", "ending", "option", "choice")  # found with str.find: regex alternations are slow
_RIGHT_WORDS = ("correct", "right", "best")
_NEGATION = re.compile(r"(?:\bnot|n't)\s{1,3}(?:the\s{1,3})?$")
_STATED = re.compile(r"\bis\s{1,3}$")
_LIST_JOINER = re.compile(r"\s{0,3}(?:,|/|&|\bor\b|\band\b)\s{0,3}[\"'*]{0,2}$")
_EITHER = re.compile(r"\beither[ \t]{1,3}$")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_LOOKBACK = 40  # characters before a mention that the cue / negation / list checks may look at
_LIST_LIMIT = 2000  # characters: only a short response is looked at as a list
MAX_MENTIONS = 64  # a 32-token answer names a few labels; a text with more label-like tokens is not an answer


@dataclass(frozen=True)
class Mention:
    """A label (or a number stated as the answer) in the response, and how it is used there."""

    label: str | None  # None when out of the item's range
    token: str  # the label as written, lower-cased: tells "answer11" from "answer1" in a run
    start: int
    end: int
    explicit: bool  # right after "answer is" / "Answer:" ..., or a number stated as the answer
    echo: bool  # part of a slash list, of an option list ("Answer1: ...") or of a run of labels
    negated: bool


@lru_cache(maxsize=64)
def mention_pattern(labels: tuple[str, ...]) -> tuple[re.Pattern, str | None]:
    """A pattern for the lower-cased labels in any spelling; and their shared prefix when they are ``<prefix><n>``.

    It does not look behind (that makes the scan slow); _mentions drops matches that follow a letter or digit.
    """
    prefixes = {label.rstrip("0123456789") for label in labels}
    prefix = prefixes.pop() if len(prefixes) == 1 else None
    if prefix and all(label != prefix and label[len(prefix) :].isdigit() for label in labels):
        body = rf"{re.escape(prefix.lower())}[ _-]?(\d{{1,3}})"
    else:
        prefix = None
        body = "(" + "|".join(re.escape(label.lower()) for label in sorted(labels, key=len, reverse=True)) + ")"
    return re.compile(rf"{body}(?![a-z0-9])"), prefix


def _canonical(token: str, prefix: str | None, in_range: tuple[str, ...]) -> str | None:
    if prefix is None:
        return next((label for label in in_range if label.lower() == token), None)
    label = f"{prefix}{int(token)}"
    return label if label in in_range else None


def _label_matches(response: str, labels: tuple[str, ...]) -> list[re.Match] | None:
    """Label-like tokens not glued to a letter or digit before them; None past MAX_MENTIONS."""
    pattern = mention_pattern(labels)[0]
    matches = list(islice(pattern.finditer(response), MAX_MENTIONS + 1))
    if len(matches) > MAX_MENTIONS:
        return None
    return [m for m in matches if m.start() == 0 or response[m.start() - 1] not in _ALNUM]  # not "xanswer1"


def mentions(response: str, labels: tuple[str, ...], in_range: tuple[str, ...]) -> list[Mention] | None:
    """Every label mention (and number stated as the answer), classified; None when the text is a flood of labels."""
    matches = _label_matches(response, labels)
    if matches is None:
        return None
    prefix = mention_pattern(labels)[1]
    # "Answer1: <text>" recites the option list, unless the response opens with it and names no other that way.
    colon = [prefix is not None and response[m.end() : m.end() + 3].lstrip(" ").startswith(":") for m in matches]
    # ... or states it: "the correct ending to complete the sentence is ending1: <its text>".
    first = colon.index(True) if sum(colon) == 1 else None
    stated_one = first is not None and bool(
        _STATED.search(response, max(0, matches[first].start() - 8), matches[first].start())
    )
    opens_with_one = first == 0 and matches[0].start() == 0
    reciting = any(colon) and not opens_with_one and not stated_one
    mentions = []
    for match, listed in zip(matches, colon, strict=True):
        start, end = match.span()
        before = response[max(0, start - _LOOKBACK) : start]
        explicit = bool(_CUE.search(before))
        echo = (listed and reciting and not explicit) or before.endswith("/") or response[end : end + 1] == "/"
        token = match.group(1)
        label = _canonical(token, prefix, in_range)
        mentions.append(Mention(label, token, start, end, explicit, echo, bool(_NEGATION.search(before))))
    if prefix is not None and _more_numbers_than(response, len(matches)):
        mentions += _numbers_stated(response, prefix, in_range)
    mentions.sort(key=lambda m: m.start)
    return _mark_runs(response, mentions)


def _numbers_stated(response: str, prefix: str, in_range: tuple[str, ...]) -> list[Mention]:
    """``the answer is 2``, ``3 is the correct answer``: the number-th label, stated explicitly."""
    spans = set()
    for at in _word_positions(response, _CUE_WORDS):
        found = _NUMBER_AFTER_CUE.match(response, at)
        if found:
            spans.add(found.span(1))
    for at in _word_positions(response, _RIGHT_WORDS):
        found = _NUMBER_BEFORE.search(response, max(0, at - 24), at)
        if found:
            spans.add(found.span(1))
    marks = {(s, e) for s, e in spans if response[e : e + 1] in (".", ")")}
    if marks and len(response) <= _LIST_LIMIT and answer_forms.enumeration(response) is not None:
        spans -= marks  # "Answer: 1. <text> 2. <text>": the numbers of a list, not an answer
    # "Answer: 1. meter", "Answer: 1. Pull the wire ...": a list's first mark, its "2." maybe cut off by the limit
    # (not "the answer is 1. It ...", a sentence that ends)
    spans -= {
        (s, e)
        for s, e in marks
        if response[s:e] == "1" and _LIST_OPENING.match(response, e) and _after_colon(response, s)
    }
    mentions = []
    for start, end in sorted(spans):
        label = f"{prefix}{int(response[start:end])}"
        negated = bool(_NEGATION.search(response, max(0, start - _LOOKBACK), start))
        mentions.append(Mention(label if label in in_range else None, label, start, end, True, False, negated))
    return mentions


def _after_colon(response: str, start: int) -> bool:
    """True when the number at ``start`` follows a colon (``Answer: 1.``), as a list's first mark does."""
    return response[max(0, start - 8) : start].rstrip(" \t\"'*([").endswith(":")


def _more_numbers_than(response: str, count: int) -> bool:
    """True when the response holds more runs of digits than ``count`` labels do: a bare number may be stated."""
    if not any(digit in response for digit in "0123456789"):  # `in` is far faster than a regex scan
        return False
    return sum(1 for _ in islice(_DIGIT_RUN.finditer(response), count + 1)) > count


def _word_positions(text: str, words: tuple[str, ...]) -> Iterator[int]:
    """Where each word starts as a whole word, at most MAX_MENTIONS times per word."""
    for word in words:
        at, seen = text.find(word), 0
        while at >= 0 and seen < MAX_MENTIONS:
            end = at + len(word)
            if (at == 0 or text[at - 1] not in _ALNUM) and text[end : end + 1] not in _ALNUM - {"s"}:
                yield at
            seen += 1
            at = text.find(word, end)


def _mark_runs(response: str, mentions: list[Mention]) -> list[Mention]:
    """Mentions in a run of two or more different labels separated by spaces only are echoes of a list."""
    marked = list(mentions)
    i = 0
    while i < len(mentions):
        j = i
        while j + 1 < len(mentions) and not response[mentions[j].end : mentions[j + 1].start].strip():
            j += 1
        if len({m.token for m in mentions[i : j + 1]}) > 1:
            for k in range(i, j + 1):
                marked[k] = replace(mentions[k], echo=True)
        i = j + 1
    return marked


def _joined_to_next(response: str, mentions: list[Mention], i: int) -> bool:
    """True when mention i is followed by ``or``/``and``/``,`` and another label: "answer1 or answer2"."""
    if i + 1 >= len(mentions):
        return False
    between = response[mentions[i].end : mentions[i + 1].start]
    return len(between) <= 12 and bool(_LIST_JOINER.search(between))


def decide(response: str, mentions: list[Mention]) -> tuple[str, str, Mention | None] | None:
    """(label, rule, deciding mention) from the labels alone; ("", rule, None) when they refuse; None when they
    state nothing (every label is an echo, out of range or negated, or there is none)."""
    usable = [m for m in mentions if not m.echo and not m.negated and m.label]
    if any(_EITHER.search(response, max(0, m.start - 12), m.start) for m in usable):
        return "", CONTRADICTION, None  # "either option 1 or option 2": a hedge, also when the second is cut off
    explicit = [m for m in usable if m.explicit]
    if explicit:
        if any(_joined_to_next(response, mentions, mentions.index(m)) for m in explicit):
            return "", CONTRADICTION, None
        return _one(explicit, EXPLICIT)
    if not usable:
        return None
    if any(m.echo for m in mentions):
        return "", ECHO, None  # a label amid recited labels or format echoes is one more echo
    return _one(usable, LABEL)


def _one(stated: list[Mention], rule: str) -> tuple[str, str, Mention | None]:
    """The label when all these mentions name the same one; else a contradiction."""
    labels = {m.label for m in stated}
    label = labels.pop()
    return (label, rule, stated[0]) if not labels and label else ("", CONTRADICTION, None)
