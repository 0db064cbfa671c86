"""CTC prefix beam search over a recogniser's per-step log-probabilities, with an optional
word n-gram language model fused into the search (shallow fusion).

Greedy best-path decoding (``Vocabulary.ctc_greedy``) takes the most probable token of each
step; the most probable *labelling* sums over every path that collapses to it, and the two
differ where the model hesitates between a character and the blank. ``ctc_beam_search``
keeps the ``beam_width`` most probable prefixes step by step, each with its probability of
ending in a blank and in a character, and can add a word language model's score each time a
word is completed, so that of two spellings the acoustics cannot tell apart the one the
language model knows wins.

Two kinds of word model share the ``LanguageModel`` protocol (``log_prob(word, history)``):
``NgramLanguageModel``, an interpolated Kneser-Ney model fitted on the training transcripts
and saved as JSON beside the run, and ``ArpaLanguageModel``, read from the ARPA file that
KenLM's ``lmplz`` or SRILM's ``ngram-count`` writes from any text.

The decoder is written here, in numpy and Python, rather than taken from a library:
pyctcdecode (its last release in 2023) pins numpy < 2, and torchaudio's ``ctc_decoder`` has
no release for the torch this package runs on.
"""

from __future__ import annotations

import gzip
import heapq
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from speechstack.artifacts import ArtifactError, atomic_write_json, read_versioned_json
from speechstack.text import Vocabulary

SENTENCE_START = "<s>"
SENTENCE_END = "</s>"
UNKNOWN_WORD = "<unk>"  # what an ARPA model calls a word it never saw
NGRAM_FORMAT = "speechstack.ngram"
NGRAM_VERSION = 1
# an ARPA model without <unk> gives a word it has no entry for this log10 probability (a
# fixed floor, so such a word is possible but never preferred to a known one)
ARPA_UNKNOWN_LOG10 = -10.0
LN10 = math.log(10.0)
NEG_INF = float("-inf")


@runtime_checkable
class LanguageModel(Protocol):
    """A word language model as the beam search consults it."""

    def log_prob(self, word: str, history: Sequence[str]) -> float:
        """Natural-log probability of ``word`` (``</s>`` for the sentence's end) after the
        words ``history`` of the current sentence (the model puts ``<s>`` before them)."""
        ...


