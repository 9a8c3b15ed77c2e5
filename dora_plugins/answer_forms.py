"""Answers (and non-answers) that small models write in sentences and lists, for the ``improved`` extractor.

Read on real SmolLM2-135M generations of the paper's prompts (``tests/data/smollm2_labels.jsonl``):

- an **enumeration** of the options, whatever its numbering (``1. <text> 2. <text>``, ``a) ... b) ...``,
  bullets, ``1. Yes 2. No 3. Yes``), is no answer, unless a statement after the list picks one entry
  (``... The answer is: 1. Yes``, ``The answer is: 1``, or the question restated and answered, ``Question: Is it
  ...? Yes.``): then that statement alone is read;
- BoolQ answered in words: a **yes/no** that opens the response or follows ``the answer is`` reads true/false
  (``Yes, it is ...``; ``The answer to the question "...?" is "No, ..."``); yes and no together refuse; a yes
  to the request (``Yes, I can answer this question``) is no verdict;
- WinoGrande answered with the **filled sentence**: each option is named once in the sentence, so the option
  that fills the blank is named once more than the other (``Sarah was better than Maria so Sarah won``); a
  sentence said again (the question's first half, copied twice) counts once, and so does nothing after the
  point where the response starts looping (six words said a second time);
- a **restated question** is no answer: options named only in a question (ending with ``?``, quoted after
  ``the question``, after ``Question:`` or a copied instruction's ``... the given sentence:``, or holding the
  blank ``_``) do not count (see :mod:`.answer_text`), nor do bare labels there (``Question: is it true that``);
- a **second option narrated** after the first, cut off by the token limit (the response ends with the first
  five or more words of another option), makes the answer a contradiction, as two whole options do.

Every pattern is anchored or bounded and none nests quantifiers; the callers pass short responses only where
they count occurrences, so the time stays linear in the text's length.
"""

from __future__ import annotations

import re

ENUMERATION = "enumeration"
YES_NO = "yes/no"
FILLED_SENTENCE = "filled sentence"
RESTATED_QUESTION = "restated question"

# "1." "2)" (not "1.5", not "answer1."), "a)" anywhere, "a." / "-" / "*" / "•" at the start of a line.
_NUMBER_MARK = re.compile(r"(?<![\w.])(\d{1,2})[.)](?=\s|$)")
_LETTER_MARK = re.compile(r"(?:^|(?<=\s))([a-h])\)(?=\s)|^[ \t\"'*]{0,4}([a-h])\.(?=\s)", re.M)
_BULLET = re.compile(r"^[ \t]{0,20}[-*•][ \t]{1,4}\S", re.M)
_SECOND_LABELLED = re.compile(r"(?:answer|solution|option|ending|choice)[ \t]?2[ \t]{0,2}:")  # the prompt's "Answer2:"
_SECOND_CUT = re.compile(r"\n[ \t]{0,24}2[.)]?[ \t]*$")  # the second entry's number, the token limit cutting it
_CUE_LINE = re.compile(r"^[ \t]{0,20}(?:answer|solution|option|ending|choice)[ \t]{0,2}:", re.M)
_PICK = re.compile(
    r"(?:answer|solution|option|ending|choice)s?(?:[ \t]{1,3}to[ \t]{1,3}(?:the|this)[ \t]{1,3}question)?"
    r"[ \t]{0,3}(?:(?:is|would[ \t]{1,3}be)[ \t]{0,3}:?|:|=)[ \t]{0,3}"
)
_LINE_MARK = re.compile(r"[ \t\"'*:]{0,24}(?:\d{1,2}|[a-h])[.)][ \t]{0,3}")  # lines are indented
_SENTENCE_END = re.compile(r"[.!?\n]")
_WORD = re.compile(r"[^\W_]+")
MAX_MARKS = 64  # a 32-token answer holds a few list marks; past this, the text is a flood, not an answer


def enumeration(response: str) -> int | None:
    """Where a list of two or more entries starts (1 then 2, also ``1.`` then the prompt's ``Answer2:`` or a ``2`` that
    ends the response on its own line; a then b; two bullets; two lines that open with ``Answer:``, unless those two
    lines say the same); None if none."""
    for pattern in (_NUMBER_MARK, _LETTER_MARK):
        first: dict[str, int] = {}
        for count, mark in enumerate(pattern.finditer(response)):
            if count > MAX_MARKS:
                break
            key = mark.group(1) or mark.group(mark.lastindex or 1)
            first.setdefault(key, mark.start())
        for one, two in (("1", "2"), ("a", "b")):
            if one in first and two in first and first[one] < first[two]:
                return first[one]
        if "1" in first and _SECOND_LABELLED.search(response, first["1"]):  # "Answer: 1. <text> Answer2: <text>"
            return first["1"]
        if "1" in first and "2" not in first and _SECOND_CUT.search(response, first["1"]):  # "1. <text>\n  2" (cut)
            return first["1"]
    for pattern in (_BULLET, _CUE_LINE):  # "- <text>" twice; "Answer: <text>" on two lines
        lines = [m for _, m in zip(range(2), pattern.finditer(response), strict=False)]
        if len(lines) == 2 and len({_rest_of_line(response, m.end()) for m in lines}) == 2:
            return lines[0].start()  # the same words on both lines are one answer said twice, not a list
    return None


