"""Does a prompt ask the model to write out its reasoning? (chain-of-thought elicitation)

Distillers want the teacher's reasoning, not only its answers: reasoning traces
are what make a small student good at maths and code. They ask for it in many
ways: plainly ("step by step"), by asking for the hidden trace ("your scratchpad",
"internal monologue"), after the fact ("the reasoning behind this answer"),
through role-play ("narrate each step"), or as structure (`"reasoning_steps"`
JSON keys, `<thinking>` tags), and in many languages.

The detector is a lexicon of *concepts*, not of phrasings: an explicit
reasoning request (a phrase that only means one thing, in any of 17 languages)
is enough on its own; otherwise a prompt must pair a verb of showing or
telling with a noun for the reasoning itself ("describe the intermediate
conclusions you reached", "spell out the considerations you weighed"). The
seed phrases in the shared corpus are its *test* set (tests/test_tracing_text.py),
so it is measured on wordings it was not written from.
"""

from __future__ import annotations

from distillguard.tracing.patterns import PatternSet

# Phrases that ask for the reasoning and mean nothing else.
_EXPLICIT = [
    # English
    r"one step at a time",
    r"chain of (?:steps|reasoning|inferences|logic|deductions)",
    r"(?:everything|all|what) you (?:thought|were thinking|considered|weighed)\b",
    r"narrat\w* (?:each|every) step",
    r"(?:each|every|all(?: the)?) (?:intermediate|reasoning) steps?\b",
    r"(?:each|every) step of (?:your|the) (?:reasoning|solution|work|thinking|calculation)",
    r"intermediate (?:steps?|results?|conclusions?|reasoning)",
    r"chain[\s-]*of[\s-]*thoughts?",
    r"thought process",
    r"thinking process",
    r"train of thought",
    r"show (?:all |me |us )?(?:of )?(?:your|the|all) (?:work|working|workings|steps|math)\b",
    r"(?:think|reason|work)(?:ing)? (?:it )?(?:out loud|aloud)",
    r"scratch[\s-]?pad",
    r"(?:inner|internal|private|hidden|raw|silent) "
    r"(?:monologue|voice|reasoning|thoughts?|thinking|deliberation)",
    r"(?:reasoning|thinking|thought) (?:tokens?|traces?|blocks?|logs?)",
    r"let(?:'|’)?s (?:think|work|reason)\b",
    r"let me think",
    r"how (?:you|did you|do you|you'd|would you) (?:arrived?|got|get|reach(?:ed)?|came|come|"
    r"work(?:ed)? (?:it )?out|deduced?|derived?|figured?|solved?|concluded?|decided?)\b",
    r"(?:rationale|reasoning|logic|thinking|thought process) behind",
    r"(?:reasoning|thinking|thoughts?)\W+(?:\w+\W+){0,3}(?:visible|shown|transparent)",
    r"work(?:ing)? (?:it |this )?backwards?",
    r"walk (?:me|us) through",
    r"\bderivation\b",
    # Structure: tags and JSON keys that hold reasoning
    r"<\s*/?\s*(?:think|thinking|thoughts?|reasoning|scratchpad)\s*>",
    r"[\"'](?:reasoning|reasoning_steps|steps|thoughts?|thinking|chain_of_thought|"
    r"internal_reasoning|scratchpad|rationale|justification|working)[\"']",
    r"\breasoning:",
    # Chinese
    r"一步一步|一步步|逐步|分步|推理过程|思考过程|思维过程|思维链|解题过程|解题思路|思路|推导过程|详细步骤",
    # Japanese
    r"思考過程|思考プロセス|推論過程|一つずつ順|段階的に|順を追って|ステップごと|考え方を",
    # Korean
    r"단계별|단계적으로|추론 과정|사고 과정|풀이 과정|차근차근|생각의 흐름",
    # Spanish, Portuguese, Italian
    r"paso a paso|razonamiento|proceso de pensamiento|muestra tu trabajo",
    r"passo a passo|racioc[íi]nio|processo de pensamento",
    r"passo dopo passo|ragionamento|processo di pensiero",
    # French
    r"[ée]tape par [ée]tape|raisonnement|processus de r[ée]flexion|pas [àa] pas",
    # German, Dutch
    r"schritt f[üu]r schritt|denkprozess|gedankengang|zwischenschritt|l[öo]sungsweg",
    r"denk(?:e)? laut",
    r"stap voor stap|redenering|denkproces",
    # Russian, Polish
    r"шаг за шагом|пошагов|рассуждени|ход (?:мысл|решени)|цепочк\w* рассужд",
    r"krok po kroku|rozumowani",
    # Arabic, Hindi, Turkish, Vietnamese, Indonesian
    r"خطوة بخطوة|خطوات تفكير|طريقة تفكير|سلسلة التفكير|استدلال",
    r"चरण[\s-]*दर[\s-]*चरण|चरणबद्ध|सोच की प्रक्रिया|तर्क की प्रक्रिया",
    r"ad[ıi]m ad[ıi]m|ak[ıi]l y[üu]r[üu]tme|d[üu]ş[üu]nce s[üu]reci",
    r"từng bước|suy luận|quá trình suy nghĩ",
    r"langkah demi langkah|penalaran|proses berpikir",
]

