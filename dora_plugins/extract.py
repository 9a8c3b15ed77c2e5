"""Answer extractors: the paper's ``original`` and a stricter ``improved``, and ``explain_answer`` that says why.

``original`` is ``extract_answer`` of NVlabs/DoRA ``commonsense_reasoning/commonsense_evaluate.py``
(inherited from LLM-Adapters): the first case-sensitive match of the label alternation, anywhere,
so that it also credits echoes of the prompt's ``Answer format: a/b/c`` line.

``improved`` returns what the model actually answered, and "" when it gave no answer. Rules, in order:

1. Labels in any case and common spelling (``Answer 2``, ``ANSWER2``, ``True``), never inside a longer token
   (``answer12``); a label glued to an echo of the format line counts (``FalseAnswer format: true/false``).
2. An explicit statement (``the correct answer is X``, ``Answer: X``, ``3 is the correct answer``) wins over
   other mentions; two different explicit answers, or ``X or Y``, are a contradiction. ``Answer: 1. <words>``
   opens a list: its ``1`` states nothing.
3. Echoes do not count: the format line, slash lists (``answer1/answer2``), a recited option list
   (``Answer1: ... Answer2: ...``), a run of different labels (``Answer2 Answer3 Answer4``, also the cut-off
   ``Answer11 Answer12 ... Answer1``). Nor do labels outside the item's range (answer5 of 4) or after "not".
4. One plain label is the answer; two different ones are a contradiction; a label amid echoes is refused, and
   so is one inside an entry of a numbered list that no statement after the list picks from (``1. The answer
   to the question "..." is option 1. 2. The``).
5. When no label answers, an option's text stated in words is its label (see :mod:`dora_plugins.answer_text`);
   two options' texts are a contradiction. A label whose own text (``Answer2: <text>``) is another option's
   text is a contradiction too. On WinoGrande, an option named only once the response loops (six words said
   again) is not stated, and a sentence naming both people with no blank filled is the question's own; a filled
   sentence before an echo of the option list counts when the echo pairs every label with its own text.

No pattern nests quantifiers, the response is lower-cased once, past MAX_MENTIONS label-like tokens the text
counts as garbage and only short responses are read for option texts, so the time is linear in the length of
the text (1 MB of junk: a few hundredths of a second).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import answer_forms, answer_labels, answer_text
from .answer_forms import ENUMERATION, FILLED_SENTENCE, RESTATED_QUESTION, YES_NO
from .answer_labels import CONTRADICTION, ECHO, EXPLICIT, LABEL, MAX_MENTIONS, Mention
from .answer_text import TEXT_LIMIT
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

# The rules that decide, as explain_answer reports them (EXPLICIT, LABEL, ECHO, CONTRADICTION: answer_labels).
OPTION_TEXT = "option text"
OUT_OF_RANGE = "out of range"
GARBAGE = "garbage"
NO_ANSWER = "no answer"
RULES = (
    EXPLICIT,
    LABEL,
    OPTION_TEXT,
    YES_NO,
    FILLED_SENTENCE,
    ECHO,
    ENUMERATION,
    RESTATED_QUESTION,
    CONTRADICTION,
    OUT_OF_RANGE,
    GARBAGE,
    NO_ANSWER,
)

_FORMAT_LINE = re.compile(r"answer\s?format\s?:[^\n]*")  # on the lower-cased response
_QUOTES_TEXT = re.compile(r"\s{0,3}[:.)/-]?\s{0,3}[\"'(]?\s{0,2}")
_ARTICLE_BEFORE = re.compile(r"(?:^|[^a-z])(?:a|an|the)[ \t]$")
_QUOTE_MARK = re.compile(r"\s{0,3}[:(\"'-]")  # "answer2: <text>": a label that quotes its option's text


@dataclass(frozen=True)
class Explanation:
    """What ``improved`` read and why: the label ("" for none), the rule that decided, the words that decided
    it (as written) and what was set aside on the way (echoes, labels out of range, negated labels)."""

    label: str
    rule: str
    evidence: str = ""
    ignored: tuple[str, ...] = ()


def _response(text: str) -> str:
    """The text after the last ``### Response:``, stripped, as the paper's script gives it to the extractor."""
    return text.split(RESPONSE_MARKER)[-1].strip()