class NgramLanguageModel:
    """A word n-gram model with interpolated Kneser-Ney smoothing (one absolute discount).

    Each order's probability is the discounted count of the n-gram plus the discounted mass
    spread by the next lower order; the lower orders count how many distinct words precede
    an n-gram (continuation counts) rather than how often it occurs, so a word frequent only
    after one context is not over-predicted elsewhere. The lowest level is interpolated with
    a uniform distribution over the vocabulary, ``</s>`` and one unknown word, so every word
    has a probability above zero and, for any history, the probabilities of the vocabulary,
    ``</s>`` and the unknown word sum to one. Every word outside the vocabulary is that one
    unknown word: they all get the same probability.

    Sentences are padded with ``order - 1`` starts, so every history of the highest order is
    full length; ``log_prob`` pads a short history the same way.
    """

    def __init__(self, ngrams: dict[tuple[str, ...], int], order: int, discount: float) -> None:
        """From the raw counts of the highest-order n-grams (padded sentences); ``fit`` and
        ``load`` are the ways in."""
        _check_settings(order, discount)
        if not ngrams:
            raise ValueError("a language model needs at least one n-gram")
        self.order = order
        self.discount = discount
        self._ngrams = dict(ngrams)
        # counts[k - 1]: the k-grams' counts (raw at the highest order, continuation below)
        counts: list[dict[tuple[str, ...], int]] = [{} for _ in range(order)]
        counts[order - 1] = dict(ngrams)
        for k in range(order - 1, 0, -1):
            continuation: Counter[tuple[str, ...]] = Counter(g[1:] for g in counts[k])
            counts[k - 1] = dict(continuation)
        # histories[k - 1]: per history of k - 1 words, (its total count, the mass it passes
        # down: discount x distinct words seen after it / total)
        histories: list[dict[tuple[str, ...], tuple[int, float]]] = []
        for level in counts:
            totals: dict[tuple[str, ...], int] = defaultdict(int)
            distinct: dict[tuple[str, ...], int] = defaultdict(int)
            for gram, count in level.items():
                totals[gram[:-1]] += count
                distinct[gram[:-1]] += 1
            histories.append(
                {h: (total, discount * distinct[h] / total) for h, total in totals.items()}
            )
        self._counts = counts
        self._histories = histories
        self._targets = frozenset(g[0] for g in counts[0])  # the words and </s>
        self._uniform = 1.0 / (len(self._targets) + 1)  # + the unknown word

    @classmethod
    def fit(
        cls, sentences: Iterable[str], order: int = 3, discount: float = 0.75
    ) -> NgramLanguageModel:
        """The model of normalised ``sentences`` (words split on whitespace; empty ones are
        skipped)."""
        _check_settings(order, discount)
        ngrams: Counter[tuple[str, ...]] = Counter()
        for index, sentence in enumerate(sentences):
            if not isinstance(sentence, str):
                raise ValueError(f"sentence {index} is {sentence!r}, not text")
            words = sentence.split()
            if not words:
                continue
            reserved = {SENTENCE_START, SENTENCE_END} & set(words)
            if reserved:
                raise ValueError(
                    f"sentence {index} holds the reserved word(s) {sorted(reserved)}: "
                    "sentence boundaries are added by the model"
                )
            padded = [SENTENCE_START] * (order - 1) + words + [SENTENCE_END]
            ngrams.update(
                tuple(padded[i - order + 1 : i + 1]) for i in range(order - 1, len(padded))
            )
        if not ngrams:
            raise ValueError("no sentence with a word to fit a language model on")
        return cls(ngrams, order, discount)

    @property
    def vocabulary(self) -> tuple[str, ...]:
        """The words the model was fitted on (not ``</s>``), sorted."""
        return tuple(sorted(self._targets - {SENTENCE_END}))

    def log_prob(self, word: str, history: Sequence[str]) -> float:
        """Natural-log probability of ``word`` (or ``</s>``) after ``history``, the words of
        the sentence so far (its last ``order - 1`` are used). A word outside the vocabulary
        (``<s>`` included) gets the unknown word's probability."""
        order = self.order
        context = (SENTENCE_START,) * (order - 1) + tuple(history)
        context = context[len(context) - (order - 1) :]
        probability = self._uniform
        discount = self.discount
        for k in range(1, order + 1):
            history_k = context[order - k :]  # the last k - 1 words
            stats = self._histories[k - 1].get(history_k)
            if stats is None:  # a history never seen: this order adds nothing
                continue
            total, passed = stats
            count = self._counts[k - 1].get((*history_k, word), 0)
            probability = max(count - discount, 0.0) / total + passed * probability
        return math.log(probability)

    def save(self, path: Path) -> None:
        """Write the model (its settings and highest-order counts) as JSON, atomically."""
        atomic_write_json(
            Path(path),
            {
                "format": NGRAM_FORMAT,
                "version": NGRAM_VERSION,
                "order": self.order,
                "discount": self.discount,
                "ngrams": [[*gram, count] for gram, count in sorted(self._ngrams.items())],
            },
        )

    @classmethod
    def load(cls, path: Path) -> NgramLanguageModel:
        """The model ``save`` wrote to ``path``; a file that is not one (damaged, another
        format or version, invalid counts) is an ``ArtifactError`` naming it."""
        path = Path(path)
        data = read_versioned_json(path, NGRAM_FORMAT, NGRAM_VERSION, "n-gram language model")
        order, discount, rows = data.get("order"), data.get("discount"), data.get("ngrams")
        if not isinstance(order, int) or isinstance(order, bool) or not isinstance(rows, list):
            raise ArtifactError(f"{path}: 'order' must be an integer and 'ngrams' a list")
        ngrams: dict[tuple[str, ...], int] = {}
        for index, row in enumerate(rows):
            if (
                not isinstance(row, list)
                or len(row) != order + 1
                or not all(isinstance(w, str) for w in row[:-1])
                or not isinstance(row[-1], int)
                or isinstance(row[-1], bool)
                or row[-1] < 1
            ):
                raise ArtifactError(
                    f"{path}: n-gram {index} is {row!r}, not {order} words and a count >= 1"
                )
            ngrams[tuple(row[:-1])] = row[-1]
        try:
            return cls(ngrams, order, discount)
        except (TypeError, ValueError) as error:
            raise ArtifactError(f"{path} is not a valid language model: {error}") from error


def _check_settings(order: Any, discount: Any) -> None:
    if not isinstance(order, int) or isinstance(order, bool) or order < 1:
        raise ValueError(f"order must be an integer >= 1 (1 = unigrams), got {order!r}")
    if not isinstance(discount, int | float) or isinstance(discount, bool) or not 0 < discount < 1:
        raise ValueError(f"discount must be a number strictly between 0 and 1, got {discount!r}")


