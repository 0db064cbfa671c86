"""CTC prefix beam search and the word language models fused into it (``speechstack.beam``)."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from speechstack.artifacts import ArtifactError
from speechstack.beam import (
    ArpaLanguageModel,
    LanguageModel,
    NgramLanguageModel,
    ctc_beam_search,
    load_language_model,
)
from speechstack.text import Vocabulary, ctc_collapse

SENTENCES = ["the cat sat", "the cat ate", "a dog sat", "the dog ran home", "a cat"]
LN10 = math.log(10)

# unigrams and bigrams with backoffs, as lmplz writes them (log10, tab-separated)
ARPA = """\
\\data\\
ngram 1=6
ngram 2=4

\\1-grams:
-99\t<s>\t-0.5
-0.7\tthe\t-0.3
-0.9\tcat\t-0.2
-1.1\tsat
-1.2\t</s>
-2.0\t<unk>

\\2-grams:
-0.3\t<s> the
-0.2\tthe cat
-0.4\tcat sat
-0.1\tsat </s>

\\end\\
"""


def _total(model: NgramLanguageModel, history: Sequence[str]) -> float:
    """The probabilities of every vocabulary word, </s> and the unknown word after history."""
    words = [*model.vocabulary, "</s>", "never-seen-word"]
    return sum(math.exp(model.log_prob(word, history)) for word in words)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize(
    "history",
    [[], ["the"], ["the", "cat"], ["a", "dog", "sat"], ["unseen", "words"], ["cat"], ["sat"]],
)
def test_kneser_ney_is_a_distribution_after_any_history(order: int, history: list[str]) -> None:
    model = NgramLanguageModel.fit(SENTENCES, order=order)
    assert _total(model, history) == pytest.approx(1.0, abs=1e-6)


def test_kneser_ney_prefers_what_it_saw_and_gives_unknown_words_one_small_probability() -> None:
    model = NgramLanguageModel.fit(SENTENCES, order=3)
    assert model.vocabulary == ("a", "ate", "cat", "dog", "home", "ran", "sat", "the")
    assert model.log_prob("cat", ["the"]) > model.log_prob("ran", ["the"])  # seen vs unseen
    assert model.log_prob("the", []) > model.log_prob("cat", [])  # sentence start: <s> the
    unknown = model.log_prob("zebra", ["the"])
    assert math.isfinite(unknown) and unknown == model.log_prob("giraffe", ["the"])
    assert unknown < min(model.log_prob(w, ["the"]) for w in model.vocabulary)
    # only the last order - 1 words count
    assert model.log_prob("sat", ["a", "b", "the", "cat"]) == model.log_prob("sat", ["the", "cat"])


def test_kneser_ney_round_trips_through_its_file(tmp_path: Path) -> None:
    model = NgramLanguageModel.fit(SENTENCES, order=3, discount=0.6)
    path = tmp_path / "lm.json"
    model.save(path)
    loaded = NgramLanguageModel.load(path)
    assert (loaded.order, loaded.discount) == (3, 0.6)
    for history in ([], ["the"], ["the", "cat"], ["x"]):
        for word in [*model.vocabulary, "</s>", "zebra"]:
            assert loaded.log_prob(word, history) == model.log_prob(word, history)
    assert isinstance(load_language_model(path), NgramLanguageModel)
    assert not [p for p in tmp_path.iterdir() if p.name != "lm.json"]  # no temp file left


@pytest.mark.parametrize(
    "content",
    ['{"format": "speechstack.ngram", "vers', '{"format": "other"}', "[1, 2]", "\udcff"],
    ids=["truncated", "other format", "not an object", "not utf-8"],
)
def test_a_damaged_language_model_file_is_an_artifact_error_naming_it(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "lm.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(ArtifactError, match=str(path)):
        NgramLanguageModel.load(path)


def test_a_language_model_file_with_bad_counts_is_an_artifact_error(tmp_path: Path) -> None:
    path = tmp_path / "lm.json"
    NgramLanguageModel.fit(SENTENCES, order=2).save(path)
    text = path.read_text()
    path.write_text(text.replace('"order": 2', '"order": 3'))
    with pytest.raises(ArtifactError, match="not 3 words and a count"):
        NgramLanguageModel.load(path)


@pytest.mark.parametrize(
    ("sentences", "settings", "message"),
    [
        (SENTENCES, {"order": 0}, "order must be an integer >= 1"),
        (SENTENCES, {"discount": 0.0}, "strictly between 0 and 1"),
        (SENTENCES, {"discount": 1.0}, "strictly between 0 and 1"),
        ([], {}, "no sentence with a word"),
        (["", "   "], {}, "no sentence with a word"),
        (["the </s> cat"], {}, "reserved word"),
    ],
)
def test_kneser_ney_refuses_bad_arguments(
    sentences: list[str], settings: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        NgramLanguageModel.fit(sentences, **settings)  # type: ignore[arg-type]


def test_an_arpa_model_scores_listed_ngrams_and_backs_off(tmp_path: Path) -> None:
    path = tmp_path / "words.arpa"
    path.write_text(ARPA)
    model = load_language_model(path)
    assert isinstance(model, ArpaLanguageModel) and isinstance(model, LanguageModel)
    assert model.log_prob("cat", ["the"]) == pytest.approx(-0.2 * LN10)  # listed bigram
    assert model.log_prob("the", []) == pytest.approx(-0.3 * LN10)  # <s> the
    # unlisted bigram: backoff(cat) + p(the)
    assert model.log_prob("the", ["cat"]) == pytest.approx((-0.2 - 0.7) * LN10)
    # a history without a backoff weight adds nothing
    assert model.log_prob("cat", ["sat"]) == pytest.approx(-0.9 * LN10)
    # an unknown word is <unk>; only the last word of the history counts at order 2
    assert model.log_prob("zebra", ["x", "the"]) == pytest.approx((-0.3 - 2.0) * LN10)


def test_an_arpa_model_without_unk_gives_unknown_words_a_floor(tmp_path: Path) -> None:
    path = tmp_path / "words.arpa"
    path.write_text(ARPA.replace("ngram 1=6", "ngram 1=5").replace("-2.0\t<unk>\n", ""))
    model = ArpaLanguageModel.from_arpa(path)
    assert model.log_prob("zebra", ["the"]) == pytest.approx(-10 * LN10)
    assert model.log_prob("cat", ["the"]) == pytest.approx(-0.2 * LN10)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("-0.2\tthe cat", "oops\tthe cat", "line 15: not a number"),
        ("-0.2\tthe cat", "-0.2\tthe cat sat on", "line 15: a 2-gram entry is"),
        ("ngram 2=4", "ngram 2=5", r"line 13: \\2-grams: has 4 entries, 5 declared"),
        ("ngram 2=4", "ngram two", "line 3: expected 'ngram N=count'"),
        ("\\end\\\n", "", "the file ends without"),
        ("\\data\\", "data", "no \\\\data\\\\ line"),
    ],
)
def test_a_malformed_arpa_file_names_the_file_and_line(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    path = tmp_path / "words.arpa"
    assert old in ARPA
    path.write_text(ARPA.replace(old, new))
    with pytest.raises(ValueError, match=message) as raised:
        ArpaLanguageModel.from_arpa(path)
    assert str(path) in str(raised.value)


# --- beam search -------------------------------------------------------------------------

TOKENS = ("<blank>", "<unk>", "|", "a", "b")
DELIMITER = 2


def _canonical(ids: Sequence[int]) -> tuple[int, ...]:
    """A labelling as text: no empty words (leading, trailing or doubled delimiters)."""
    words = [list(g) for k, g in itertools.groupby(ids, lambda i: i == DELIMITER) if not k]
    return tuple(itertools.chain.from_iterable([*w, DELIMITER] for w in words))[:-1]


def _labelling_probs(probs: np.ndarray) -> dict[tuple[int, ...], float]:
    """Every labelling's CTC probability, by summing over every path (brute force)."""
    totals: dict[tuple[int, ...], float] = defaultdict(float)
    steps, size = probs.shape
    for path in itertools.product(range(size), repeat=steps):
        totals[_canonical(ctc_collapse(path))] += float(np.prod(probs[np.arange(steps), path]))
    return totals