def _answer_part(text: str) -> str:
    """What ``improved`` reads: the text after the last ``### Response:``; when the model wrote nothing after it
    (it answered, then began a new turn), the whole text with the markers set aside."""
    return _response(text) or text.replace(RESPONSE_MARKER, "\n").strip()


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


def _quoted_option(response: str, mention: Mention, found: list[answer_text.Occurrence]) -> int | None:
    """The option whose text directly follows the mention (``Answer2: <text>``), if any."""
    for occurrence in found:
        if occurrence.start >= mention.end and _QUOTES_TEXT.fullmatch(response, mention.end, occurrence.start):
            return occurrence.option
    return None


def _from_text(
    response: str, options: Sequence[object], in_range: tuple[str, ...], mentions: list[Mention], benchmark: str
) -> tuple[str, str, tuple[int, int] | None] | None:
    """(label, rule, evidence span) for an option stated in words, or a refusal; None when no option is stated."""
    found = answer_text.occurrences(response, options[: len(in_range)])
    if found is None:
        return "", GARBAGE, None
    quoting = [(m, quoted) for m in mentions if (quoted := _quoted_option(response, m, found)) is not None]
    recital = answer_text.recital(response)
    if recital is not None or quoting:  # "1: <text> Answer2: <text>", "Answer2 <text>" amid echoes: the option list
        filled = None
        if benchmark == "winogrande":
            start = min([m.start for m, _ in quoting] + [len(response) if recital is None else recital])
            filled = _filled_before_recital(response, found, quoting, in_range, start)
        return filled or ("", ECHO, None)
    listed = answer_forms.enumeration(response)
    if listed is not None:  # "1. <text> 2. <text>": only a statement after the list may pick one
        picked = answer_forms.pick(response, listed)
        found = [o for o in found if picked is not None and o.start >= picked]
        if not found:
            return "", ENUMERATION, None
    masked = answer_forms.without_questions(response)
    asked = [o for o in found if not masked[o.start : o.end].strip()]
    found = [o for o in found if o not in asked]
    loop = answer_forms.loop_start(response) if benchmark == "winogrande" else len(response)
    if benchmark == "winogrande":
        # every mention counts, negated ones too: the sentence itself may say "the bark but not the stone"
        # (before the loop: "... because the sound of the foot was ... because the sound")
        filler = answer_forms.filled_option_by_sentence(response, [o for o in found if o.start < loop], len(options))
        if filler is not None:
            last = [o for o in found if o.option == filler][-1]
            return in_range[filler], FILLED_SENTENCE, (last.start, last.end)
    starts = frozenset(m.start for m in mentions)
    stated = [o for o in found if answer_text.is_statement(response, o, str(options[o.option]), starts)]
    stated = [o for o in stated if o.start < loop]  # WinoGrande: named only once the response loops, no answer
    if not stated:
        cut = answer_text.cut_off_option(response, options[: len(in_range)])
        if cut is not None and masked[cut[1]] != " ":  # "Answer: Chop up the strawberries, pour the" (the limit)
            return in_range[cut[0]], OPTION_TEXT, (cut[1], len(response))
        return ("", RESTATED_QUESTION, None) if asked else None
    if any(o.option != stated[0].option and answer_text.named(response, o) for o in found):
        return "", CONTRADICTION, None  # another option named outside a question: "X or Y", "X lies below Y"
    if benchmark == "winogrande" and any(o.option != stated[0].option for o in found if o.start < loop):
        return "", RESTATED_QUESTION, None  # both names and no blank filled: "X broke Y's heart but not Z's because"
    end = len(response.rstrip())
    if response[end - 1 : end].isalnum() and masked[end - 1] != " ":  # cut off mid-sentence, not in a question
        if answer_text.trailing_option(response, options[: len(in_range)], stated[0].option) is not None:
            return "", CONTRADICTION, None  # "<ending 2's text>. <ending 1's first words, cut off>": two endings
        if answer_text.restarts_with_other(response, stated[0], options[: len(in_range)]):
            return "", CONTRADICTION, None  # "X is a <option 1>. X is a <option 2's first words, cut off>"
    return in_range[stated[0].option], OPTION_TEXT, (stated[0].start, stated[0].end)


