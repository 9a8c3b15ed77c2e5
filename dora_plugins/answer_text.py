"""Options stated in words: which option's text a model response gives as its answer, for the ``improved`` extractor.

Models often answer with an option's text instead of its label, usually completing the question
(``The layer of the atmosphere we live in is the troposphere.``) and often followed by a cut-off echo
of the prompt's format line. An option counts as stated where its whole text occurs (words, any case,
punctuation and articles ignored) and none of these says otherwise:

- it lies inside a longer option's text that also occurs there (``grass`` inside ``cut grass``);
- it lies in a question (a sentence that ends with ``?`` or opens with how/what/which/...), as when a
  model copies the question, or in a line of a made-up how-to article (``[title] Choose a hypothesis.``);
- the response recites the option list (``1: <text> Answer2: <text>``), or the text follows a label
  (``Answer2 <text>``): that is the list, not an answer;
- it follows ``not`` (``not the troposphere``, ``do not live in the troposphere``);
- the option is a single word (``big``, ``no``, ``cell``) and does not end a sentence, open the response,
  or precede ``is the answer``: one word inside a longer sentence is too often an accident (``no answer``).

An option cut off by the token limit counts too, when the response ends with its opening words (five or more)
right after an answer cue (``Answer:``, ``... is``) or alone, and those words open no other option. After a
stated option, three opening words of another that end a cut-off response are enough to refuse: two options.

Only short responses are read this way (``TEXT_LIMIT``), so the cost stays linear in the text's length.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

TEXT_LIMIT = 2000  # characters; a 32-token answer is a few hundred, and nothing longer is read as option text
MAX_OCCURRENCES = 8  # an answer states its option once or twice; more is a loop, not an answer
_WORD = re.compile(r"[^\W_]+")
_ARTICLES = frozenset({"a", "an", "the"})
_QUESTION_WORDS = frozenset({"how", "what", "which", "why", "when", "where", "who", "whom", "whose", "does", "do"})
_CLAUSE_START = re.compile(r"[.!?\n\]]")
_SENTENCE_END = re.compile(r"[.!?\n]")
_ENDS_SENTENCE = re.compile(
    r"\s{0,3}(?:$|[.!;\n)\"']|is\s{1,3}(?:the\s{1,3})?(?:correct\s{1,3}|right\s{1,3})?answer\b)"
)
_OPENER_END = re.compile(r"\s{0,3}(?:$|[.!;,\n)\"'])")
_LISTED = re.compile(r"(?:^|\b(?:answer|option|solution|ending|choice)s?\s?)\d{1,2}\s{0,2}:")
_HOW_TO_TAG = re.compile(r"\[(?:header|title|step|substeps)\]$")
_NEGATIONS = frozenset({"not", "never", "no"})


@dataclass(frozen=True)
class Occurrence:
    """One place where an option's whole text occurs in the response (character span of the lower-cased text)."""

    option: int
    start: int
    end: int


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def occurrences(response: str, options: Sequence[object]) -> list[Occurrence] | None:
    """Every occurrence of an option's whole text in ``response`` (lower-cased), in option order.

    An occurrence inside a longer option's occurrence is dropped (the longest match wins). None when the
    response is too long to be read this way or repeats option texts more than MAX_OCCURRENCES times.
    """
    if len(response) > TEXT_LIMIT:
        return None
    # articles the response adds are skipped ("a caterpillar and a butterfly" states "caterpillar and butterfly");
    # an option that opens with an article ("the amount of food") needs one there ("the same amount" is not it)
    every = [m.span() for m in _WORD.finditer(response)]
    kept = [k for k, (s, e) in enumerate(every) if response[s:e] not in _ARTICLES]
    spans = [every[k] for k in kept]
    joined = " " + " ".join(response[s:e] for s, e in spans) + " "
    starts = []  # offset of each word in ``joined``
    offset = 1
    for s, e in spans:
        starts.append(offset)
        offset += e - s + 1
    found = []
    for i, option in enumerate(options):
        written = _words(option) if isinstance(option, str) else []
        words = [w for w in written if w not in _ARTICLES]
        if not words:
            continue
        needle = " " + " ".join(words) + " "
        at = joined.find(needle)
        while at >= 0:
            first = bisect_right(starts, at + 1) - 1
            start = spans[first][0]
            if written[0] in _ARTICLES:  # the option's own opening article, as written before its words
                before = kept[first] - 1
                start = every[before][0] if before >= 0 and response[slice(*every[before])] in _ARTICLES else -1
            if start >= 0:
                found.append(Occurrence(i, start, spans[first + len(words) - 1][1]))
            if len(found) > MAX_OCCURRENCES:
                return None
            at = joined.find(needle, at + 1)
    return [o for o in found if not any(_inside(o, other) for other in found)]