def _greedy(log_probs: np.ndarray) -> tuple[int, ...]:
    return _canonical(ctc_collapse(log_probs.argmax(axis=1).tolist()))


def test_beam_search_finds_the_most_probable_labelling_where_the_best_path_does_not() -> None:
    # each step: blank 0.55, "a" 0.4: the best path is all blanks (""), but "a" has more
    # paths ("a--", "-a-", "aa-", ...) and so more probability
    step = np.array([0.55, 0.01, 0.02, 0.40, 0.02])
    probs = np.tile(step, (3, 1))
    totals = _labelling_probs(probs)
    assert _greedy(np.log(probs)) == ()
    most_probable = max(totals, key=totals.__getitem__)
    assert most_probable == (3,) and totals[(3,)] > totals[()]
    assert ctc_beam_search(np.log(probs), TOKENS, beam_width=4) == [3]
    # one prefix kept per step is no better than the best path here
    assert ctc_beam_search(np.log(probs), TOKENS, beam_width=1) == []


@pytest.mark.parametrize("seed", range(12))
def test_beam_search_labellings_are_at_least_as_probable_as_greedy_ones(seed: int) -> None:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(len(TOKENS), 0.6), size=4)
    log_probs = np.log(probs)
    totals = _labelling_probs(probs)
    found = tuple(ctc_beam_search(log_probs, TOKENS, beam_width=4))
    assert found == _canonical(found)  # no empty words
    assert totals[found] >= totals[_greedy(log_probs)] - 1e-12
    # a beam as wide as every prefix, nothing pruned: exactly the most probable labelling
    exact = ctc_beam_search(log_probs, TOKENS, beam_width=1000, token_min_log_prob=-np.inf)
    assert tuple(exact) == max(totals, key=totals.__getitem__)


