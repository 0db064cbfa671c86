"""Speech synthesis through the libespeak-ng shipped by the PyPI package `espeakng-loader`.

The library is driven through ctypes in synchronous mode: `espeak_Synth` runs the whole
utterance on the calling thread and hands 22,050 Hz int16 audio to a callback, which we
collect and resample to float32 at 16,000 Hz (or another rate asked for). libespeak-ng
keeps global state, so every `Espeak` object in a process shares one lazily loaded engine
behind a lock.

Reproducibility: besides its seedable noise generators (its own, and the C library's
`rand()`, which the Klatt voices draw on), libespeak-ng carries hidden state
from one utterance to the next (the phase of its pitch "flutter", automatic gain,
glottal cycle counters), so the same call can differ by a few samples depending on
what was spoken before. `Espeak.reset()` reloads the library from disk, which restores
every such variable; a fixed sequence of calls after a reset is byte-reproducible.
"""

from __future__ import annotations

import _ctypes
import ctypes
import math
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy.signal import firwin, resample_poly

SAMPLE_RATE = 16_000
"""Hz of every waveform `Espeak.speak` returns."""

ESPEAK_SAMPLE_RATE = 22_050
"""Hz of libespeak-ng's native output."""

# Constants from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POSITION_CHARACTER = 1
_CHARS_UTF8 = 1
_SSML = 0x10
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_STATUS_OK, _STATUS_NOT_FOUND = 0, 2
_BUFFER_MILLISECONDS = 200

# English voice files whose input is not Latin-script English.
_NON_LATIN_ACCENTS = frozenset({"en-shaw"})

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class EnglishVoices(NamedTuple):
    """What an espeak-ng voice name is built from: `f"{accent}+{variant}"`."""

    accents: tuple[str, ...]
    """English voice names, e.g. "en" (British), "en-us", "en-gb-scotland"."""
    variants: tuple[str, ...]
    """Speaker variants from `voices/!v` (formants, pitch, breath), e.g. "f3", "m1"."""


@cache
def _resampling_filter(up: int, down: int) -> np.ndarray:
    """The low-pass FIR `resample_poly(x, up, down)` designs by default, designed once."""
    longest = max(up, down)
    return firwin(2 * 10 * longest + 1, 1 / longest, window=("kaiser", 5.0)).astype(np.float32)


def _espeak_paths() -> tuple[Path, Path]:
    """(shared library, data folder) of the installed espeakng-loader."""
    try:
        import espeakng_loader
    except ImportError as error:
        raise RuntimeError(
            "speech synthesis needs the PyPI package espeakng-loader "
            "(pip install espeakng-loader), which ships libespeak-ng and its voices"
        ) from error
    return Path(espeakng_loader.get_library_path()), Path(espeakng_loader.get_data_path())


@cache
def english_voices() -> EnglishVoices:
    """The English accents (voice files `lang/gmw/en*`) and variants (`voices/!v`) installed.

    Accents are named by their voice file, lower-cased, because that is the name
    `espeak_SetVoiceByName` resolves ("en-gb" is not one; British English is "en").
    Shavian-script English and variants whose name holds a space (which cannot follow
    "+" in a voice name) are left out.
    """
    _, data = _espeak_paths()
    accents = sorted(
        path.name.lower()
        for path in (data / "lang" / "gmw").glob("en*")
        if path.name.lower() not in _NON_LATIN_ACCENTS
    )
    variants_folder = data / "voices" / "!v"
    variants = (
        sorted(
            path.name
            for path in variants_folder.iterdir()
            if path.is_file() and " " not in path.name
        )
        if variants_folder.is_dir()
        else []
    )
    if not accents or not variants:
        raise RuntimeError(f"no English voices or variants under espeak-ng data folder {data}")
    return EnglishVoices(tuple(accents), tuple(variants))


@cache
def variants_by_gender() -> dict[str, tuple[str, ...]]:
    """The installed variants that declare a gender: {"male": (...), "female": (...)}.

    Read from the `gender` line of each variant file in `voices/!v` ("gender female 70");
    variants without one (many of the named voices) are in neither list.
    """
    _, data = _espeak_paths()
    genders: dict[str, list[str]] = {"male": [], "female": []}
    for variant in english_voices().variants:
        text = (data / "voices" / "!v" / variant).read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0].lower() == "gender":
                if words[1].lower() in genders:
                    genders[words[1].lower()].append(variant)
                break
    return {gender: tuple(names) for gender, names in genders.items()}


def _declare_signatures(lib: ctypes.CDLL) -> None:
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Terminate.argtypes = []
    lib.espeak_Terminate.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = None
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.POINTER(ctypes.c_uint),
        ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int