TRAILING_WORDS = 5  # the fewest opening words of an option that, ending a cut-off response, name it
# The fewest opening words of another option that, ending a cut-off response after a stated option, make it a
# second one: refusing needs less evidence than reading ("<ending 1>. She pulls the barbell" of "pulls the barbell
# forward.").
OTHER_OPENING_WORDS = 3


def trailing_option(response: str, options: Sequence[object], but: int) -> int | None:
    """The option other than ``but`` whose opening words (at least OTHER_OPENING_WORDS, not the whole text; the
    last one maybe cut short) end the response, where the token limit cut off an option being narrated; else None.

    Words that ``but``'s own text holds in the same order do not count: a cut-off copy of the stated option
    (whose words other options may share) names no other option.
    """
    if len(response) > TEXT_LIMIT or not 0 <= but < len(options):
        return None
    tail = _words(response)
    stated = options[but]
    own = " " + " ".join(_words(stated)) + " " if isinstance(stated, str) else ""
    for i, option in enumerate(options):
        k = _opening_at_end(tail, _words(option) if isinstance(option, str) and i != but else [], OTHER_OPENING_WORDS)
        if k and " " + " ".join(tail[-k:]) not in own:
            return i
    return None


_CUT_CUE = re.compile(
    r"(?:(?:answer|solution|option|ending|choice)s?\s{0,3}(?:is\b|:)|\bis\b)\s{0,3}:?\s{0,3}[\"'*(]{0,2}\s{0,2}$"
)
_OPENING = re.compile(r"[\s\"'*(]*")


def cut_off_option(response: str, options: Sequence[object]) -> tuple[int, int] | None:
    """(option, start) when the response ends with an answer cut off by the token limit: after an answer cue
    (``Answer:``, ``... is``) or alone, the opening words of one option's text (at least TRAILING_WORDS, not the
    whole text, the last one maybe cut short) that open no other option; None otherwise."""
    if len(response) > TEXT_LIMIT:
        return None
    spans = [m.span() for m in _WORD.finditer(response)]
    tail = [response[a:b] for a, b in spans]
    read = []
    for i, option in enumerate(options):
        words = _words(option) if isinstance(option, str) else []
        k = _opening_at_end(tail, words)
        if k:
            read.append((i, k))
    if len(read) != 1:
        return None  # none, or words that open two options ("Take a pair of scissors and ...")
    option, k = read[0]
    start = spans[-k][0]
    before = response[max(0, start - 80) : start]
    if _CUT_CUE.search(before) or _OPENING.fullmatch(response, 0, start):
        return option, start
    return None


def restarts_with_other(response: str, stated: Occurrence, options: Sequence[object]) -> bool:
    """True when, after the stated option, the response says again the words that led to it (three to six) and
    goes on otherwise than with the stated option: ``X is best described as a trend. X is best described as a
    series of`` (a list of completions the token limit cut)."""
    if len(response) > TEXT_LIMIT:
        return False
    spans = [m.span() for m in _WORD.finditer(response)]
    words = [response[a:b] for a, b in spans]
    starts = [a for a, _ in spans]
    first = bisect_right(starts, stated.start) - 1  # the option's first word
    after = bisect_right(starts, stated.end - 1)  # the first word after the option
    if first < 0:
        return False
    clause = _CLAUSE_START.search(response[::-1], len(response) - stated.start)
    clause_start = len(response) - clause.start() if clause else 0
    stem = [
        w
        for (a, _), w in zip(spans[max(0, first - 6) : first], words[max(0, first - 6) : first], strict=True)
        if a >= clause_start
    ]
    if len(stem) < 3:
        return False
    rest = words[after:]
    own = [w for w in _words(str(options[stated.option])) if w not in _ARTICLES]
    for at in range(len(rest) - len(stem) + 1):
        if rest[at : at + len(stem)] == stem:
            tail = [w for w in rest[at + len(stem) : at + len(stem) + 4] if w not in _ARTICLES][: min(3, len(own))]
            if tail and not _opens(tail, own):
                return True  # the stem completed otherwise: a list of completions
    return False