def _frames(vocabulary: Vocabulary, frames: Sequence[str | dict[str, float]]) -> np.ndarray:
    """Log-probabilities of a peaky recogniser: each frame a token with 0.9 (" " is the
    delimiter, "-" the blank, "?" <unk>) or a dict of token probabilities; the rest spread
    evenly."""
    ids = {" ": Vocabulary.DELIMITER_ID, "-": Vocabulary.BLANK_ID, "?": Vocabulary.UNKNOWN_ID}
    ids |= {t: i for i, t in enumerate(vocabulary.tokens) if len(t) == 1 and t != "|"}
    rows = []
    for frame in frames:
        wanted = {frame: 0.9} if isinstance(frame, str) else frame
        row = np.zeros(len(vocabulary))
        for token, p in wanted.items():
            row[ids[token]] = p
        row[row == 0] = (1 - row.sum()) / np.count_nonzero(row == 0)
        rows.append(row)
    return np.log(np.array(rows))


def _write_arpa(tmp_path: Path) -> ArpaLanguageModel:
    path = tmp_path / "words.arpa"
    path.write_text(ARPA)
    return ArpaLanguageModel.from_arpa(path)


@pytest.mark.parametrize("kind", ["kneser-ney", "arpa"])
def test_a_language_model_picks_the_spelling_it_knows(kind: str, tmp_path: Path) -> None:
    vocabulary = Vocabulary.build(["the cat sat", "kat"])
    ambiguous = {"k": 0.5, "c": 0.45}  # acoustically "kat" is a little more likely
    frames = ["t", "h", "-", "e", " ", ambiguous, "a", "-", "t", "-"]
    log_probs = _frames(vocabulary, frames)
    plain = ctc_beam_search(log_probs, vocabulary.tokens)
    assert vocabulary.text(plain) == "the kat"
    model: LanguageModel = (
        NgramLanguageModel.fit(SENTENCES) if kind == "kneser-ney" else _write_arpa(tmp_path)
    )
    fused = ctc_beam_search(log_probs, vocabulary.tokens, language_model=model)
    assert vocabulary.text(fused) == "the cat"