def _filled_before_recital(
    response: str,
    found: list[answer_text.Occurrence],
    quoting: list[tuple[Mention, int]],
    in_range: tuple[str, ...],
    recital: int,
) -> tuple[str, str, tuple[int, int]] | None:
    """WinoGrande's filled sentence written before an echo of the option list that pairs every label with its own
    text (``... because the tablet was pricy. Option1: Phone Option2: Tablet``); None otherwise. ``quoting``: the
    labels followed by an option's text, with that option."""
    if any(m.label and in_range[quoted] != m.label for m, quoted in quoting):
        return None
    masked = answer_forms.without_questions(response)
    before = [o for o in found if o.end <= recital and masked[o.start : o.end].strip()]
    filler = answer_forms.filled_option_by_sentence(response[:recital], before, len(in_range))
    if filler is None:
        return None
    last = [o for o in before if o.option == filler][-1]
    return in_range[filler], FILLED_SENTENCE, (last.start, last.end)


def _second_look(
    response: str, mentions: list[Mention], labels: tuple[str, ...], decided: tuple[str, str, Mention | None] | None
) -> tuple[str, str, Mention | None] | None:
    """A short response's label decision, checked against the forms a label can hide in (None: no label answers)."""
    if decided is None or len(response) > TEXT_LIMIT:
        return decided
    boolq = labels == ("true", "false")
    bare = not any(m.explicit and m.label and not m.echo and not m.negated for m in mentions)
    if bare and decided[1] in (LABEL, CONTRADICTION):
        # bare labels inside a restated question are the question's words: "Question: is it true that"
        masked = answer_forms.without_questions(response, copies_only=True)
        kept = [m for m in mentions if masked[m.start : m.end].strip()]
        if boolq:  # "a true story", "the false alarm": an adjective, no verdict
            kept = [m for m in kept if not _ARTICLE_BEFORE.search(response, max(0, m.start - 5), m.start)]
        decided = answer_labels.decide(response, kept)
        if decided is None:
            return None
    if decided[1] == LABEL and boolq:
        said = answer_forms.yes_no(response)  # "1. Yes. False.": a bare label that a yes/no contradicts
        if said and said[0] and ("true" if said[0] == "yes" else "false") != decided[0]:
            return "", CONTRADICTION, None
    if decided[0] and decided[2] is not None:
        return _outside_list(response, decided)
    return decided


def _outside_list(response: str, decided: tuple[str, str, Mention | None]) -> tuple[str, str, Mention | None]:
    """The label unless it lies in an entry of a list that no later statement picks from: ``1. The answer to the
    question "..." is option 1. 2. The answer``, ``1. The answer is True 2. The answer is True`` (an enumeration)."""
    listed = answer_forms.enumeration(response)
    mention = decided[2]
    if listed is None or mention is None or mention.start < listed:
        return decided
    picked = answer_forms.pick(response, listed)
    return decided if picked is not None and mention.start >= picked else ("", ENUMERATION, None)


def _yes_no(response: str) -> tuple[str, str, tuple[int, int] | None] | None:
    """BoolQ answered in words: (label, rule, span), a refusal, or None when no yes/no answers."""
    if len(response) > answer_text.TEXT_LIMIT:
        return None
    listed = answer_forms.enumeration(response)
    start, end = 0, len(response)
    if listed is not None:
        picked = answer_forms.pick(response, listed)
        if picked is None:  # "1. Yes 2. No  Question: Is it ...?  Yes.": the restated question answered
            picked = answer_forms.answered_question(response, listed)
        if picked is None:
            return "", ENUMERATION, None
        start, end = answer_forms.picked_entry(response, listed, picked) or (picked, end)
    said = answer_forms.yes_no(response[start:end])
    if said is None:
        return ("", ENUMERATION, None) if listed is not None else None
    word, span = said
    if not word or span is None:
        return "", CONTRADICTION, None
    return ("true" if word == "yes" else "false"), YES_NO, (start + span[0], start + span[1])


def _ignored(source: str, mentions: list[Mention], echoed_format: bool) -> tuple[str, ...]:
    notes = ["echo of the format line"] if echoed_format else []
    for m in mentions:
        kind = "echo" if m.echo else "out of range" if m.label is None else "negated" if m.negated else None
        if kind:
            notes.append(f"{kind}: {source[m.start : m.end]}")
    return tuple(dict.fromkeys(notes))


