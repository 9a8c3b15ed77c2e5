"""Answer extractors: the paper's ``original`` and a stricter ``improved``.

``original`` is ``extract_answer`` of NVlabs/DoRA ``commonsense_reasoning/commonsense_evaluate.py``
(inherited from LLM-Adapters): the first case-sensitive match of the label alternation, anywhere,
so that it also credits echoes of the prompt's ``Answer format: a/b/c`` line.

``improved`` returns what the model actually answered, and "" when it gave no answer:
labels in any case and common spelling (``Answer 2``, ``ANSWER2``, ``True``) but never inside a
longer token (``answer12``); an explicit statement (``the correct answer is X``, ``Answer: X``)
wins over other mentions; echoes of the format line, of slash lists and of the option list
(``Answer1: ...``) do not count, nor do labels outside the item's range or after "not"; an
option's text maps to its label; two different answers give "". No pattern nests quantifiers,
the response is lower-cased once, and past MAX_MENTIONS label-like tokens the text counts as
garbage, so the time is linear in the length of the text (1 MB of junk: a few hundredths of a second).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice

from .prompts import RESPONSE_MARKER

# The paper's patterns, per benchmark (case-sensitive, no word boundaries, first match wins).
PAPER_PATTERNS = {
    "boolq": r"true|false",
    "piqa": r"solution1|solution2",
    "social_i_qa": r"answer1|answer2|answer3|answer4|answer5",
    "ARC-Challenge": r"answer1|answer2|answer3|answer4|answer5",
    "ARC-Easy": r"answer1|answer2|answer3|answer4|answer5",
    "openbookqa": r"answer1|answer2|answer3|answer4|answer5",
    "hellaswag": r"ending1|ending2|ending3|ending4",
    "winogrande": r"option1|option2",
}

# All patterns below run on the lower-cased response.
_FORMAT_LINE = re.compile(r"answer format:[^\n]*")
_CUE = re.compile(r"(?:answer|solution|ending|option|choice)s?\s{0,3}(?:is|:|=)\s{0,3}[\"'*(\[]{0,2}\s{0,2}$")
_CUE_PHRASE = re.compile(
    r"\b(?:the\s{1,3})?(?:correct\s{1,3}|right\s{1,3}|final\s{1,3}|best\s{1,3})?(?:answer|solution|ending|option|choice)"
    r"\s{0,3}(?:is\b|:)"
)
_CUE_CHARS = 64  # room for a cue phrase ("the correct answer is") around an option's text
_NEGATION = re.compile(r"(?:\bnot|n't)\s{1,3}(?:the\s{1,3})?$")
_LIST_JOINER = re.compile(r"\s{0,3}(?:,|/|&|\bor\b|\band\b)\s{0,3}[\"'*]{0,2}$")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_LOOKBACK = 40  # characters before a mention that the cue / negation / list checks may look at
MAX_MENTIONS = 64  # a 32-token answer names a few labels; a text with more label-like tokens is not an answer
_WORD = re.compile(r"[^\W_]+")


def _response(text: str) -> str:
    """The text after the last ``### Response:``, stripped, as the paper's script gives it to the extractor."""
    return text.split(RESPONSE_MARKER)[-1].strip()


def _get_labels(benchmark: str) -> tuple[str, ...]:
    from .benchmarks import get_benchmark

    return get_benchmark(benchmark).labels


def original(text: str, benchmark: str, options: list[str] | None = None) -> str:
    """The paper's extractor, bit for bit: first case-sensitive match, or "". ``options`` is ignored.

    Benchmarks from plugins use the alternation of their labels, in the same first-match way.
    """
    pattern = PAPER_PATTERNS.get(benchmark) or "|".join(map(re.escape, _get_labels(benchmark)))
    found = re.search(pattern, _response(text))  # the paper takes re.findall(...)[0]: the same match
    return found.group(0) if found else ""


@dataclass(frozen=True)
class _Mention:
    label: str | None  # None when out of the item's range
    start: int
    end: int
    explicit: bool  # right after "answer is" / "Answer:" ...
    echo: bool  # part of a slash list or of an option list ("Answer1: ...")
    negated: bool


@lru_cache(maxsize=64)
def _mention_pattern(labels: tuple[str, ...]) -> tuple[re.Pattern, str | None]:
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


def _canonical(match: re.Match, prefix: str | None, in_range: tuple[str, ...]) -> str | None:
    if prefix is None:
        return next((label for label in in_range if label.lower() == match.group(1)), None)
    label = f"{prefix}{int(match.group(1))}"
    return label if label in in_range else None


