"""The text side of speech recognition: transcript normalisation and the character vocabulary
a CTC model predicts over.

``normalise(text, config)`` puts a transcript in the one form that training labels, decoded
hypotheses and scored references all share: a Unicode normal form (NFC by default, so "é"
typed as one code point or as "e" + a combining accent is the same text), lower case,
punctuation deleted, whitespace collapsed. Apostrophes and hyphens stay, since they are
parts of words ("l'homme", "peut-être"); numbers are left as written — spelling them out is
language-specific and left to the user, before normalisation.

``Vocabulary`` is built from the normalised training transcripts. Its tokens are code points
(after the normal form), not grapheme clusters: a Bengali conjunct such as "ক্ষ" is three
tokens (consonant, virama, consonant) and a vowel sign is a token of its own, which is what
a CTC head emits frame by frame. Token 0 is the CTC blank, 1 stands for an unknown
character, 2 is the word delimiter ``|`` standing for the space, then every character seen,
sorted, so the same transcripts always give the same ids. It is saved as JSON with the
normalisation settings, so a predict run normalises and decodes as training did.

``Tokenizer`` is what a recogniser's targets and outputs are tokens of: the ``Vocabulary``,
or a model's own (Whisper's byte-level BPE with ``whisper_seq2seq``'s ``tokenizer:
whisper``, ``models.whisper.WhisperBPETokenizer``), which normalises with the same settings.
"""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from pydantic import Field, ValidationError

from speechstack.artifacts import ArtifactError, atomic_write_json, read_versioned_json
from speechstack.config import Strict

# punctuation deleted by default (the Bengali danda and double danda too): no apostrophe or
# hyphen (they are inside words), no digits
DEFAULT_DROP = ',.!?;:"“”„«»()[]{}…–—।॥'
# typographic apostrophes written as the ASCII one, so "l’homme" and "l'homme" are one text
DEFAULT_REPLACE = {"’": "'", "ʼ": "'"}


class TextConfig(Strict):
    """How transcripts are normalised, for training labels and for scoring alike."""

    unicode_form: Literal["NFC", "NFKC", "NFD", "NFKD"] = "NFC"  # applied first (and last)
    lowercase: bool = True
    replace: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_REPLACE))  # before
    #   dropping: each key (a character or a string) becomes its value
    drop: str = DEFAULT_DROP  # characters deleted (not replaced by a space)
    collapse_spaces: bool = True  # any run of whitespace -> one space, ends stripped


def normalise(text: str, config: TextConfig | None = None) -> str:
    """``text`` in the form the vocabulary and the metrics see (``TextConfig``'s steps in
    order: normal form, lower case, replacements, deletions, spaces, normal form again —
    lower-casing and deleting can leave a sequence that the normal form would compose)."""
    config = config or TextConfig()
    text = unicodedata.normalize(config.unicode_form, text)
    if config.lowercase:
        text = text.lower()
    for old, new in config.replace.items():
        text = text.replace(old, new)
    text = text.translate(dict.fromkeys(map(ord, config.drop)))
    if config.collapse_spaces:
        text = " ".join(text.split())
    return unicodedata.normalize(config.unicode_form, text)


def ctc_collapse(path: Iterable[int], blank: int = 0) -> list[int]:
    """The tokens of a CTC best path (per-step ids): repeats collapsed, then blanks dropped,
    so a doubled letter survives only with a blank between its steps ("l", blank, "l")."""
    return [token for token, _ in itertools.groupby(path) if token != blank]


