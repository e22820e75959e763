"""Benchmark of the data workload (a script, not collected by pytest).

    python tests/bench/bench_data.py [--rows 100000 1000000] [--repeats 3] [--data-dir DIR]
                                     [--memory-limit GIB ...]

1. Pipeline, for each `--rows` size: reading + analysis + exact dedup + weighted sampling of a
   generated JSONL file (OpenAI messages, 5% exact duplicates), against the baseline polars
   `scan_ndjson` computing the same lengths (characters and words of every message) and hashes (of
   the normalised instruction, keeping the first of each) in the same run. posttrain runs the
   workload's own first pass (`data.scan`: a block at a time, no text kept). Prints seconds, rows/s
   and peak RSS of both and the ratio (goal: >= 1.0x).
2. Whole workload: `run(config)` on the same file (also near-dedup, the second pass writing the
   dataset, the report and its plots): seconds, peak RSS and peak virtual memory, the figures that
   size a pod; with `--memory-limit`, again with the address space limited (`RLIMIT_AS`).
3. Growth: how time and peak RSS grow from one size to the next, and the largest corpus of this
   shape the whole workload handles within common memory limits (a line fitted through the sizes).
4. MinHash: docs/s of `dedup.MinHasher` (with its vectorised word and shingle hashing) against
   datasketch `MinHash.update_batch`, same permutations count and the same shingles (5-word shingles of
   the normalised text), both starting from the text; also against datasketch given the shingles
   ready-made. Prints the ratios (goal: >= 5x) and both estimators' error against the exact Jaccard.

Each pipeline measurement runs in a fresh process (a warm-up run, then the timed run; sizes from
`--no-warmup-from` rows on skip the warm-up), alternating posttrain and polars, so neither's threads
or memory pools slow the other; the figures are medians of `--repeats` such runs (`--in-process`:
interleaved runs in this process instead). Peak RSS is the process's maximum resident set
(`ru_maxrss`). The MinHash timings are medians of interleaved runs in this process. The data is
generated with numpy (`generate`: 10M rows, 6.8 GB, in a few minutes) and kept with `--data-dir`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "trainer")]

from posttrain.api.data import CategoryRule, DataConfig  # noqa: E402
from posttrain_trainer.data.dedup import MinHasher, exact_duplicates, similarity  # noqa: E402
from posttrain_trainer.data.sampling import Target, sample  # noqa: E402
from posttrain_trainer.data.scan import scan  # noqa: E402
from posttrain_trainer.data.text import ngrams, words  # noqa: E402

RULES = [
    CategoryRule(name="coding", keywords=["python", "function", "code", "sql"]),
    CategoryRule(name="math", keywords=["sum", "solve", "equation", "number"]),
    CategoryRule(name="writing", keywords=["poem", "story", "essay"]),
]
WEIGHTS = {"coding": 0.3, "math": 0.2, "writing": 0.2, "general": 0.3}
SHINGLE = 5
NUM_PERM = 128


def vocabulary(rng: random.Random) -> list[str]:
    common = [
        "the",
        "of",
        "and",
        "to",
        "in",
        "is",
        "you",
        "that",
        "it",
        "for",
        "on",
        "are",
        "as",
        "with",
        "be",
        "this",
        "have",
        "from",
        "or",
        "by",
        "what",
        "how",
    ]
    topical = [
        "python",
        "function",
        "code",
        "sql",
        "sum",
        "solve",
        "equation",
        "number",
        "poem",
        "story",
        "essay",
    ]
    rare = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
        for _ in range(3000)
    ]
    return common * 20 + topical * 3 + rare


GENERATE_CHUNK = 20_000
"""Rows generated at a time (each chunk's duplicates copy an earlier row of the same chunk)."""


class _Tokens:
    """The byte strings rows are assembled from: words in four spellings, punctuation, JSON framing."""

    def __init__(self, words_: list[str]) -> None:
        spellings = [
            [f" {w}" for w in words_],  # a word inside a sentence
            [w[0].upper() + w[1:] for w in words_],  # the first word of a text
            [f" {w[0].upper()}{w[1:]}" for w in words_],  # the first word of a later sentence
            list(words_),  # the first word of a lower-cased copy
        ]
        framing = [
            ".",
            "?",
            "!",
            '{"messages": [{"role": "user", "content": "',
            '"}, {"role": "assistant", "content": "',
            '"}]}\n',
        ]
        texts = [t for group in spellings for t in group] + framing
        self.size = len(words_)
        self.inside, self.first, self.later, self.lower = (k * self.size for k in range(4))
        self.punctuation = 4 * self.size
        self.prefix, self.middle, self.suffix = (4 * self.size + 3 + k for k in range(3))
        encoded = [t.encode() for t in texts]
        self.length = np.array([len(b) for b in encoded], dtype=np.int64)
        self.start = np.concatenate([[0], np.cumsum(self.length)[:-1]])
        self.data = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def render(self, tokens: np.ndarray) -> bytes:
        """The bytes of a token sequence."""
        lengths = self.length[tokens]
        out_start = np.cumsum(lengths) - lengths
        positions = np.repeat(self.start[tokens] - out_start, lengths) + np.arange(int(lengths.sum()))
        return bytes(self.data[positions].tobytes())


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenated index ranges start .. start + length."""
    ends = np.cumsum(lengths)
    indices: np.ndarray = np.repeat(starts - (ends - lengths), lengths) + np.arange(
        int(ends[-1]) if len(ends) else 0
    )
    return indices


def _sentences(
    rng: np.random.Generator, tokens: _Tokens, count: int, low: int, high: int, first: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`count` sentences of `low`..`high` words and a final punctuation mark: (tokens, tokens per sentence).

    `first` gives each sentence's first-word spelling (`tokens.first` or `tokens.later`).
    """
    words_ = rng.integers(low, high + 1, count)
    lengths = words_ + 1
    flat = tokens.inside + rng.integers(0, tokens.size, int(lengths.sum()))
    starts = np.cumsum(lengths) - lengths
    flat[starts] += first - tokens.inside
    flat[starts + lengths - 1] = tokens.punctuation + rng.integers(0, 3, count)
    return flat, lengths


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """`rows` chat rows: a 6-40-word instruction (5% lower-cased copies of an earlier one), 1-6 answer sentences.

    Vectorised: every row is a sequence of tokens (words, punctuation, the JSON around them) whose
    bytes are gathered at once.
    """
    rng = np.random.default_rng(seed)
    tokens = _Tokens(vocabulary(random.Random(seed)))
    with path.open("wb") as stream:
        for begin in range(0, rows, GENERATE_CHUNK):
            count = min(GENERATE_CHUNK, rows - begin)
            copy = rng.random(count) < 0.05
            copy[0] = False
            originals = np.flatnonzero(~copy)
            # Each copy repeats an original written before it in the chunk.
            earlier = np.searchsorted(originals, np.flatnonzero(copy)) - 1
            source = np.arange(count)
            source[copy] = originals[(rng.random(int(copy.sum())) * (earlier + 1)).astype(np.int64)]
            own, own_lengths = _sentences(
                rng, tokens, len(originals), 6, 40, np.full(len(originals), tokens.first)
            )
            index = np.full(count, -1, dtype=np.int64)
            index[originals] = np.arange(len(originals))
            starts = np.cumsum(own_lengths) - own_lengths
            question_lengths = own_lengths[index[source]]
            question = own[_ranges(starts[index[source]], question_lengths)]
            question_starts = np.cumsum(question_lengths) - question_lengths
            question[question_starts[copy]] += tokens.lower - tokens.first
            sentences = rng.integers(1, 7, count)
            opening = np.zeros(int(sentences.sum()), dtype=bool)
            opening[np.cumsum(sentences) - sentences] = True
            answer, sentence_lengths = _sentences(
                rng, tokens, len(opening), 8, 30, np.where(opening, tokens.first, tokens.later)
            )
            answer_lengths = np.bincount(np.repeat(np.arange(count), sentences), sentence_lengths, count)
            answer_lengths = answer_lengths.astype(np.int64)
            # Row layout: prefix, question, middle, answer, suffix.
            row_lengths = question_lengths + answer_lengths + 3
            row_starts = np.cumsum(row_lengths) - row_lengths
            sequence = np.empty(int(row_lengths.sum()), dtype=np.int64)
            sequence[row_starts] = tokens.prefix
            sequence[_ranges(row_starts + 1, question_lengths)] = question
            sequence[row_starts + 1 + question_lengths] = tokens.middle
            sequence[_ranges(row_starts + 2 + question_lengths, answer_lengths)] = answer
            sequence[row_starts + row_lengths - 1] = tokens.suffix
            stream.write(tokens.render(sequence))


def ours(path: Path) -> dict[str, float]:
    """Read and analyse (a block at a time, as the workload does), exact dedup and sample; seconds of each step."""
    settings = DataConfig.model_validate(
        {"categories": [rule.wire() for rule in RULES], "dedup": {"exact": True, "near": False}}
    )
    times: dict[str, float] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        scanned = scan([(f"file://{path}", "auto")], settings, Path(scratch))
    times["read + analyse"] = time.perf_counter() - start
    mark = time.perf_counter()
    keep = np.flatnonzero(~exact_duplicates(scanned.exact_keys))
    times["exact dedup"] = time.perf_counter() - mark
    mark = time.perf_counter()
    category = scanned.attributes.categorical("category").take(keep)
    sample(len(keep), [Target("category", category, WEIGHTS)], None, False, 0)
    times["sample"] = time.perf_counter() - mark
    times["total"] = time.perf_counter() - start
    return times


def baseline(path: Path) -> dict[str, float]:
    """polars: characters and words of every message, a hash of the normalised instruction, first of each."""
    import polars as pl

    start = time.perf_counter()
    contents = pl.col("messages").list.eval(pl.element().struct.field("content"))
    frame = (
        pl.scan_ndjson(path)
        .select(
            contents.alias("contents"),
            pl.col("messages").list.first().struct.field("content").alias("instruction"),
        )
        .select(
            pl.col("contents").list.eval(pl.element().str.len_chars()).list.sum().alias("chars"),
            pl.col("contents").list.eval(pl.element().str.count_matches(r"\S+")).list.sum().alias("words"),
            pl.col("instruction")
            .str.to_lowercase()
            .str.replace_all(r"[^a-z0-9]+", " ")
            .str.strip_chars()
            .hash()
            .alias("key"),
        )
        .filter(pl.col("key").is_first_distinct())
        .collect()
    )
    assert frame.height > 0
    return {"total": time.perf_counter() - start}


def whole_run(path: Path, output: Path) -> float:
    """Seconds of the whole workload (one run) with targets on category and 3 difficulty slices."""
    from posttrain.api.workload import WorkloadConfig
    from posttrain_trainer.data import run

    spec = {
        "sources": [{"uri": f"file://{path}"}],
        "data": {
            "categories": [rule.wire() for rule in RULES],
            "sampling": {"targets": [{"attribute": "category", "weights": WEIGHTS}]},
            "slicing": {"count": 3, "strategy": "difficulty"},
        },
    }
    config = WorkloadConfig.model_validate(
        {
            "workload": "data",
            "kind": "DataSlice",
            "name": "bench",
            "runId": "bench",
            "outputUri": f"file://{output}",
            "spec": spec,
        }
    )
    start = time.perf_counter()
    run(config)
    return time.perf_counter() - start


def cpu_seconds() -> float:
    """User and system CPU seconds of this process so far, all threads (steadier than wall time on a shared machine)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """Peak resident set of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def isolated(path: Path, repeats: int, warm_up: bool) -> dict[str, dict[str, float]]:
    """Medians of `repeats` runs of each contender, each run in a fresh process, alternating."""
    runs: dict[str, list[dict[str, float]]] = {"posttrain": [], "polars": []}
    for _ in range(repeats):
        for name in runs:
            command = [sys.executable, __file__, "--one", name, str(path)]
            if not warm_up:
                command.append("--no-warmup-from=0")
            completed = subprocess.run(command, capture_output=True, text=True, check=True)
            runs[name].append(json.loads(completed.stdout.strip().splitlines()[-1]))
    return {
        name: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for name, results in runs.items()
    }


def whole_isolated(path: Path, output: Path, limit_gib: float | None = None) -> dict[str, float] | None:
    """The whole workload once, in a fresh process: seconds, peak RSS and peak virtual memory.

    With `limit_gib`, the process's address space is limited to that many GiB (`RLIMIT_AS`, as
    `prlimit --as` sets it: stricter than a pod's memory limit, which counts resident memory only);
    None when the workload does not finish within it.
    """

    def limit() -> None:
        if limit_gib is not None:
            size = int(limit_gib * 1024**3)
            resource.setrlimit(resource.RLIMIT_AS, (size, size))

    command = [sys.executable, __file__, "--whole-one", str(path), str(output)]
    completed = subprocess.run(command, capture_output=True, text=True, preexec_fn=limit)
    if completed.returncode != 0:
        if limit_gib is None:
            raise RuntimeError(f"the whole workload failed:\n{completed.stderr[-3000:]}")
        return None
    result: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def vm_peak_mb() -> float:
    """Peak virtual memory of this process so far, in MB (`VmPeak`; what `RLIMIT_AS` limits)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmPeak:"):
            return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


def median_runs(
    functions: dict[str, Callable[[], dict[str, float]]], repeats: int
) -> dict[str, dict[str, float]]:
    """Run each function once to warm up, then `repeats` times interleaved; medians per key."""
    for function in functions.values():
        function()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            runs[name].append(function())
    return {
        name: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for name, results in runs.items()
    }


def normalised_words(text: str) -> list[str]:
    return "".join(c if (not c.isascii() or c.isalnum()) else " " for c in text.lower()).split()


def shingles_of(text: str) -> list[bytes]:
    tokens = normalised_words(text)
    if len(tokens) < SHINGLE:
        return [" ".join(tokens).encode()]
    return [" ".join(tokens[i : i + SHINGLE]).encode() for i in range(len(tokens) - SHINGLE + 1)]


def minhash_bench(docs: int, repeats: int) -> dict[str, Any]:
    from datasketch import MinHash

    rng = random.Random(1)
    words_ = vocabulary(rng)
    # Pairs of a text and an edited copy, so the estimates can be checked against the exact Jaccard.
    texts = []
    for _ in range(docs // 2):
        base = [rng.choice(words_) for _ in range(rng.randint(60, 200))]
        edited = list(base)
        for position in rng.sample(range(len(base)), rng.randint(0, len(base) // 10)):
            edited[position] = rng.choice(words_)
        texts += [" ".join(base), " ".join(edited)]
    column = pa.array(texts, pa.large_string())
    ready = [shingles_of(t) for t in texts]

    def vectorised() -> dict[str, float]:
        start = time.perf_counter()
        MinHasher(NUM_PERM, seed=1).signatures(ngrams(words(column), SHINGLE))
        return {"total": time.perf_counter() - start}

    def datasketch_from_text() -> dict[str, float]:
        start = time.perf_counter()
        for text in texts:
            MinHash(num_perm=NUM_PERM, seed=1).update_batch(shingles_of(text))
        return {"total": time.perf_counter() - start}

    def datasketch_ready() -> dict[str, float]:
        start = time.perf_counter()
        for shingles in ready:
            MinHash(num_perm=NUM_PERM, seed=1).update_batch(shingles)
        return {"total": time.perf_counter() - start}

    timings = median_runs(
        {
            "posttrain": vectorised,
            "datasketch": datasketch_from_text,
            "datasketch (shingles given)": datasketch_ready,
        },
        repeats,
    )

    signatures, _ = MinHasher(NUM_PERM, seed=1).signatures(ngrams(words(column), SHINGLE))
    pairs = np.arange(len(texts)).reshape(-1, 2)
    ours_estimate = similarity(signatures, pairs)
    sketches = []
    for shingles in ready:
        sketch = MinHash(num_perm=NUM_PERM, seed=1)
        sketch.update_batch(shingles)
        sketches.append(sketch)
    theirs_estimate = np.array([sketches[a].jaccard(sketches[b]) for a, b in pairs])
    truth = np.array(
        [len(set(ready[a]) & set(ready[b])) / len(set(ready[a]) | set(ready[b])) for a, b in pairs]
    )
    return {
        "timings": timings,
        "docs": len(texts),
        "error": {
            "posttrain": float(np.abs(ours_estimate - truth).mean()),
            "datasketch": float(np.abs(theirs_estimate - truth).mean()),
        },
    }


LIMITS_GIB = (4, 16, 64)
"""Pod memory limits for which the largest corpus is stated."""


def pipeline(rows: int, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Generate (or reuse) a file of `rows` rows and measure the contenders and the whole workload."""
    path = folder / f"rows-{rows}.jsonl"
    if not path.exists():
        started = time.perf_counter()
        generate(path, rows)
        print(f"generated {path} in {time.perf_counter() - started:.0f}s")
    size = path.stat().st_size / 1e6
    warm_up = rows < args.no_warmup_from
    print(
        f"pipeline: {rows:,} rows, {size:,.0f} MB JSONL, median of {args.repeats} runs "
        + ("in this process" if args.in_process else "in fresh processes")
        + ("" if warm_up else " (no warm-up)")
    )
    if args.in_process:
        timings = median_runs(
            {"posttrain": lambda: ours(path), "polars": lambda: baseline(path)}, args.repeats
        )
    else:
        timings = isolated(path, args.repeats, warm_up)
    for name, steps in timings.items():
        detail = ", ".join(f"{k} {v:.2f}s" for k, v in steps.items() if k not in ("total", "rss_mb", "cpu_s"))
        rss = f", peak RSS {steps['rss_mb']:,.0f} MB" if "rss_mb" in steps else ""
        rss += f", CPU {steps['cpu_s']:.1f}s" if "cpu_s" in steps else ""
        print(
            f"  {name:10s} {rows / steps['total']:>10,.0f} rows/s  ({steps['total']:.2f}s"
            f"{'; ' + detail if detail else ''}{rss})"
        )
    ratio = timings["polars"]["total"] / timings["posttrain"]["total"]
    print(f"  ratio posttrain / polars: {ratio:.2f}x (goal >= 1.0x)")
    if "cpu_s" in timings["posttrain"]:
        print(
            f"  CPU ratio posttrain / polars: {timings['polars']['cpu_s'] / timings['posttrain']['cpu_s']:.2f}x"
        )
    out: dict[str, Any] = {"rows": rows, "mb": size, "timings": timings, "ratio": ratio}
    if not args.no_whole:
        whole = whole_isolated(path, folder / f"out-{rows}")
        assert whole is not None
        print(
            f"  whole workload (run): {rows / whole['total']:,.0f} rows/s ({whole['total']:.2f}s, one run, "
            f"CPU {whole['cpu_s']:.1f}s, peak RSS {whole['rss_mb']:,.0f} MB, "
            f"peak virtual memory {whole['vm_mb']:,.0f} MB)"
        )
        out["whole"] = whole
        for limit in args.memory_limit:
            limited = whole_isolated(path, folder / f"out-{rows}-limited", limit)
            verdict = "fails" if limited is None else f"finishes in {limited['total']:.2f}s"
            print(f"  whole workload with its address space limited to {limit:g} GiB: {verdict}")
    return out


def growth(results: list[dict[str, Any]]) -> None:
    """How time and memory grow between sizes, and the largest corpus per memory limit."""
    for small, large in itertools.pairwise(results):
        factor = large["rows"] / small["rows"]
        parts = []
        for name in ("posttrain", "polars"):
            time_factor = large["timings"][name]["total"] / small["timings"][name]["total"]
            rss_factor = large["timings"][name]["rss_mb"] / small["timings"][name]["rss_mb"]
            parts.append(f"{name} time x{time_factor:.1f}, RSS x{rss_factor:.1f}")
        if "whole" in small and "whole" in large:
            parts.append(
                f"whole workload time x{large['whole']['total'] / small['whole']['total']:.1f}, "
                f"RSS x{large['whole']['rss_mb'] / small['whole']['rss_mb']:.1f}"
            )
        print(f"growth {small['rows']:,} -> {large['rows']:,} rows (x{factor:.0f}): " + "; ".join(parts))
    measured = [r for r in results if "whole" in r]
    if len(measured) >= 2:
        first, last = measured[0], measured[-1]
        per_row = (last["whole"]["rss_mb"] - first["whole"]["rss_mb"]) / (last["rows"] - first["rows"])
        base = last["whole"]["rss_mb"] - per_row * last["rows"]
        print(f"whole workload memory: about {base:,.0f} MB + {per_row * 1e3:,.2f} KB per row of this shape")
        for limit in LIMITS_GIB:
            rows = (limit * 1024**3 / 1e6 * 0.9 - base) / per_row  # 10% headroom
            print(f"  largest corpus in a {limit} GiB pod: about {max(rows, 0) / 1e6:,.1f}M rows")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--minhash-docs", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, help="keep the generated files here (reused by later runs)")
    parser.add_argument(
        "--no-warmup-from", type=int, default=5_000_000, help="no warm-up run from this size on"
    )
    parser.add_argument("--no-whole", action="store_true", help="skip the whole workload")
    parser.add_argument(
        "--memory-limit",
        type=float,
        nargs="*",
        default=[],
        metavar="GIB",
        help="also run the whole workload with its address space limited to each of these GiB",
    )
    parser.add_argument("--no-minhash", action="store_true", help="skip the MinHash comparison")
    parser.add_argument(
        "--in-process", action="store_true", help="time the pipeline in this process, interleaved"
    )
    parser.add_argument("--one", nargs=2, metavar=("CONTENDER", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--whole-one", nargs=2, metavar=("FILE", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        # One measurement in this fresh process: warm up once (unless told not to), then time one run.
        function = {"posttrain": ours, "polars": baseline}[args.one[0]]
        if args.no_warmup_from > 0:
            function(Path(args.one[1]))
        before = cpu_seconds()
        timings = function(Path(args.one[1]))
        print(json.dumps({**timings, "cpu_s": cpu_seconds() - before, "rss_mb": peak_rss_mb()}))
        return
    if args.whole_one:
        seconds = whole_run(Path(args.whole_one[0]), Path(args.whole_one[1]))
        print(
            json.dumps(
                {"total": seconds, "cpu_s": cpu_seconds(), "rss_mb": peak_rss_mb(), "vm_mb": vm_peak_mb()}
            )
        )
        return

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.data_dir or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        results = [pipeline(rows, folder, args) for rows in sorted(args.rows)]
    growth(results)
    if args.no_minhash:
        return

    result = minhash_bench(args.minhash_docs, args.repeats)
    print(f"minhash: {result['docs']} docs, {NUM_PERM} permutations, {SHINGLE}-word shingles")
    for name, steps in result["timings"].items():
        print(f"  {name:28s} {result['docs'] / steps['total']:>10,.0f} docs/s  ({steps['total']:.2f}s)")
    base = result["timings"]["posttrain"]["total"]
    print(
        f"  ratio vs datasketch from text: {result['timings']['datasketch']['total'] / base:.1f}x (goal >= 5x)"
    )
    print(
        f"  ratio vs datasketch, shingles given: {result['timings']['datasketch (shingles given)']['total'] / base:.1f}x"
    )
    print(
        "  mean |estimate - exact Jaccard|: "
        + ", ".join(f"{name} {error:.3f}" for name, error in result["error"].items())
    )


if __name__ == "__main__":
    main()
