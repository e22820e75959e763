"""Instruction embeddings, fixed arena evaluation sets and embedding-neighbour decontamination.

Arena Learning rates models on fixed, decontaminated evaluation sets (WizardArena) instead of prompts
redrawn every round, so ratings of different rounds compare:

- a **diverse** set: the instructions' embeddings are clustered by k-means (`diverse / perCluster`
  clusters) and the `perCluster` instructions nearest to each centroid are taken;
- a **hard** set: the instructions with the highest `difficulty` (a judge's 1-10 score when the rows
  carry one, the heuristic otherwise), chosen from the rows the diverse set left.

Both are held out of the training data. Decontamination by embedding neighbours (Arena Learning
removes the instructions whose embedding neighbours are benchmark items, top 5): for each benchmark
prompt, its k nearest instructions at or above a cosine similarity are removed; it catches paraphrases
that the n-gram rule (`decontaminate`) misses.

Embeddings: an encoder folder (mean-pooled last hidden states) when `data.embedding` is set, else
hashed word uni- and bigram TF-IDF vectors — no model, deterministic, good enough to cluster topics
and to find near-paraphrases. Vectors are L2-normalised, so a dot product is the cosine similarity.

All selections are pure functions of their inputs and the seed.

References: Luo et al., 2024 (Arena Learning: WizardArena's diverse and hard test sets, embedding
decontamination).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
from posttrain.api.data import DataConfig

from posttrain_trainer.data.decontaminate import read_prompts
from posttrain_trainer.data.sources import USER, Corpus

HASHED_DIMENSIONS = 1 << 12
"""Width of the hashed TF-IDF vectors."""

_WORD = re.compile(r"\w+", re.UNICODE)


def _features(text: str) -> list[int]:
    words = _WORD.findall(text.lower())
    grams = words + [f"{a} {b}" for a, b in pairwise(words)]
    return [zlib.crc32(g.encode("utf-8")) for g in grams]


def inverse_document_frequency(texts: Sequence[str], dimensions: int = HASHED_DIMENSIONS) -> np.ndarray:
    """Smoothed IDF of every hashed feature over `texts`."""
    frequency = np.zeros(dimensions, dtype=np.float64)
    for text in texts:
        frequency[np.unique(np.array(_features(text), dtype=np.int64) % dimensions)] += 1
    return np.log((1.0 + len(texts)) / (1.0 + frequency)) + 1.0


def hashed_vectors(texts: Sequence[str], idf: np.ndarray | None = None) -> np.ndarray:
    """L2-normalised TF-IDF vectors of hashed word uni- and bigrams (sign-hashed to halve collisions).

    Args:
        texts: the texts to embed.
        idf: feature weights (`inverse_document_frequency`); None: computed over `texts`. Pass one
            shared IDF when two sets are embedded separately and then compared.

    Returns:
        A float32 array (len(texts), HASHED_DIMENSIONS).
    """
    weights = inverse_document_frequency(texts) if idf is None else idf
    dimensions = len(weights)
    vectors = np.zeros((len(texts), dimensions), dtype=np.float64)
    for row, text in enumerate(texts):
        codes = np.array(_features(text), dtype=np.int64)
        if len(codes):
            np.add.at(vectors[row], codes % dimensions, np.where((codes >> 20) & 1, -1.0, 1.0))
    vectors = np.sign(vectors) * np.log1p(np.abs(vectors)) * weights
    return normalise(vectors).astype(np.float32)


def encoder_vectors(
    texts: Sequence[str], folder: Path, batch_size: int = 32, max_length: int = 512
) -> np.ndarray:
    """L2-normalised mean-pooled last hidden states of an encoder model folder."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder)).eval()
    out: list[np.ndarray] = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[start : start + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        out.append(pooled.numpy())
    if not out:
        return np.zeros((0, 1), dtype=np.float32)
    return normalise(np.concatenate(out)).astype(np.float32)


def embed(texts: Sequence[str], encoder: Path | None = None, idf: np.ndarray | None = None) -> np.ndarray:
    """Instruction embeddings: the encoder's when a folder is given, else hashed TF-IDF vectors."""
    if encoder is not None:
        return encoder_vectors(texts, encoder)
    return hashed_vectors(texts, idf)


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    scaled: np.ndarray = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    return scaled


def kmeans(
    vectors: np.ndarray, clusters: int, seed: int, iterations: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means (cosine) with k-means++ seeding.

    Returns:
        (centroids (k, d), the cluster of every vector).
    """
    count = len(vectors)
    clusters = max(1, min(clusters, count))
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(count))]
    distance = 1.0 - vectors @ vectors[chosen[0]]
    for _ in range(1, clusters):
        weights = np.clip(distance, 0.0, None) ** 2
        total = weights.sum()
        pick = int(rng.choice(count, p=weights / total)) if total > 0 else int(rng.integers(count))
        chosen.append(pick)
        distance = np.minimum(distance, 1.0 - vectors @ vectors[pick])
    centroids = vectors[chosen].astype(np.float64)
    assignment = np.full(count, -1, dtype=np.int64)
    for _ in range(iterations):
        updated = np.argmax(vectors @ centroids.T, axis=1)
        if np.array_equal(updated, assignment):
            break
        assignment = updated
        for cluster in range(clusters):
            members = vectors[assignment == cluster]
            if len(members):
                centroids[cluster] = members.sum(axis=0)
        centroids = normalise(centroids)
    return centroids, assignment


def diverse_selection(vectors: np.ndarray, size: int, per_cluster: int, seed: int) -> np.ndarray:
    """Indices of a diverse set: the `per_cluster` vectors nearest to each k-means centroid.

    Clusters are `ceil(size / per_cluster)`; a smaller cluster gives all it has, and the set is topped
    up with the next-nearest members of the largest clusters when clusters ran short. Sorted.
    """
    if size <= 0 or not len(vectors):
        return np.zeros(0, dtype=np.int64)
    if size >= len(vectors):
        return np.arange(len(vectors), dtype=np.int64)
    centroids, assignment = kmeans(vectors, -(-size // per_cluster), seed)
    similarity = np.einsum("ij,ij->i", vectors, centroids[assignment])
    ranked: list[list[int]] = []
    for cluster in range(len(centroids)):
        members = np.flatnonzero(assignment == cluster)
        ranked.append([int(i) for i in members[np.lexsort((members, -similarity[members]))]])
    picked = [i for members in ranked for i in members[:per_cluster]]
    leftovers = sorted(
        (
            (len(members), -position, i)
            for members in ranked
            for position, i in enumerate(members[per_cluster:])
        ),
        reverse=True,
    )
    picked += [i for _, _, i in leftovers[: max(0, size - len(picked))]]
    return np.array(sorted(picked[:size]), dtype=np.int64)


def hardest(difficulty: np.ndarray, size: int, excluded: np.ndarray) -> np.ndarray:
    """Indices of the `size` highest difficulty scores outside `excluded` (ties: the earlier row). Sorted."""
    if size <= 0:
        return np.zeros(0, dtype=np.int64)
    allowed = np.setdiff1d(np.arange(len(difficulty)), excluded)
    order = allowed[np.lexsort((allowed, -difficulty[allowed]))]
    return np.sort(order[:size]).astype(np.int64)


def neighbour_contaminated(
    chunks: Iterable[np.ndarray], benchmark: np.ndarray, neighbours: int, min_similarity: float
) -> np.ndarray:
    """True for each instruction among the `neighbours` nearest of some benchmark prompt.

    Only neighbours with a cosine similarity of at least `min_similarity` count.

    Args:
        chunks: the instructions' embeddings, a block of rows at a time (memory stays bounded).
        benchmark: the benchmark prompts' embeddings.
        neighbours: k nearest instructions per benchmark prompt.
        min_similarity: the similarity from which a neighbour counts.

    Returns:
        One flag per instruction, in the order of the chunks.
    """
    best = np.full((len(benchmark), max(neighbours, 1)), -np.inf)
    owner = np.full(best.shape, -1, dtype=np.int64)
    seen = 0
    for block in chunks:
        if neighbours > 0 and len(benchmark) and len(block):
            similarity = np.concatenate([best, benchmark @ block.T], axis=1)
            index = np.concatenate(
                [owner, np.broadcast_to(np.arange(seen, seen + len(block)), (len(benchmark), len(block)))],
                axis=1,
            )
            top = np.argsort(-similarity, axis=1, kind="stable")[:, :neighbours]
            best = np.take_along_axis(similarity, top, axis=1)
            owner = np.take_along_axis(index, top, axis=1)
        seen += len(block)
    flagged = np.zeros(seen, dtype=bool)
    if neighbours > 0:
        flagged[owner[(best >= min_similarity) & (owner >= 0)]] = True
    return flagged


@dataclass(frozen=True)
class EvalSelection:
    """The rows (indices into the corpus) of the fixed evaluation sets."""

    diverse: np.ndarray
    hard: np.ndarray

    @property
    def rows(self) -> np.ndarray:
        """Every held-out row."""
        return np.union1d(self.diverse, self.hard)


def select_eval_sets(
    candidates: np.ndarray,
    vectors: np.ndarray | None,
    difficulty: np.ndarray,
    diverse: int,
    per_cluster: int,
    hard: int,
    seed: int,
) -> EvalSelection:
    """The diverse and the hard set among `candidates` (corpus rows).

    Args:
        candidates: corpus row indices eligible (clean, not contaminated).
        vectors: their embeddings (row i of `vectors` is `candidates[i]`); None when `diverse` is 0.
        difficulty: the difficulty score of every corpus row.
        diverse: size of the diverse set.
        per_cluster: prompts per k-means cluster.
        hard: size of the hard set.
        seed: the k-means seed.
    """
    picked = np.zeros(0, dtype=np.int64)
    if diverse and vectors is not None:
        picked = candidates[diverse_selection(vectors, diverse, per_cluster, seed)]
    remaining = np.setdiff1d(candidates, picked)
    hard_rows = remaining[hardest(difficulty[remaining], hard, np.zeros(0, dtype=np.int64))]
    return EvalSelection(diverse=np.sort(picked), hard=np.sort(hard_rows))


CLUSTER_SAMPLE = 20_000
"""At most this many candidates (a seeded sample) are embedded and clustered for the diverse set."""
CHUNK = 4096
"""Instructions embedded at a time for neighbour decontamination."""


def instruction_texts(corpus: Corpus, rows: np.ndarray) -> list[str]:
    """The first user message of each of the corpus rows."""
    taken = corpus.take(rows)
    roles = taken.roles
    contents = taken.contents
    offsets = taken.offsets.tolist()
    out = []
    for row in range(len(rows)):
        users = np.flatnonzero(roles[offsets[row] : offsets[row + 1]] == USER)
        out.append(str(contents[offsets[row] + int(users[0])]) if len(users) else "")
    return out


@dataclass(frozen=True)
class HeldOut:
    """What `hold_out` removed from the training candidates."""

    contaminated: np.ndarray
    """Rows flagged as embedding neighbours of a benchmark prompt (a mask over the corpus)."""
    selection: EvalSelection
    """The fixed evaluation sets."""


def hold_out(
    corpus: Corpus | None,
    keep: np.ndarray,
    difficulty: np.ndarray,
    settings: DataConfig,
    encoder: Path | None,
) -> HeldOut:
    """Neighbour decontamination, then the fixed evaluation sets, over the kept rows of the corpus.

    `corpus` needs only each row's first user message, and only when instructions are embedded
    (`scan.needs_instructions`); `keep` says how many rows there are.
    """
    contamination = settings.decontamination
    benchmarks = [b.uri for b in contamination.benchmarks if b.uri]
    flagged = np.zeros(len(keep), dtype=bool)
    candidates = np.flatnonzero(keep)
    rng = np.random.default_rng(settings.seed)
    idf: np.ndarray | None = None
    if contamination.neighbours and benchmarks and len(candidates):
        assert corpus is not None, "neighbour decontamination embeds the instructions"
        prompts = read_prompts(benchmarks)
        sample = rng.choice(candidates, min(len(candidates), CLUSTER_SAMPLE), replace=False)
        idf = None if encoder else inverse_document_frequency([*prompts, *instruction_texts(corpus, sample)])
        benchmark = embed(prompts, encoder, idf)
        chunks = (
            embed(instruction_texts(corpus, candidates[start : start + CHUNK]), encoder, idf)
            for start in range(0, len(candidates), CHUNK)
        )
        flagged[
            candidates[
                neighbour_contaminated(
                    chunks, benchmark, contamination.neighbours, contamination.min_similarity
                )
            ]
        ] = True
        candidates = candidates[~flagged[candidates]]
    sets = settings.eval_sets
    vectors = None
    pool = candidates
    if sets.diverse and len(candidates):
        assert corpus is not None, "the diverse set embeds the instructions"
        pool = np.sort(rng.choice(candidates, min(len(candidates), CLUSTER_SAMPLE), replace=False))
        vectors = embed(instruction_texts(corpus, pool), encoder)
    selection = select_eval_sets(pool, vectors, difficulty, sets.diverse, sets.per_cluster, 0, settings.seed)
    hard = select_eval_sets(
        np.setdiff1d(candidates, selection.diverse), None, difficulty, 0, 1, sets.hard, settings.seed
    ).hard
    return HeldOut(flagged, EvalSelection(selection.diverse, hard))