class _Recording:
    """A language model that likes every word equally and notes what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, tuple[str, ...]]] = []

    def log_prob(self, word: str, history: Sequence[str]) -> float:
        self.asked.append((word, tuple(history)))
        return -1.0


def test_delimiters_at_the_start_or_doubled_make_no_empty_words() -> None:
    vocabulary = Vocabulary.build(["ab"])
    log_probs = _frames(vocabulary, [" ", "a", " ", "-", " ", " ", "b", " "])
    words = _Recording()
    found = ctc_beam_search(log_probs, vocabulary.tokens, language_model=words)
    assert found == [vocabulary.encode("a")[0], Vocabulary.DELIMITER_ID, vocabulary.encode("b")[0]]
    assert words.asked and all(word for word, _ in words.asked)
    assert ("b", ("a",)) in words.asked and ("</s>", ("a", "b")) in words.asked
    assert ctc_beam_search(log_probs, vocabulary.tokens) == found


def test_a_doubled_letter_needs_a_blank_between_its_steps() -> None:
    vocabulary = Vocabulary.build(["hello"])
    h, e, l, o = vocabulary.encode("helo")  # noqa: E741
    separated = _frames(vocabulary, ["h", "e", "l", "l", "-", "l", "o"])
    assert ctc_beam_search(separated, vocabulary.tokens) == [h, e, l, l, o]
    joined = _frames(vocabulary, ["h", "e", "l", "l", "l", "o"])
    assert ctc_beam_search(joined, vocabulary.tokens) == [h, e, l, o]


def test_unknown_tokens_reach_the_language_model_as_the_replacement_character() -> None:
    vocabulary = Vocabulary.build(["ab"])
    log_probs = _frames(vocabulary, ["a", "-", "?"])
    words = _Recording()
    found = ctc_beam_search(log_probs, vocabulary.tokens, language_model=words)
    assert vocabulary.text(found) == "a\ufffd"
    assert ("a\ufffd", ()) in words.asked


def test_beam_search_edge_cases_and_refusals() -> None:
    assert ctc_beam_search(np.zeros((0, len(TOKENS))), TOKENS) == []
    only_blanks = np.log(np.tile([0.96, 0.01, 0.01, 0.01, 0.01], (5, 1)))
    assert ctc_beam_search(only_blanks, TOKENS, language_model=_Recording()) == []
    # every token below the threshold: the step's best is still tried
    assert ctc_beam_search(np.full((2, 5), -50.0) + np.eye(5)[[3, 4]], TOKENS) == [3, 4]
    with pytest.raises(ValueError, match=r"shape \(5,\) are not \(steps, 5 tokens\)"):
        ctc_beam_search(np.zeros(5), TOKENS)
    with pytest.raises(ValueError, match=r"shape \(3, 4\) are not \(steps, 5 tokens\)"):
        ctc_beam_search(np.zeros((3, 4)), TOKENS)
    with pytest.raises(ValueError, match="beam_width must be >= 1, got 0"):
        ctc_beam_search(np.zeros((3, 5)), TOKENS, beam_width=0)
    with pytest.raises(ValueError, match="delimiter_id 7"):
        ctc_beam_search(np.zeros((3, 5)), TOKENS, delimiter_id=7)
    with pytest.raises(ValueError, match="NaN"):
        ctc_beam_search(np.full((3, 5), np.nan), TOKENS)