def _mentions(response: str, labels: tuple[str, ...], in_range: tuple[str, ...]) -> list[_Mention] | None:
    """Every label mention, classified; None when there are more than MAX_MENTIONS (that is no answer)."""
    pattern, prefix = _mention_pattern(labels)
    matches = list(islice(pattern.finditer(response), MAX_MENTIONS + 1))
    if len(matches) > MAX_MENTIONS:
        return None
    matches = [m for m in matches if m.start() == 0 or response[m.start() - 1] not in _ALNUM]  # not "xanswer1"
    if not matches:
        return []
    # "Answer1: <text>" recites the option list, unless the response opens with it and names no other that way.
    colon = [prefix is not None and response[m.end() : m.end() + 3].lstrip(" ").startswith(":") for m in matches]
    opens_with_one = sum(colon) == 1 and colon[0] and matches[0].start() == 0
    reciting = any(colon) and not opens_with_one
    mentions = []
    for match, listed in zip(matches, colon, strict=True):
        start, end = match.span()
        before = response[max(0, start - _LOOKBACK) : start]
        explicit = bool(_CUE.search(before))
        echo = (listed and reciting and not explicit) or before.endswith("/") or response[end : end + 1] == "/"
        negated = bool(_NEGATION.search(before))
        mentions.append(_Mention(_canonical(match, prefix, in_range), start, end, explicit, echo, negated))
    return mentions


def _joined_to_next(response: str, mentions: list[_Mention], i: int) -> bool:
    """True when mention i is followed by ``or``/``and``/``,`` and another label: "answer1 or answer2"."""
    if i + 1 >= len(mentions):
        return False
    between = response[mentions[i].end : mentions[i + 1].start]
    return len(between) <= 12 and bool(_LIST_JOINER.search(between))


def _decide(response: str, mentions: list[_Mention]) -> str | None:
    """The one answer the mentions state; "" when they contradict; None when they state nothing."""
    explicit = [i for i, m in enumerate(mentions) if m.explicit and not m.echo and not m.negated and m.label]
    if explicit:
        if any(_joined_to_next(response, mentions, i) for i in explicit):
            return ""
        found = {mentions[i].label for i in explicit}
        return found.pop() if len(found) == 1 else ""
    if any(m.echo for m in mentions):
        return ""  # reciting the option list or the format: whatever else it names is not an answer
    plain = {m.label for m in mentions if not m.negated and m.label}
    if len(plain) > 1:
        return ""
    return plain.pop() if plain else None


def _normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def _from_option_text(response: str, options: list[str], in_range: tuple[str, ...]) -> str:
    """The label of the one option whose text makes up at least half of the response's words, else "".

    An option that is part of a longer option that also matches does not count ("ice" in "ice cream").
    One cue phrase ("the correct answer is") is not counted.
    """
    options = options[: len(in_range)]
    if len(response) > 3 * max(map(len, options)) + _CUE_CHARS:
        return ""  # too long to be mostly one option's text (and so never slow on long junk)
    texts = [_normalise(option) for option in options]
    said = f" {_normalise(_CUE_PHRASE.sub(' ', response, count=1))} "
    n_words = len(said.split())
    hits = [i for i, text in enumerate(texts) if text and f" {text} " in said and 2 * len(text.split()) >= n_words]
    longest = [i for i in hits if not any(texts[i] != texts[j] and texts[i] in texts[j] for j in hits)]
    return in_range[longest[0]] if len(longest) == 1 else ""


def improved(text: str, benchmark: str, options: list[str] | None = None) -> str:
    """The label the model answered (see the module docstring for the rules), or "" when it gave none.

    ``options`` are the item's answer texts in label order: they set the range (answer5 is out of
    range on a 4-option item) and let a written-out option count as its label.
    """
    labels = _get_labels(benchmark)
    numbered = _mention_pattern(labels)[1] is not None
    in_range = labels[: len(options)] if options and numbered else labels
    response = _FORMAT_LINE.sub(" ", _response(text).lower())
    mentions = _mentions(response, labels, in_range)
    if mentions is None:
        return ""
    decided = _decide(response, mentions)
    if decided is not None:
        return decided
    if not options:
        return ""
    return _from_option_text(response, list(options), in_range)


def extract_answer(text: str, benchmark: str, method: str = "improved", options: list[str] | None = None) -> str:
    """The label answered in ``text`` ("true", "solution2", "answer3", ...) or "" when none, by ``method``.

    ``method`` names a registered extractor: "original" (the paper's), "improved", or one from a plugin.
    """
    from .errors import ConfigError
    from .plugins import get_answer_extractors
    from .suggestions import did_you_mean

    extractors = get_answer_extractors()
    if method not in extractors:
        raise ConfigError(
            f"Unknown answer extractor '{method}'.{did_you_mean(method, extractors)} "
            f"Available: {', '.join(extractors)}. "
            "Extractors come from the dora_answer_extractors hook ('dora plugins' lists them)."
        )
    return extractors[method].value(text, benchmark, options)