def _rest_of_line(response: str, start: int) -> str:
    end = response.find("\n", start)
    return response[start : end if end >= 0 else len(response)].strip(" \t.")


def pick(response: str, start: int) -> int | None:
    """Where the statement that picks an entry after the list at ``start`` begins (``The answer is: 1. Yes``).

    The statement must lie on a line that is no entry of the list; the offset returned is after its cue and
    after the entry's number, so that reading from there reads the entry's words.
    """
    found = None
    cue_list = len([m for _, m in zip(range(2), _CUE_LINE.finditer(response), strict=False)]) == 2
    for cue in _PICK.finditer(response, start):
        line_start = response.rfind("\n", 0, cue.start()) + 1
        entry = _LINE_MARK.match(response, line_start) or (cue_list and _CUE_LINE.match(response, line_start))
        if not entry and cue.start() > start:
            found = cue
    if found is None:
        return None
    entry = _LINE_MARK.match(response, found.end())
    return entry.end() if entry else found.end()


_BARE_NUMBER = re.compile(r"[ \t]{0,3}(\d{1,2})(?![\w.)])")  # "The answer is: 1" (not "1. Yes", which quotes it)
_ASKED = re.compile(r"\?[ \t\"']{0,3}(?:\n|$)")  # the end of a question's line


def picked_entry(response: str, start: int, picked: int) -> tuple[int, int] | None:
    """The span of entry k of the list at ``start`` when the statement at ``picked`` names it by its bare number
    (``1. Yes 2. No ... The answer is: 1``); None when it does not."""
    number = _BARE_NUMBER.match(response, picked)
    if number is None:
        return None
    marks = [m for _, m in zip(range(MAX_MARKS), _NUMBER_MARK.finditer(response, start, picked), strict=False)]
    for at, mark in enumerate(marks):
        if mark.group(1) == number.group(1):
            line_end = response.find("\n", mark.end())
            ends = [e for e in (line_end, marks[at + 1].start() if at + 1 < len(marks) else -1) if e >= 0]
            return mark.end(), min(ends, default=picked)
    return None


def answered_question(response: str, start: int) -> int | None:
    """Where the answer to a question restated after the list at ``start`` begins (``1. Yes 2. No  Question: Is
    it ...?  Yes.``), when no other list follows the question; None otherwise."""
    asked = _ASKED.search(response, start)
    if asked is None or enumeration(response[asked.end() :]) is not None:
        return None
    return None if _NUMBER_MARK.search(response, asked.end()) else asked.end()


# yes/no then punctuation or the end: "Yes, it is", "No." (not "no answer", "no one", "yes or no")
_YES_NO = r"(yes|no)(?=[ \t]{0,2}(?:[,.!;:\"')\n]|$))"
# opening the response, a sentence or a one-entry list ("1) no")
_YES_NO_OPENING = re.compile(r"(?:^|(?<=[.!?\n]))[\s\"'*(:]{0,400}(?:\d{1,2}\)[ \t]{1,3})?" + _YES_NO)
# "Yes, I can answer ...", "Yes, I will help": a yes to the request to answer, not to the question; "Yes, I" that
# the token limit cut has not said to what yet
_TO_THE_REQUEST = re.compile(
    r"[ \t]{0,2}[,.!]?[ \t]{0,3}i(?:(?:'ll|[ \t]{1,3}(?:can|will|would|am|could))[ \t]{1,3}"
    r"(?:(?:be[ \t]{1,3}(?:happy|glad|ready)[ \t]{1,3}to|try[ \t]{1,3}to|going[ \t]{1,3}to)[ \t]{1,3})?"
    r"(?:answer|help|assist|ready|here)|\s*$)"
)
_YES_NO_AFTER_CUE = re.compile(r"[\s\"'*(:]{0,6}" + _YES_NO)
_ANSWER_CUE = re.compile(
    r"answer(?:[ \t]{1,3}to[ \t]{1,3}(?:the|this|your)[ \t]{1,3}question[ \t\"“”]{0,400})?[ \t]{0,3}"
    r"(?:(?:is|would[ \t]{1,3}be)[ \t]{0,3}:?|:)"
)
_QUOTED_QUESTION = re.compile(r"question[ \t]{0,3}:?[ \t]{0,3}([\"“])")
# "Question: ..." and the instruction's own lead-ins ("... to the question: ...", "... the given sentence: ..."):
# what follows on the line, up to an "Answer:" there, is a copy of the question (WinoGrande's and HellaSwag's
# instructions end "sentence:"; "Question: Why ...? Answer: <option>" answers on the question's line).
_QUESTION_LINE = re.compile(r"(?:question|given[ \t]sentence)[ \t]{0,3}:(?:(?!answer[ \t]{0,3}:)[^\n])*")
_LINE_OPENING = re.compile(r"[ \t\"'*#]{0,24}(?:\d{1,2}[.)][ \t]{0,3})?")  # before "Question:" opening a line


