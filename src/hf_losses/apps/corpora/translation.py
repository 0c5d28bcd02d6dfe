"""A small, deterministic German -> English corpus generated from a toy grammar.

It lets the translation demo and tests run offline in minutes on a CPU while still exercising what
makes German -> English hard for a model: the order of words changes, not only the words.

Covered: verb-second main clauses (``Heute kauft der Mann ...`` -> ``Today the man buys ...``),
verb-final subordinate clauses (``..., weil die Frau den Brief geschrieben hat`` -> ``... because the
woman has written the letter``), separable verbs (``ruft ... an``), present perfect with the participle
at the end (with ``haben`` or ``sein``), ``gestern`` -> English simple past, ``morgen`` -> ``will``,
negation with ``nicht`` -> ``do/does not``, yes/no questions -> ``do``-support, articles and possessives
with gender and case (der/die/das, den, dem, ein/eine/einen, mein, unser), adjective endings
(-e/-en/-er/-es), plurals (with the dative plural -n) and verb conjugation by person.

Entry point: :func:`synthetic_translation_corpus`, a ``DatasetDict`` with a ``translation`` column of
``{"de": ..., "en": ...}`` dicts, the shape of ``wmt/wmt14`` and ``IWSLT/iwslt2017``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import datasets

# ----------------------------------------------------------------------------------------- lexicon


@dataclass(frozen=True)
class Noun:
    de_sg: str
    de_pl: str
    gender: str  # "m", "f" or "n"
    en_sg: str
    en_pl: str
    tags: frozenset[str]


def _noun(de_sg: str, de_pl: str, gender: str, en_sg: str, en_pl: str, tags: str) -> Noun:
    return Noun(de_sg, de_pl, gender, en_sg, en_pl, frozenset(tags.split()))


# fmt: off
NOUNS = [
    _noun("Mann", "Männer", "m", "man", "men", "human animate unowned"),
    _noun("Frau", "Frauen", "f", "woman", "women", "human animate unowned"),
    _noun("Kind", "Kinder", "n", "child", "children", "human animate"),
    _noun("Lehrer", "Lehrer", "m", "teacher", "teachers", "human animate"),
    _noun("Mädchen", "Mädchen", "n", "girl", "girls", "human animate"),
    _noun("Arzt", "Ärzte", "m", "doctor", "doctors", "human animate"),
    _noun("Hund", "Hunde", "m", "dog", "dogs", "animal animate"),
    _noun("Katze", "Katzen", "f", "cat", "cats", "animal animate"),
    _noun("Vogel", "Vögel", "m", "bird", "birds", "animal animate"),
    _noun("Pferd", "Pferde", "n", "horse", "horses", "animal animate"),
    _noun("Apfel", "Äpfel", "m", "apple", "apples", "food thing"),
    _noun("Kuchen", "Kuchen", "m", "cake", "cakes", "food thing"),
    _noun("Banane", "Bananen", "f", "banana", "bananas", "food thing"),
    _noun("Buch", "Bücher", "n", "book", "books", "read open thing"),
    _noun("Brief", "Briefe", "m", "letter", "letters", "read open thing"),
    _noun("Zeitung", "Zeitungen", "f", "newspaper", "newspapers", "read thing"),
    _noun("Tür", "Türen", "f", "door", "doors", "open thing"),
    _noun("Fenster", "Fenster", "n", "window", "windows", "open thing"),
    _noun("Tasche", "Taschen", "f", "bag", "bags", "open thing"),
    _noun("Auto", "Autos", "n", "car", "cars", "vehicle thing"),
    _noun("Haus", "Häuser", "n", "house", "houses", "thing"),
    _noun("Blume", "Blumen", "f", "flower", "flowers", "flower thing"),
]

# adjective stem, English, noun tags it may describe (empty: any noun)
ADJECTIVES = [
    ("groß", "big", ""),
    ("klein", "small", ""),
    ("alt", "old", ""),
    ("schön", "beautiful", ""),
    ("jung", "young", "animate"),
    ("müd", "tired", "animate"),  # müde: stem + ending gives müde/müden/müder/müdes
    ("hungrig", "hungry", "animate"),
    ("neu", "new", "read open vehicle"),
    ("rot", "red", "thing animal"),
    ("schnell", "fast", "animal vehicle"),
]

# fmt: on


@dataclass(frozen=True)
class Verb:
    de: tuple[str, ...]  # present tense, persons ich du er wir ihr sie (without separable particle)
    particle: str  # separable particle ("an" in anrufen) or ""
    participle: str
    aux: str  # "haben" or "sein"
    en: tuple[str, str, str, str]  # base, 3rd singular, simple past, past participle
    subject: str  # tag the subject noun must carry
    objects: frozenset[str]  # tags an object noun may carry; empty: intransitive


def _verb(
    de: str, particle: str, participle: str, aux: str, en: str, subject: str, objects: str = ""
) -> Verb:
    base, third, past, part = en.split("|")
    return Verb(
        tuple(de.split()),
        particle,
        participle,
        aux,
        (base, third, past, part),
        subject,
        frozenset(objects.split()),
    )


# fmt: off
VERBS = [
    _verb("sehe siehst sieht sehen seht sehen", "", "gesehen", "haben", "see|sees|saw|seen", "animate", "animate thing"),
    _verb("kaufe kaufst kauft kaufen kauft kaufen", "", "gekauft", "haben", "buy|buys|bought|bought", "human", "thing"),
    _verb("lese liest liest lesen lest lesen", "", "gelesen", "haben", "read|reads|read|read", "human", "read"),
    _verb("finde findest findet finden findet finden", "", "gefunden", "haben", "find|finds|found|found", "animate", "animate thing"),
    _verb("suche suchst sucht suchen sucht suchen", "", "gesucht", "haben", "look for|looks for|looked for|looked for", "animate", "animate thing"),
    _verb("esse isst isst essen esst essen", "", "gegessen", "haben", "eat|eats|ate|eaten", "animate", "food"),
    _verb("brauche brauchst braucht brauchen braucht brauchen", "", "gebraucht", "haben", "need|needs|needed|needed", "human", "thing"),
    _verb("male malst malt malen malt malen", "", "gemalt", "haben", "paint|paints|painted|painted", "human", "animate thing"),
    _verb("schreibe schreibst schreibt schreiben schreibt schreiben", "", "geschrieben", "haben", "write|writes|wrote|written", "human", "read"),
    _verb("öffne öffnest öffnet öffnen öffnet öffnen", "", "geöffnet", "haben", "open|opens|opened|opened", "human", "open"),
    _verb("liebe liebst liebt lieben liebt lieben", "", "geliebt", "haben", "love|loves|loved|loved", "human", "animate"),
    _verb("rufe rufst ruft rufen ruft rufen", "an", "angerufen", "haben", "call|calls|called|called", "human", "human"),
    _verb("hole holst holt holen holt holen", "ab", "abgeholt", "haben", "pick up|picks up|picked up|picked up", "human", "human read"),
    _verb("bringe bringst bringt bringen bringt bringen", "mit", "mitgebracht", "haben", "bring|brings|brought|brought", "human", "food read flower"),
    _verb("mache machst macht machen macht machen", "auf", "aufgemacht", "haben", "open|opens|opened|opened", "human", "open"),
    _verb("schlafe schläfst schläft schlafen schlaft schlafen", "", "geschlafen", "haben", "sleep|sleeps|slept|slept", "animate"),
    _verb("laufe läufst läuft laufen lauft laufen", "", "gelaufen", "sein", "run|runs|ran|run", "animate"),
    _verb("komme kommst kommt kommen kommt kommen", "", "gekommen", "sein", "come|comes|came|come", "animate"),
    _verb("lache lachst lacht lachen lacht lachen", "", "gelacht", "haben", "laugh|laughs|laughed|laughed", "human"),
    _verb("arbeite arbeitest arbeitet arbeiten arbeitet arbeiten", "", "gearbeitet", "haben", "work|works|worked|worked", "human"),
    _verb("singe singst singt singen singt singen", "", "gesungen", "haben", "sing|sings|sang|sung", "animate"),
    _verb("spiele spielst spielt spielen spielt spielen", "", "gespielt", "haben", "play|plays|played|played", "animate"),
    _verb("komme kommst kommt kommen kommt kommen", "an", "angekommen", "sein", "arrive|arrives|arrived|arrived", "animate"),
]

# verbs that take a dass-clause: present forms, English base and 3rd singular
MATRIX_VERBS = [
    (("glaube", "glaubst", "glaubt", "glauben", "glaubt", "glauben"), "think", "thinks"),
    (("sage", "sagst", "sagt", "sagen", "sagt", "sagen"), "say", "says"),
    (("weiß", "weißt", "weiß", "wissen", "wisst", "wissen"), "know", "knows"),
    (("hoffe", "hoffst", "hofft", "hoffen", "hofft", "hoffen"), "hope", "hopes"),
]
CONJUNCTIONS = [("weil", "because"), ("obwohl", "although")]
PLACES = [
    ("im Park", "in the park"),
    ("im Garten", "in the garden"),
    ("in der Schule", "at school"),
    ("zu Hause", "at home"),
    ("in der Stadt", "in the city"),
    ("am Bahnhof", "at the station"),
]
TIME_ADVERBS = {"heute": "today", "morgen": "tomorrow", "gestern": "yesterday"}
AUX = {
    "haben": ("habe", "hast", "hat", "haben", "habt", "haben"),
    "sein": ("bin", "bist", "ist", "sind", "seid", "sind"),
}
PRONOUNS = [("ich", "I"), ("du", "you"), (None, None), ("wir", "we"), ("ihr", "you"), ("sie", "they")]
# fmt: on
THIRD_SINGULAR = 2  # person index of er/sie and of singular noun phrases; 5 is plural

# --------------------------------------------------------------------------------------- morphology

_DEFINITE = {
    "nom": {"m": "der", "f": "die", "n": "das", "pl": "die"},
    "acc": {"m": "den", "f": "die", "n": "das", "pl": "die"},
    "dat": {"m": "dem", "f": "der", "n": "dem", "pl": "den"},
}
# endings of ein/mein/unser (plural only for the possessives)
_EIN_ENDING = {
    "nom": {"m": "", "f": "e", "n": "", "pl": "e"},
    "acc": {"m": "en", "f": "e", "n": "", "pl": "e"},
    "dat": {"m": "em", "f": "er", "n": "em", "pl": "en"},
}
_WEAK = {  # adjective after der/die/das
    "nom": {"m": "e", "f": "e", "n": "e", "pl": "en"},
    "acc": {"m": "en", "f": "e", "n": "e", "pl": "en"},
    "dat": {"m": "en", "f": "en", "n": "en", "pl": "en"},
}
_MIXED = {  # adjective after ein/mein/unser
    "nom": {"m": "er", "f": "e", "n": "es", "pl": "en"},
    "acc": {"m": "en", "f": "e", "n": "es", "pl": "en"},
    "dat": {"m": "en", "f": "en", "n": "en", "pl": "en"},
}
_STRONG_PLURAL = {"nom": "e", "acc": "e", "dat": "en"}  # adjective in a plural without article
_EN_DETERMINER = {"def": "the", "mein": "my", "unser": "our", "none": ""}


@dataclass(frozen=True)
class Phrase:
    de: str
    en: str
    person: int = THIRD_SINGULAR
    definite: bool = True  # False for "ein ..." and bare plurals: those would need "kein" under negation


def _noun_phrase(rng: random.Random, case: str, tag: str | frozenset[str]) -> Phrase:
    tags = frozenset([tag]) if isinstance(tag, str) else tag
    noun = rng.choice([n for n in NOUNS if n.tags & tags])
    plural = rng.random() < 0.3
    det = rng.choice(
        ["def", "def", "none", "mein", "unser"] if plural else ["def", "def", "ein", "mein", "unser"]
    )
    if "unowned" in noun.tags and det in ("mein", "unser"):  # "mein Mann" means "my husband"
        det = "def"
    key = "pl" if plural else noun.gender
    adjective = None
    if rng.random() < 0.35:
        adjective = rng.choice([a for a in ADJECTIVES if not a[2] or noun.tags & set(a[2].split())])

    if det == "def":
        de_words, ending = [_DEFINITE[case][key]], _WEAK[case][key]
    elif det == "none":
        de_words, ending = [], _STRONG_PLURAL[case]
    else:
        de_words, ending = [det + _EIN_ENDING[case][key]], _MIXED[case][key]
    if adjective:
        de_words.append(adjective[0] + ending)
    de_noun = noun.de_pl if plural else noun.de_sg
    if plural and case == "dat" and not de_noun.endswith(("n", "s")):
        de_noun += "n"
    de_words.append(de_noun)

    en_noun = noun.en_pl if plural else noun.en_sg
    en_words = [adjective[1]] if adjective else []
    en_words.append(en_noun)
    if det == "ein":
        article = "an" if en_words[0][0] in "aeiou" else "a"
    else:
        article = _EN_DETERMINER[det]
    if article:
        en_words.insert(0, article)
    return Phrase(
        " ".join(de_words), " ".join(en_words), 5 if plural else THIRD_SINGULAR, det not in ("ein", "none")
    )


def _subject(rng: random.Random, tag: str) -> Phrase:
    if rng.random() < 0.35:
        person = rng.randrange(6)
        de, en = PRONOUNS[person]
        if person == THIRD_SINGULAR:
            de, en = rng.choice([("er", "he"), ("sie", "she")])
        return Phrase(de, en, person)
    return _noun_phrase(rng, "nom", tag)


# ------------------------------------------------------------------------------------------ clauses


@dataclass(frozen=True)
class Clause:
    subject: Phrase
    verb: Verb
    obj: Phrase | None
    with_phrase: Phrase | None
    place: tuple[str, str] | None
    adverb: str | None  # heute, morgen, gestern, oft
    perfect: bool
    negated: bool
    fronted: bool  # adverb before the finite verb (main clauses only)


def _clause(rng: random.Random, *, allow_front: bool) -> Clause:
    verb = rng.choice(VERBS)
    subject = _subject(rng, verb.subject)
    obj = _noun_phrase(rng, "acc", verb.objects) if verb.objects else None
    adverb = rng.choice([None, None, "heute", "morgen", "gestern", "oft"])
    perfect = adverb == "gestern" or (adverb != "morgen" and rng.random() < 0.35)
    negated = adverb != "oft" and (obj is None or obj.definite) and rng.random() < 0.2
    with_phrase = place = None
    if not negated:
        if rng.random() < 0.25:
            with_phrase = _noun_phrase(rng, "dat", "animate")
        if rng.random() < 0.3:
            place = rng.choice(PLACES)
    fronted = allow_front and adverb is not None and rng.random() < 0.5
    return Clause(subject, verb, obj, with_phrase, place, adverb, perfect, negated, fronted)


def _german(clause: Clause, form: str) -> list[str]:
    """Words of the German clause; form is "main", "question" or "sub" (the conjunction is added outside)."""
    c, v = clause, clause.verb
    present = v.de[c.subject.person]
    finite = AUX[v.aux][c.subject.person] if c.perfect else present
    middle = [c.adverb] if c.adverb and not (form == "main" and c.fronted) else []
    middle += [f"mit {c.with_phrase.de}"] if c.with_phrase else []
    middle += [c.obj.de] if c.obj else []
    middle += [c.place[0]] if c.place else []
    middle += ["nicht"] if c.negated else []
    if form == "sub":  # verb-final: participle + auxiliary, or the separable verb joined again
        end = [v.participle, finite] if c.perfect else [v.particle + present]
        return [c.subject.de, *middle, *end]
    end = [v.participle] if c.perfect else ([v.particle] if v.particle else [])
    if form == "question":
        return [finite, c.subject.de, *middle, *end]
    if c.fronted:
        return [c.adverb, finite, c.subject.de, *middle, *end]
    return [c.subject.de, finite, *middle, *end]


def _english(clause: Clause, form: str) -> list[str]:
    """Words of the English clause: tense from the German tense and the time adverb, do-support, SVO."""
    c = clause
    base, third_form, past, participle = c.verb.en
    third = c.subject.person == THIRD_SINGULAR
    often = ["often"] if c.adverb == "oft" else []
    if c.adverb == "morgen":
        aux, rest = "will", (["not"] if c.negated else []) + [base]
    elif c.perfect and c.adverb in ("heute", "gestern"):
        aux, rest = ("did", ["not", base]) if c.negated else (None, [past])
    elif c.perfect:
        aux, rest = "has" if third else "have", (["not"] if c.negated else often) + [participle]
    elif c.negated:
        aux, rest = "does" if third else "do", ["not", base]
    else:
        aux, rest = None, often + [third_form if third else base]
    if form == "question" and aux is None:  # do-support; past tense questions use "did"
        aux = "did" if c.perfect else ("does" if third else "do")
        rest = often + [base]

    tail = [c.obj.en] if c.obj else []
    tail += [f"with {c.with_phrase.en}"] if c.with_phrase else []
    tail += [c.place[1]] if c.place else []
    time = TIME_ADVERBS.get(c.adverb or "")
    front = []
    if time and form == "main" and c.fronted:
        front = [time]
    elif time:
        tail.append(time)
    if form == "question":
        return [aux, c.subject.en, *rest, *tail]
    return [*front, c.subject.en, *([aux] if aux else []), *rest, *tail]


def _sentence(rng: random.Random) -> tuple[str, str]:
    kind = rng.choices(["simple", "question", "conjunction", "dass"], weights=[45, 15, 20, 20])[0]
    if kind == "simple":
        clause = _clause(rng, allow_front=True)
        de, en, end = _german(clause, "main"), _english(clause, "main"), "."
    elif kind == "question":
        clause = _clause(rng, allow_front=False)
        de, en, end = _german(clause, "question"), _english(clause, "question"), "?"
    elif kind == "conjunction":
        main, sub = _clause(rng, allow_front=True), _clause(rng, allow_front=False)
        de_conj, en_conj = rng.choice(CONJUNCTIONS)
        de = [*_german(main, "main")]
        de[-1] += ","
        de += [de_conj, *_german(sub, "sub")]
        en, end = [*_english(main, "main"), en_conj, *_english(sub, "main")], "."
    else:
        subject = _subject(rng, "human")
        forms, en_base, en_third = rng.choice(MATRIX_VERBS)
        sub = _clause(rng, allow_front=False)
        de = [subject.de, forms[subject.person] + ",", "dass", *_german(sub, "sub")]
        en_verb = en_third if subject.person == THIRD_SINGULAR else en_base
        en, end = [subject.en, en_verb, "that", *_english(sub, "main")], "."
    return _finish(de, end), _finish(en, end)


def _finish(words: list[str], end: str) -> str:
    text = " ".join(words) + end
    return text[0].upper() + text[1:]


# ----------------------------------------------------------------------------------------- corpus


def synthetic_translation_corpus(
    num_train: int = 3000, num_validation: int = 200, num_test: int = 200, seed: int = 0
) -> datasets.DatasetDict:
    """Generate the toy German -> English corpus.

    Each example has 4-20 words on both sides; no German sentence appears twice, so the splits are
    disjoint. The same arguments always give the same corpus (``random.Random(seed)``).

    Returns:
        ``DatasetDict`` with ``train``/``validation``/``test`` splits and one column
        ``translation: {"de": str, "en": str}``.
    """
    rng = random.Random(seed)
    sizes = {"train": num_train, "validation": num_validation, "test": num_test}
    total = sum(sizes.values())
    pairs: list[dict[str, str]] = []
    seen: set[str] = set()
    attempts = 0
    while len(pairs) < total:
        attempts += 1
        if attempts > 50 * total + 1000:
            raise RuntimeError(
                f"could only generate {len(pairs)} distinct sentences of the {total} requested"
            )
        de, en = _sentence(rng)
        if de in seen or not (4 <= len(de.split()) <= 20 and 4 <= len(en.split()) <= 20):
            continue
        seen.add(de)
        pairs.append({"de": de, "en": en})

    features = datasets.Features({"translation": datasets.Translation(languages=["de", "en"])})
    splits, start = {}, 0
    for name, size in sizes.items():
        rows = pairs[start : start + size]
        splits[name] = datasets.Dataset.from_dict({"translation": rows}, features=features)
        start += size
    return datasets.DatasetDict(splits)