def _quote(source: str, start: int, end: int, around: int = 24) -> str:
    """The deciding words as written, with up to ``around`` characters on each side, within their line."""
    left = source.rfind("\n", max(0, start - around), start) + 1 or max(0, start - around)
    right = source.find("\n", end, end + around)
    words = source[left : right if right >= 0 else end + around].split()
    if left > 0 and source[left - 1].isalnum() and len(words) > 1:
        words = words[1:]  # a word cut in two
    return " ".join(words)


@dataclass(frozen=True)
class _Reading:
    """What ``_read`` found: the answer and rule, and what explain_answer needs to quote and list."""

    label: str
    rule: str
    span: tuple[int, int] | None  # the deciding words in ``source``
    source: str  # the response as written (lower-cased when lower-casing changed its length)
    mentions: list[Mention] | None  # None for a flood of labels
    echoed_format: bool


def _read(text: str, benchmark: str, options: Sequence[object] | None) -> _Reading:
    """The rules of the module docstring, in order."""
    labels = _get_labels(benchmark)
    numbered = answer_labels.mention_pattern(labels)[1] is not None
    in_range = labels[: len(options)] if options and numbered else labels
    raw = _answer_part(text)
    lowered = raw.lower()
    response = _FORMAT_LINE.sub(lambda m: "\n" + " " * (len(m.group()) - 1), lowered)  # same offsets
    source, echoed = (raw if len(raw) == len(lowered) else lowered), response != lowered
    mentions = answer_labels.mentions(response, labels, in_range)
    if mentions is None:
        return _Reading("", GARBAGE, None, source, None, echoed)
    decided = _second_look(response, mentions, labels, answer_labels.decide(response, mentions))
    if decided is not None:
        label, rule, mention = decided
        span = (mention.start, mention.end) if mention else None
        if mention is not None and options and numbered and _QUOTE_MARK.match(response, mention.end):
            found = answer_text.occurrences(response, options[: len(in_range)]) or []
            quoted = _quoted_option(response, mention, found)
            if quoted is not None and in_range[quoted] != label:
                return _Reading("", CONTRADICTION, (mention.start, mention.end + 40), source, mentions, echoed)
        return _Reading(label, rule, span, source, mentions, echoed)
    if options and numbered:
        read = _from_text(response, options, in_range, mentions, benchmark)
    else:
        read = _yes_no(response) if labels == ("true", "false") else None
    if read is not None:
        return _Reading(*read, source, mentions, echoed)
    if any(m.echo for m in mentions) or echoed:
        rule = ECHO
    else:
        rule = OUT_OF_RANGE if any(m.label is None for m in mentions) else NO_ANSWER
    return _Reading("", rule, None, source, mentions, echoed)


def explain_answer(text: str, benchmark: str, options: Sequence[object] | None = None) -> Explanation:
    """The label ``improved`` reads in ``text`` and the rule that decided it (see the module docstring).

    ``options`` are the item's answer texts in label order: they set the range (answer5 is out of range on a
    4-option item) and let an option stated in words count as its label. Entries that are not strings are
    never matched, but still count for the range.
    """
    reading = _read(text, benchmark, options)
    evidence = _quote(reading.source, *reading.span) if reading.span else ""
    if reading.mentions is None:
        return Explanation(reading.label, reading.rule, evidence, (f"more than {MAX_MENTIONS} label-like tokens",))
    return Explanation(
        reading.label, reading.rule, evidence, _ignored(reading.source, reading.mentions, reading.echoed_format)
    )


def improved(text: str, benchmark: str, options: Sequence[object] | None = None) -> str:
    """The label the model answered (see the module docstring for the rules), or "" when it gave none.

    ``options`` are the item's answer texts in label order: they set the range (answer5 is out of
    range on a 4-option item) and let a written-out option count as its label. The fast path of
    :func:`explain_answer`: the same answer, without quoting the evidence.
    """
    return _read(text, benchmark, options).label


def get_extractor(method: str) -> Callable[[str, str, Sequence[object] | None], str]:
    """The registered answer extractor called ``method``; an unknown name is an error with the close names."""
    from .plugins import lookup

    return lookup("extractor", method).value


def extract_answer(text: str, benchmark: str, method: str = "improved", options: list[str] | None = None) -> str:
    """The label answered in ``text`` ("true", "solution2", "answer3", ...) or "" when none, by ``method``.

    ``method`` names a registered extractor: "original" (the paper's), "improved", or one from a plugin.
    """
    return get_extractor(method)(text, benchmark, options)