# Otherwise: a verb of showing or telling, then within a few words a noun for the
# reasoning itself ("explain your reasoning", "spell out the considerations you weighed",
# "describe the intermediate conclusions"). Near each other, not anywhere in the text:
# long role-play prompts say "explain" in one paragraph and "steps" in another.
_TELL = (
    r"\b(?:show|explain|describe|write|writ(?:e|ing) (?:out|down)|"
    r"spell(?:ing)?\W+(?:\w+\W+){0,3}out|lay(?:ing)?\W+(?:\w+\W+){0,2}out|seriali[sz]e|present|express|render|"
    r"reveal|print|output|paste|copy|repeat|give|provide|list|narrate|reconstruct|justify|"
    r"annotate|detail|outline|expose|dump|share|tell|trace|emit|log|record|include|"
    r"verbali[sz]e|articulate|document|break down|elaborate|add|narrat(?:e|ing))\b"
)
# Nouns that name the model's own reasoning. Ambiguous ones ("thoughts" = opinions,
# "steps" = instructions, "logic" of some code) only count with "your" or a qualifier.
_REASONING = (
    r"\b(?:reasoning|reasoned|reasons? (?:behind|why|for)|rationale|thinking|inferences?|"
    r"considerations?|deliberations?|deductions?|justifications?|thought process|"
    r"your (?:logic|thoughts|work|working|workings|steps|approach)|"
    r"(?:logic|approach|method) you (?:used|followed|applied)|"
    r"(?:intermediate|solution|reasoning) steps?|steps (?:you|of your|of the solution|that led))\b"
)
_NEAR = (
    rf"{_TELL}\W+(?:[^\W_]+\W+){{0,6}}?{_REASONING}"
    rf"|{_REASONING}\W+(?:[^\W_]+\W+){{0,8}}?{_TELL}"  # "the considerations ...? Spell them out"
)
# "Step by step" asks for reasoning, except in "a step-by-step guide (to install X)".
_STEPWISE = r"step[\s-]*by[\s-]*step"
_PROCEDURE = (
    rf"{_STEPWISE}\W+(?:guides?|instructions?|tutorials?|plans?|directions|recipes?|"
    r"walkthroughs?|roadmaps?|manuals?|processes|procedures?|checklists?|approach to)"
)

# One RE2 pass (linear time, no backtracking, where Python's `re` took ~200 µs a
# prompt on these alternations); features.describe runs it together with the capability
# areas'. The proximity rule is not in that pass: its bounded repetitions multiply the
# automaton's states (2x slower for every prompt). The pass only looks for a telling
# verb and a reasoning noun anywhere; the few prompts with both (~1 in 10) are then
# checked for the two near each other.
PATTERNS = ["|".join(f"(?:{p})" for p in _EXPLICIT), _TELL, _REASONING, _STEPWISE, _PROCEDURE]
_EXPLICIT_ID, _TELL_ID, _REASONING_ID, _STEPWISE_ID, _PROCEDURE_ID = range(len(PATTERNS))
_matcher = PatternSet(PATTERNS)
_near = PatternSet([_NEAR])
MAX_CHARS = 4000  # the ask sits at the start or the end of a prompt; skip pasted middles


def window(text: str) -> str:
    """The part of a prompt the lexicons read: its opening and closing MAX_CHARS / 2."""
    if len(text) <= MAX_CHARS:
        return text
    return text[: MAX_CHARS // 2] + "\n" + text[-MAX_CHARS // 2 :]


def decide(found: set[int], text: str | bytes) -> bool:
    """The verdict from the indices of PATTERNS found in (the window of) a prompt."""
    if _EXPLICIT_ID in found:
        return True
    if _TELL_ID in found and _REASONING_ID in found and _near.found(text):
        return True
    return _STEPWISE_ID in found and _PROCEDURE_ID not in found


def asks_for_reasoning(text: str) -> bool:
    """True when the prompt asks the model to write out how it reasons."""
    seen = window(text)
    return decide(set(_matcher.found(seen)), seen)