def without_questions(response: str, copies_only: bool = False) -> str:
    """The response with restated questions blanked out (same length): quoted after ``question``, a
    ``Question: ...`` line, sentences that end with ``?``; unless ``copies_only``, also sentences that hold
    WinoGrande's blank ``_`` and the rest of a line after ``... the question:`` or ``... the given sentence:``
    inside it (with ``copies_only``, ``the correct answer to the question: <question> is answer1`` keeps its
    label)."""
    chars = list(response)

    def blank(start: int, end: int) -> None:
        chars[start:end] = " " * (end - start)

    for found in _QUOTED_QUESTION.finditer(response):
        close = "”" if found.group(1) == "“" else '"'
        end = response.find(close, found.end())
        blank(found.end(), end if end >= 0 else len(response))
    for found in _QUESTION_LINE.finditer(response):
        line_start = response.rfind("\n", 0, found.start()) + 1
        if not copies_only or _LINE_OPENING.fullmatch(response, line_start, found.start()):
            blank(found.start(), found.end())
    sentence = 0
    for at, char in enumerate(response):
        if char in ".!?\n" or at == len(response) - 1:
            blank_held = not copies_only and "_" in response[sentence : at + 1]  # WinoGrande's blank
            if chars[at] == "?" or blank_held:
                blank(sentence, at + 1)
            sentence = at + 1
    return "".join(chars)


def yes_no(response: str) -> tuple[str, tuple[int, int] | None] | None:
    """("yes"/"no", span) for a BoolQ answer in words; ("", None) when yes and no are both stated; else None."""
    text = without_questions(response)
    said: dict[str, tuple[int, int]] = {}
    for count, opening in enumerate(_YES_NO_OPENING.finditer(text)):
        if count > MAX_MARKS:
            break
        if not _TO_THE_REQUEST.match(text, opening.end(1)):  # "Yes, I can answer this question": not a verdict
            said.setdefault(opening.group(1), opening.span(1))
    for count, cue in enumerate(_ANSWER_CUE.finditer(text)):
        if count > MAX_MARKS:
            break
        found = _YES_NO_AFTER_CUE.match(text, cue.end())
        if found:
            said.setdefault(found.group(1), found.span(1))
    if len(said) > 1:
        return "", None
    return next(iter(said.items()), None)


LOOP_WORDS = 6  # a run of this many words said a second time: the model loops from there


def loop_start(response: str) -> int:
    """Where the response starts saying again a run of LOOP_WORDS words it said before (a loop the token limit
    cut), or its length if it never does."""
    spans = [m.span() for m in _WORD.finditer(response)]
    words = [response[a:b] for a, b in spans]
    seen: set[tuple[str, ...]] = set()
    for i in range(len(words) - LOOP_WORDS + 1):
        run = tuple(words[i : i + LOOP_WORDS])
        if run in seen:
            return spans[i][0]
        seen.add(run)
    return len(response)


def filled_option_by_sentence(response: str, found: list, options: int) -> int | None:
    """:func:`filled_option` over the first sentence where it decides (the filled sentence may be followed by a
    cut-off copy of itself), else over the whole response (WinoGrande's sentence may be two), where a sentence
    said again, or cut off while said again, counts once (a copy of the question's first half names each option
    once per copy).

    ``found`` are option occurrences (``.option``, ``.start``) outside questions."""
    if options != 2:
        return None
    start = 0
    counted: list = []
    said: list[str] = []  # the sentences counted, as words
    for end in [m.end() for m in _SENTENCE_END.finditer(response)] + [len(response)]:
        inside = [o for o in found if start <= o.start < end]
        filler = filled_option([sum(o.option == k for o in inside) for k in (0, 1)])
        if filler is not None:
            return filler
        if inside:  # at most MAX_OCCURRENCES sentences hold options: the comparisons stay few
            words = " ".join(response[start:end].split()).strip(" .!?")
            if not any(earlier.startswith(words) for earlier in said):
                said.append(words)
                counted += inside
        start = end
    return filled_option([sum(o.option == k for o in counted) for k in (0, 1)])


def filled_option(counts: list[int]) -> int | None:
    """WinoGrande's filled sentence: the option named once more than the other (both named), else None.

    ``counts`` are how often each of the two options is named outside questions.
    """
    if len(counts) != 2 or min(counts) < 1 or abs(counts[0] - counts[1]) != 1:
        return None
    return 0 if counts[0] > counts[1] else 1
