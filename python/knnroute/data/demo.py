"""A small generated routing benchmark so the main command runs on a machine with no data.

Everything here is synthetic: the prompts are bags of topic words, the "models" are named ``demo/...``,
outcomes are drawn from a seeded generator, and the embeddings are synthetic topic clusters (so no
embedding model is needed either). Every dataset it returns has ``generated=True`` and a name, source and
summary that say so; results on it are a smoke test, never a finding.

Structure: prompts fall into topics (each split into sub-topics of different difficulty); each model has a
per-topic skill and a price, so different models are the best value on different topics, and a router
that looks at the prompt can beat every single model.
"""

from __future__ import annotations

import numpy as np

from knnroute.data.dataset import RoutingDataset
from knnroute.data.splits import random_split

DEMO_NAME = "demo-generated"


def _words(s: str) -> list[str]:
    return s.split()


# topic -> vocabulary the prompt words are drawn from
_TOPICS: dict[str, list[str]] = {
    "arithmetic": _words(
        "sum product integer fraction divide multiply remainder "
        "percent equation solve total average digits prime ratio"
    ),
    "python": _words(
        "function list dictionary loop recursion string parse "
        "class return index sort tuple generator exception"
    ),
    "history": _words(
        "empire treaty war dynasty revolution century king colony parliament battle trade republic reform"
    ),
    "medicine": _words(
        "symptom diagnosis dose patient infection chronic "
        "therapy enzyme artery clinical vaccine lesion syndrome"
    ),
    "writing": _words(
        "poem story character metaphor tone essay rhyme dialogue narrator draft imagery chapter verse"
    ),
    "law": _words(
        "contract statute liability plaintiff tort appeal "
        "clause precedent evidence verdict negligence jurisdiction"
    ),
}

# model -> (price in, price out) USD per 1M tokens, per-topic skill (log-odds), output tokens per query
_MODELS: dict[str, tuple[tuple[float, float], dict[str, float], int]] = {
    "demo/tiny": (
        (0.05, 0.10),
        {"arithmetic": -1.5, "python": -1.0, "history": 0.2, "medicine": -1.0, "writing": 0.8, "law": -1.2},
        150,
    ),
    "demo/coder": (
        (0.30, 0.60),
        {"arithmetic": 0.3, "python": 2.0, "history": -0.8, "medicine": -0.8, "writing": -0.5, "law": -0.8},
        250,
    ),
    "demo/math": (
        (0.40, 0.80),
        {"arithmetic": 2.2, "python": 0.5, "history": -0.5, "medicine": 0.0, "writing": -0.8, "law": -0.5},
        300,
    ),
    "demo/generalist": (
        (1.00, 2.00),
        {"arithmetic": 0.5, "python": 0.5, "history": 1.5, "medicine": 1.2, "writing": 1.0, "law": 1.0},
        250,
    ),
    "demo/frontier": (
        (10.0, 30.0),
        {"arithmetic": 2.5, "python": 2.5, "history": 2.2, "medicine": 2.4, "writing": 1.8, "law": 2.3},
        300,
    ),
}


def make_demo(n: int = 1200, seed: int = 0, dim: int = 32, n_subtopics: int = 3) -> RoutingDataset:
    """Generate the demo benchmark.

    Parameters
    ----------
    n : int
        Number of prompts (spread evenly over the 6 topics).
    seed : int
        Seed for every random draw; the same arguments always give the same dataset.
    dim : int
        Dimension of the synthetic embeddings.
    n_subtopics : int
        Sub-topics per topic; each has its own difficulty shift and embedding sub-centre.

    Returns
    -------
    RoutingDataset
        ``generated=True``; 0/1 scores; costs in USD from the token counts and the prices above;
        prompts, synthetic unit-norm float32 embeddings, topic groups and a seeded 70/10/20 split.
    """
    if n < 10:
        raise ValueError(f"the demo benchmark needs n >= 10 prompts, got {n}")
    rng = np.random.default_rng(seed)
    topics = list(_TOPICS)
    models = list(_MODELS)
    t_of = np.arange(n) % len(topics)
    rng.shuffle(t_of)
    sub_of = rng.integers(0, n_subtopics, size=n)

    centres = rng.normal(size=(len(topics), dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sub_centres = rng.normal(size=(len(topics), n_subtopics, dim)) * 0.5
    difficulty = rng.normal(0.0, 1.0, size=(len(topics), n_subtopics))
    emb = centres[t_of] + sub_centres[t_of, sub_of] + rng.normal(0.0, 0.35, size=(n, dim))

    prompts: list[str] = []
    for i in range(n):
        words = _TOPICS[topics[t_of[i]]]
        k = int(rng.integers(6, 14))
        body = " ".join(rng.choice(words, size=k))
        prompts.append(f"[generated demo prompt {i}, {topics[t_of[i]]} / part {sub_of[i]}] {body}?")

    in_tokens = np.array([len(p) / 4.0 for p in prompts])
    scores = np.empty((n, len(models)))
    costs = np.empty((n, len(models)))
    for j, mname in enumerate(models):
        (pin, pout), skill, out_tok = _MODELS[mname]
        logit = np.array([skill[topics[t]] for t in t_of]) - difficulty[t_of, sub_of]
        p = 1.0 / (1.0 + np.exp(-logit))
        scores[:, j] = (rng.random(n) < p).astype(float)
        out = out_tok * rng.uniform(0.5, 1.5, size=n)
        costs[:, j] = (in_tokens * pin + out * pout) / 1e6

    return RoutingDataset(
        name=DEMO_NAME,
        model_names=models,
        scores=scores,
        costs=costs,
        ids=np.asarray([f"demo-{i}" for i in range(n)], dtype=object),
        prompts=prompts,
        embeddings=emb.astype(np.float32),
        prices={m: _MODELS[m][0] for m in models},
        groups=np.asarray([topics[t] for t in t_of], dtype=object),
        split=random_split(n, seed),
        generated=True,
        source=f"GENERATED by knnroute.data.demo.make_demo(n={n}, seed={seed}, dim={dim})",
        meta={
            "split_source": f"seeded random 70/10/20 (seed={seed})",
            "embedder": f"synthetic topic clusters (dim={dim}); not a text encoder",
            "cost_model": "synthetic: (chars/4 x input price + random output tokens x output price) / 1e6",
            "score_mapping": "synthetic 0/1 draws from per-topic model skills",
            "notes": ["generated data: use it to check that the tool runs, not to compare routers"],
        },
    )