class ArpaLanguageModel:
    """A backoff n-gram model read from an ARPA file: the probability of a listed n-gram as
    written, else the backoff weight of its history plus the probability given one word of
    history less (log10 in the file, natural log out). A word the file lacks is scored as
    ``<unk>`` when the file has it, else gets ``ARPA_UNKNOWN_LOG10``."""

    def __init__(
        self,
        log10_probs: dict[tuple[str, ...], float],
        log10_backoffs: dict[tuple[str, ...], float],
        order: int,
    ) -> None:
        self.order = order
        self._probs = log10_probs
        self._backoffs = log10_backoffs
        self._has_unknown = (UNKNOWN_WORD,) in log10_probs

    @classmethod
    def from_arpa(cls, path: Path) -> ArpaLanguageModel:
        """Read an ARPA file (``.gz`` compressed or not): ``\\data\\``, ``ngram N=count``
        lines, ``\\N-grams:`` sections of ``log10prob words [log10backoff]``, ``\\end\\``.
        Anything before ``\\data\\`` is ignored, as ARPA readers do. A malformed file is a
        ``ValueError`` naming the file, the line and the problem."""
        path = Path(path)
        opener: Any = gzip.open if path.suffix == ".gz" else open
        declared: dict[int, int] = {}
        found: dict[int, int] = {}
        headers: dict[int, int] = {}  # order -> line of its section header
        probs: dict[tuple[str, ...], float] = {}
        backoffs: dict[tuple[str, ...], float] = {}
        section: int | str | None = None  # None before \data\, "data", an order, "end"
        number = 0

        def fail(problem: str) -> ValueError:
            return ValueError(f"{path}, line {number}: {problem}")

        with opener(path, "rt", encoding="utf-8") as stream:
            for number, raw in enumerate(stream, start=1):
                line = raw.strip()
                if section is None:
                    if line == "\\data\\":
                        section = "data"
                    continue
                if not line:
                    continue
                if line == "\\end\\":
                    section = "end"
                    break
                header = re.fullmatch(r"\\(\d+)-grams:", line)
                if header:
                    order = int(header[1])
                    expected = len(headers) + 1
                    if order != expected or order not in declared:
                        raise fail(
                            f"section {line!r} where \\{expected}-grams: was expected "
                            f"(declared orders: {sorted(declared)})"
                        )
                    section, headers[order], found[order] = order, number, 0
                    continue
                if section == "data":
                    count = re.fullmatch(r"ngram\s+(\d+)\s*=\s*(\d+)", line)
                    if count is None:
                        raise fail(f"expected 'ngram N=count' in \\data\\, got {line!r}")
                    declared[int(count[1])] = int(count[2])
                    continue
                assert isinstance(section, int)
                parts = line.split()
                if len(parts) not in (section + 1, section + 2):
                    raise fail(
                        f"a {section}-gram entry is a log10 probability, {section} words and "
                        f"an optional log10 backoff, got {line!r}"
                    )
                try:
                    values = [float(parts[0])] + [float(p) for p in parts[section + 1 :]]
                except ValueError:
                    raise fail(f"not a number in {line!r}") from None
                words = tuple(parts[1 : section + 1])
                probs[words] = values[0]
                if len(values) == 2:
                    backoffs[words] = values[1]
                found[section] += 1
        if section is None:
            raise fail("no \\data\\ line: not an ARPA file")
        if section != "end":
            raise fail("the file ends without \\end\\ (truncated?)")
        if not declared or 1 not in declared:
            raise fail("the \\data\\ section declares no unigrams")
        for order, count in sorted(declared.items()):
            if order not in headers:
                raise fail(f"no \\{order}-grams: section, though {count} are declared")
            if found[order] != count:
                number = headers[order]
                raise fail(f"\\{order}-grams: has {found[order]} entries, {count} declared")
        return cls(probs, backoffs, max(declared))

    def log_prob(self, word: str, history: Sequence[str]) -> float:
        """Natural-log probability of ``word`` (or ``</s>``) after ``history``, the words of
        the sentence so far (``<s>`` is put before them; the last ``order - 1`` are used)."""
        probs = self._probs
        if (word,) not in probs:
            if not self._has_unknown:
                return ARPA_UNKNOWN_LOG10 * LN10
            word = UNKNOWN_WORD
        context = (SENTENCE_START, *history)[-(self.order - 1) :] if self.order > 1 else ()
        if self._has_unknown:
            context = tuple(w if (w,) in probs else UNKNOWN_WORD for w in context)
        backoff = 0.0
        for start in range(len(context) + 1):
            history_k = context[start:]
            listed = probs.get((*history_k, word))
            if listed is not None:
                return (backoff + listed) * LN10
            backoff += self._backoffs.get(history_k, 0.0)
        raise AssertionError("unreachable: every scored word is a listed unigram")


