"""A small, deterministic multi-label topic corpus with a long tail of rare labels.

Each document has 1-4 topic labels. Label frequencies follow a Zipf-like law, so the rarest labels
occur in well under 2% of documents (the regime where asymmetric losses help). Each label has its own
keywords; documents also contain shared filler words, keywords that belong to two topics, and
distractor keywords of labels they do not carry, so the task is learnable but not trivial.

Entry point: :func:`synthetic_multilabel_corpus`, a ``DatasetDict`` with ``text: str`` and
``labels: list[str]`` (label names), like ``ucirvine/reuters21578``'s ``topics``.
"""

from __future__ import annotations

import random

import datasets

# Topic -> keywords, in order of decreasing frequency. Some keywords are deliberately shared.
# fmt: off
TOPIC_KEYWORDS: dict[str, list[str]] = {
    "politics": ["election", "parliament", "minister", "vote", "policy", "campaign", "senator", "coalition"],
    "sports": ["match", "goal", "league", "coach", "tournament", "season", "striker", "stadium"],
    "finance": ["market", "shares", "investor", "bank", "interest", "bonds", "earnings", "dividend"],
    "technology": ["software", "chip", "startup", "cloud", "smartphone", "algorithm", "network", "device"],
    "health": ["patients", "hospital", "vaccine", "doctor", "disease", "treatment", "clinic", "symptoms"],
    "science": ["researchers", "laboratory", "experiment", "study", "physics", "molecule", "theory", "data"],
    "music": ["album", "concert", "band", "singer", "guitar", "chart", "song", "tour"],
    "film": ["movie", "director", "actor", "premiere", "screenplay", "cinema", "studio", "trailer"],
    "travel": ["flight", "hotel", "tourists", "airport", "destination", "passport", "beach", "tour"],
    "food": ["recipe", "restaurant", "chef", "flavor", "kitchen", "dessert", "ingredients", "menu"],
    "education": ["students", "school", "teachers", "curriculum", "university", "exam", "classroom", "study"],
    "environment": ["climate", "emissions", "pollution", "forest", "wildlife", "recycling", "drought", "species"],
    "law": ["court", "judge", "lawsuit", "verdict", "attorney", "ruling", "appeal", "trial"],
    "energy": ["oil", "solar", "pipeline", "turbine", "grid", "electricity", "gas", "emissions"],
    "real_estate": ["housing", "mortgage", "rent", "property", "apartment", "market", "tenants", "developer"],
    "gaming": ["console", "players", "esports", "level", "multiplayer", "game", "controller", "studio"],
    "space": ["rocket", "orbit", "astronauts", "satellite", "launch", "telescope", "mars", "galaxy"],
    "agriculture": ["farmers", "crops", "harvest", "wheat", "soil", "irrigation", "livestock", "drought"],
    "fashion": ["designer", "runway", "collection", "fabric", "models", "boutique", "style", "couture"],
    "crime": ["police", "arrest", "suspect", "robbery", "investigation", "detectives", "fraud", "trial"],
    "art": ["gallery", "painting", "exhibition", "sculpture", "artist", "museum", "canvas", "auction"],
    "weather": ["storm", "rainfall", "forecast", "temperatures", "snow", "hurricane", "wind", "heatwave"],
    "military": ["troops", "army", "defense", "soldiers", "navy", "missile", "general", "drills"],
    "automotive": ["car", "engine", "electric", "vehicle", "dealership", "battery", "sedan", "recall"],
}
# fmt: on
SHARED_WORDS = (
    "the a of and to in on for with that this was is are were will said new year people report "
    "week today also more than after before about over many some most local national global group "
    "officials company plan team public recent early late major small large first last two three "
    "during while because however according announced expected several including between city "
    "country government region statement monday friday million percent number time day month"
).split()
MAX_LABELS = len(TOPIC_KEYWORDS)
ZIPF_EXPONENT = 1.5  # label k has weight (k + 1) ** -ZIPF_EXPONENT


def synthetic_multilabel_corpus(
    num_train: int = 2000, num_validation: int = 300, num_test: int = 300, num_labels: int = 20, seed: int = 0
) -> datasets.DatasetDict:
    """Generate the toy multi-label topic corpus.

    Args:
        num_train, num_validation, num_test: split sizes.
        num_labels: how many topics to use (2 to ``MAX_LABELS``); topic ``k`` has weight ``(k + 1) ** -ZIPF_EXPONENT``.
        seed: seed of the ``random.Random`` that generates everything; same arguments, same corpus.

    Returns:
        ``DatasetDict`` with ``train``/``validation``/``test`` and columns ``text`` (20-80 words) and
        ``labels`` (1-4 distinct topic names, sorted).
    """
    if not 2 <= num_labels <= MAX_LABELS:
        raise ValueError(f"num_labels must be between 2 and {MAX_LABELS}, got {num_labels}")
    rng = random.Random(seed)
    topics = list(TOPIC_KEYWORDS)[:num_labels]
    weights = [(rank + 1) ** -ZIPF_EXPONENT for rank in range(num_labels)]
    splits = {}
    for name, size in (("train", num_train), ("validation", num_validation), ("test", num_test)):
        rows = [_document(rng, topics, weights) for _ in range(size)]
        splits[name] = datasets.Dataset.from_dict(
            {"text": [text for text, _ in rows], "labels": [labels for _, labels in rows]},
            features=datasets.Features(
                {"text": datasets.Value("string"), "labels": datasets.List(datasets.Value("string"))}
            ),
        )
    return datasets.DatasetDict(splits)


def _document(rng: random.Random, topics: list[str], weights: list[float]) -> tuple[str, list[str]]:
    num = rng.choices([1, 2, 3, 4], weights=[40, 30, 20, 10])[0]
    chosen: list[str] = []
    while len(chosen) < num:  # weighted sampling without replacement
        topic = rng.choices(topics, weights=weights)[0]
        if topic not in chosen:
            chosen.append(topic)

    words = []
    for topic in chosen:
        words += rng.choices(TOPIC_KEYWORDS[topic], k=rng.randint(2, 5))
    if rng.random() < 0.4:  # distractor: a keyword or two of a topic the document does not have
        other = rng.choice([t for t in topics if t not in chosen])
        words += rng.choices(TOPIC_KEYWORDS[other], k=rng.randint(1, 2))
    length = max(rng.randint(20, 80), len(words) + 8)
    words += rng.choices(SHARED_WORDS, k=length - len(words))
    rng.shuffle(words)

    sentences, start = [], 0
    while start < len(words):
        stop = min(len(words), start + rng.randint(6, 14))
        chunk = words[start:stop]
        sentences.append(" ".join([chunk[0].capitalize(), *chunk[1:]]) + ".")
        start = stop
    return " ".join(sentences), sorted(chosen)