class Tokenizer(Protocol):
    """Text <-> a recogniser's token ids: ``encode`` normalises a transcript and writes its
    ids (training targets), ``text`` turns ids a model wrote back into text in the
    references' normalised form; ``len`` is the number of tokens."""

    def __len__(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def text(self, ids: Sequence[int] | np.ndarray) -> str: ...


VOCABULARY_FORMAT = "speechstack.vocabulary"
VOCABULARY_VERSION = 1


@dataclass(frozen=True)
class Vocabulary:
    """Character tokens of a CTC model: ``tokens[i]`` is what output ``i`` stands for."""

    tokens: tuple[str, ...]
    config: TextConfig = field(default_factory=TextConfig)
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)
    _texts: tuple[str, ...] = field(init=False, repr=False, compare=False)  # id -> its text

    BLANK = "<blank>"  # CTC blank: emitted between and around characters, stands for nothing
    UNKNOWN = "<unk>"  # a character the training transcripts never had
    DELIMITER = "|"  # the space between words
    SPECIAL = (BLANK, UNKNOWN, DELIMITER)
    BLANK_ID, UNKNOWN_ID, DELIMITER_ID = 0, 1, 2
    UNKNOWN_TEXT = "\ufffd"  # what an unknown token decodes to: one character, like the one
    #   it replaced, so CER counts it once

    def __post_init__(self) -> None:
        tokens = tuple(self.tokens)
        if tokens[:3] != self.SPECIAL:
            raise ValueError(f"a vocabulary starts with {list(self.SPECIAL)}, not {tokens[:3]}")
        characters = tokens[3:]
        wrong = [t for t in characters if not isinstance(t, str) or len(t) != 1 or t == " "]
        if wrong or self.DELIMITER in characters:
            raise ValueError(
                f"vocabulary tokens after the special ones must be characters "
                f"(not a space or {self.DELIMITER!r}): {wrong or [self.DELIMITER]}"
            )
        if len(set(characters)) != len(characters):
            repeated = sorted({t for t in characters if characters.count(t) > 1})
            raise ValueError(f"vocabulary tokens repeat: {repeated}")
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "_ids", {token: i for i, token in enumerate(tokens)})
        object.__setattr__(self, "_texts", ("", self.UNKNOWN_TEXT, " ", *characters))

    @classmethod
    def build(cls, texts: Iterable[str], config: TextConfig | None = None) -> Vocabulary:
        """The vocabulary of the training transcripts ``texts`` after ``normalise``: the
        special tokens, then every character seen, sorted by code point (deterministic). A
        literal ``|`` in a transcript is not a character of the vocabulary: it would read
        back as a space."""
        config = config or TextConfig()
        seen: set[str] = set()
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"transcript {index} is {text!r}, not text")
            seen.update(normalise(text, config))
        seen -= {" ", cls.DELIMITER}
        if not seen:
            raise ValueError("the transcripts hold no character: no vocabulary to build")
        return cls((*cls.SPECIAL, *sorted(seen)), config)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``normalise(text)``: a space is the delimiter, a character the
        vocabulary lacks is ``<unk>``."""
        return [
            self.DELIMITER_ID if char == " " else self._ids.get(char, self.UNKNOWN_ID)
            for char in normalise(text, self.config)
        ]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of a token-id sequence as written (no CTC collapsing: see
        ``ctc_greedy``): the delimiter is a space, blanks are nothing, ``<unk>`` is
        ``UNKNOWN_TEXT``."""
        texts = []
        for raw in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
            if not 0 <= raw < len(self.tokens):
                raise ValueError(
                    f"token id {raw} is not in the vocabulary of {len(self.tokens)} tokens "
                    "(padding ids such as -100 must be removed before decoding)"
                )
            texts.append(self._texts[raw])
        return "".join(texts)

    def ctc_greedy(self, ids_or_logits: Sequence[int] | np.ndarray) -> str:
        """Best-path CTC decoding of one utterance: per-frame ids ``(frames,)``, or scores
        ``(frames, tokens)`` whose argmax per frame is taken (logits, log-probabilities or
        probabilities alike); repeats collapsed, then blanks dropped, so a doubled letter
        survives only with a blank between its frames ("l", blank, "l"). Spaces are tidied
        as ``normalise`` would, so the hypothesis is in the references' form."""
        frames = np.asarray(ids_or_logits)
        if frames.ndim == 2:
            if frames.shape[1] != len(self.tokens):
                raise ValueError(
                    f"scores of shape {frames.shape} (frames, tokens) do not match the "
                    f"vocabulary of {len(self.tokens)} tokens"
                )
            frames = frames.argmax(axis=1)
        elif frames.ndim != 1:
            raise ValueError(
                f"one utterance at a time: ids (frames,) or scores (frames, tokens), "
                f"not an array of shape {frames.shape}"
            )
        return self.text(ctc_collapse(frames.astype(np.int64).tolist()))

    def text(self, ids: Sequence[int] | np.ndarray) -> str:
        """``decode`` with the spaces tidied as ``normalise`` tidies them, so a hypothesis
        is in the references' form."""
        text = self.decode(ids)
        return " ".join(text.split()) if self.config.collapse_spaces else text

    def save(self, path: Path) -> None:
        """Write the tokens and the normalisation settings as JSON, atomically."""
        atomic_write_json(
            Path(path),
            {
                "format": VOCABULARY_FORMAT,
                "version": VOCABULARY_VERSION,
                "text": self.config.model_dump(),
                "tokens": list(self.tokens),
            },
        )

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        """The vocabulary ``save`` wrote to ``path``; a file that is not one (damaged,
        another format or version, invalid tokens or settings) is an ``ArtifactError``
        naming it."""
        path = Path(path)
        data = read_versioned_json(
            path, VOCABULARY_FORMAT, VOCABULARY_VERSION, "vocabulary",
            " (it is saved with the run)",
        )  # fmt: skip
        tokens = data.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ArtifactError(f"{path}: 'tokens' must be a list of strings")
        try:
            return cls(tuple(tokens), TextConfig.model_validate(data.get("text", {})))
        except (ValidationError, ValueError) as error:
            raise ArtifactError(f"{path} is not a valid vocabulary: {error}") from error