def load_language_model(path: Path) -> LanguageModel:
    """The word language model in ``path``: a ``NgramLanguageModel`` saved as JSON, else an
    ARPA file (``ArpaLanguageModel``, ``.gz`` compressed or not)."""
    path = Path(path)
    if path.suffix != ".gz":
        with open(path, "rb") as stream:
            if stream.read(64).lstrip().startswith(b"{"):
                return NgramLanguageModel.load(path)
    return ArpaLanguageModel.from_arpa(path)


def _logaddexp(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


def ctc_beam_search(
    log_probs: np.ndarray,
    tokens: Sequence[str],
    beam_width: int = 16,
    language_model: LanguageModel | None = None,
    lm_weight: float = 0.5,
    word_bonus: float = 1.0,
    token_min_log_prob: float = -10.0,
    blank_id: int = 0,
    delimiter_id: int = 2,
) -> list[int]:
    """The most probable labelling of one utterance's ``log_probs`` ``(steps, tokens)`` (log
    softmax outputs) found by CTC prefix beam search, as token ids: no blanks, a repeated
    character only where a blank separated its steps, the delimiter only between words.

    Each prefix keeps its log probability of ending in a blank and in a character, so the
    paths that collapse to it are summed; ``beam_width`` prefixes survive each step. A token
    whose log probability at a step is below ``token_min_log_prob`` is not tried at that
    step (the step's best always is). A delimiter at the start or after a delimiter makes no
    empty word: it counts like a blank, so "a  b" and "a b" are one labelling. Each step
    scores every (prefix, token) extension at once with numpy and makes prefixes only of the
    ones that survive, which is what keeps a pure-Python search fast enough for predict.

    With a ``language_model``, each word the delimiter completes adds ``lm_weight`` x its log
    probability given the words before it, plus ``word_bonus`` (which offsets the LM's
    preference for fewer words); at the end the unfinished word is scored the same way, and
    ``lm_weight`` x the probability of ``</s>``. Prefixes are ranked by acoustic log
    probability plus that score. Without one, the search is purely acoustic. ``<unk>``
    tokens are ``Vocabulary.UNKNOWN_TEXT`` in the words the model sees.
    """
    scores = np.asarray(log_probs, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(tokens):
        raise ValueError(
            f"log-probabilities of shape {scores.shape} are not (steps, {len(tokens)} tokens)"
        )
    if isinstance(beam_width, bool) or not isinstance(beam_width, int | np.integer):
        raise ValueError(f"beam_width must be an integer >= 1, got {beam_width!r}")
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    for name, value in (("blank_id", blank_id), ("delimiter_id", delimiter_id)):
        if not 0 <= value < len(tokens):
            raise ValueError(f"{name} {value} is not a token id of the {len(tokens)} tokens")
    if blank_id == delimiter_id:
        raise ValueError(f"blank_id and delimiter_id are both {blank_id}")
    if np.isnan(scores).any():
        raise ValueError("log-probabilities hold NaN")
    if scores.shape[0] == 0:
        return []
    texts = [Vocabulary.UNKNOWN_TEXT if t == Vocabulary.UNKNOWN else t for t in tokens]

    # prefixes as a tree: node 0 is the empty prefix; each node is its parent plus a token
    parent, last = [-1], [-1]
    words: list[tuple[str, ...]] = [()]  # the words it completed
    partial = [""]  # the characters since its last delimiter
    fused = [0.0]  # its language-model score (with bonuses) so far
    children: dict[tuple[int, int], int] = {}
    word_scores: dict[tuple[str, tuple[str, ...]], float] = {}

    def word_score(word: str, history: tuple[str, ...]) -> float:
        key = (word, history)
        score = word_scores.get(key)
        if score is None:
            assert language_model is not None
            score = lm_weight * language_model.log_prob(word, history) + word_bonus
            word_scores[key] = score
        return score

    def child(node: int, token: int) -> int:
        key = (node, token)
        found = children.get(key)
        if found is not None:
            return found
        new = len(parent)
        parent.append(node)
        last.append(token)
        if token == delimiter_id:  # only after a character: the word is complete
            done = words[node] + (partial[node],)
            words.append(done)
            partial.append("")
            extra = 0.0
            if language_model is not None:
                extra = word_score(partial[node], words[node])
            fused.append(fused[node] + extra)
        else:
            words.append(words[node])
            partial.append(partial[node] + texts[token])
            fused.append(fused[node])
        children[key] = new
        return new

    beams: dict[int, tuple[float, float]] = {0: (0.0, NEG_INF)}  # node -> (blank, character)
    for row in scores:
        allowed = row >= token_min_log_prob
        if not allowed.any():
            allowed[int(row.argmax())] = True
        keep = np.flatnonzero(allowed)
        column = dict(zip(keep.tolist(), range(keep.size), strict=True))
        values = row.tolist()
        nodes = list(beams)
        where = {node: i for i, node in enumerate(nodes)}
        ends = np.array([beams[node] for node in nodes])  # (beams, 2): blank, character
        totals = np.logaddexp(ends[:, 0], ends[:, 1])
        # extensions: every prefix by every allowed token, acoustic log probability
        extended = totals[:, None] + row[keep][None, :]
        blank_column = column.get(blank_id)
        delimiter_column = column.get(delimiter_id)
        if blank_column is not None:
            extended[:, blank_column] = NEG_INF  # a blank stays, it extends nothing
        # staying the same prefix: a blank, the last token repeated, a delimiter that would
        # make an empty word
        stays: list[tuple[float, float]] = []
        for i, node in enumerate(nodes):
            blank, character = beams[node]
            total = float(totals[i])
            stay_blank = stay_token = NEG_INF
            if blank_column is not None:
                stay_blank = total + values[blank_id]
            if not partial[node] and delimiter_column is not None:
                stay_blank = _logaddexp(stay_blank, total + values[delimiter_id])
                extended[i, delimiter_column] = NEG_INF
            token = last[node]
            if token >= 0 and token != delimiter_id and token in column:
                stay_token = character + values[token]  # the repeat collapses
                extended[i, column[token]] = blank + values[token]  # after a blank: new
            stays.append((stay_blank, stay_token))
        # an extension that is another kept prefix merges into it
        for i, node in enumerate(nodes):
            source = where.get(parent[node])
            j = column.get(last[node])
            if source is not None and j is not None:
                stay_blank, stay_token = stays[i]
                stays[i] = (stay_blank, _logaddexp(stay_token, float(extended[source, j])))
                extended[source, j] = NEG_INF
        ranked = extended + np.array([fused[node] for node in nodes])[:, None]
        if language_model is not None and delimiter_column is not None:
            for i, node in enumerate(nodes):
                if partial[node]:
                    ranked[i, delimiter_column] += word_score(partial[node], words[node])
        flat = ranked.ravel()
        if flat.size > beam_width:
            top = np.argpartition(flat, flat.size - beam_width)[flat.size - beam_width :]
        else:
            top = np.arange(flat.size)
        options: list[tuple[float, int, int]] = [  # (rank, beam index, column; -1: stay)
            (_logaddexp(*stays[i]) + fused[node], i, -1)
            for i, node in enumerate(nodes)
            if stays[i] != (NEG_INF, NEG_INF)
        ]
        options += [
            (rank, index // keep.size, index % keep.size)
            for rank, index in zip(flat[top].tolist(), top.tolist(), strict=True)
            if rank > NEG_INF
        ]
        beams = {}
        for _, i, j in heapq.nlargest(beam_width, options, key=lambda option: option[0]):
            if j < 0:
                beams[nodes[i]] = stays[i]
            else:
                beams[child(nodes[i], int(keep[j]))] = (NEG_INF, float(extended[i, j]))

    # the end: score unfinished words and </s>; "a b" and "a b|" are one labelling
    finals: dict[tuple[int, ...], tuple[float, float]] = {}  # ids -> (acoustic, LM)
    for node, (blank, character) in beams.items():
        acoustic = _logaddexp(blank, character)
        lm = fused[node]
        if language_model is not None:
            history = words[node]
            if partial[node]:
                lm += word_score(partial[node], history)
                history = (*history, partial[node])
            lm += lm_weight * language_model.log_prob(SENTENCE_END, history)
        ids = []
        while node > 0:
            ids.append(last[node])
            node = parent[node]
        ids.reverse()
        if ids and ids[-1] == delimiter_id:
            ids.pop()
        key = tuple(ids)
        if key in finals:
            acoustic = _logaddexp(acoustic, finals[key][0])
        finals[key] = (acoustic, lm)
    best_ids = max(finals, key=lambda ids: finals[ids][0] + finals[ids][1])
    return list(best_ids)