class _Engine:
    """The process-wide libespeak-ng, initialised for synchronous synthesis."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.chunks: list[np.ndarray] = []
        self.callback = _SynthCallback(self._collect)  # kept here so it is never freed
        self.library: ctypes.CDLL | None = None
        self.voice: str | None = None
        self.seed_c_rand = _c_rand_seeder()

    def _collect(self, samples: ctypes._Pointer, count: int, _events: int) -> int:
        if count > 0:
            self.chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0  # 0 = carry on synthesising

    def load(self) -> ctypes.CDLL:
        if self.library is not None:
            return self.library
        library_path, data_path = _espeak_paths()
        try:
            library = ctypes.CDLL(str(library_path))
        except OSError as error:
            raise RuntimeError(f"cannot load libespeak-ng from {library_path}: {error}") from error
        _declare_signatures(library)
        rate = library.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS,
            _BUFFER_MILLISECONDS,
            str(data_path).encode(),
            _INITIALIZE_DONT_EXIT,
        )
        if rate != ESPEAK_SAMPLE_RATE:
            raise RuntimeError(
                f"espeak_Initialize of {library_path} with data folder {data_path} failed "
                f"(returned {rate}, expected the sample rate {ESPEAK_SAMPLE_RATE})"
            )
        library.espeak_SetSynthCallback(self.callback)
        self.library, self.voice = library, None
        return library

    def unload(self) -> None:
        """Terminate and unmap the library, so the next `load` starts from its initial state."""
        if self.library is None:
            return
        self.library.espeak_Terminate()
        close = getattr(_ctypes, "dlclose", None) or _ctypes.FreeLibrary  # POSIX / Windows
        close(self.library._handle)
        self.library, self.voice = None, None

    def set_voice(self, library: ctypes.CDLL, name: str) -> None:
        if name == self.voice:
            return
        status = library.espeak_SetVoiceByName(name.encode())
        if status != _STATUS_OK:
            reason = "not found" if status == _STATUS_NOT_FOUND else f"status {status}"
            raise ValueError(
                f"espeak-ng voice {name!r}: {reason}; English accents are "
                f"{', '.join(english_voices().accents)}"
            )
        self.voice = name

    def synthesise(self, library: ctypes.CDLL, text: str, flags: int) -> np.ndarray:
        """int16 samples at 22,050 Hz."""
        encoded = text.encode("utf-8") + b"\0"
        self.chunks = []
        status = library.espeak_Synth(
            encoded, len(encoded), 0, _POSITION_CHARACTER, 0, flags, None, None
        )
        chunks, self.chunks = self.chunks, []
        if status != _STATUS_OK:
            raise RuntimeError(f"espeak_Synth failed with status {status} on text {text!r}")
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


def _c_rand_seeder() -> Callable[[int], None]:
    """`srand` of the C library libespeak-ng links to (a no-op where it cannot be found)."""
    try:
        srand = ctypes.CDLL(None).srand
    except (OSError, AttributeError, TypeError):
        return lambda _seed: None
    srand.argtypes = [ctypes.c_uint]
    srand.restype = None
    return srand


_ENGINE = _Engine()


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"espeak {name} must be an integer in [{low}, {high}], got {value}")


class Espeak:
    """Text to speech (16 kHz by default). Cheap to construct; the library loads on first use.

    All instances in a process share one libespeak-ng (a C library with global state),
    so calls from several threads are serialised.
    """

    def reset(self) -> None:
        """Reload libespeak-ng so the following calls do not depend on earlier ones."""
        with _ENGINE.lock:
            _ENGINE.unload()
            _ENGINE.load()

    def speak(
        self,
        text: str,
        *,
        voice: str,
        variant: str | None,
        rate: int,
        pitch: int,
        pitch_range: int,
        volume: int = 100,
        ssml: bool = False,
        seed: int = 0,
        sample_rate: int = SAMPLE_RATE,
    ) -> np.ndarray:
        """Synthesise `text`; float32 mono samples at `sample_rate` Hz in [-1, 1].

        voice: an accent from `english_voices().accents`, or any other installed espeak-ng
            voice name, e.g. "bn" (Bengali, read from Bengali script).
        variant: a speaker variant from `english_voices().variants` (variants apply to
            every language), or None for the voice's default.
        rate: speaking rate in words per minute, 80..450 (espeak's default 175).
        pitch: base pitch 0..100 (default 50), scaling the variant's own pitch.
        pitch_range: intonation range 0..100 (0 = monotone, default 50).
        volume: amplitude 0..200 (default 100).
        ssml: parse `text` as SSML, e.g. `<speak><prosody rate="slow" pitch="+20%">`.
        seed: seeds espeak-ng's noise generators (breath, aspiration; the C library's
            `rand()` for Klatt voices) before this call.
        sample_rate: Hz of the result; espeak's native 22,050 Hz is resampled to it
            (the spectrum above 11,025 Hz stays empty at higher rates).

        The result keeps espeak's leading and trailing silence. See the module notes on
        reproducibility: call `reset()` first when a sequence must repeat exactly.
        """
        _check_range("rate", rate, 80, 450)
        _check_range("pitch", pitch, 0, 100)
        _check_range("pitch_range", pitch_range, 0, 100)
        _check_range("volume", volume, 0, 200)
        if sample_rate < 1:
            raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
        if variant is not None and variant not in english_voices().variants:
            raise ValueError(
                f"unknown espeak-ng variant {variant!r}; known variants: "
                f"{', '.join(english_voices().variants)}"
            )
        with _ENGINE.lock:
            library = _ENGINE.load()
            _ENGINE.set_voice(library, voice if variant is None else f"{voice}+{variant}")
            for parameter, value in (
                (_RATE, rate),
                (_PITCH, pitch),
                (_RANGE, pitch_range),
                (_VOLUME, volume),
            ):
                status = library.espeak_SetParameter(parameter, value, 0)
                if status != _STATUS_OK:
                    raise RuntimeError(
                        f"espeak_SetParameter({parameter}, {value}) failed with status {status}"
                    )
            library.espeak_ng_SetRandSeed(seed)
            _ENGINE.seed_c_rand(seed)
            native = _ENGINE.synthesise(library, text, _CHARS_UTF8 | (_SSML if ssml else 0))
        divisor = math.gcd(sample_rate, ESPEAK_SAMPLE_RATE)
        up, down = sample_rate // divisor, ESPEAK_SAMPLE_RATE // divisor
        samples = native.astype(np.float32) / 32768.0
        if up == down:
            return samples
        resampled = resample_poly(samples, up, down, window=_resampling_filter(up, down))
        return np.clip(resampled, -1.0, 1.0).astype(np.float32)
