"""Which capability a prompt exercises: code, maths, tool use, writing, translation, ...

Capability sweeps are how distillers cover a skill: thousands of coding tasks,
then thousands of maths problems, then tool-use transcripts. A person asks about
whatever their day brings; a harvester's traffic covers areas systematically,
or sits in one area at a volume no single project needs. The classifier is a
small multilingual keyword lexicon per area (the first area that matches wins,
most specific first), cheap enough for every request and easy to audit.
"""

from __future__ import annotations

from distillguard.tracing.cot import window
from distillguard.tracing.patterns import PatternSet

AREAS = ("tool_use", "code", "math", "translation", "writing", "reasoning", "knowledge", "chat")

_LEXICON = {
    "tool_use": (
        # "tools" and the verb in one sentence: "tools you need. Use H2 headings" is no agent.
        r"\btools?\b[^.\n]{0,40}\b(?:call|use|invoke)|"
        r"function[_ ]call|\"tool_calls?\"|\bapi call\b|"
        r"you (?:are|act as) an? (?:autonomous |ai )?agent|\bagentic\b|available tools|"
        r"\bbash\b.*\bcommand|\bterminal\b|\bbrowse\b|工具调用|ツール"
    ),
    "code": (
        # A class in code ("class Foo:", "a class that ..."), not a school class.
        r"```|\bdef \w+\(|\bfunction\b|\bclass \w+\s*[:({]|\bclass (?:that|which|called|named)\b|"
        r"\bpython\b|\bjavascript\b|\btypescript\b|"
        r"\bjava\b|\bc\+\+|\bsql\b|\bhtml\b|\bcss\b|\bregex|\bcode\b|\bprogram\b|\bscript\b|"
        r"\bbug\b|\bcompile|\balgorithm|\bapi\b|\barray\b|\bstring\b.*\breturn|"
        r"代码|编程|函数|コード|プログラム|코드|código|programa|fonction|funktion"
    ),
    "math": (
        # Arithmetic, not a range ("400-500 words") or a date: a minus needs spaces.
        r"\d+\s*[+*/×÷^=]\s*\d+|\d+ - \d+|\bsolve\b|\bequation|\bcalculate|\bcompute\b|"
        r"\bhow many\b|\bhow much\b|\bpercent|\bintegral|\bderivative|\bprobability|"
        r"\bsum of\b|\bprime\b|"
        r"\bgeometry|\btriangle|\bfraction|\baverage\b|\$\d|多少|几个|计算|方程|いくつ|何人|"
        r"몇|계산|cuántos|cuántas|combien|wie viele|quantos|quantas|сколько|कितने|"
        r"\bkaç\b|bao nhiêu|berapa"
    ),
    "translation": r"\btranslat|翻译|翻訳|번역|tradu[cz]|übersetz|перевед",
    "writing": (
        r"\bwrite (?:a|an|me|the)\b|\bessay\b|\bpoem\b|\bstory\b|\bblog\b|\barticle\b|"
        r"\bemail\b|\bletter\b|\bsummari[sz]e|\brewrite\b|\bparaphrase|\bslogan|\bheadline|"
        r"写一|作文|诗|故事|総括|要約|書いて|작성|escribe|écris|schreibe|escreva|напиши"
    ),
    "reasoning": (
        r"\bpuzzle\b|\briddle\b|\blogic(?:al)?\b|\bdeduce|\binfer\b|\bif .* then\b|"
        r"\btrue or false\b|\bwhich of the following\b|推理|逻辑|論理|논리"
    ),
    "knowledge": (
        r"^(?:what|who|when|where|why|which|how)\b|\bexplain\b|\bdefine\b|\bdifference between\b|"
        r"\bhistory of\b|什么|为什么|何ですか|무엇|qué es|qu'est-ce|was ist|o que é|что такое"
    ),
}
PATTERNS = list(_LEXICON.values())
_NAMES = list(_LEXICON)
_matcher = PatternSet(PATTERNS)


def decide(found: set[int], text: str | bytes = "") -> str:
    """The area from the indices of PATTERNS found in a prompt: the most specific wins.
    (`text` is not needed: every area pattern stands on its own.)"""
    return _NAMES[min(found)] if found else "chat"


def area_of(text: str) -> str:
    """The capability area of one prompt; "chat" when nothing more specific matches.
    (Reads the same window as the reasoning lexicon: `features.describe` runs both at once.)"""
    return decide(set(_matcher.found(window(text))))