def _opens(tail: list[str], words: list[str]) -> bool:
    """True when ``tail`` is the opening of ``words`` (its last word maybe cut short)."""
    k = len(tail)
    return 0 < k <= len(words) and tail[:-1] == words[: k - 1] and words[k - 1].startswith(tail[-1])


def _opening_at_end(tail: list[str], words: list[str], least: int = TRAILING_WORDS) -> int:
    """How many opening words of ``words`` (at least ``least``, not all of them whole) end ``tail``."""
    for k in range(min(len(words), len(tail)), least - 1, -1):
        cut = words[k - 1].startswith(tail[-1]) and (k < len(words) or tail[-1] != words[-1])
        if cut and tail[-k:-1] == words[: k - 1]:
            return k
    return 0


def _inside(inner: Occurrence, outer: Occurrence) -> bool:
    return (
        outer.start <= inner.start and inner.end <= outer.end and (outer.end - outer.start) > (inner.end - inner.start)
    )


def named(response: str, occurrence: Occurrence) -> bool:
    """True when the occurrence names the option: not in a question or how-to line, not after "not"."""
    if _in_question(response, occurrence):
        return False
    window = response[max(0, occurrence.start - 48) : occurrence.start]
    clause = window[max(window.rfind(mark) for mark in ",;:.!?\n") + 1 :]
    before = clause.split()[-4:]  # "not the", "do not live in the"; not across a comma: "not X, Y"
    return not any(word in _NEGATIONS or word.endswith("n't") for word in before)


def is_statement(response: str, occurrence: Occurrence, option: str, label_starts: frozenset[int]) -> bool:
    """True when this occurrence states the option: it names it, and a one-word option ends a sentence, comes
    before a label (an echo) or "is the answer", or opens the response.

    ``label_starts`` are the offsets where label mentions start.
    """
    if not named(response, occurrence):
        return False
    if len([w for w in _words(option) if w not in _ARTICLES]) > 1:
        return True
    written = option.rstrip()
    unit = written[len(written.rstrip("%°")) :]  # "50%": the option's "%" is no word but part of its text
    end = occurrence.end + len(unit) if response.startswith(unit, occurrence.end) else occurrence.end
    after = response[end : end + 40]
    if _ENDS_SENTENCE.match(after) or end + len(after) - len(after.lstrip()) in label_starts:
        return True
    return not response[: occurrence.start].strip(" \"'*([") and bool(_OPENER_END.match(after))


def recital(response: str) -> int | None:
    """Where the response starts listing options under numbers (``1: ...``, ``Answer2: ...``), as the prompt does;
    None if it does not."""
    listed = _LISTED.search(response)
    return listed.start() if listed else None


def _in_question(response: str, occurrence: Occurrence) -> bool:
    """True when the occurrence lies in a sentence that ends with "?" or opens with a question word, or in a
    line of a how-to article (after ``[title]``, ``[step]``, ...)."""
    end = _SENTENCE_END.search(response, occurrence.end)
    if end and end.group() == "?":
        return True
    clause_start = max((m.end() for m in _CLAUSE_START.finditer(response, 0, occurrence.start)), default=0)
    if _HOW_TO_TAG.search(response, max(0, clause_start - 12), clause_start):
        return True
    opening = response[clause_start : occurrence.start].split(maxsplit=1)
    return bool(opening) and opening[0].strip("\"'*(:") in _QUESTION_WORDS
